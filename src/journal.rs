//! The on-disk record of an operation in progress, kept with the data in
//! `<mount root>/.pgup/journal.json`: written and fsynced *before* each step acts, removed
//! when the operation ends. Whatever interrupts pgup (a kill, a crash, a power loss), the
//! journal says which step was under way, so re-running the command finishes it and
//! `pgup rollback` undoes it. Beside it, `lock` keeps a second pgup off the same data: an
//! flock, which the kernel releases when its process dies, so a stale lock never blocks.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};

use crate::cluster::InitSettings;
use crate::plan::Backup;

/// pgup's work directory in a mount root.
pub const WORK_DIR: &str = ".pgup";
const FILE: &str = "journal.json";
const LOCK: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot {what} {}: {err}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("{} is damaged ({err}); move it away to start over", path.display())]
    Damaged {
        path: PathBuf,
        err: serde_json::Error,
    },
    #[error("another pgup ({holder}) is working on this data; wait for it to finish")]
    Locked { holder: String },
}

type Result<T> = std::result::Result<T, JournalError>;

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> JournalError + 'a {
    move |err| JournalError::Io {
        what,
        path: path.to_owned(),
        err,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Upgrade,
    Rollback,
    Cleanup,
}

/// The steps, in the order they run. Each is recorded before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    // upgrade
    Stopping,
    Checking,
    BackingUp,
    Upgrading,
    SwappingOut,
    SwappingIn,
    Verifying,
    Recreating,
    // rollback
    SettingAside,
    Restoring,
    Restarting,
    // cleanup
    Removing,
}

impl Step {
    /// What the step does, for "interrupted while …".
    pub fn doing(self) -> &'static str {
        match self {
            Step::Stopping => "stopping the server",
            Step::Checking => "checking the stopped cluster",
            Step::BackingUp => "recording the backup",
            Step::Upgrading => "running pg_upgrade",
            Step::SwappingOut | Step::SwappingIn => "putting the new cluster in place",
            Step::Verifying => "verifying the new cluster",
            Step::Recreating => "re-creating the container",
            Step::SettingAside => "setting the upgraded cluster aside",
            Step::Restoring => "restoring the backup",
            Step::Restarting => "restarting the container",
            Step::Removing => "removing old backups",
        }
    }
}

/// An operation in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    pub operation: Operation,
    pub step: Step,
    /// The UTC timestamp naming this operation's backup and set-aside directories.
    pub stamp: String,
    /// The command that started it, to tell the operator how to finish it.
    pub command: String,
    /// PGDATA below the mount root: the data directory may be empty mid-swap.
    pub pgdata: PathBuf,
    pub old_major: u32,
    pub new_major: u32,
    /// The upgrade image.
    pub image: String,
    pub new_image: Option<String>,
    pub backup: Backup,
    /// The backup this operation made or restores.
    pub backup_name: Option<String>,
    pub jobs: u32,
    /// The container pgup was pointed at, and the containers that were running.
    pub container: Option<String>,
    pub running: Vec<String>,
    /// What an upgrade learned and decided on the way (empty for other operations).
    #[serde(flatten)]
    pub learned: Learned,
    pub updated: DateTime<Utc>,
}

/// What an upgrade's steps learn and later steps (of a resumed run, too) act on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Learned {
    /// The old cluster's init settings, once checked.
    pub settings: Option<InitSettings>,
    /// Settings changed in the new cluster's configuration, one line each.
    #[serde(default)]
    pub config_changes: Vec<String>,
    /// --strip-unknown-options: with no backup, unknown catalog options may be removed.
    #[serde(default)]
    pub strip_unknown_options: bool,
    /// Catalog options the new major does not know, once checked: removed after the backup.
    #[serde(default)]
    pub unknown_options: Vec<crate::options::Key>,
}

impl Journal {
    pub fn work_dir(root: &Path) -> PathBuf {
        root.join(WORK_DIR)
    }

    fn path(root: &Path) -> PathBuf {
        Self::work_dir(root).join(FILE)
    }

    /// The operation in progress on the data in `root`, if any.
    pub fn read(root: &Path) -> Result<Option<Self>> {
        let path = Self::path(root);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|err| JournalError::Damaged { path, err }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// Records `step` durably, then lets a test kill pgup right there (see [`failpoint`]).
    pub fn advance(&mut self, root: &Path, step: Step) -> Result<()> {
        self.step = step;
        self.updated = Utc::now();
        let path = Self::path(root);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).expect("a journal always serializes");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            chown_like_work_dir(root, &tmp)?;
            std::fs::rename(&tmp, &path)?;
            File::open(Self::work_dir(root))?.sync_all()
        };
        write().map_err(io("write", &path))?;
        failpoint(&format!("{step:?}"));
        Ok(())
    }

    /// The operation is over: no journal means nothing is in progress.
    pub fn finish(root: &Path) -> Result<()> {
        let path = Self::path(root);
        match std::fs::remove_file(&path) {
            Ok(()) => File::open(Self::work_dir(root))
                .and_then(|d| d.sync_all())
                .map_err(io("sync", &path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &path)(e)),
        }
    }

    /// One line for `status` and for errors: what was interrupted and what to run.
    pub fn explain(&self, target_flags: &str) -> String {
        let what = match self.operation {
            Operation::Upgrade => format!("upgrade to {}", self.new_major),
            Operation::Rollback => format!("rollback to {}", self.old_major),
            Operation::Cleanup => "cleanup".to_owned(),
        };
        let how = match self.operation {
            Operation::Upgrade => format!(
                "run `{}` to finish or `pgup rollback {target_flags}` to go back",
                self.command
            ),
            Operation::Rollback => format!("run `pgup rollback {target_flags}` to finish it"),
            Operation::Cleanup => format!("run `pgup cleanup {target_flags}` to finish it"),
        };
        let doing = match (self.step, self.backup) {
            // The backup is copied beside the checks.
            (Step::Checking, Backup::Copy | Backup::Clone) => {
                "checking the stopped cluster and copying the backup"
            }
            (step, _) => step.doing(),
        };
        format!("{what} interrupted while {doing}; {how}")
    }
}

