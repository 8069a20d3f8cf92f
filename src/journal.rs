//! The on-disk record of an operation in progress, kept with the data in
//! `<mount root>/.pgup/journal.json`: written and fsynced *before* each step acts, removed
//! when the operation ends. Whatever interrupts pgup (a kill, a crash, a power loss), the
//! journal says which step was under way, so re-running the command finishes it and
//! `pgup rollback` undoes it. Beside it, `lock` keeps a second pgup off the same data: an
//! flock, which the kernel releases when its process dies, so a stale lock never blocks.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rustix::fs::{FlockOperation, flock};
use serde::{Deserialize, Serialize};

use crate::backup::work_dir;
use crate::cluster::InitSettings;
use crate::failpoint;
use crate::layout::{Layout, STAMP_FORMAT};
use crate::location::Location;
use crate::plan::{self, BackupKind, Operation, PreCopy, Step};
use crate::settings::Intent;

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
    pub backup: BackupKind,
    /// The backup this operation made or restores.
    pub backup_name: Option<String>,
    pub jobs: u32,
    /// The container pgup was pointed at, and the containers that were running.
    pub container: Option<String>,
    pub running: Vec<String>,
    /// The directories the cluster keeps outside PGDATA (a WAL directory, tablespaces).
    #[serde(default)]
    pub locations: Vec<Location>,
    /// What an upgrade learned and decided on the way (empty for other operations).
    #[serde(flatten)]
    pub learned: Learned,
    pub updated: DateTime<Utc>,
    /// When each step began, in order (a resumed run's steps again): the report's step times.
    #[serde(default)]
    pub timeline: Vec<(Step, DateTime<Utc>)>,
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
    /// The re-created container's command, when settings in the old one had to change.
    #[serde(default)]
    pub container_command: Option<Vec<String>>,
    /// --reindex.
    #[serde(default)]
    pub reindex: crate::settings::Reindex,
    /// --verify.
    #[serde(default)]
    pub verify: crate::settings::Verify,
    /// When the server stopped (when none ran: when the upgrade began): the downtime's start.
    #[serde(default)]
    pub stopped_at: Option<DateTime<Utc>>,
    /// The libraries the old cluster's text indexes were built with and the new server's,
    /// once checked.
    #[serde(default)]
    pub libraries: Option<crate::collation::Pair>,
    /// The backup's first pass while the server serves, when it has one.
    #[serde(default)]
    pub precopy: Option<PreCopy>,
    /// The new cluster is made while the server serves (the settings came from it).
    #[serde(default)]
    pub prepares: bool,
    /// A new cluster fresh from initdb, made while the server served, waits in the staging
    /// directory: pg_upgrade's step takes it (and clears this) instead of making its own.
    #[serde(default)]
    pub staged: bool,
    /// pg_upgrade's transfer, as planned.
    #[serde(default)]
    pub transfer: crate::pgcmd::Transfer,
    /// pg_upgrade --swap began: the cluster in place may be used up, and only the backup
    /// holds the old cluster whole.
    #[serde(default)]
    pub swapping: bool,
    /// The site's hooks (--hooks), and the phases whose hook has run to its end: a hook
    /// killed midway runs again on resume, one that ended does not.
    #[serde(default)]
    pub hooks: Option<crate::hooks::Hooks>,
    #[serde(default)]
    pub hooks_ran: Vec<crate::hooks::Phase>,
}

impl Journal {
    /// A new operation on the data, at its first step, stamped now; the caller fills in what
    /// its operation needs. `pgdata` is PGDATA below the mount root, `command` the command
    /// line that finishes it.
    pub fn begin(operation: Operation, pgdata: PathBuf, command: String) -> Self {
        Self {
            operation,
            step: match operation {
                Operation::Cleanup => Step::Removing,
                Operation::Upgrade | Operation::Rollback => Step::Stopping,
            },
            stamp: Utc::now().format(STAMP_FORMAT).to_string(),
            command,
            pgdata,
            old_major: 0,
            new_major: 0,
            image: String::new(),
            new_image: None,
            backup: BackupKind::None,
            backup_name: None,
            jobs: 1,
            container: None,
            running: Vec::new(),
            locations: Vec::new(),
            learned: Learned::default(),
            updated: Utc::now(),
            timeline: Vec::new(),
        }
    }

    /// The steps of this upgrade, in order: the container named is re-created when there is
    /// a new image.
    pub fn upgrade_steps(&self) -> Vec<Step> {
        let recreate = self.container.is_some() && self.new_image.is_some();
        let serving = plan::WhileServing {
            prepare: self.learned.prepares,
            precopy: self.learned.precopy.is_some(),
        };
        let post_upgrade = self
            .learned
            .hooks
            .as_ref()
            .is_some_and(|h| h.has(crate::hooks::Phase::PostUpgrade));
        plan::upgrade_steps(self.backup, recreate, serving, post_upgrade)
    }

    /// What this upgrade asks for, as the command line that started it did: the checks of a
    /// resumed run start from it.
    pub fn intent(&self) -> Intent {
        Intent {
            to: self.new_major,
            image: Some(self.image.clone()),
            mode: self.backup.mode(),
            no_backup: Some(self.backup == BackupKind::None),
            new_image: self.new_image.clone(),
            old_image: None,
            // Those running when it started were stopped then, and a stale lock file was
            // judged so then.
            stop_others: true,
            server_stopped: true,
            reindex: self.learned.reindex,
        }
    }

