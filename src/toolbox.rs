//! A temporary container of the upgrade image in which PostgreSQL's own programs run: as the
//! data owner, with no network and no capabilities. Its run directory is a host directory only
//! the data owner can read (mode 0700), mounted at `/pgup/run`: it holds the servers' sockets,
//! the private hba file, and passwd/group entries naming the owner's uid (initdb and
//! pg_upgrade refuse to run as a uid without one).

use std::fmt::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::docker::{Docker, DockerError, TempContainer};
use crate::pgcmd;

/// Where the run directory is mounted inside the container.
pub const RUN: &str = "/pgup/run";

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
        self.run(&pgcmd::start_server(major, datadir, RUN)).await?;
        let done = work().await;
        let stopped = self.run(&pgcmd::stop_server(major, datadir)).await;
        let done = done?;
        stopped?;
        Ok(done)
    }

    /// What ran so far and its output, taken out of the toolbox.
    pub fn take_transcript(&self) -> String {
        std::mem::take(&mut self.transcript.lock().expect("not poisoned"))
    }

    /// Removes the container and the run directory. Call on every path; what a killed pgup
    /// leaves is found by its labels.
    pub async fn close(self) {
        self.docker.remove(&self.id).await;
    }
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
