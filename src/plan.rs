//! The upgrade decided before anything changes: how the backup is made, how much space that
//! needs, and the steps with their paths and sizes. Pure: built from the facts `check`
//! gathered, shown to the operator for confirmation, and unit-tested.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::HumanBytes;
use serde::{Deserialize, Serialize};

use crate::cli::Mode;

/// How the old cluster is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backup {
    /// A full copy of every byte.
    Copy,
    /// Reflink copies: no data is duplicated until either side changes.
    Clone,
    /// No backup (--no-backup): no rollback.
    None,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModeError {
    #[error(
        "--mode link shares the data files between the old and the new cluster, so no independent backup can be kept; add --no-backup --yes to accept that, or use --mode copy or clone"
    )]
    LinkNeedsNoBackup,
    #[error(
        "the filesystem holding {} does not support reflinks, which --mode clone needs; use --mode copy or auto",
        .0.display()
    )]
    NoReflinks(PathBuf),
}

/// Decides how the backup is made. pg_upgrade itself always links: the live files are
/// replaced by the new cluster's, and the backup is an independent copy made beforehand.
pub fn backup_kind(
    mode: Mode,
    no_backup: bool,
    reflinks: bool,
    root: &Path,
) -> Result<Backup, ModeError> {
    match (mode, no_backup) {
        (_, true) => Ok(Backup::None),
        (Mode::Link, false) => Err(ModeError::LinkNeedsNoBackup),
        (Mode::Auto, false) if reflinks => Ok(Backup::Clone),
        (Mode::Auto | Mode::Copy, false) => Ok(Backup::Copy),
        (Mode::Clone, false) if reflinks => Ok(Backup::Clone),
        (Mode::Clone, false) => Err(ModeError::NoReflinks(root.to_owned())),
    }
}

/// Free space an upgrade needs beside the data: the backup, plus room for the new cluster's
/// catalogs and WAL (its relation files are hard links to the old ones).
pub fn need_bytes(backup: Backup, data_bytes: u64) -> u64 {
    let reserve = (data_bytes / 20).max(256 * 1024 * 1024);
    match backup {
        Backup::Copy => data_bytes + reserve,
        Backup::Clone | Backup::None => reserve,
    }
}

/// The name of the backup made at `stamp` (UTC, e.g. 20261121T101530Z).
pub fn backup_name(stamp: &str) -> String {
    format!("{}{stamp}", crate::backup::PREFIX)
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub target: String,
    pub old_major: u32,
    pub new_major: u32,
    pub data_dir: PathBuf,
    pub data_bytes: u64,
    pub free_bytes: u64,
    pub need_bytes: u64,
    pub backup: Backup,
    /// Where the old cluster is kept (in the same volume as the data).
    pub backup_dir: Option<PathBuf>,
    pub image: String,
    pub new_image: Option<String>,
    /// Running containers that will be stopped first.
    pub stop: Vec<String>,
    pub jobs: u32,
    /// Settings in the old configuration that will be changed, as one line each.
    pub config_changes: Vec<String>,
}

impl Plan {
    /// The steps, in order, as the operator reads them.
    pub fn steps(&self) -> Vec<String> {
        let mut steps = Vec::new();
        for c in &self.stop {
            steps.push(format!("stop container {c}"));
        }
        steps.push("run pg_upgrade --check against a throwaway view of the data".into());
        match (&self.backup, &self.backup_dir) {
            (Backup::None, _) | (_, None) => steps.push("keep NO backup of the old cluster".into()),
            (kind, Some(dir)) => steps.push(format!(
                "{} the old cluster ({}) to {}",
                if *kind == Backup::Clone {
                    "reflink-copy"
                } else {
                    "copy"
                },
                HumanBytes(self.data_bytes),
                dir.display()
            )),
        }
        steps.push(format!(
            "initdb PostgreSQL {} with the old cluster's settings, then pg_upgrade --link --jobs {} in image {}",
            self.new_major, self.jobs, self.image
        ));
        if !self.config_changes.is_empty() {
            steps.push(format!(
                "adjust {} setting(s) the new major no longer accepts",
                self.config_changes.len()
            ));
        }
        steps.push(format!(
            "put the new cluster in place at {}",
            self.data_dir.display()
        ));
        steps.push(
            "start it privately: update extensions, vacuumdb --analyze-in-stages, verify the data"
                .into(),
        );
        match &self.new_image {
            Some(image) => steps.push(format!("re-create the container on {image} and start it")),
            None => steps.push("leave the container stopped (no --new-image)".into()),
        }
        steps
    }