    /// Where putting the backup back starts for an upgrade stopped at its step: once the new
    /// cluster may serve (the post-upgrade step), by stopping its server.
    pub fn put_back_from(&self) -> Step {
        if self.step == Step::PostUpgrade {
            Step::Stopping
        } else {
            Step::SettingAside
        }
    }

    /// Adds the containers running on the data now to those a put-back stops first (and
    /// starts again): a step after the hand-over may have started one that did not run.
    pub fn stop_also(&mut self, now: Vec<String>) {
        for name in now {
            if !self.running.contains(&name) {
                self.running.push(name);
            }
        }
    }

    /// The containers it stopped besides the one it was pointed at (--stop-others): started
    /// again at the end.
    pub fn others(&self) -> Vec<String> {
        self.running
            .iter()
            .filter(|n| Some(*n) != self.container.as_ref())
            .cloned()
            .collect()
    }

    /// The operation in progress on the data in `root`, if any.
    pub fn read(root: &Path) -> Result<Option<Self>> {
        let path = Layout::new(root).journal();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|err| JournalError::Damaged { path, err }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// Records `step` durably, then lets a test kill pgup right there (see `failpoint`).
    pub fn advance(&mut self, root: &Path, step: Step) -> Result<()> {
        self.step = step;
        self.timeline.push((step, Utc::now()));
        self.save(root)?;
        failpoint::hit(&format!("{step:?}"));
        Ok(())
    }

    /// Records what the step under way learned, durably.
    pub fn save(&mut self, root: &Path) -> Result<()> {
        self.updated = Utc::now();
        let layout = Layout::new(root);
        let path = layout.journal();
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
            chown_like_work_dir(&layout, &tmp)?;
            std::fs::rename(&tmp, &path)?;
            File::open(layout.work())?.sync_all()
        };
        write().map_err(io("write", &path))
    }

    /// The operation is over: no journal means nothing is in progress.
    pub fn finish(root: &Path) -> Result<()> {
        let layout = Layout::new(root);
        let path = layout.journal();
        match std::fs::remove_file(&path) {
            Ok(()) => File::open(layout.work())
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
            // The backup is made exact beside the checks.
            (Step::Checking, BackupKind::Copy) if self.learned.precopy.is_some() => {
                "checking the stopped cluster and making the pre-copied backup exact"
            }
            // The backup is copied beside the checks.
            (Step::Checking, BackupKind::Copy | BackupKind::Clone) => {
                "checking the stopped cluster and copying the backup"
            }
            (step, _) => step.doing(),
        };
        // A slot left on a server that serves on keeps every WAL segment from then on.
        let slot = self
            .held_slot()
            .map(|s| format!(" (until then replication slot {s} keeps the old server's WAL)"))
            .unwrap_or_default();
        format!("{what} interrupted while {doing}; {how}{slot}")
    }

    /// The replication slot that keeps the old server's WAL for the backup's second pass,
    /// until the checks after the stop remove it.
    fn held_slot(&self) -> Option<String> {
        let held = self
            .learned
            .precopy
            .as_ref()
            .is_some_and(|p| p.wal.is_some());
        (held && self.step < Step::Checking).then(|| crate::walchanges::slot_name(&self.stamp))
    }
}

/// This pgup's command line, as a journal names the command that finishes its operation.
pub fn this_command() -> String {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    format!("pgup {}", crate::pgcmd::display(&argv))
}

/// Exclusive use of the data in a mount root for this process's lifetime.
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock, creating the work directory (owned by the data owner, mode 0700).
    pub fn take(root: &Path, uid: u32, gid: u32) -> Result<Self> {
        let layout = Layout::new(root);
        let dir = layout.work();
        work_dir(&layout, uid, gid).map_err(io("create", &dir))?;
        let path = layout.lock();
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

/// Files pgup keeps with the data belong to the data owner, as the work directory does.
fn chown_like_work_dir(layout: &Layout, file: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(layout.work())?;
    std::os::unix::fs::chown(file, Some(meta.uid()), Some(meta.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal() -> Journal {
        Journal {
            old_major: 13,
            new_major: 17,
            image: "pgup/upgrade:latest".into(),
            backup: BackupKind::Copy,
            backup_name: Some("upgrade_backup_20261121T101530Z".into()),
            jobs: 2,
            container: Some("db".into()),
            running: vec!["db".into()],
            ..Journal::begin(
                Operation::Upgrade,
                PathBuf::new(),
                "pgup upgrade --container db --to 17".into(),
            )
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
    fn a_slot_keeping_the_wal_is_named_until_the_checks_remove_it() {
        let mut j = journal();
        j.step = Step::PreCopying;
        j.learned.precopy = Some(crate::plan::PreCopy::default());
        assert!(!j.explain("--container db").contains("slot"), "none held");
        j.learned.precopy.as_mut().unwrap().wal = Some(crate::cluster::WalStart {
            redo: "0/3000028".parse().unwrap(),
            timeline: 1,
        });
        let slot = crate::walchanges::slot_name(&j.stamp);
        assert!(
            j.explain("--container db").ends_with(&format!(
                "(until then replication slot {slot} keeps the old server's WAL)"
            )),
            "{}",
            j.explain("--container db")
        );
        j.step = Step::Checking;
        assert_eq!(j.held_slot(), None, "removed from the stopped cluster");
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
