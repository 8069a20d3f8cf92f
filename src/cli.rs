//! The command line: clap's definitions, and their resolution into plain `settings` once,
//! here, so that nothing below knows clap. Values are validated here where no disk or Docker
//! is needed; what needs them is resolved later, in `target`.

use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::error::{Kind, UsageError};
use crate::settings::{self, Intent, Place, TargetSpec};

const EXAMPLES: &str = "\
Examples:
  pgup status --container db
  pgup check --container db --to 17
  pgup upgrade --container db --to 17 --new-image pgup/postgres:17
  pgup upgrade --container db --to 17 --new-image pgup/postgres:17 --precopy-rate 100M
  pgup upgrade --container db --to 17 --new-image pgup/postgres:17 --hooks /etc/pgup/hooks
  pgup rollback --container db
  pgup cleanup --volume db_data --keep 1 --dry-run

Exit codes:
  0    success
  1    failure: the message says what is wrong and what to do next
  2    the command line is wrong
  3    a check refused the operation; nothing was changed
  130  interrupted (Ctrl-C, SIGTERM): the message says how to finish or undo
With --json, a failure prints {\"error\": ..., \"kind\": \"error|usage|refused|interrupted\"}.";

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
    /// The entrypoint of upgrade-capable images: upgrades older data when PGUP_UPGRADE=yes,
    /// then runs the server image's own entrypoint.
    #[command(after_help = ENTRYPOINT_HELP)]
    Entrypoint(EntrypointArgs),
}

const ENTRYPOINT_HELP: &str = "\
Environment:
  PGUP_UPGRADE=yes       upgrade PGDATA when it holds an older major, then start the server
  PGUP_AUTO_UPGRADE=yes  the same, whenever older data is found (no request to switch it off)
  PGUP_TO=17             the major to upgrade to (default: the newest the image holds)
  PGUP_ONESHOT=yes       exit 0 after the upgrade instead of starting the server
  PGUP_SERVER_STOPPED=yes  no server runs on the data anywhere, though its postmaster.pid is there
  PGUP_REINDEX=never     pgup upgrade --reindex (auto, always, never): text indexes whose
                         collation's library (glibc, ICU) changed are rebuilt by default
  PGUP_VERIFY=counts     pgup upgrade --verify (files, counts): also count every table's rows
Without PGUP_UPGRADE, older data makes it exit 3 with one line, changing nothing.

Example (what the images pgup assembles run):
  pgup entrypoint -- docker-entrypoint.sh postgres";

#[derive(Debug, Args)]
pub struct EntrypointArgs {
    /// The server image's entrypoint and command, run (exec) once the data is current.
    #[arg(last = true, value_name = "SERVER")]
    pub server: Vec<String>,
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

    /// With --volume or --data-dir: what the server's container mounts at PATH (a volume
    /// name or a host directory), for a tablespace or WAL directory kept there; repeatable.
    #[arg(long, value_name = "PATH=VOLUME|DIR", conflicts_with = "container")]
    pub location: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: TargetArgs,
}

/// How the old cluster is kept (pg_upgrade itself always links the files it moves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// clone where the filesystem supports reflinks, else copy
    Auto,
    /// back up with a full copy: needs free space for the whole data
    Copy,
    /// back up with reflinks: fast, little space (XFS, btrfs)
    Clone,
    /// keep no backup (needs --no-backup): fastest, no rollback
    Link,
}

/// How pg_upgrade puts the old relation files into the new cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TransferArg {
    /// swap where pgup may (into 18 or later, with a backup), else link
    Auto,
    /// hard-link every file (pg_upgrade --link)
    Link,
    /// move the directories (pg_upgrade --swap; new major 18 or later, with a backup)
    Swap,
}

impl From<TransferArg> for settings::Transfer {
    fn from(t: TransferArg) -> Self {
        match t {
            TransferArg::Auto => Self::Auto,
            TransferArg::Link => Self::Link,
            TransferArg::Swap => Self::Swap,
        }
    }
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
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    pub mode: ModeArg,

    /// The new major's server image: pgup assembles its upgrade toolbox from it and the old
    /// server image, and re-creates the container on it.
    #[arg(long, value_name = "IMAGE")]
    pub new_image: Option<String>,

