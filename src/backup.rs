//! The `upgrade_backup_<UTC timestamp>` directories that keep old clusters in the same volume
//! (the manual procedure's convention): making one, putting one back, finding and describing
//! them, and the record and log kept beside each.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::failpoint;
use crate::layout::{self, Layout, RootEntry, STAMP_FORMAT, is_pgup_entry};
use crate::location::Location;
use crate::plan::BackupKind;
use crate::tree::{self, Copied, CopyOptions, tree_bytes};

/// A backup directory found on disk.
#[derive(Debug, Clone, Serialize)]
pub struct BackupDir {
    pub name: String,
    #[serde(skip)]
    pub path: PathBuf,
    pub bytes: u64,
    /// From the name's timestamp; the directory's mtime when the name has none.
    pub created: DateTime<Utc>,
}

/// Copies the cluster in `data` to backup `name`: complete, proven the same tree and synced
/// under `<name>.partial`, then renamed, so a directory with the final name is always a whole
/// backup. Mode 0700. Copying over a pre-copy (`options.over`), the `.partial` it left is
/// made exact rather than copied anew; a live copy (`options.live`) is such a first pass only
/// and stays `.partial`.
pub fn make(
    data: &Path,
    layout: &Layout,
    name: &str,
    options: &CopyOptions,
) -> Result<Copied, BackupError> {
    let (backup_dir, partial) = (&layout.backup(name), layout.partial_backup(name));
    // A pre-copy's is kept, for the pass that makes it exact (or the undo).
    let fresh = options.over.is_none();
    if fresh {
        let _ = std::fs::remove_dir_all(&partial);
    }
    let copied = tree::copy_tree(data, &partial, options).inspect_err(|_| {
        if fresh {
            let _ = std::fs::remove_dir_all(&partial);
        }
    })?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o700))
        .map_err(io_at(&partial))?;
    if options.live {
        return Ok(copied);
    }
    tree::same_tree(data, &partial, options.skip)?;
    failpoint::hit("backup-complete");
    std::fs::rename(&partial, backup_dir).map_err(io_at(backup_dir))?;
    tree::sync_dir(layout.root()).map_err(io_at(backup_dir))?;
    Ok(copied)
}

/// Backs up the old cluster's part of `location` (of major `old`) as backup `name` in it, as
/// [`make`] backs up PGDATA.
pub fn make_in(
    location: &Location,
    old: u32,
    name: &str,
    options: &CopyOptions,
) -> Result<Copied, BackupError> {
    let skip = |n: &str| !location.holds(n, old);
    let options = CopyOptions {
        skip: &skip,
        ..*options
    };
    make(&location.host, &location.layout(), name, &options)
}

/// Moves the cluster in `data` (not pgup's entries) into `aside`, created if missing.
/// Renames only: running it again after an interruption finishes it.
pub fn set_aside(data: &Path, aside: &Path) -> Result<(), BackupError> {
    set_aside_but(data, aside, &is_pgup_entry)
}

/// Moves what `location` holds of the clusters of `majors` into `aside`, as [`set_aside`].
pub fn set_aside_in(location: &Location, majors: &[u32], aside: &Path) -> Result<(), BackupError> {
    set_aside_but(&location.host, aside, &|n| {
        !majors.iter().any(|m| location.holds(n, *m))
    })
}

fn set_aside_but(dir: &Path, aside: &Path, keep: &dyn Fn(&str) -> bool) -> Result<(), BackupError> {
    std::fs::create_dir_all(aside).map_err(io_at(aside))?;
    tree::move_entries(dir, aside, keep).map_err(io_at(dir))
}