/// Exclusive use of the data in a mount root for this process's lifetime.
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock, creating the work directory (owned by the data owner, mode 0700).
    pub fn take(root: &Path, uid: u32, gid: u32) -> Result<Self> {
        let dir = Journal::work_dir(root);
        let setup = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        };
        setup().map_err(io("create", &dir))?;
        let path = dir.join(LOCK);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io("open", &path))?;
        std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(io("chown", &path))?;
        if flock(&file, FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(JournalError::Locked {
                holder: holder.trim().to_owned(),
            });
        }
        let me = format!(
            "pid {} since {}",
            std::process::id(),
            Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
        );
        let mut record = || -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(me.as_bytes())
        };
        record().map_err(io("write", &path))?;
        Ok(Self { _file: file })
    }
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

/// Files pgup keeps with the data belong to the data owner, as the work directory does.
fn chown_like_work_dir(root: &Path, file: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(Journal::work_dir(root))?;
    std::os::unix::fs::chown(file, Some(meta.uid()), Some(meta.gid()))
}

/// Lets the crash tests stop pgup at a named point: when `PGUP_KILL_AT` names it, pgup
/// SIGKILLs itself there, exactly as a crash or `kill -9` would stop it; `PGUP_STOP_AT`
/// freezes it there with SIGSTOP. Points are the journal's steps (right after each is
/// recorded) and a few places inside long steps, each reached once.
pub fn failpoint(name: &str) {
    use rustix::process::{Signal, getpid, kill_process};
    // KILL: a crash right here. STOP: a freeze, so that a test can change the world (fill
    // the disk, say) at an exact point and then send SIGCONT.
    for (var, signal) in [
        ("PGUP_KILL_AT", Signal::KILL),
        ("PGUP_STOP_AT", Signal::STOP),
    ] {
        if std::env::var(var).is_ok_and(|at| at == name) {
            let _ = kill_process(getpid(), signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> Journal {
        Journal {
            operation: Operation::Upgrade,
            step: Step::Stopping,
            stamp: "20261121T101530Z".into(),
            command: "pgup upgrade --container db --to 17".into(),
            pgdata: PathBuf::new(),
            old_major: 13,
            new_major: 17,
            image: "pgup/upgrade:latest".into(),
            new_image: None,
            backup: Backup::Copy,
            backup_name: Some("upgrade_backup_20261121T101530Z".into()),
            jobs: 2,
            container: Some("db".into()),
            running: vec!["db".into()],
            learned: Learned::default(),
            updated: Utc::now(),
        }
    }

    #[test]
    fn written_read_and_finished() {
        let root = tempfile::tempdir().unwrap();
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let _lock = Lock::take(root.path(), uid, gid).unwrap();
        assert!(Journal::read(root.path()).unwrap().is_none());
        let mut j = journal();
        j.advance(root.path(), Step::Checking).unwrap();
        let read = Journal::read(root.path()).unwrap().unwrap();
        assert_eq!(read.step, Step::Checking);
        assert_eq!(
            read.explain("--container db"),
            "upgrade to 17 interrupted while checking the stopped cluster and copying the backup; run `pgup upgrade --container db --to 17` to finish or `pgup rollback --container db` to go back"
        );
        Journal::finish(root.path()).unwrap();
        assert!(Journal::read(root.path()).unwrap().is_none());
    }

    #[test]
    fn the_lock_is_exclusive_and_dies_with_its_holder() {
        let root = tempfile::tempdir().unwrap();
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let lock = Lock::take(root.path(), uid, gid).unwrap();
        // flock locks belong to open files: a second open is refused like another process.
        match Lock::take(root.path(), uid, gid) {
            Err(JournalError::Locked { holder }) => assert!(holder.starts_with("pid "), "{holder}"),
            _ => panic!("a second lock was granted"),
        }
        drop(lock);
        assert!(Lock::take(root.path(), uid, gid).is_ok());
    }

    #[test]
    fn steps_are_ordered() {
        assert!(Step::BackingUp < Step::SwappingOut && Step::SwappingIn < Step::Verifying);
    }
}