    /// The old major's server image, for --volume and --data-dir (default: the container's).
    #[arg(
        long,
        value_name = "IMAGE",
        requires = "new_image",
        conflicts_with = "image"
    )]
    pub old_image: Option<String>,

    /// Stop the other containers running on the data (a backup agent, say) first, and start
    /// them again at the end, instead of refusing.
    #[arg(long)]
    pub stop_others: bool,

    /// Without a Docker engine (inside a container): no server runs on the data anywhere,
    /// though its postmaster.pid is there (the server was killed). pgup cannot see other
    /// containers from inside one, so it refuses such a cluster without this.
    #[arg(long)]
    pub server_stopped: bool,

    /// Rebuild the text indexes whose collation's library (glibc, ICU) the new image changes:
    /// auto when it changed (or the old image is unknown), always, or never (the report and
    /// `status` then say they still need it).
    #[arg(long, value_enum, default_value_t = ReindexArg::Auto)]
    pub reindex: ReindexArg,
}

/// When the upgrade rebuilds text indexes (`--reindex`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReindexArg {
    /// when the C library or ICU differs between the old and the new image
    Auto,
    /// every index on a libc or ICU collation
    Always,
    /// none: they are listed as still needing it
    Never,
}

/// What the verification proves (`--verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VerifyArg {
    /// catalogs compared, relation files shown to be the old cluster's
    Files,
    /// that, and every table's rows counted in both clusters
    Counts,
}

impl From<VerifyArg> for settings::Verify {
    fn from(arg: VerifyArg) -> Self {
        match arg {
            VerifyArg::Files => Self::Files,
            VerifyArg::Counts => Self::Counts,
        }
    }
}

impl From<ReindexArg> for settings::Reindex {
    fn from(arg: ReindexArg) -> Self {
        match arg {
            ReindexArg::Auto => Self::Auto,
            ReindexArg::Always => Self::Always,
            ReindexArg::Never => Self::Never,
        }
    }
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

    /// What proves the new cluster holds the old one's data: files (the catalogs compared, and
    /// every relation's files shown to be the old cluster's, no table scanned while down), or
    /// counts (that, and every table's rows counted in both clusters while down).
    #[arg(long, value_enum, default_value_t = VerifyArg::Files)]
    pub verify: VerifyArg,

    /// Copy the backup only once the server has stopped, as a whole, instead of first while it
    /// serves and then, after the stop, only what changed.
    #[arg(long)]
    pub no_precopy: bool,

    /// At most this much a second read by the copy of the backup while the server serves
    /// (e.g. 50M, 1G; K, M and G count 1024s; default: as fast as the disk goes).
    #[arg(long, value_name = "RATE", value_parser = parse_rate, conflicts_with = "no_precopy")]
    pub precopy_rate: Option<u64>,

    /// How pg_upgrade puts the old relation files into the new cluster: swap moves whole
    /// directories (faster with many relations; it uses up the old cluster, so only with a
    /// backup, and only into 18 or later), link hard-links every file.
    #[arg(long, value_enum, default_value_t = TransferArg::Auto)]
    pub transfer: TransferArg,

    #[command(flatten)]
    pub hooks: HookArgs,

    /// When the post-upgrade hook fails, leave the new cluster serving instead of putting the
    /// old one back.
    #[arg(long, requires = "hooks")]
    pub keep_on_hook_failure: bool,

    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// The site's hooks.
#[derive(Debug, Args)]
pub struct HookArgs {
    /// A directory of executables named after phases (pre-check, pre-backup, post-backup,
    /// pre-upgrade, post-upgrade, pre-rollback, post-rollback, end), run at those points;
    /// see docs/hooks.md.
    #[arg(long, value_name = "DIR", env = "PGUP_HOOKS_DIR")]
    pub hooks: Option<PathBuf>,

    /// How long a hook may run before it is killed and counts as failed (e.g. 30s, 10m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10m", requires = "hooks")]
    pub hook_timeout: Duration,
}

impl HookArgs {
    fn spec(self, keep_on_failure: bool) -> Option<settings::HookSpec> {
        self.hooks.map(|dir| settings::HookSpec {
            dir,
            timeout: self.hook_timeout,
            keep_on_failure,
        })
    }
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub hooks: HookArgs,

    /// The backup to restore (default: the newest upgrade_backup_*).
    #[arg(long, value_name = "NAME")]
    pub backup: Option<String>,

    /// Remove the upgraded cluster instead of setting it aside.
    #[arg(long)]
    pub discard_upgraded: bool,

