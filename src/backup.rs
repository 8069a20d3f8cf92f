//! The `upgrade_backup_<UTC timestamp>` directories that keep old clusters in the same volume
//! (the manual procedure's convention), and how to find and describe them.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use crate::tree::tree_bytes;

pub const PREFIX: &str = "upgrade_backup_";
const STAMP: &str = "%Y%m%dT%H%M%SZ";

pub fn is_backup_name(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// A backup directory found on disk.
#[derive(Debug, Clone, Serialize)]
pub struct Backup {
    pub name: String,
    #[serde(skip)]
    pub path: PathBuf,
    pub bytes: u64,
    /// From the name's timestamp; the directory's mtime when the name has none.
    pub created: DateTime<Utc>,
}

/// The timestamp a backup's name carries.
fn stamp_of(name: &str) -> Option<DateTime<Utc>> {
    let stamp = name.strip_prefix(PREFIX)?;
    NaiveDateTime::parse_from_str(stamp, STAMP)
        .ok()
        .map(|t| t.and_utc())
}

/// Backups directly inside any of `dirs` (the mount root, and PGDATA when that differs),
/// oldest first.
pub fn find(dirs: &[&Path]) -> std::io::Result<Vec<Backup>> {
    let mut found: Vec<Backup> = Vec::new();
    for dir in dirs {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let meta = entry.metadata()?;
            if !is_backup_name(&name)
                || !meta.is_dir()
                || found.iter().any(|b| b.path == entry.path())
            {
                continue;
            }
            let created = stamp_of(&name)
                .unwrap_or_else(|| meta.modified().map(Into::into).unwrap_or_default());
            found.push(Backup {
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
