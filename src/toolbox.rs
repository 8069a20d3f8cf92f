//! A temporary container of the upgrade image in which PostgreSQL's own programs run: as the
//! data owner, with no network and no capabilities. Its run directory is a host directory only
//! the data owner can read (mode 0700), mounted at `/pgup/run`: it holds the servers' sockets,
//! the private hba file, and passwd/group entries naming the owner's uid (initdb and
//! pg_upgrade refuse to run as a uid without one). Also which local upgrade image to use (they
//! carry the majors they hold in a label), and whether the pgup that labelled a temporary
//! container is still alive.

use std::fmt::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tempfile::TempDir;

use crate::docker::{Docker, DockerError, TempContainer};
use crate::pgcmd;

/// Where the run directory is mounted inside the container.
pub const RUN: &str = "/pgup/run";
/// Where the old cluster is mounted in toolboxes that read it.
pub const OLD: &str = "/pgup/old";
/// The label listing the majors an upgrade image holds.
pub const MAJORS_LABEL: &str = "org.pgup.majors";
/// On toolboxes `assemble` made: "<old image id> <new image id>".
pub const FROM_LABEL: &str = "org.pgup.assembled-from";

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("cannot prepare the run directory {}: {err}", path.display())]
    RunDir { path: PathBuf, err: std::io::Error },
    #[error("{program} failed (exit code {code}): {tail}")]
    Failed {
        program: String,
        code: i64,
        tail: String,
        /// Everything it printed.
        output: String,
    },
}

pub struct Toolbox<'a> {
    docker: &'a Docker,
    id: String,
    run_dir: TempDir,
    /// Every command and its output, for the log kept with the backup. Commands may run
    /// side by side, each appending its own block when it ends.
    transcript: std::sync::Mutex<String>,
    /// Servers started through [`Toolbox::with_server`] and not (yet) stopped by it: a run
    /// cut short leaves them, and only then does removal have to stop them first.
    servers: std::sync::atomic::AtomicUsize,
}

/// What a toolbox works on.
pub struct ToolboxSpec<'a> {
    pub image: &'a str,
    pub role: &'a str,
    pub data: &'a Path,
    pub uid: u32,
    pub gid: u32,
    /// What is mounted in besides the run directory.
    pub mounts: Vec<ToolMount>,
}

pub enum ToolMount {
    Bind {
        host: PathBuf,
        target: String,
        read_only: bool,
    },
    Volume {
        name: String,
        target: String,
    },
}

