//! What the operator asked for, as plain values: the command line is resolved into these once
//! (in `cli`), and everything below takes them; a resumed upgrade rebuilds its [`Intent`]
//! from the journal. No command-line parser here.

use std::path::PathBuf;
use std::time::Duration;

/// Where the data is, as the operator named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// A container whose volume or bind mount holds PGDATA.
    Container(String),
    /// A named Docker volume.
    Volume(String),
    /// A host directory (a bind mount's source), as typed.
    DataDir(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub place: Place,
    /// PGDATA below the mount root (with a volume or a directory only).
    pub pgdata_subdir: Option<PathBuf>,
    /// With a volume or a directory: where the server's container mounts what else it uses
    /// (a tablespace's or the WAL's volume), as (path in the container, volume or host
    /// directory).
    pub locations: Vec<(PathBuf, String)>,
}

impl TargetSpec {
    /// A directory names the data without Docker: the one target that works without an engine.
    pub fn is_data_dir(&self) -> bool {
        matches!(self.place, Place::DataDir(_))
    }

    /// The target flags as the operator would type them, for hints ("--container db").
    pub fn flags(&self) -> String {
        let mut flags = match &self.place {
            Place::Container(c) => format!("--container {c}"),
            Place::Volume(v) => format!("--volume {v}"),
            Place::DataDir(d) => format!("--data-dir {}", d.display()),
        };
        if let Some(sub) = &self.pgdata_subdir {
            flags.push_str(&format!(" --pgdata-subdir {}", sub.display()));
        }
        for (path, source) in &self.locations {
            flags.push_str(&format!(" --location {}={source}", path.display()));
        }
        flags
    }
}

/// How the operator asked pg_upgrade to put the old relation files into the new cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// The faster for the pair, where it is safe ([`crate::plan::transfer`]).
    Auto,
    Link,
    Swap,
}

/// How the operator asked the old cluster to be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Clone where the filesystem supports reflinks, else copy.
    Auto,
    Copy,
    Clone,
    /// Keep no backup (with --no-backup).
    Link,
}

/// Whether the upgrade rebuilds the text indexes whose collation's library (glibc, ICU)
/// differs between the old and the new server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reindex {
    /// When the library changed (or the old one is unknown).
    #[default]
    Auto,
    /// Every index that depends on a libc or ICU collation.
    Always,
    /// None: the report and `status` say they still need it.
    Never,
}

/// What the verification proves between the old cluster and the new one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// The catalogs' structure compared, and every user relation's files proven to be the old
    /// cluster's (same inode and size): no table is scanned while the database is down.
    #[default]
    Files,
    /// That, and every table's rows counted in both clusters (two full scans while down).
    Counts,
}

impl Verify {
    /// Whether rows are counted.
    pub fn counts(self) -> bool {
        self == Self::Counts
    }
}

/// The upgrade asked for: what `check`, the plan and a resumed upgrade all start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub to: u32,
    /// The upgrade image; None: a local image labelled with both majors.
    pub image: Option<String>,
    pub mode: Mode,
    /// --no-backup; None for `check`, which only tells what link would need.
    pub no_backup: Option<bool>,
    /// The new major's server image: the toolbox is assembled from it, and the container
    /// re-created on it.
    pub new_image: Option<String>,
    /// The old major's server image (default: the container's).
    pub old_image: Option<String>,
    /// Other containers running on the data (a backup agent) are stopped first and started
    /// again at the end, instead of refusing.
    pub stop_others: bool,
    /// Without an engine: the operator says no server runs on the data, whatever its
    /// postmaster.pid says.
    pub server_stopped: bool,
    pub reindex: Reindex,
}

#[derive(Debug, Clone)]
pub struct Upgrade {
    pub target: TargetSpec,
    pub intent: Intent,
    /// pg_upgrade's --jobs.
    pub jobs: u32,
    pub strip_unknown_options: bool,
    pub verify: Verify,
    /// --no-precopy: the whole backup is copied once the server has stopped.
    pub no_precopy: bool,
    /// --precopy-rate: bytes a second the copy while the server serves may read.
    pub precopy_rate: Option<u64>,
    pub transfer: Transfer,
    pub hooks: Option<HookSpec>,
    pub yes: bool,
}

/// --hooks and what goes with it.
#[derive(Debug, Clone)]
pub struct HookSpec {
    pub dir: PathBuf,
    pub timeout: Duration,
    /// --keep-on-hook-failure (an upgrade's only).
    pub keep_on_failure: bool,
}

#[derive(Debug, Clone)]
pub struct Rollback {
    pub target: TargetSpec,
    pub hooks: Option<HookSpec>,
    /// The backup to restore; None: the newest.
    pub backup: Option<String>,
    pub discard_upgraded: bool,
    /// As [`Intent::stop_others`].
    pub stop_others: bool,
    pub yes: bool,
}

#[derive(Debug, Clone)]
pub struct Cleanup {
    pub target: TargetSpec,
    /// Keep the newest N backups.
    pub keep: Option<usize>,
    pub older_than: Option<Duration>,
    pub dry_run: bool,
    pub yes: bool,
}

/// A bundle and what to verify it against.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub file: PathBuf,
    /// A sha256sum file or the hex digest; None: FILE.sha256 when it exists.
    pub sha256: Option<String>,
    /// The minisign signature; None with a key: FILE.minisig.
    pub signature: Option<PathBuf>,
    /// The minisign public key, or a file holding it.
    pub public_key: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_as_typed() {
        let spec = |place, sub: Option<&str>| TargetSpec {
            place,
            pgdata_subdir: sub.map(PathBuf::from),
            locations: vec![],
        };
        assert_eq!(
            spec(Place::Container("db".into()), None).flags(),
            "--container db"
        );
        assert_eq!(
            spec(Place::Volume("v".into()), Some("18/docker")).flags(),
            "--volume v --pgdata-subdir 18/docker"
        );
        assert_eq!(
            spec(Place::DataDir("/srv/pg".into()), None).flags(),
            "--data-dir /srv/pg"
        );
        let mut with = spec(Place::Volume("v".into()), None);
        with.locations = vec![("/tblspc".into(), "ts".into())];
        assert_eq!(with.flags(), "--volume v --location /tblspc=ts");
    }
}