    /// A rough duration: copy throughput and fixed costs seen on small machines.
    pub fn estimate(&self) -> Duration {
        const COPY_BYTES_PER_SEC: u64 = 200 * 1024 * 1024;
        const SCAN_BYTES_PER_SEC: u64 = 1024 * 1024 * 1024;
        let copy = if self.backup == Backup::Copy {
            self.data_bytes / COPY_BYTES_PER_SEC
        } else {
            0
        };
        Duration::from_secs(20 + copy + self.data_bytes / SCAN_BYTES_PER_SEC)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Upgrade {} from PostgreSQL {} to {}:",
            self.target, self.old_major, self.new_major
        )?;
        for (i, step) in self.steps().iter().enumerate() {
            writeln!(f, "  {}. {step}", i + 1)?;
        }
        writeln!(
            f,
            "Space: needs {} free, {} available. Estimated time: about {} s.",
            HumanBytes(self.need_bytes),
            HumanBytes(self.free_bytes),
            self.estimate().as_secs()
        )?;
        for change in &self.config_changes {
            writeln!(f, "  setting: {change}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * 1024 * 1024;

    #[test]
    fn modes() {
        let root = Path::new("/v");
        assert_eq!(
            backup_kind(Mode::Auto, false, true, root),
            Ok(Backup::Clone)
        );
        assert_eq!(
            backup_kind(Mode::Auto, false, false, root),
            Ok(Backup::Copy)
        );
        assert_eq!(backup_kind(Mode::Copy, false, true, root), Ok(Backup::Copy));
        assert_eq!(
            backup_kind(Mode::Clone, false, true, root),
            Ok(Backup::Clone)
        );
        assert_eq!(
            backup_kind(Mode::Clone, false, false, root),
            Err(ModeError::NoReflinks(root.into()))
        );
        assert_eq!(
            backup_kind(Mode::Link, false, true, root),
            Err(ModeError::LinkNeedsNoBackup)
        );
        assert_eq!(backup_kind(Mode::Link, true, false, root), Ok(Backup::None));
        assert_eq!(backup_kind(Mode::Copy, true, false, root), Ok(Backup::None));
    }

    #[test]
    fn space() {
        assert_eq!(need_bytes(Backup::Copy, 10 * GIB), 10 * GIB + GIB / 2);
        assert_eq!(need_bytes(Backup::Clone, 10 * GIB), GIB / 2);
        assert_eq!(need_bytes(Backup::None, GIB), 256 * 1024 * 1024);
        assert_eq!(need_bytes(Backup::Copy, 0), 256 * 1024 * 1024);
    }

    #[test]
    fn steps_name_paths_and_sizes() {
        let plan = Plan {
            target: "container db".into(),
            old_major: 13,
            new_major: 17,
            data_dir: "/v/_data".into(),
            data_bytes: GIB,
            free_bytes: 5 * GIB,
            need_bytes: need_bytes(Backup::Copy, GIB),
            backup: Backup::Copy,
            backup_dir: Some("/v/_data/upgrade_backup_20261121T101530Z".into()),
            image: "pgup/upgrade:latest".into(),
            new_image: Some("pgup/postgres:17".into()),
            stop: vec!["db".into()],
            jobs: 2,
            config_changes: vec![],
        };
        let text = plan.to_string();
        assert!(text.contains("1. stop container db"), "{text}");
        assert!(text.contains(
            "copy the old cluster (1.00 GiB) to /v/_data/upgrade_backup_20261121T101530Z"
        ));
        assert!(text.contains("re-create the container on pgup/postgres:17"));
        assert!(
            text.contains("Space: needs 1.25 GiB free, 5.00 GiB available"),
            "{text}"
        );
        assert_eq!(
            backup_name("20261121T101530Z"),
            "upgrade_backup_20261121T101530Z"
        );
    }
}