    /// Stop the other containers running on the data first, and start them again at the end,
    /// instead of refusing.
    #[arg(long)]
    pub stop_others: bool,

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
        /// The tarball (gzip-compressed when it ends in .gz or .tgz); - for standard output.
        /// A path that exists must be a regular file.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: PathBuf,
        /// A file to carry in the bundle beside the images (the fleet collection's tarball):
        /// signed with it, and written out by `pgup image verify --extract` once it verifies.
        #[arg(long, value_name = "FILE")]
        include: Vec<PathBuf>,
    },
    /// Check a bundle's checksum and signature, loading nothing.
    #[command(
        after_help = "Example:\n  pgup image verify upgrade-17.tar --public-key vendor.pub --extract ./fleet"
    )]
    Verify {
        #[command(flatten)]
        verify: VerifyArgs,
        /// Once the bundle verifies, write the files it carries (pgup image save --include)
        /// into DIR. Only with --public-key: they are code to run (a collection).
        #[arg(long, value_name = "DIR", requires = "public_key")]
        extract: Option<PathBuf>,
    },
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
    /// Assemble an upgrade image from the old and the new major's server images.
    #[command(
        after_help = "Example:\n  pgup image assemble --old postgis/postgis:13-3.4 --new postgis/postgis:17-3.5 -t site/upgrade:13-17"
    )]
    Assemble {
        /// The old major's server image.
        #[arg(long, value_name = "IMAGE")]
        old: String,
        /// The new major's server image.
        #[arg(long, value_name = "IMAGE")]
        new: String,
        /// The name to give it (default: pgup/toolbox:<old>-<new>-<hash of both images>).
        #[arg(short = 't', long, value_name = "NAME")]
        tag: Option<String>,
    },
}

/// A clap error: its own message (and with --json a document saying so), its exit status.
pub fn reject(e: clap::Error) -> ExitCode {
    if e.use_stderr() && std::env::args().any(|a| a == "--json") {
        // The message up to clap's usage lines, on one line.
        let text = e.to_string();
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
            .filter(|l| !l.is_empty())
            .collect();
        let line = lines.join(" ");
        let line = line.strip_prefix("error: ").unwrap_or(&line);
        println!(
            "{}",
            serde_json::json!({ "error": line, "kind": Kind::Usage })
        );
    }
    let _ = e.print();
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
}

impl TargetArgs {
    pub fn resolve(self) -> Result<TargetSpec, UsageError> {
        let place = match (self.container, self.volume, self.data_dir) {
            (Some(c), _, _) => Place::Container(c),
            (_, Some(v), _) => Place::Volume(v),
            (_, _, Some(d)) => Place::DataDir(d),
            _ => unreachable!("clap requires exactly one target"),
        };
        let pgdata_subdir = self.pgdata_subdir.map(checked_subdir).transpose()?;
        let locations = self
            .location
            .iter()
            .map(|l| checked_location(l))
            .collect::<Result<_, _>>()?;
        Ok(TargetSpec {
            place,
            pgdata_subdir,
            locations,
        })
    }
}

/// --pgdata-subdir stays inside the mount.
fn checked_subdir(p: PathBuf) -> Result<PathBuf, UsageError> {
    let inside = p
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if inside && p.components().next().is_some() {
        Ok(p)
    } else {
        Err(UsageError(format!(
            "--pgdata-subdir {p:?} must be a relative path inside the mount, without `..`"
        )))
    }
}

/// --location PATH=SOURCE: an absolute path in the container, and a volume or host directory.
fn checked_location(arg: &str) -> Result<(PathBuf, String), UsageError> {
    match arg.split_once('=') {
        Some((path, source))
            if path.starts_with('/')
                && !source.is_empty()
                && !Path::new(path)
                    .components()
                    .any(|c| c == Component::ParentDir) =>
        {
            Ok((PathBuf::from(path), source.to_owned()))
        }
        _ => Err(UsageError(format!(
            "--location {arg:?} must be PATH=SOURCE: the absolute path where the server's container mounts it, and the volume name or host directory mounted there (e.g. --location /tblspc=db_tblspc)"
        ))),
    }
}

impl From<ModeArg> for settings::Mode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Auto => Self::Auto,
            ModeArg::Copy => Self::Copy,
            ModeArg::Clone => Self::Clone,
            ModeArg::Link => Self::Link,
        }
    }
}

impl UpgradePlanArgs {
    fn intent(self, no_backup: Option<bool>) -> Intent {
        Intent {
            to: self.to,
            image: self.image,
            mode: self.mode.into(),
            no_backup,
            new_image: self.new_image,
            old_image: self.old_image,
            stop_others: self.stop_others,
            server_stopped: self.server_stopped,
            reindex: self.reindex.into(),
        }
    }
}

