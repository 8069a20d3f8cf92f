//! Where PostgreSQL's own programs run, as the data owner: in a temporary container of the
//! upgrade image (no network, no capabilities), or, inside an upgrade-capable image with no
//! Docker engine, as this machine's processes. One type, two runners: the steps never know
//! which; they name host paths through [`Toolbox::at`], which says where the programs see them.
//! The run directory is a host directory only the data owner can read (mode 0700), mounted at
//! `/pgup/run` in a container: it holds the servers' sockets, the private hba file, and
//! passwd/group entries naming the owner's uid (initdb and pg_upgrade refuse to run as a uid
//! without one). Also which local upgrade image to use (they carry the majors they hold in a
//! label), and whether the pgup that labelled a temporary container is still alive.

use std::fmt::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use tempfile::TempDir;

use crate::docker::{Docker, DockerError, ExecResult, TempContainer};
use crate::pgcmd;

/// Where the run directory is mounted inside the container.
pub const RUN: &str = "/pgup/run";
/// Where the old cluster is mounted in toolboxes that read it.
pub const OLD: &str = "/pgup/old";
/// The label listing the majors an upgrade image holds.
pub const MAJORS_LABEL: &str = "org.pgup.majors";
/// On toolboxes `assemble` made: "<old image id> <new image id>".
pub const FROM_LABEL: &str = "org.pgup.assembled-from";
/// What the journal and the reports name as the upgrade image when the programs run here.
pub const HERE: &str = "this container";

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("cannot prepare the run directory {}: {err}", path.display())]
    RunDir { path: PathBuf, err: std::io::Error },
    #[error("cannot run {program}: {err}")]
    Spawn {
        program: String,
        err: std::io::Error,
    },
    #[error(
        "the data belongs to uid {uid}, and pgup runs as uid {me}: run it as root or as the data owner"
    )]
    NotOwner { uid: u32, me: u32 },
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
    runner: Runner<'a>,
    run_dir: TempDir,
    /// Host paths and where the programs see them, the longest host path first; none when
    /// they run here.
    views: Vec<(PathBuf, String)>,
    /// Every command and its output, for the log kept with the backup. Commands may run
    /// side by side, each appending its own block when it ends.
    transcript: Mutex<String>,
    /// The data directories of the servers started through [`Toolbox::with_server`] and not
    /// (yet) stopped by it: a run cut short leaves them, and only then does closing have to
    /// stop them first.
    servers: Mutex<Vec<(u32, String)>>,
}

enum Runner<'a> {
    /// A temporary container of the upgrade image.
    Container { docker: &'a Docker, id: String },
    /// This machine's processes (no engine here), as the data owner.
    Local { uid: u32, gid: u32 },
}

/// What a toolbox works on.
pub struct ToolboxSpec<'a> {
    pub image: &'a str,
    pub role: &'a str,
    pub data: &'a Path,
    pub uid: u32,
    pub gid: u32,
    /// What is mounted in besides the run directory (in a container only: here, every path
    /// is where it is).
    pub mounts: Vec<ToolMount>,
}

pub enum ToolMount {
    Bind {
        host: PathBuf,
        target: String,
        read_only: bool,
    },
    /// A volume showing host directory `shows` (an overlay of it).
    Volume {
        name: String,
        target: String,
        shows: PathBuf,
    },
}

impl<'a> Toolbox<'a> {
    /// A temporary container of `spec.image` when Docker's engine is there; else this
    /// machine's processes.
    pub async fn start(docker: &'a Docker, spec: ToolboxSpec<'_>) -> Result<Self, ToolError> {
        let run_dir = prepare_run_dir(spec.uid, spec.gid)?;
        let (runner, views) = if docker.has_engine() {
            let (id, views) = start_container(docker, &spec, run_dir.path()).await?;
            (Runner::Container { docker, id }, views)
        } else {
            let me = rustix::process::getuid().as_raw();
            if me != 0 && me != spec.uid {
                return Err(ToolError::NotOwner { uid: spec.uid, me });
            }
            let (uid, gid) = (spec.uid, spec.gid);
            (Runner::Local { uid, gid }, Vec::new())
        };
        Ok(Self {
            runner,
            run_dir,
            views,
            transcript: Mutex::default(),
            servers: Mutex::default(),
        })
    }

    /// Whether it can still run commands (its container may have gone with a restarted
    /// daemon).
    pub async fn alive(&self) -> bool {
        match &self.runner {
            Runner::Container { docker, id } => docker.container(id).await.is_ok_and(|c| c.running),
            Runner::Local { .. } => true,
        }
    }

    /// The run directory on the host: servers started here have their socket in it.
    pub fn socket_dir(&self) -> &Path {
        self.run_dir.path()
    }

    /// The run directory where the programs see it.
    pub fn run_dir(&self) -> String {
        self.at(self.run_dir.path())
    }

