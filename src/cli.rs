//! The command line: clap definitions only. Values are validated here where clap can do it;
//! everything that needs the disk or Docker is resolved later, in `target`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

const EXAMPLES: &str = "\
Examples:
  pgup status --container db
  pgup check --container db --to 17
  pgup upgrade --container db --to 17 --new-image pgup/postgres:17
  pgup rollback --container db
  pgup cleanup --volume db_data --keep 1 --dry-run

Exit codes:
  0  success
  1  failure: the message says what is wrong and what to do next
  2  the command line is wrong";

#[derive(Debug, Parser)]
#[command(
    name = "pgup",
    version,
    about = "Upgrade the PostgreSQL major version of a database running in Docker, and go back.",
    after_help = EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the cluster's major version, sizes, owner, server state and backups.
    Status(StatusArgs),
    /// Verify every precondition of an upgrade, changing nothing.
    Check(CheckArgs),
    /// Upgrade to a newer major with pg_upgrade, keeping the old cluster as a backup.
    Upgrade(UpgradeArgs),
    /// Go back to the cluster kept by an upgrade, and to the old image.
    Rollback(RollbackArgs),
    /// Remove backups and leftovers of earlier runs.
    Cleanup(CleanupArgs),
    /// Save, verify, load and list upgrade images for hosts without a registry.
    #[command(subcommand)]
    Image(ImageCommand),
}

/// Where the cluster is: exactly one of --container, --volume, --data-dir.
#[derive(Debug, Clone, Args)]
#[group(skip)]
#[command(group(ArgGroup::new("target").required(true).multiple(false)
    .args(["container", "volume", "data_dir"])))]
pub struct TargetArgs {
    /// A container whose volume or bind mount holds PGDATA.
    #[arg(long, value_name = "NAME|ID")]
    pub container: Option<String>,

    /// A named Docker volume holding the data directory.
    #[arg(long, value_name = "NAME")]
    pub volume: Option<String>,

    /// A host directory holding the data directory (a bind mount's source).
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<PathBuf>,

    /// With --volume or --data-dir: PGDATA's path below the mount root (e.g. 18/docker).
    #[arg(long, value_name = "REL", conflicts_with = "container")]
    pub pgdata_subdir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
}

/// How the old cluster is kept (pg_upgrade itself always links the files it moves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// clone where the filesystem supports reflinks, else copy
    Auto,
    /// back up with a full copy: needs free space for the whole data
    Copy,
    /// back up with reflinks: fast, little space (XFS, btrfs)
    Clone,
    /// keep no backup (needs --no-backup): fastest, no rollback
    Link,
}

#[derive(Debug, Args)]
pub struct UpgradePlanArgs {
    /// The major to upgrade to, e.g. 17.
    #[arg(long, value_name = "MAJOR")]
    pub to: u32,

    /// The upgrade image holding both majors' binaries (default: a local image labelled for both).
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,

    /// How the old cluster is kept: a full copy, a reflink copy, or (link) not at all.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,

    /// The server image of the new major to run the container on afterwards.
    #[arg(long, value_name = "IMAGE")]
    pub new_image: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub plan: UpgradePlanArgs,
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub plan: UpgradePlanArgs,

    /// Parallel jobs for pg_upgrade (default: the number of CPUs).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub jobs: Option<u32>,

    /// Keep no copy of the old cluster: no rollback will be possible (needs --yes).
    #[arg(long)]
    pub no_backup: bool,

    /// With --no-backup: remove catalog options the new major does not know from the old
    /// cluster (with a backup this is done anyway, and the backup keeps them).
    #[arg(long, requires = "no_backup")]
    pub strip_unknown_options: bool,

    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// The backup to restore (default: the newest upgrade_backup_*).
    #[arg(long, value_name = "NAME")]
    pub backup: Option<String>,

    /// Remove the upgraded cluster instead of setting it aside.
    #[arg(long)]
    pub discard_upgraded: bool,

    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Keep the newest N backups.
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,

    /// Only remove backups older than this (e.g. 7d, 12h, 30m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub older_than: Option<Duration>,

    /// List what would be removed, and remove nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// Where a bundle's checksum and signature come from.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The image bundle (`docker save` output, optionally gzip-compressed).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Expected SHA-256: a sha256sum file or the hex digest (default: FILE.sha256).
    #[arg(long, value_name = "FILE|HEX")]
    pub sha256: Option<String>,

    /// A minisign signature of FILE (default with --public-key: FILE.minisig).
    #[arg(long, value_name = "FILE", requires = "public_key")]
    pub signature: Option<PathBuf>,

    /// The minisign public key: the key itself or a file holding it.
    #[arg(long, value_name = "KEY|FILE")]
    pub public_key: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Write images to a tarball and its .sha256 beside it.
    Save {
        #[arg(value_name = "IMAGE", required = true)]
        images: Vec<String>,
        #[arg(short = 'o', long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Check a bundle's checksum and signature, loading nothing.
    Verify(VerifyArgs),
    /// Verify a bundle, then load it into Docker.
    Load {
        #[command(flatten)]
        verify: VerifyArgs,
        /// Load a bundle that has neither checksum nor signature.
        #[arg(long)]
        allow_unverified: bool,
    },
    /// List local upgrade images and the upgrades each can do.
    List,
}

/// Parses "7d", "12h", "30m" or "45s".
fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration; write a number and a unit: 7d, 12h, 30m or 45s");
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(n * secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("7 days").is_err());
    }

    #[test]
    fn exactly_one_target() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["pgup", "status"], args].concat());
        assert!(parse(&["--container", "db"]).is_ok());
        assert!(parse(&[]).is_err());
        assert!(parse(&["--container", "db", "--volume", "v"]).is_err());
        assert!(parse(&["--container", "db", "--pgdata-subdir", "x"]).is_err());
        assert!(parse(&["--volume", "v", "--pgdata-subdir", "18/docker"]).is_ok());
    }
}