impl CheckArgs {
    pub fn resolve(self) -> Result<(TargetSpec, Intent), UsageError> {
        Ok((self.target.resolve()?, self.plan.intent(None)))
    }
}

impl UpgradeArgs {
    pub fn resolve(self) -> Result<settings::Upgrade, UsageError> {
        if self.no_backup && !self.yes {
            return Err(UsageError(
                "--no-backup keeps no copy of the old cluster, so there will be no rollback; add --yes to confirm that".into(),
            ));
        }
        let jobs = self
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
        Ok(settings::Upgrade {
            target: self.target.resolve()?,
            intent: self.plan.intent(Some(self.no_backup)),
            jobs,
            strip_unknown_options: self.strip_unknown_options,
            verify: self.verify.into(),
            no_precopy: self.no_precopy,
            precopy_rate: self.precopy_rate,
            transfer: self.transfer.into(),
            hooks: self.hooks.spec(self.keep_on_hook_failure),
            yes: self.yes,
        })
    }
}

impl RollbackArgs {
    pub fn resolve(self) -> Result<settings::Rollback, UsageError> {
        Ok(settings::Rollback {
            target: self.target.resolve()?,
            hooks: self.hooks.spec(false),
            backup: self.backup,
            discard_upgraded: self.discard_upgraded,
            stop_others: self.stop_others,
            yes: self.yes,
        })
    }
}

impl CleanupArgs {
    pub fn resolve(self) -> Result<settings::Cleanup, UsageError> {
        Ok(settings::Cleanup {
            target: self.target.resolve()?,
            keep: self.keep,
            older_than: self.older_than,
            dry_run: self.dry_run,
            yes: self.yes,
        })
    }
}

impl From<VerifyArgs> for settings::Bundle {
    fn from(args: VerifyArgs) -> Self {
        Self {
            file: args.file,
            sha256: args.sha256,
            signature: args.signature,
            public_key: args.public_key,
        }
    }
}

/// A rate in bytes a second: a number with an optional K, M or G (1024s), and an optional
/// "/s".
fn parse_rate(s: &str) -> Result<u64, String> {
    let bare = s.trim().trim_end_matches("/s");
    let (digits, unit) = match bare.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => bare.split_at(at),
        None => (bare, ""),
    };
    let scale: u64 = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        _ => {
            return Err(format!(
                "{s:?} is not a rate: write a number with K, M or G, e.g. 50M"
            ));
        }
    };
    match digits.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n.saturating_mul(scale)),
        _ => Err(format!(
            "{s:?} is not a rate: write a number above 0 with K, M or G, e.g. 50M"
        )),
    }
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
    fn rates() {
        assert_eq!(parse_rate("50M"), Ok(50 << 20));
        assert_eq!(parse_rate("1GiB/s"), Ok(1 << 30));
        assert_eq!(parse_rate("512k"), Ok(512 << 10));
        assert_eq!(parse_rate("4096"), Ok(4096));
        for bad in ["0", "M", "50 M", "fast", "-1M", "5T"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
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

    #[test]
    fn subdir_must_stay_inside() {
        assert!(checked_subdir("18/docker".into()).is_ok());
        assert!(checked_subdir("../x".into()).is_err());
        assert!(checked_subdir("/abs".into()).is_err());
        assert!(checked_subdir("".into()).is_err());
    }

    #[test]
    fn resolved_once() {
        let upgrade = |args: &[&str]| {
            let cli = Cli::try_parse_from([&["pgup", "upgrade", "--volume", "v"], args].concat())
                .unwrap();
            let Command::Upgrade(a) = cli.command else {
                unreachable!()
            };
            a.resolve()
        };
        let u = upgrade(&["--to", "17", "--mode", "copy", "--jobs", "3"]).unwrap();
        assert_eq!(u.target.place, Place::Volume("v".into()));
        assert_eq!(u.intent.mode, settings::Mode::Copy);
        assert_eq!(u.intent.no_backup, Some(false));
        assert_eq!(u.jobs, 3);
        assert!(upgrade(&["--to", "17"]).unwrap().jobs >= 1);
        let refused = upgrade(&["--to", "17", "--no-backup"]).unwrap_err();
        assert!(refused.0.contains("add --yes"), "{refused}");
        assert!(upgrade(&["--to", "17", "--no-backup", "--yes"]).is_ok());
    }
}