impl<'a> Toolbox<'a> {
    pub async fn start(docker: &'a Docker, spec: ToolboxSpec<'_>) -> Result<Self, ToolError> {
        let run_dir = prepare_run_dir(spec.uid, spec.gid)?;
        let mut binds = vec![
            (run_dir.path().to_owned(), RUN.to_owned(), false),
            (
                run_dir.path().join("passwd"),
                "/etc/passwd".to_owned(),
                true,
            ),
            (run_dir.path().join("group"), "/etc/group".to_owned(), true),
        ];
        let mut volumes = Vec::new();
        for m in spec.mounts {
            match m {
                ToolMount::Bind {
                    host,
                    target,
                    read_only,
                } => binds.push((host, target, read_only)),
                ToolMount::Volume { name, target } => volumes.push((name, target)),
            }
        }
        let id = docker
            .start_temp(&TempContainer {
                image: spec.image,
                role: spec.role,
                data: spec.data,
                user: format!("{}:{}", spec.uid, spec.gid),
                binds,
                volumes,
            })
            .await?;
        Ok(Self {
            docker,
            id,
            run_dir,
            transcript: std::sync::Mutex::default(),
            servers: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// The run directory on the host: servers started here have their socket in it.
    pub fn socket_dir(&self) -> &Path {
        self.run_dir.path()
    }

    /// Runs `argv`; fails with the end of its output when it exits non-zero.
    pub async fn run(&self, argv: &[String]) -> Result<String, ToolError> {
        let result = self.docker.exec(&self.id, argv).await;
        {
            let mut transcript = self.transcript.lock().expect("not poisoned");
            let _ = writeln!(transcript, "$ {}", pgcmd::display(argv));
            if let Ok(done) = &result {
                transcript.push_str(&done.output);
            }
        }
        let result = result?;
        if result.code != 0 {
            return Err(ToolError::Failed {
                program: argv[0].rsplit('/').next().unwrap_or_default().to_owned(),
                code: result.code,
                tail: tail(&result.output),
                output: result.output,
            });
        }
        Ok(result.output)
    }

    /// Runs `work` while a private server of `major` runs on `datadir` (a path in the
    /// container, its socket in [`Toolbox::socket_dir`]), and stops the server whatever `work`
    /// returns: a server left running would hold the cluster in an unclean state.
    pub async fn with_server<T, E: From<ToolError>>(
        &self,
        major: u32,
        datadir: &str,
        work: impl AsyncFnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        use std::sync::atomic::Ordering::SeqCst;
        self.servers.fetch_add(1, SeqCst);
        self.run(&pgcmd::start_server(major, datadir, RUN)).await?;
        let done = work().await;
        let stopped = self.run(&pgcmd::stop_server(major, datadir)).await;
        let done = done?;
        stopped?;
        self.servers.fetch_sub(1, SeqCst);
        Ok(done)
    }

    /// What ran so far and its output, taken out of the toolbox.
    pub fn take_transcript(&self) -> String {
        std::mem::take(&mut self.transcript.lock().expect("not poisoned"))
    }

    /// Removes the container and the run directory. Call on every path; what a killed pgup
    /// leaves is found by its labels.
    pub async fn close(self) {
        if self.servers.into_inner() > 0 {
            self.docker.remove_temp(&self.id).await;
        } else {
            self.docker.remove(&self.id).await;
        }
    }
}

/// Picks the upgrade image when pgup cannot assemble one: `--image`, else a local image
/// labelled with both majors.
/// The inner error says which image to build or load.
pub async fn pick_image(
    docker: &Docker,
    explicit: Option<&str>,
    old: u32,
    new: u32,
    old_image: Option<&str>,
) -> Result<Result<String, String>, DockerError> {
    if let Some(name) = explicit {
        return Ok(match docker.image(name).await? {
            Some(_) => Ok(name.to_owned()),
            None => Err(format!(
                "image {name} is not here; load it (`pgup image load FILE`), or assemble one from the server images (`pgup image assemble --old IMAGE --new IMAGE`)"
            )),
        });
    }
    let holds = |label: &str, m: u32| label.split(',').any(|x| x.trim() == m.to_string());
    // A toolbox assembled from the old server image holds its extensions.
    let from_old = |labels: &std::collections::HashMap<String, String>| {
        old_image.is_some_and(|id| {
            labels
                .get(FROM_LABEL)
                .is_some_and(|from| from.split(' ').next() == Some(id))
        })
    };
    let mut candidates: Vec<(bool, String)> = docker
        .images_labelled(MAJORS_LABEL)
        .await?
        .into_iter()
        .filter(|i| {
            i.labels
                .get(MAJORS_LABEL)
                .is_some_and(|l| holds(l, old) && holds(l, new))
        })
        .flat_map(|i| {
            let ours = from_old(&i.labels);
            i.tags
                .into_iter()
                .filter(|t| !t.ends_with(":<none>"))
                .map(move |t| (ours, t))
        })
        .collect();
    // Predictable: one assembled from the old image, pgup's own latest image, then its other
    // tags, then anything else by name.
    candidates.sort_by_key(|(ours, t)| {
        (
            !ours,
            t != "pgup/upgrade:latest",
            !t.starts_with("pgup/upgrade:"),
            t.clone(),
        )
    });
    Ok(candidates.into_iter().next().map(|(_, t)| t).ok_or_else(|| {
        format!(
            "no local upgrade image holds PostgreSQL {old} and {new}; name the new server image with --new-image (and the old one with --old-image for a volume or data directory) and pgup assembles one, or load one with `pgup image load FILE`"
        )
    }))
}

#[derive(Debug, Serialize)]
pub struct UpgradeImage {
    pub image: String,
    pub majors: Vec<u32>,
    /// Every pair it can do, oldest first: "13→17".
    pub upgrades: Vec<String>,
}

/// Local images labelled with the majors they hold, and the upgrades each can do.
pub async fn upgrade_images(docker: &Docker) -> Result<Vec<UpgradeImage>, DockerError> {
    let mut out = Vec::new();
    for image in docker.images_labelled(MAJORS_LABEL).await? {
        let mut majors: Vec<u32> = image.labels[MAJORS_LABEL]
            .split(',')
            .filter_map(|m| m.trim().parse().ok())
            .collect();
        majors.sort_unstable();
        let upgrades = pairs(&majors);
        for tag in image.tags.iter().filter(|t| !t.ends_with(":<none>")) {
            out.push(UpgradeImage {
                image: tag.clone(),
                majors: majors.clone(),
                upgrades: upgrades.clone(),
            });
        }
    }
    out.sort_by(|a, b| a.image.cmp(&b.image));
    Ok(out)
}

fn pairs(majors: &[u32]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, old) in majors.iter().enumerate() {
        for new in &majors[i + 1..] {
            out.push(format!("{old}→{new}"));
        }
    }
    out
}

/// Whether `pid` is a running pgup: temporary containers carry their pgup's pid.
pub fn pgup_alive(pid: u32) -> bool {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
    let pid = Pid::from_u32(pid);
    // When processes cannot be read, count it as alive: never remove what may be in use.
    let Ok(mut system) = System::new() else {
        return true;
    };
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing(),
    );
    system.process(pid).is_some_and(|p| p.name() == "pgup")
}

/// The last lines of a program's output that say what went wrong, on one line, led by the
/// first line naming a full disk when there is one: a server that PANICs on a full disk
/// says so well before its last lines.
fn tail(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines.len().saturating_sub(3);
    let mut shown: Vec<&str> = lines[..start]
        .iter()
        .find(|l| l.contains("No space left on device"))
        .into_iter()
        .copied()
        .collect();
    shown.extend(&lines[start..]);
    shown.join(" / ")
}

fn prepare_run_dir(uid: u32, gid: u32) -> Result<TempDir, ToolError> {
    let dir = tempfile::Builder::new()
        .prefix("pgup-run-")
        .tempdir()
        .map_err(|err| ToolError::RunDir {
            path: std::env::temp_dir(),
            err,
        })?;
    let path = dir.path().to_owned();
    let fail = |err| ToolError::RunDir {
        path: path.clone(),
        err,
    };
    let write = |name: &str, text: String, mode: u32| -> std::io::Result<()> {
        let file = path.join(name);
        std::fs::write(&file, text)?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))?;
        std::os::unix::fs::chown(&file, Some(uid), Some(gid))
    };
    write(
        "passwd",
        format!("root:x:0:0:root:/root:/bin/sh\npostgres:x:{uid}:{gid}:PostgreSQL administrator:/tmp:/bin/sh\n"),
        0o644,
    )
    .map_err(fail)?;
    write("group", format!("root:x:0:\npostgres:x:{gid}:\n"), 0o644).map_err(fail)?;
    write("pg_hba.conf", pgcmd::PRIVATE_HBA.to_owned(), 0o600).map_err(fail)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(fail)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_pairs() {
        assert_eq!(pairs(&[13, 15, 17]), vec!["13→15", "13→17", "15→17"]);
        assert!(pairs(&[17]).is_empty());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\n\nb\nc\nd\n"), "b / c / d");
        assert_eq!(tail(""), "");
    }

    #[test]
    fn tail_keeps_a_full_disk() {
        let out = "PANIC: could not write: No space left on device\nx\ny\nAborted\n";
        assert_eq!(
            tail(out),
            "PANIC: could not write: No space left on device / x / y / Aborted"
        );
    }
}