/// Moves a backup's entries into `data` and gives `data` the backup's owner, mode and times,
/// so `data` is byte-identical to the cluster that was backed up; then removes the empty
/// backup directory. Renames only: running it again after an interruption finishes it.
/// Returns the backup root's metadata (None when it was already put back), for a caller that
/// changes PGDATA's own entries afterwards to apply again.
pub fn put_back(data: &Path, backup_dir: &Path) -> Result<Option<std::fs::Metadata>, BackupError> {
    let mut meta = None;
    if backup_dir.exists() {
        // Before the moves, which change the backup root's own times.
        let root = std::fs::symlink_metadata(backup_dir).map_err(io_at(backup_dir))?;
        tree::move_entries(backup_dir, data, &|_| false).map_err(io_at(backup_dir))?;
        std::fs::remove_dir(backup_dir).map_err(io_at(backup_dir))?;
        tree::set_metadata(data, &root).map_err(io_at(data))?;
        meta = Some(root);
    }
    tree::sync_dir(data).map_err(io_at(data))?;
    Ok(meta)
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.to_owned();
    move |err| BackupError::Io { path, err }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Copy(#[from] tree::TreeError),
    #[error("cannot move {}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
}

impl BackupError {
    /// Whether the copy stopped because it was asked to, not because it failed.
    pub fn stopped(&self) -> bool {
        matches!(self, BackupError::Copy(tree::TreeError::Interrupted { .. }))
    }
}

/// What pgup records beside a backup (`<name>.json`): what is needed to go back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    /// The old cluster's PG_VERSION.
    pub old_major: u32,
    pub new_major: u32,
    /// The image the container ran before the upgrade.
    pub old_image: Option<String>,
    pub container: Option<String>,
    /// PGDATA's path below the mount root ("" when it is the root).
    pub pgdata_below_root: PathBuf,
    pub mode: BackupKind,
    pub created: DateTime<Utc>,
    /// The bootstrap superuser, to check the server after a rollback.
    #[serde(default)]
    pub superuser: Option<String>,
    /// The container's restart policy before pgup kept it aside with none.
    #[serde(default)]
    pub restart_policy: Option<String>,
    /// pg_control's latest checkpoint right after the upgrade: if it moved, the new server
    /// has run since.
    #[serde(default)]
    pub upgraded_checkpoint: Option<String>,
    /// The directories the cluster keeps outside PGDATA, each holding its part of the backup
    /// under the same name.
    #[serde(default)]
    pub locations: Vec<Location>,
    /// When `pgup rollback` put this backup back.
    #[serde(default)]
    pub rolled_back: Option<DateTime<Utc>>,
}

impl Record {
    pub fn read(root: &Path, name: &str) -> std::io::Result<Self> {
        Self::read_file(&Layout::new(root).record(name))
    }

    pub fn read_file(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read(path)?;
        serde_json::from_slice(&text).map_err(std::io::Error::other)
    }

    /// Writes the record durably (temporary file, fsync, rename), readable only by the data
    /// owner.
    pub fn write(&self, root: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
        let path = Layout::new(root).record(&self.name);
        let tmp = path.with_extension("json.tmp");
        private_file(
            &tmp,
            serde_json::to_string_pretty(self)?.as_bytes(),
            uid,
            gid,
        )?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(root)?.sync_all()
    }
}

/// Creates the work directory of `layout` (a mount root's or a location's), owned by the data
/// owner, mode 0700: PostgreSQL's programs write in it as that owner.
pub fn work_dir(layout: &Layout, uid: u32, gid: u32) -> std::io::Result<()> {
    owned_dir(&layout.work(), uid, gid)
}

/// Creates [`Layout::logs`] like the work directory; returns it.
pub fn logs_dir(layout: &Layout, uid: u32, gid: u32) -> std::io::Result<PathBuf> {
    work_dir(layout, uid, gid)?;
    owned_dir(&layout.logs(), uid, gid)?;
    Ok(layout.logs())
}

fn owned_dir(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Moves the record and log of backup `name`, which is gone (put back, or undone), into
/// [`Layout::logs`]: nothing named `upgrade_backup_*` stays without its backup.
pub fn retire_record(layout: &Layout, name: &str, uid: u32, gid: u32) -> std::io::Result<()> {
    logs_dir(layout, uid, gid)?;
    for (from, ext) in [
        (layout.record(name), "json"),
        (layout.backup_log(name), "log"),
    ] {
        if from.exists() {
            std::fs::rename(&from, layout.put_back_record(name, ext))?;
        }
    }
    tree::sync_dir(layout.root())
}

/// Writes a file only its owner (the data owner) can read, synced to disk.
pub fn private_file(path: &Path, content: &[u8], uid: u32, gid: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content)?;
    f.sync_all()?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
}

/// The timestamp a backup's name carries.
fn stamp_of(name: &str) -> Option<DateTime<Utc>> {
    let stamp = layout::stamp_of(name)?;
    NaiveDateTime::parse_from_str(stamp, STAMP_FORMAT)
        .ok()
        .map(|t| t.and_utc())
}

/// Backups directly inside any of `dirs` (the mount root, and PGDATA when that differs),
/// oldest first.
pub fn find(dirs: &[&Path]) -> std::io::Result<Vec<BackupDir>> {
    let mut found: Vec<BackupDir> = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let meta = entry.metadata()?;
            if RootEntry::classify(&name) != Some(RootEntry::Backup)
                || !meta.is_dir()
                || found.iter().any(|b| b.path == entry.path())
            {
                continue;
            }
            let created = stamp_of(&name)
                .unwrap_or_else(|| meta.modified().map(Into::into).unwrap_or_default());
            found.push(BackupDir {
                bytes: tree_bytes(&entry.path(), |_| false)?,
                path: entry.path(),
                name,
                created,
            });
        }
    }
    found.sort_by(|a, b| a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name)));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        let t = stamp_of("upgrade_backup_20261121T101530Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-21T10:15:30+00:00");
        assert!(stamp_of("upgrade_backup_x").is_none());
        assert!(stamp_of("other").is_none());
    }
}