    /// Where the programs see host path `host`.
    pub fn at(&self, host: &Path) -> String {
        self.views
            .iter()
            .find_map(|(from, to)| {
                let rest = host.strip_prefix(from).ok()?;
                Some(Path::new(to).join(rest).display().to_string())
            })
            .unwrap_or_else(|| host.display().to_string())
    }

    /// Runs `argv`; fails with the end of its output when it exits non-zero.
    pub async fn run(&self, argv: &[String]) -> Result<String, ToolError> {
        let result = match &self.runner {
            Runner::Container { docker, id } => docker.exec(id, argv).await.map_err(Into::into),
            Runner::Local { uid, gid } => run_here(argv, self.run_dir.path(), *uid, *gid).await,
        };
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
                program: program_name(argv),
                code: result.code,
                tail: tail(&result.output),
                output: result.output,
            });
        }
        Ok(result.output)
    }

    /// Runs `work` while a private server of `major` runs on `datadir` (a path where the
    /// programs see it, its socket in [`Toolbox::socket_dir`]), and stops the server whatever
    /// `work` returns: a server left running would hold the cluster in an unclean state.
    pub async fn with_server<T, E: From<ToolError>>(
        &self,
        major: u32,
        datadir: &str,
        work: impl AsyncFnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let server = (major, datadir.to_owned());
        self.servers
            .lock()
            .expect("not poisoned")
            .push(server.clone());
        self.run(&pgcmd::start_server(major, datadir, &self.run_dir()))
            .await?;
        let done = work().await;
        let stopped = self.run(&pgcmd::stop_server(major, datadir)).await;
        let done = done?;
        stopped?;
        self.servers
            .lock()
            .expect("not poisoned")
            .retain(|s| *s != server);
        Ok(done)
    }

    /// What ran so far and its output, taken out of the toolbox.
    pub fn take_transcript(&self) -> String {
        std::mem::take(&mut self.transcript.lock().expect("not poisoned"))
    }

    /// Removes the container (or stops the servers left running here) and the run directory.
    /// Call on every path; what a killed pgup leaves is found by its labels (here, it went
    /// with the container pgup ran in, or its next run stops it: see `cluster`).
    pub async fn close(self) {
        let left = std::mem::take(&mut *self.servers.lock().expect("not poisoned"));
        match &self.runner {
            Runner::Container { docker, id } if !left.is_empty() => docker.remove_temp(id).await,
            Runner::Container { docker, id } => docker.remove(id).await,
            Runner::Local { .. } => {
                for (major, datadir) in left {
                    let _ = self.run(&pgcmd::stop_server(major, &datadir)).await;
                }
            }
        }
    }
}

/// Starts the temporary container; returns its id and the views its mounts give.
async fn start_container(
    docker: &Docker,
    spec: &ToolboxSpec<'_>,
    run_dir: &Path,
) -> Result<(String, Vec<(PathBuf, String)>), ToolError> {
    let mut binds = vec![
        (run_dir.to_owned(), RUN.to_owned(), false),
        (run_dir.join("passwd"), "/etc/passwd".to_owned(), true),
        (run_dir.join("group"), "/etc/group".to_owned(), true),
    ];
    let mut views = vec![(run_dir.to_owned(), RUN.to_owned())];
    let mut volumes = Vec::new();
    for m in &spec.mounts {
        match m {
            ToolMount::Bind {
                host,
                target,
                read_only,
            } => {
                binds.push((host.clone(), target.clone(), *read_only));
                views.push((host.clone(), target.clone()));
            }
            ToolMount::Volume {
                name,
                target,
                shows,
            } => {
                volumes.push((name.clone(), target.clone()));
                views.push((shows.clone(), target.clone()));
            }
        }
    }
    views.sort_by_key(|(host, _)| std::cmp::Reverse(host.components().count()));
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
    Ok((id, views))
}

/// Runs `argv` as a child process of this one, as the data owner when pgup runs as root, in
/// the run directory, with none of the `PG*` variables a server image sets (its programs are
/// given every connection and directory explicitly). Its output is what it wrote to stdout,
/// then to stderr.
async fn run_here(
    argv: &[String],
    run_dir: &Path,
    uid: u32,
    gid: u32,
) -> Result<ExecResult, ToolError> {
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .current_dir(run_dir)
        .stdin(std::process::Stdio::null())
        .env("HOME", run_dir)
        .env("LC_ALL", "C.UTF-8")
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            command.env_remove(name);
        }
    }
    if rustix::process::getuid().is_root() {
        command.uid(uid).gid(gid);
    }
    let out = command.output().await.map_err(|err| ToolError::Spawn {
        program: program_name(argv),
        err,
    })?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(ExecResult {
        code: out.status.code().map_or(-1, i64::from),
        output,
    })
}

fn program_name(argv: &[String]) -> String {
    argv[0].rsplit('/').next().unwrap_or_default().to_owned()
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
    if !docker.has_engine() {
        return Ok(Ok(HERE.to_owned()));
    }
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
