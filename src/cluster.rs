//! Facts about a PostgreSQL data directory that its files tell without a server: the major
//! version (PG_VERSION), the owner, the size, and whether `postmaster.pid` is present.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use crate::backup::is_backup_name;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "cannot read {path}: {err}; run pgup as a user that can read the data directory (root, usually)"
    )]
    Read { path: PathBuf, err: io::Error },
    #[error(
        "{path} does not hold a PostgreSQL major version ({content:?}); is this a PostgreSQL data directory?"
    )]
    BadVersion { path: PathBuf, content: String },
}

/// A data directory as found on disk.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub dir: PathBuf,
    /// The major version as PG_VERSION writes it: "13", "18", or "9.6".
    pub major: String,
    pub uid: u32,
    pub gid: u32,
    /// postmaster.pid exists: a server runs, or did not shut down cleanly.
    pub postmaster_pid: bool,
}

impl Cluster {
    pub fn open(dir: &Path) -> Result<Self, ClusterError> {
        let read_err = |path: PathBuf| move |err| ClusterError::Read { path, err };
        let version_file = dir.join("PG_VERSION");
        let content =
            std::fs::read_to_string(&version_file).map_err(read_err(version_file.clone()))?;
        let major = content.trim().to_owned();
        if !is_major(&major) {
            return Err(ClusterError::BadVersion {
                path: version_file,
                content,
            });
        }
        let meta = std::fs::metadata(dir).map_err(read_err(dir.to_owned()))?;
        Ok(Self {
            dir: dir.to_owned(),
            major,
            uid: meta.uid(),
            gid: meta.gid(),
            postmaster_pid: dir.join("postmaster.pid").exists(),
        })
    }

    /// Bytes of the cluster, leaving out backups that the seed's convention keeps inside PGDATA.
    pub fn bytes(&self) -> Result<u64, ClusterError> {
        tree_bytes(&self.dir, is_backup_name).map_err(|err| ClusterError::Read {
            path: self.dir.clone(),
            err,
        })
    }
}

fn is_major(s: &str) -> bool {
    let mut parts = s.split('.');
    let whole =
        |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    match (parts.next(), parts.next(), parts.next()) {
        (a, None, None) => whole(a),
        (a, b, None) => whole(a) && whole(b),
        _ => false,
    }
}

/// The apparent size of a tree as `du -sb` counts it: every entry (directories and symlinks
/// too), hard links once, symlinks not followed. Top-level entries named as `skip` says are
/// left out.
pub fn tree_bytes(root: &Path, skip: impl Fn(&str) -> bool) -> io::Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0;
    let walk = WalkDir::new(root)
        .into_iter()
        .filter_entry(|e| e.depth() != 1 || !e.file_name().to_str().is_some_and(&skip));
    for entry in walk {
        let meta = entry?.metadata()?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.len();
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors() {
        for ok in ["13", "18", "9.6"] {
            assert!(is_major(ok), "{ok}");
        }
        for bad in ["", "x", "9.", "9.6.1", "13\n14"] {
            assert!(!is_major(bad), "{bad}");
        }
    }

    #[test]
    fn sizes_count_hard_links_once_and_skip_backups() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::write(root.join("a"), vec![0u8; 1000]).unwrap();
        std::fs::hard_link(root.join("a"), root.join("b")).unwrap();
        std::fs::create_dir(root.join("upgrade_backup_20261121T101530Z")).unwrap();
        std::fs::write(
            root.join("upgrade_backup_20261121T101530Z/big"),
            vec![0u8; 5000],
        )
        .unwrap();
        let dir_len = std::fs::metadata(root).unwrap().len();
        assert_eq!(tree_bytes(root, is_backup_name).unwrap(), dir_len + 1000);
        assert!(tree_bytes(root, |_| false).unwrap() >= dir_len + 6000);
    }
}
