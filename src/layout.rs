//! Every name pgup gives to what it keeps in a mount root (the volume's or bind mount's host
//! directory), and what each entry there is. Beside the cluster: the `upgrade_backup_<stamp>`
//! directories of the manual procedure, each with its record, its run's log and pg_upgrade's
//! logs, and `.pgup`, the work directory (journal, lock, staging, set-aside clusters, scratch
//! files, trash). Pure: names and what they mean; nothing here touches the disk.

use std::path::{Path, PathBuf};

/// pgup's work directory in a mount root.
pub const WORK_DIR: &str = ".pgup";
/// What every backup directory's name starts with, followed by its UTC stamp.
pub const BACKUP_PREFIX: &str = "upgrade_backup_";
/// The stamp that names an operation's backup and set-aside directories (UTC).
pub const STAMP_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// What an entry directly in the mount root is, when it is pgup's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootEntry {
    /// `.pgup`.
    WorkDir,
    /// `upgrade_backup_<stamp>`: a whole backup.
    Backup,
    /// `<backup>.partial`: a backup being made, or left by a run that died making it.
    PartialBackup,
    /// `<backup>.json`: what a rollback needs to know.
    Record,
    /// `<backup>.log`: the log of the run that made the backup.
    Log,
    /// `<backup>.pg_upgrade_output.d`: pg_upgrade's own logs of a failed run.
    PgUpgradeLogs,
    /// Any other `upgrade_backup_*` name (a record's temporary file, say).
    Other,
}

impl RootEntry {
    /// What `name` is; None for the cluster's own entries.
    pub fn classify(name: &str) -> Option<Self> {
        if name == WORK_DIR {
            return Some(Self::WorkDir);
        }
        let rest = name.strip_prefix(BACKUP_PREFIX)?;
        Some(match rest.split_once('.').map(|(_, ext)| ext) {
            None => Self::Backup,
            Some("partial") => Self::PartialBackup,
            Some("json") => Self::Record,
            Some("log") => Self::Log,
            Some("pg_upgrade_output.d") => Self::PgUpgradeLogs,
            Some(_) => Self::Other,
        })
    }

    /// The backup a record, log or partial copy belongs to.
    pub fn backup_of(name: &str) -> Option<&str> {
        name.strip_prefix(BACKUP_PREFIX)?;
        Some(name.split_once('.').map_or(name, |(backup, _)| backup))
    }
}

/// Entries of a mount root that are pgup's, not the cluster's: copies, swaps and restores
/// leave them where they are, and sizes leave them out.
pub fn is_pgup_entry(name: &str) -> bool {
    RootEntry::classify(name).is_some()
}

/// What an entry of the work directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkEntry {
    Journal,
    Lock,
    /// `new`: the new cluster while pg_upgrade makes it.
    Staging,
    /// `old`: the old cluster while the new one is swapped in.
    OldAside,
    /// `upgraded-<stamp>`: an upgraded cluster a rollback set aside.
    SetAside,
    /// `trash-<name>`: something being removed by `cleanup`.
    Trash,
    /// Files an upgrade's steps hand each other: the old cluster's snapshot, pg_upgrade's
    /// extension script, the count of options removed, what the WAL said changed.
    Scratch,
    /// What an upgrade left to do once the new cluster serves, for `status`:
    /// `reindex-pending.json`, the text indexes --reindex never left as they were built;
    /// `statistics-pending.json`, the statistics still being gathered after the hand-over.
    Pending,
    /// `logs`: what is kept of runs that left no backup (failed, undone, or keeping none)
    /// and of backups a rollback put back: their logs, pg_upgrade's logs, their records.
    Logs,
}

const JOURNAL: &str = "journal.json";
const LOCK: &str = "lock";
const STAGING: &str = "new";
const OLD_ASIDE: &str = "old";
const SET_ASIDE: &str = "upgraded-";
const TRASH: &str = "trash-";
const BEFORE: &str = "before.json";
const EXTENSIONS_SCRIPT: &str = "update_extensions.sql";
const OPTIONS_REMOVED: &str = "options-removed.json";
const WAL_CHANGES: &str = "wal-changes.txt";
const REINDEX_PENDING: &str = "reindex-pending.json";
const STATISTICS_PENDING: &str = "statistics-pending.json";
const LOGS: &str = "logs";

impl WorkEntry {
    pub fn classify(name: &str) -> Option<Self> {
        Some(match name {
            JOURNAL => Self::Journal,
            LOCK => Self::Lock,
            STAGING => Self::Staging,
            OLD_ASIDE => Self::OldAside,
            BEFORE | EXTENSIONS_SCRIPT | OPTIONS_REMOVED | WAL_CHANGES => Self::Scratch,
            LOGS => Self::Logs,
            REINDEX_PENDING | STATISTICS_PENDING => Self::Pending,
            n if n.starts_with(SET_ASIDE) => Self::SetAside,
            n if n.starts_with(TRASH) => Self::Trash,
            _ => return None,
        })
    }

    /// Left by an operation that ended or was undone: no journal's step needs it any more.
    pub fn is_leftover(&self) -> bool {
        matches!(self, Self::Staging | Self::OldAside | Self::Scratch)
    }
}

/// The name of the backup made at `stamp`.
pub fn backup_name(stamp: &str) -> String {
    format!("{BACKUP_PREFIX}{stamp}")
}

/// The stamp a backup's name carries.
pub fn stamp_of(backup: &str) -> Option<&str> {
    backup.strip_prefix(BACKUP_PREFIX)
}

/// A mount root, and the paths of everything pgup keeps in it.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn work(&self) -> PathBuf {
        self.root.join(WORK_DIR)
    }

    pub fn journal(&self) -> PathBuf {
        self.work().join(JOURNAL)
    }

    pub fn lock(&self) -> PathBuf {
        self.work().join(LOCK)
    }

    pub fn staging(&self) -> PathBuf {
        self.work().join(STAGING)
    }

    pub fn old_aside(&self) -> PathBuf {
        self.work().join(OLD_ASIDE)
    }

    /// Where a rollback started at `stamp` sets the upgraded cluster aside.
    pub fn set_aside(&self, stamp: &str) -> PathBuf {
        self.work().join(format!("{SET_ASIDE}{stamp}"))
    }

    /// Where `cleanup` moves `name` before removing it.
    pub fn trash(&self, name: &str) -> PathBuf {
        let name = name.strip_prefix(TRASH).unwrap_or(name);
        self.work().join(format!("{TRASH}{name}"))
    }

    /// The old cluster's catalog and relation files (and row counts), recorded before
    /// pg_upgrade.
    pub fn before(&self) -> PathBuf {
        self.work().join(BEFORE)
    }

    /// What pg_waldump said of the old cluster's WAL since the backup's first pass began.
    pub fn wal_changes(&self) -> PathBuf {
        self.work().join(WAL_CHANGES)
    }

    /// pg_upgrade's `update_extensions.sql`, kept for the verification step.
    pub fn extensions_script(&self) -> PathBuf {
        self.work().join(EXTENSIONS_SCRIPT)
    }

    /// How many unknown catalog options were removed, per database.
    pub fn options_removed(&self) -> PathBuf {
        self.work().join(OPTIONS_REMOVED)
    }

    /// The text indexes an upgrade left unrebuilt (--reindex never).
    pub fn reindex_pending(&self) -> PathBuf {
        self.work().join(REINDEX_PENDING)
    }

    /// The statistics an upgrade gathers after the hand-over, until they are complete.
    pub fn statistics_pending(&self) -> PathBuf {
        self.work().join(STATISTICS_PENDING)
    }

    pub fn backup(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn partial_backup(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.partial"))
    }

    pub fn record(&self, backup: &str) -> PathBuf {
        self.root.join(format!("{backup}.json"))
    }

    /// The log of the run that made `backup`.
    pub fn backup_log(&self, backup: &str) -> PathBuf {
        self.root.join(format!("{backup}.log"))
    }

    /// The log of the run at `stamp`: beside its backup, or (with no backup) in
    /// [`Layout::logs`].
    pub fn run_log(&self, backup: Option<&str>, stamp: &str) -> PathBuf {
        match backup {
            Some(name) => self.backup_log(name),
            None => self.failed_log(stamp),
        }
    }

    /// The log of the run at `stamp` where it is now: beside its backup, with the records of
    /// backups put back, or with the failed runs' (moved there as the run ends); where it
    /// will be written while none is.
    pub fn run_log_now(&self, backup: Option<&str>, stamp: &str) -> PathBuf {
        let moved = backup.map(|name| self.put_back_record(name, "log"));
        backup
            .map(|name| self.backup_log(name))
            .into_iter()
            .chain(moved)
            .chain([self.failed_log(stamp)])
            .find(|p| p.exists())
            .unwrap_or_else(|| self.run_log(backup, stamp))
    }

    /// Where what is kept of runs and backups that are gone lives (see [`WorkEntry::Logs`]).
    pub fn logs(&self) -> PathBuf {
        self.work().join(LOGS)
    }

    /// The log of the run at `stamp` once it has no backup beside it.
    pub fn failed_log(&self, stamp: &str) -> PathBuf {
        self.logs().join(format!("upgrade-{stamp}.log"))
    }

    /// pg_upgrade's own logs of the failed run at `stamp`.
    pub fn pg_upgrade_logs(&self, stamp: &str) -> PathBuf {
        self.logs()
            .join(format!("upgrade-{stamp}.pg_upgrade_output.d"))
    }

    /// Where a backup's record (or `log`) goes once a rollback has put the backup back.
    pub fn put_back_record(&self, backup: &str, ext: &str) -> PathBuf {
        self.logs().join(format!("{backup}.{ext}"))
    }

    /// The directories backups are looked for in: the mount root, and PGDATA when it is
    /// another directory (the manual procedure keeps them there).
    pub fn backup_dirs<'a>(&'a self, data: &'a Path) -> Vec<&'a Path> {
        let mut dirs = vec![self.root.as_path()];
        if data != self.root {
            dirs.push(data);
        }
        dirs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_entries() {
        let cases = [
            (".pgup", Some(RootEntry::WorkDir)),
            ("upgrade_backup_20261121T101530Z", Some(RootEntry::Backup)),
            (
                "upgrade_backup_20261121T101530Z.partial",
                Some(RootEntry::PartialBackup),
            ),
            (
                "upgrade_backup_20261121T101530Z.json",
                Some(RootEntry::Record),
            ),
            ("upgrade_backup_20261121T101530Z.log", Some(RootEntry::Log)),
            (
                "upgrade_backup_20261121T101530Z.pg_upgrade_output.d",
                Some(RootEntry::PgUpgradeLogs),
            ),
            (
                "upgrade_backup_20261121T101530Z.json.tmp",
                Some(RootEntry::Other),
            ),
            ("base", None),
            ("PG_VERSION", None),
            ("pgup", None),
        ];
        for (name, expected) in cases {
            assert_eq!(RootEntry::classify(name), expected, "{name}");
            assert_eq!(is_pgup_entry(name), expected.is_some(), "{name}");
        }
        assert_eq!(
            RootEntry::backup_of("upgrade_backup_1.pg_upgrade_output.d"),
            Some("upgrade_backup_1")
        );
        assert_eq!(RootEntry::backup_of("base"), None);
    }

    #[test]
    fn work_entries() {
        let cases = [
            ("journal.json", Some(WorkEntry::Journal), false),
            ("lock", Some(WorkEntry::Lock), false),
            ("new", Some(WorkEntry::Staging), true),
            ("old", Some(WorkEntry::OldAside), true),
            ("before.json", Some(WorkEntry::Scratch), true),
            ("update_extensions.sql", Some(WorkEntry::Scratch), true),
            ("options-removed.json", Some(WorkEntry::Scratch), true),
            ("wal-changes.txt", Some(WorkEntry::Scratch), true),
            (
                "upgraded-20261121T101530Z",
                Some(WorkEntry::SetAside),
                false,
            ),
            ("trash-upgrade_backup_1", Some(WorkEntry::Trash), false),
            ("logs", Some(WorkEntry::Logs), false),
            ("failed", None, false),
        ];
        for (name, expected, leftover) in cases {
            let got = WorkEntry::classify(name);
            assert_eq!(got, expected, "{name}");
            assert_eq!(got.is_some_and(|e| e.is_leftover()), leftover, "{name}");
        }
    }

    #[test]
    fn paths() {
        let l = Layout::new(Path::new("/v"));
        let name = backup_name("20261121T101530Z");
        assert_eq!(name, "upgrade_backup_20261121T101530Z");
        assert_eq!(stamp_of(&name), Some("20261121T101530Z"));
        assert_eq!(
            l.partial_backup(&name),
            Path::new("/v/upgrade_backup_20261121T101530Z.partial")
        );
        let log = l.run_log(Some(&name), "x");
        assert_eq!(log, Path::new("/v/upgrade_backup_20261121T101530Z.log"));
        assert_eq!(
            l.pg_upgrade_logs("S"),
            Path::new("/v/.pgup/logs/upgrade-S.pg_upgrade_output.d")
        );
        assert_eq!(
            l.run_log(None, "20261121T101530Z"),
            Path::new("/v/.pgup/logs/upgrade-20261121T101530Z.log")
        );
        assert_eq!(
            l.put_back_record(&name, "json"),
            Path::new("/v/.pgup/logs/upgrade_backup_20261121T101530Z.json")
        );
        assert_eq!(l.trash("trash-x"), l.trash("x"));
        assert_eq!(l.set_aside("S"), Path::new("/v/.pgup/upgraded-S"));
    }
}
