//! `pgup upgrade`: the plan executed as journaled steps (see `journal`). Each step is recorded
//! before it acts and can start over from its beginning, so re-running the same command after
//! any interruption finishes the upgrade. Invariant: until the backup is complete the old
//! cluster is untouched in place; from the backup's rename on it is whole in the backup, byte
//! for byte (the cluster in place is started from then on: counted, then by pg_upgrade); the
//! swap moves whole entries only. A failure before pg_upgrade's step undoes everything; from
//! it on, the backup is put back (the journal turns into a rollback's).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::backup::{self, Record};
use crate::cluster::{ControlData, InitSettings};
use crate::collation::{self, RebuildError, TextIndex};
use crate::config;
use crate::docker::Docker;
use crate::error::{NotUndone, Refusal, Status};
use crate::extension::{self, Updated};
use crate::failpoint;
use crate::hooks::{self, Hooks, Outcome, Phase, Ran, RunLog};
use crate::interrupt;
use crate::journal::{self, Journal, Learned, Lock};
use crate::layout::{self, Layout};
use crate::location::{self, Location};
use crate::options;
use crate::pagedigests::PageDigests;
use crate::pg_upgrade_output;
use crate::pgcmd::{self, PgUpgrade, Transfer};
use crate::plan::{self, BackupKind, Operation, Plan, Step};
use crate::preflight::{self, Preflight};
use crate::recreate;
use crate::restore;
use crate::settings::{self, Verify};
use crate::statistics::{self, Gathered};
use crate::target::Target;
use crate::toolbox::{self, ToolMount, Toolbox};
use crate::tree;
use crate::ui::{Printer, Unchanged};
use crate::verify::{self, Snapshot};
use crate::walchanges::{self, Changes};

/// Where the mount root is mounted in the upgrade toolbox.
const VOL: &str = "/pgup/vol";

#[derive(Debug, Serialize)]
pub struct UpgradeReport {
    pub target: String,
    /// Always true (a re-run that finds nothing to do reports `Unchanged`).
    pub changed: bool,
    pub from: u32,
    pub to: u32,
    pub backup: Option<PathBuf>,
    /// How pg_upgrade put the old relation files into the new cluster.
    pub transfer: Transfer,
    pub settings_changed: Vec<String>,
    /// Catalog options the new major does not know, removed from the old cluster before
    /// pg_upgrade (the backup keeps them).
    pub options_removed: u64,
    pub options_removed_by_database: std::collections::BTreeMap<String, u64>,
    /// Extensions brought to the new image's default versions (or that failed to be).
    pub extensions: Vec<Updated>,
    /// None when a resumed run started after verification.
    pub verified: Option<VerifySummary>,
    /// What changed of the libraries that order text, as "glibc 2.31 → glibc 2.41".
    pub libraries: Option<String>,
    /// Indexes on text left as the old library built them (--reindex never): `status` lists
    /// them with the commands that rebuild them.
    pub reindex_pending: usize,
    /// When the server stopped (when none ran: when the upgrade began).
    pub stopped_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the re-created container served the new major; None when pgup starts no server.
    pub serving_at: Option<chrono::DateTime<chrono::Utc>>,
    /// From the stop to the new major serving (without a re-created container: to the end of
    /// the upgrade, and the server is still down).
    pub downtime_s: Option<f64>,
    /// How long each step took.
    pub steps: Vec<plan::StepTime>,
    /// The planner statistics: gathered after the hand-over when pgup re-creates the
    /// container, else on the private server before the end.
    pub statistics: Option<StatisticsReport>,
    /// What the copies of the backup did, when this run made them.
    pub backup_copy: Option<BackupCopies>,
    pub container: Option<String>,
    pub image: Option<String>,
    pub server_version_num: Option<i32>,
    /// The site's hooks this run ran, each ended with exit status 0.
    pub hooks: Vec<Ran>,
    pub next: Option<String>,
}

/// What the copies of the backup did in one run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BackupCopies {
    /// The first pass, while the server served.
    pub while_serving: Option<CopyPass>,
    /// The copy while the server was stopped: the second pass over a pre-copy, or all of it.
    pub while_stopped: Option<CopyPass>,
}

/// One copy of the backup.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CopyPass {
    /// Bytes written into the backup.
    pub written: u64,
    /// Bytes compared with the first pass's copy (read on both sides).
    pub compared: u64,
    /// Bytes kept from the first pass unread: unchanged since.
    pub kept: u64,
    pub seconds: f64,
    /// The pages the WAL named, when it guided the copy (after a first pass).
    pub wal_pages: Option<usize>,
}

impl CopyPass {
    fn new(copied: tree::Copied, took: std::time::Duration, wal_pages: Option<usize>) -> Self {
        Self {
            written: copied.written,
            compared: copied.compared,
            kept: copied.kept,
            seconds: took.as_secs_f64(),
            wal_pages,
        }
    }
}

impl CopyPass {
    /// What a copy over a first pass did.
    fn made_exact(&self) -> String {
        use indicatif::HumanBytes;
        format!(
            "{}{} compared, {} written, {} unchanged and kept ({:.1} s)",
            self.wal_pages
                .map(|n| format!("the WAL named {n} changed pages: "))
                .unwrap_or_default(),
            HumanBytes(self.compared),
            HumanBytes(self.written),
            HumanBytes(self.kept),
            self.seconds
        )
    }
}

impl std::fmt::Display for BackupCopies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use indicatif::HumanBytes;
        match (self.while_serving, self.while_stopped) {
            (Some(first), second) => {
                write!(
                    f,
                    "Backup: {} copied while the server served ({:.1} s)",
                    HumanBytes(first.written),
                    first.seconds
                )?;
                if let Some(s) = second {
                    write!(f, "; once it stopped, {}", s.made_exact())?;
                }
                write!(f, ".")
            }
            (None, Some(s)) if s.compared + s.kept > 0 => write!(
                f,
                "Backup: made exact once the server stopped: {}.",
                s.made_exact()
            ),
            (None, Some(s)) => write!(
                f,
                "Backup: {} copied while the server was stopped ({:.1} s).",
                HumanBytes(s.written),
                s.seconds
            ),
            (None, None) => Ok(()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifySummary {
    /// What proved the data: "files" (the catalogs compared, every relation file the old
    /// cluster's) or "counts" (that, and the rows counted in both clusters).
    pub proof: Verify,
    pub databases: usize,
    /// User relations compared through the catalogs.
    pub relations: usize,
    /// Relation files proven the old cluster's (same inode and size).
    pub files: usize,
    /// Tables counted (--verify counts), and their rows.
    pub tables: usize,
    pub rows: i64,
    pub sequences: usize,
    pub roles: usize,
    /// Indexes on text rebuilt because their collation's library changed (or --reindex always).
    pub indexes_rebuilt: usize,
}

impl std::fmt::Display for UpgradeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "Upgraded {} from PostgreSQL {} to {}.",
            self.target, self.from, self.to
        )?;
        if let Some(v) = &self.verified {
            writeln!(
                f,
                "Verified: {} databases, {} relations (the catalogs compared; their {} files are the old cluster's, same inode and size), {} sequences, {} roles as before.",
                v.databases, v.relations, v.files, v.sequences, v.roles
            )?;
            if v.proof.counts() {
                writeln!(
                    f,
                    "Counted: {} tables, {} rows, as before.",
                    v.tables, v.rows
                )?;
            }
            if v.indexes_rebuilt > 0 {
                writeln!(
                    f,
                    "Rebuilt {} index(es) on text ({}).",
                    v.indexes_rebuilt,
                    self.libraries.as_deref().unwrap_or("--reindex always")
                )?;
            }
        }
        if self.reindex_pending > 0 {
            writeln!(
                f,
                "Warning: {} index(es) on text were left as built under the old library ({}, --reindex never): queries may miss rows until they are rebuilt; `pgup status` lists the commands.",
                self.reindex_pending,
                self.libraries.as_deref().unwrap_or("unknown")
            )?;
        }
        match &self.backup {
            Some(b) => writeln!(
                f,
                "The old cluster is kept in {} (`pgup rollback` goes back).",
                b.display()
            )?,
            None => writeln!(f, "No backup was kept (--no-backup).")?,
        }
        for change in &self.settings_changed {
            writeln!(f, "Setting changed: {change}")?;
        }
        if self.options_removed > 0 {
            writeln!(
                f,
                "Removed {} catalog option(s) PostgreSQL {} does not know from the old cluster before pg_upgrade ({}); the backup keeps them, the log names each.",
                self.options_removed,
                self.to,
                options::per_database(&self.options_removed_by_database)
            )?;
        }
        for e in &self.extensions {
            writeln!(f, "Extension {e}.")?;
        }
        if let (Some(c), Some(image), Some(v)) =
            (&self.container, &self.image, self.server_version_num)
        {
            writeln!(f, "Container {c} runs {image} (server_version_num {v}).")?;
        }
        if let (Some(stopped), Some(down)) = (self.stopped_at, self.downtime_s) {
            let clock = |t: chrono::DateTime<chrono::Utc>| t.format("%H:%M:%S UTC").to_string();
            match self.serving_at {
                Some(serving) => writeln!(
                    f,
                    "Downtime {down:.1} s: the server was stopped at {}, PostgreSQL {} served at {}.",
                    clock(stopped),
                    self.to,
                    clock(serving)
                )?,
                None => writeln!(
                    f,
                    "The server has been down since {} ({down:.1} s so far).",
                    clock(stopped)
                )?,
            }
        }
        if let Some(s) = &self.statistics {
            writeln!(f, "{s}")?;
        }
        if let Some(c) = &self.backup_copy {
            writeln!(f, "{c}")?;
        }
        if !self.steps.is_empty() {
            let steps: Vec<String> = self
                .steps
                .iter()
                .map(|t| format!("{} {:.1} s", t.step.name(), t.seconds))
                .collect();
            writeln!(
                f,
                "Steps: {} (pg_upgrade {}).",
                steps.join(", "),
                self.transfer.flag()
            )?;
        }
        if !self.hooks.is_empty() {
            let ran: Vec<String> = self
                .hooks
                .iter()
                .map(|r| format!("{} {:.1} s", r.phase.name(), r.seconds))
                .collect();
            writeln!(f, "Hooks: {}.", ran.join(", "))?;
        }
        if let Some(next) = &self.next {
            writeln!(f, "{next}")?;
        }
        Ok(())
    }
}

pub async fn run(args: settings::Upgrade, printer: &Printer) -> Result<Status> {
    let hooks = Hooks::given(args.hooks.as_ref())?;
    let docker = Docker::connect_for(args.target.is_data_dir()).await?;
    let target = Target::resolve(&args.target, &docker).await?;
    let flags = args.target.flags();
    let root = target.mount_root.clone();
    if let Some(journal) = Journal::read(&root)? {
        if journal.operation != Operation::Upgrade || journal.new_major != args.intent.to {
            bail!("{}", journal.explain(&flags));
        }
        let (uid, gid) = crate::target::owner(&target.data_dir)?;
        let lock = Lock::take(&root, uid, gid)?;
        docker
            .remove_strays(&target.data_dir, toolbox::pgup_alive)
            .await?;
        if journal.step == Step::Upgrading && journal.learned.swapping {
            // Nothing to resume: the old cluster in place may be half moved into the new one.
            printer.step(format!(
                "{}: pg_upgrade --swap had begun, which uses up the cluster in place; putting the old cluster back from the backup and starting again",
                journal.explain(&flags)
            ));
            // An interruption meanwhile leaves a rollback's journal: say so, not "nothing changed".
            interrupt::journal_at(root.clone(), flags.clone());
            restore::undo_before_swap(&docker, printer, &target, &journal).await?;
            drop(lock);
        } else {
            printer.step(format!("resuming: {}", journal.explain(&flags)));
            interrupt::journal_at(root, flags);
            return Upgrade::new(&docker, printer, target, journal, lock)?
                .drive()
                .await;
        }
    }

    // A re-run of an upgrade that finished (automation, an unsure operator) does nothing.
    let to = args.intent.to;
    if crate::cluster::Cluster::open(&target.data_dir)?.major == to.to_string() {
        let image = match &target.container {
            Some(c) => {
                let runs = docker.image(&c.image).await?;
                Some((c, runs.and_then(|(i, env)| i.pg_major(&env))))
            }
            None => None,
        };
        match image {
            Some((c, runs)) if runs != Some(to) => bail!(
                "{} is already PostgreSQL {to}, but container {} runs image {}: re-create it on a PostgreSQL {to} image (docker run or compose, keeping its volumes)",
                target.label,
                c.name,
                c.image
            ),
            _ => {
                let mut reason = format!("{} is already PostgreSQL {to}", target.label);
                // Statistics a killed run left: what this command still has to do.
                let layout = Layout::new(&root);
                if layout.statistics_pending().exists() {
                    let (uid, gid) = crate::target::owner(&target.data_dir)?;
                    let _lock = Lock::take(&root, uid, gid)?;
                    if let Some(s) = finish_statistics(&docker, printer, &layout).await {
                        reason = format!("{reason}; {}", s.to_string().trim_end_matches('.'));
                    }
                }
                printer.report(&Unchanged::new(&target.label, reason))?;
                return Ok(Status::Done);
            }
        }
    }
    let Some(hooks) = hooks else {
        return start(args, &docker, target, None, printer)
            .await?
            .drive()
            .await;
    };
    // Before anything is checked, the server still serving; then `end` closes whatever
    // follows, here when the run stops before its journal, else as the upgrade ends.
    let env = hooks::Env {
        target: target.label.clone(),
        container: target.container.as_ref().map(|c| c.name.clone()),
        data_dir: target.data_dir.clone(),
        from: crate::cluster::Cluster::open(&target.data_dir)?
            .major
            .parse()
            .unwrap_or_default(),
        to,
        ..hooks::Env::default()
    };
    let started = match hooks.run(Phase::PreCheck, &env, printer, None).await {
        Ok(ran) => start(args, &docker, target, Some((hooks.clone(), ran)), printer).await,
        Err(e) => Err(Refusal(format!("{e}; nothing was changed")).into()),
    };
    match started {
        Ok(up) => up.drive().await,
        // Before its journal, a run has changed nothing.
        Err(e) => {
            let env = hooks::Env {
                result: Some(Outcome::Refused),
                ..env
            };
            if let Err(end) = hooks.run(Phase::End, &env, printer, None).await {
                printer.step(format!("warning: {end}"));
            }
            Err(e)
        }
    }
}

/// A fresh upgrade up to its first journaled step: the checks, the plan and its confirmation.
/// `hooks`: the site's, with what pre-check did.
async fn start<'a>(
    args: settings::Upgrade,
    docker: &'a Docker,
    target: Target,
    hooks: Option<(Hooks, Option<Ran>)>,
    printer: &'a Printer,
) -> Result<Upgrade<'a>> {
    let root = target.mount_root.clone();
    let flags = args.target.flags();
    // A killed pgup's temporary containers (a `check`'s) would count as servers using the data.
    docker
        .remove_strays(&target.data_dir, toolbox::pgup_alive)
        .await?;
    let mut pre = preflight::static_checks(docker, target, &args.intent, printer).await?;
    if pre.failed() {
        return Err(Refusal(format!("the upgrade cannot start: {}", pre.failures())).into());
    }
    let no_backup = args.intent.no_backup.unwrap_or(false);
    let kind = plan::backup_kind(args.intent.mode, no_backup, pre.reflinks, &root)?;
    let transfer = plan::transfer(args.transfer, pre.new_major, kind)?;
    // The server-side checks, pg_upgrade's own included, ask the running server before
    // anything stops: what they find is refused while it still serves, and after the stop
    // only pg_upgrade checks the stopped cluster again.
    let server = preflight::live_server(&pre).filter(|_| docker.has_engine());
    let serves = server.is_some();
    let live = match server {
        Some(server) => {
            printer.step(format!(
                "checking the running server in container {} (pg_upgrade --check, live)",
                server.name
            ));
            let may_strip = kind != BackupKind::None || args.strip_unknown_options;
            preflight::live_checks(docker, &mut pre, &server, may_strip).await?
        }
        _ => None,
    };
    if pre.failed() {
        return Err(Refusal(format!("the upgrade cannot start: {}", pre.failures())).into());
    }
    let layout = Layout::new(&root);
    let mut journal = Journal {
        old_major: pre.old_major,
        new_major: pre.new_major,
        image: pre.image.clone(),
        new_image: args.intent.new_image.clone(),
        backup: kind,
        jobs: args.jobs,
        container: pre.target.container.as_ref().map(|c| c.name.clone()),
        running: pre.running.iter().map(|c| c.name.clone()).collect(),
        locations: pre.locations.clone(),
        learned: Learned {
            strip_unknown_options: args.strip_unknown_options,
            reindex: args.intent.reindex,
            verify: args.verify,
            libraries: pre.libraries.clone(),
            unknown_options: if live.is_some() {
                pre.unknown_options.clone()
            } else {
                Vec::new()
            },
            prepares: live.is_some(),
            settings: live,
            transfer,
            precopy: plan::precopies(kind, serves, args.no_precopy).then(|| plan::PreCopy {
                rate: args.precopy_rate,
                unguided: match &pre.control {
                    Some(c) => walchanges::fit(&c.wal_level, c.checksums, c.wal_log_hints).err(),
                    None => Some("pg_controldata said nothing of its settings".into()),
                },
                ..plan::PreCopy::default()
            }),
            hooks: hooks.as_ref().map(|(h, _)| h.clone()),
            ..Learned::default()
        },
        ..Journal::begin(
            Operation::Upgrade,
            pre.target.pgdata_below_root(),
            journal::this_command(),
        )
    };
    // Named by the journal's stamp, which names everything this run makes.
    journal.backup_name = (kind != BackupKind::None).then(|| layout::backup_name(&journal.stamp));
    let plan = Plan {
        target: pre.target.label.clone(),
        old_major: pre.old_major,
        new_major: pre.new_major,
        data_dir: pre.target.data_dir.clone(),
        data_bytes: pre.data_bytes + pre.location_bytes,
        data_files: pre.data_files,
        free_bytes: pre.free_bytes,
        need_bytes: plan::need_bytes(kind, pre.data_bytes + pre.location_bytes),
        backup: kind,
        backup_dir: journal.backup_name.as_ref().map(|n| layout.backup(n)),
        image: pre.image.clone(),
        steps: journal.upgrade_steps(),
        container: journal.container.clone(),
        new_image: journal.new_image.clone(),
        stop: journal.running.clone(),
        jobs: journal.jobs,
        transfer,
        config_changes: pre.config_changes.iter().map(ToString::to_string).collect(),
        recovers: pre.control.as_ref().is_some_and(|c| !c.shut_down_cleanly()),
        locations: pre.locations.iter().map(Location::label).collect(),
        verify: args.verify,
        checked_live: journal.learned.settings.is_some(),
        precopy: journal.learned.precopy.clone(),
        rebuilds: pre.libraries.as_ref().and_then(|pair| {
            collation::to_rebuild(args.intent.reindex, pair.changed())
                .any()
                .then(|| pair.describe_change())
        }),
        hooks: journal.learned.hooks.as_ref().map(Hooks::plan),
    };
    if !args.yes && !printer.confirm(&plan, "Proceed?")? {
        bail!("nothing was changed: the upgrade was not confirmed");
    }
    if no_backup {
        printer.step("--no-backup: no copy of the old cluster is kept; once the new cluster is in place there is no rollback");
    }
    let lock = Lock::take(&root, pre.cluster.uid, pre.cluster.gid)?;
    // No journal: whatever an earlier, undone run left in the work directory is garbage.
    restore::remove_leftovers(&layout, &pre.locations);
    let mut up = Upgrade::new(docker, printer, pre.target.clone(), journal, lock)?;
    up.preflight = Some(pre);
    if let Some((_, Some(ran))) = hooks {
        up.append_log(&hooks::log_entry(
            ran.phase,
            &ran.output,
            &format!("exit 0 in {:.1} s", ran.seconds),
        ));
        up.journal.learned.hooks_ran.push(ran.phase);
        up.hooks_ran.push(ran);
    }
    let first = up.steps[0];
    up.advance(first)?;
    interrupt::journal_at(root, flags);
    Ok(up)
}

/// What the Verifying step did to the indexes on text.
#[derive(Debug, Clone, Default)]
struct Rebuilt {
    count: usize,
    /// Left as built under the old library (--reindex never).
    left: usize,
}

/// What the checks of the Checking step learned.
struct Checked {
    libraries: Option<collation::Pair>,
    /// None when the server-side checks run later, in place.
    settings: Option<(InitSettings, Vec<options::Key>)>,
}

/// An upgrade under way: its journal and what the steps share.
pub struct Upgrade<'a> {
    docker: &'a Docker,
    printer: &'a Printer,
    target: Target,
    layout: Layout,
    journal: Journal,
    /// The steps this upgrade runs, in order.
    steps: Vec<Step>,
    uid: u32,
    gid: u32,
    _lock: Lock,
    /// The static checks of a fresh run, for its checking step.
    preflight: Option<Preflight>,
    verified: Option<VerifySummary>,
    /// Unknown catalog options removed, per database (None when a resumed run started after
    /// verification).
    options_removed: Option<std::collections::BTreeMap<String, u64>>,
    extensions: Vec<Updated>,
    /// What the verification did to the text indexes (None when a resumed run started after it).
    rebuilt: Option<Rebuilt>,
    /// The toolbox the steps from pg_upgrade to verification share, once started.
    tools: Option<Toolbox<'a>>,
    /// The statistics gathered on the private server (None when a resumed run started after
    /// verification, or they wait for the hand-over).
    statistics: Option<StatisticsReport>,
    /// What this run's copies of the backup did (set by steps running beside others).
    copies: std::sync::Mutex<BackupCopies>,
    /// The digests of the pages this run's first pass wrote, for its second pass.
    digests: Option<Arc<PageDigests>>,
    /// The site's hooks this run ran to their end.
    hooks_ran: Vec<Ran>,
}

impl<'a> Upgrade<'a> {
    pub fn new(
        docker: &'a Docker,
        printer: &'a Printer,
        target: Target,
        journal: Journal,
        lock: Lock,
    ) -> Result<Self> {
        let (uid, gid) = crate::target::owner(&target.data_dir)?;
        Ok(Self {
            docker,
            printer,
            layout: Layout::new(&target.mount_root),
            target,
            steps: journal.upgrade_steps(),
            journal,
            uid,
            gid,
            _lock: lock,
            preflight: None,
            verified: None,
            options_removed: None,
            extensions: Vec::new(),
            rebuilt: None,
            tools: None,
            statistics: None,
            copies: std::sync::Mutex::default(),
            digests: None,
            hooks_ran: Vec::new(),
        })
    }

    fn root(&self) -> &Path {
        &self.target.mount_root
    }

    fn data(&self) -> &Path {
        &self.target.data_dir
    }

    fn backup_dir(&self) -> Option<PathBuf> {
        self.journal
            .backup_name
            .as_ref()
            .map(|n| self.layout.backup(n))
    }

    /// The run's log, wherever the run's end has moved it.
    fn log(&self) -> RunLog {
        let backup = self.journal.backup_name.as_deref();
        RunLog::of(
            &self.layout,
            backup,
            &self.journal.stamp,
            self.uid,
            self.gid,
        )
    }

    /// What the site's hooks are told of this upgrade.
    fn hook_env(&self, result: Option<Outcome>) -> hooks::Env {
        hooks::Env {
            target: self.target.label.clone(),
            container: self.journal.container.clone(),
            data_dir: self.data().to_owned(),
            backup_dir: self.backup_dir(),
            from: self.journal.old_major,
            to: self.journal.new_major,
            result,
        }
    }

    /// Runs `phase`'s hook unless it already ran to its end in this upgrade (before a kill);
    /// the journal records that it did.
    async fn hook(&mut self, phase: Phase) -> Result<()> {
        if self.journal.learned.hooks_ran.contains(&phase) {
            return Ok(());
        }
        if let Some(ran) = self.run_hook(phase, None).await? {
            self.hooks_ran.push(ran);
            self.journal.learned.hooks_ran.push(phase);
            let root = self.root().to_owned();
            self.journal.save(&root)?;
        }
        Ok(())
    }

    /// Runs a hook whose failure changes nothing of what follows (end, and those of a put
    /// back after a failure): it is said, and the run goes on.
    async fn hook_told(&mut self, phase: Phase, result: Option<Outcome>) {
        match self.run_hook(phase, result).await {
            Ok(ran) => self.hooks_ran.extend(ran),
            Err(e) => self.printer.step(format!("warning: {e}")),
        }
    }

    /// `phase`'s hook, if this upgrade has one, told `result`, its output in the run's log.
    async fn run_hook(
        &self,
        phase: Phase,
        result: Option<Outcome>,
    ) -> Result<Option<Ran>, hooks::HookError> {
        let Some(hooks) = &self.journal.learned.hooks else {
            return Ok(None);
        };
        let log = self.log();
        hooks
            .run(phase, &self.hook_env(result), self.printer, Some(&log))
            .await
    }

    fn advance(&mut self, step: Step) -> Result<()> {
        let root = self.target.mount_root.clone();
        Ok(self.journal.advance(&root, step)?)
    }

    async fn drive(mut self) -> Result<Status> {
        let done = self.steps().await;
        if let Some(tb) = self.tools.take() {
            tb.close().await;
        }
        // A container a killed pgup asked for may appear only after the sweep of a resumed
        // run's start.
        let _ = self
            .docker
            .remove_strays(self.data(), toolbox::pgup_alive)
            .await;
        match done {
            Ok(mut report) => {
                self.finish().await?;
                // The upgrade is done and serves: what is left only makes plans better.
                if let Some(gathered) =
                    finish_statistics(self.docker, self.printer, &self.layout).await
                {
                    report.statistics = Some(gathered);
                }
                self.hook_told(Phase::End, Some(Outcome::Upgraded)).await;
                report.hooks = std::mem::take(&mut self.hooks_ran);
                self.printer.report(&report)?;
                Ok(Status::Done)
            }
            Err(e) => {
                let (e, outcome) = self.recover(e).await;
                if !interrupt::interrupted() {
                    self.hook_told(Phase::End, Some(outcome)).await;
                }
                Err(e)
            }
        }
    }

    /// Ends the upgrade: the containers --stop-others stopped are started again, on the new
    /// cluster, and the journal goes.
    async fn finish(&self) -> Result<()> {
        restore::restart(self.docker, self.printer, &self.journal.others()).await;
        Ok(Journal::finish(self.root())?)
    }

    /// Runs the steps from the journal's on, each recorded before it acts, in the order of
    /// the list the plan showed.
    async fn steps(&mut self) -> Result<UpgradeReport> {
        let mut recreated = None;
        loop {
            let step = self.journal.step;
            if !self.steps.contains(&step) {
                bail!("the journal holds step {step:?}, which is not this upgrade's")
            }
            for phase in hooks::at_start(step, &self.steps) {
                self.hook(*phase).await?;
            }
            match step {
                Step::Preparing => self.prepare().await?,
                Step::PreCopying => self.precopy().await?,
                Step::Stopping => {
                    // The downtime starts with the stop: a stopping server takes no new
                    // connections (or it began before pgup, when nothing ran).
                    let began = chrono::Utc::now();
                    self.stop_servers().await?;
                    self.journal.learned.stopped_at.get_or_insert(began);
                }
                Step::Checking => self.check_and_copy().await?,
                Step::BackingUp => {
                    self.copy_backup(Arc::default(), false, None).await?;
                    self.write_record()?;
                }
                Step::Upgrading => self.pg_upgrade().await?,
                Step::SwappingOut => {
                    self.printer.step(format!(
                        "putting the new cluster in place at {}",
                        self.data().display()
                    ));
                    let old = [self.journal.old_major];
                    for l in &self.journal.locations {
                        backup::set_aside_in(l, &old, &l.layout().old_aside())?;
                    }
                    backup::set_aside(self.data(), &self.layout.old_aside())?;
                }
                Step::SwappingIn => {
                    let staging = self.layout.staging();
                    if let Some(wal) = self.journal.locations.iter().find(|l| l.is_wal()) {
                        wal_in_place(wal, &staging)?;
                    }
                    if staging.exists() {
                        tree::move_entries(&staging, self.data(), &|_| false).with_context(
                            || {
                                format!(
                                    "cannot move the new cluster into {}",
                                    self.data().display()
                                )
                            },
                        )?;
                        std::fs::remove_dir(&staging)?;
                    }
                }
                Step::Verifying => self.verify().await?,
                Step::Recreating => recreated = Some(self.recreate().await?),
                // Its hook is the step.
                Step::PostUpgrade => {}
                _ => unreachable!("an upgrade's list holds upgrade steps only"),
            }
            match plan::next_step(&self.steps, step) {
                Some(next) => self.advance(next)?,
                None => {
                    let mut report = match recreated {
                        Some(report) => report,
                        // Re-created by a run before this one (killed in a later step).
                        None if self.steps.contains(&Step::Recreating) => self.served().await?,
                        None => self.report(None),
                    };
                    // Made when the container served: the steps after it count too.
                    report.steps = plan::step_times(&self.journal.timeline, chrono::Utc::now());
                    return Ok(report);
                }
            }
        }
    }

    /// The checks on the stopped cluster, with the backup copied beside them (it needs
    /// nothing they learn) and the next step's toolbox started meanwhile; checks that fail
    /// stop the copy.
    async fn check_and_copy(&mut self) -> Result<()> {
        let preflight = self.preflight.take();
        let guided = self.release_wal()?;
        // Started while the server served, when the new cluster was made then.
        let ready = self.tools.take();
        let cancel = Arc::new(AtomicBool::new(false));
        let checked_live = self.journal.learned.settings.is_some();
        if checked_live {
            self.printer.step(
                "checked on the running server before the stop; pg_upgrade checks the stopped cluster again",
            );
        }
        let checks = async {
            if checked_live {
                return Ok(Checked {
                    libraries: self.journal.learned.libraries.clone(),
                    settings: None,
                });
            }
            let checked = self.check(preflight, false).await;
            if checked.is_err() {
                cancel.store(true, Ordering::Relaxed);
            }
            checked
        };
        let tools = async {
            match ready {
                Some(tb) if tb.alive().await => Ok(tb),
                // Gone since (a restarted daemon): another one.
                stale => {
                    if let Some(tb) = stale {
                        tb.close().await;
                    }
                    self.start_tools().await
                }
            }
        };
        let (settings, copied, tools) = if self.journal.backup == BackupKind::None {
            let (settings, tools) = tokio::join!(checks, tools);
            (settings, Ok(()), tools)
        } else if let Some(start) = guided {
            // The WAL is read by the old major's pg_waldump, in the toolbox.
            let copy = async {
                let tools = tools.await;
                let changes = match &tools {
                    Ok(tb) => self.wal_changes(tb, start).await,
                    Err(e) => Err(e.to_string()),
                };
                let changes = changes
                    .inspect_err(|why| {
                        self.printer.step(format!(
                            "the WAL cannot guide the second pass ({why}): it compares every changed file"
                        ))
                    })
                    .ok();
                (
                    self.copy_backup(cancel.clone(), false, changes).await,
                    tools,
                )
            };
            let (settings, (copied, tools)) = tokio::join!(checks, copy);
            (settings, copied, tools)
        } else {
            tokio::join!(checks, self.copy_backup(cancel.clone(), false, None), tools)
        };
        if let Ok(tb) = tools {
            self.tools = Some(tb);
        }
        // A copy that failed on its own (a full disk) says more than the checks that failed
        // after it.
        let stopped = |e: &anyhow::Error| {
            e.chain()
                .filter_map(|c| c.downcast_ref::<backup::BackupError>())
                .any(backup::BackupError::stopped)
        };
        let checked = match (settings, copied) {
            (_, Err(e)) if !stopped(&e) => return Err(e),
            (settings, copied) => {
                let settings = settings?;
                copied?;
                settings
            }
        };
        self.journal.learned.libraries = checked.libraries;
        if let Some((settings, unknown)) = checked.settings {
            self.journal.learned.settings = Some(settings);
            self.journal.learned.unknown_options = unknown;
        }
        Ok(())
    }

    async fn stop_servers(&self) -> Result<()> {
        for name in &self.journal.running {
            self.printer.step(format!("stopping container {name}"));
            self.docker.stop(name, 120).await?;
        }
        Ok(())
    }

    /// The server-side checks on the stopped cluster; its settings for initdb when they pass.
    /// `preflight`: this run's static checks, when it is a fresh run. Without an engine there
    /// is no throwaway view: unless `in_place`, only the static checks run here, and the rest
    /// in place once the backup is whole (None).
    async fn check(&self, preflight: Option<Preflight>, in_place: bool) -> Result<Checked> {
        let later = !in_place && !self.docker.has_engine();
        self.printer.step(if in_place {
            "reading the stopped cluster's settings in place: the backup holds it as it was"
        } else if later {
            "checking the stopped cluster (its server-side checks run once the backup is whole)"
        } else {
            "reading the stopped cluster's settings on a throwaway view"
        });
        let mut pre = match preflight {
            // This run's own static checks: the stop changed nothing they read that the
            // next checks rely on (pg_upgrade --check sees the stopped cluster itself).
            Some(mut pre) => {
                pre.running.clear();
                pre
            }
            None => {
                let intent = self.journal.intent();
                preflight::static_checks(self.docker, self.target.clone(), &intent, self.printer)
                    .await?
            }
        };
        if !pre.failed() && !pre.running.is_empty() {
            let names: Vec<_> = pre.running.iter().map(|c| c.name.clone()).collect();
            bail!(
                "container {} was started again; stop it and run the same command again",
                names.join(", ")
            );
        }
        if in_place {
            // The backup made since takes the room the space check asked for.
            pre.items.retain(|i| i.check != "space");
        }
        if later && !pre.failed() {
            return Ok(Checked {
                libraries: pre.libraries,
                settings: None,
            });
        }
        let settings = if pre.failed() {
            None
        } else {
            let may_strip = self.journal.backup != BackupKind::None
                || self.journal.learned.strip_unknown_options;
            preflight::cluster_checks(self.docker, &mut pre, true, may_strip).await?
        };
        match settings.filter(|_| !pre.failed()) {
            Some(settings) => Ok(Checked {
                libraries: pre.libraries,
                settings: Some((settings, pre.unknown_options)),
            }),
            None => Err(Refusal(format!("the upgrade cannot start: {}", pre.failures())).into()),
        }
    }

    /// The server-side checks of a run without an engine, in place and recorded in the
    /// journal; a refusal puts the backup back like any failure of this step.
    async fn check_in_place(&mut self) -> Result<InitSettings> {
        let (settings, unknown) = self
            .check(None, true)
            .await?
            .settings
            .context("the checks in place gave no settings")?;
        self.journal.learned.settings = Some(settings.clone());
        self.journal.learned.unknown_options = unknown;
        let root = self.root().to_owned();
        self.journal.save(&root)?;
        Ok(settings)
    }

    /// What `rollback` needs to know about the backup, beside it.
    fn write_record(&self) -> Result<()> {
        let name = self.journal.backup_name.clone().expect("named");
        let container = self.target.container.as_ref();
        Ok(Record {
            name,
            old_major: self.journal.old_major,
            new_major: self.journal.new_major,
            old_image: container.map(|c| c.image.clone()),
            container: container.map(|c| c.name.clone()),
            pgdata_below_root: self.journal.pgdata.clone(),
            mode: self.journal.backup,
            created: chrono::Utc::now(),
            restart_policy: container.and_then(|c| c.restart_policy.clone()),
            superuser: self
                .journal
                .learned
                .settings
                .as_ref()
                .map(|s| s.superuser.clone()),
            upgraded_checkpoint: None,
            locations: self.journal.locations.clone(),
            rolled_back: None,
        }
        .write(self.root(), self.uid, self.gid)?)
    }

    /// The backup's first pass, while the server serves: its start is recorded first, so a
    /// resumed pass (or the one after the stop) knows what it can keep.
    async fn precopy(&mut self) -> Result<()> {
        let root = self.root().to_owned();
        self.hold_wal().await?;
        let pre = self
            .journal
            .learned
            .precopy
            .as_mut()
            .context("a pre-copy step without its settings")?;
        if pre.since.is_none() {
            let began = chrono::Utc::now();
            pre.since = Some(began);
            self.journal.save(&root)?;
            // The mtimes compared with it are the filesystem's: where its clock is behind
            // pgup's (a network filesystem), the journal just written says by how much.
            let stamped = std::fs::metadata(self.layout.journal())
                .and_then(|m| m.modified())
                .map(chrono::DateTime::<chrono::Utc>::from);
            if let (Ok(stamped), Some(pre)) = (stamped, self.journal.learned.precopy.as_mut())
                && stamped < began
            {
                pre.since = Some(stamped);
                self.journal.save(&root)?;
            }
        }
        // The second pass reads only the originals of what this first pass wrote: with a
        // full first pass it need not read the copy back.
        // (An optimisation: without, the second pass reads both sides.)
        self.digests = PageDigests::new_in(&self.layout.work()).ok().map(Arc::new);
        self.copy_backup(Arc::default(), true, None).await
    }

    /// Has the running server keep its WAL from a checkpoint taken now, before the first
    /// pass (or from the one a resumed pass began after, while the slot still holds it), so
    /// that the second pass reads the pages it names only. Where it cannot, says why in the
    /// journal: the second pass then compares.
    async fn hold_wal(&mut self) -> Result<()> {
        let Some(pre) = &self.journal.learned.precopy else {
            return Ok(());
        };
        if pre.unguided.is_some() {
            return Ok(());
        }
        let slot = walchanges::slot_name(&self.journal.stamp);
        let earlier = pre.wal;
        let superuser = self
            .journal
            .learned
            .settings
            .as_ref()
            .map(|s| s.superuser.clone());
        let held = async {
            let server = self.live_server().await?;
            let live = walchanges::connect(
                &server,
                self.data(),
                (self.uid, self.gid),
                superuser.as_deref(),
            )
            .await?;
            Ok::<_, anyhow::Error>(walchanges::hold(&live.client, &slot, earlier).await?)
        }
        .await;
        let pre = self.journal.learned.precopy.as_mut().expect("checked");
        match held {
            Ok(start) => pre.wal = Some(start),
            Err(e) => {
                let why = format!("{e:#}");
                self.printer.step(format!(
                    "the second pass will compare every changed file, as the WAL cannot guide it: {why}"
                ));
                (pre.wal, pre.unguided) = (None, Some(why));
            }
        }
        let root = self.root().to_owned();
        Ok(self.journal.save(&root)?)
    }

    /// The container whose server serves the old cluster: the target's, else the one
    /// running on the data.
    async fn live_server(&self) -> Result<crate::docker::Container> {
        let running = &self.journal.running;
        let name = self
            .journal
            .container
            .as_ref()
            .filter(|c| running.contains(c))
            .or(running.first().filter(|_| running.len() == 1))
            .context("no one container serves the old cluster")?;
        Ok(self.docker.container(name).await?)
    }

    /// Once the server is stopped, lets the WAL it kept for the backup go (the slot is
    /// removed from the stopped cluster, so neither the backup nor the cluster keeps it);
    /// where that WAL starts, when it guides the second pass.
    fn release_wal(&self) -> Result<Option<crate::cluster::WalStart>> {
        let Some(start) = self.journal.learned.precopy.as_ref().and_then(|p| p.wal) else {
            return Ok(None);
        };
        let slot = walchanges::slot_name(&self.journal.stamp);
        walchanges::release_stopped(self.data(), &slot).with_context(|| {
            format!("cannot remove replication slot {slot} from the stopped cluster")
        })?;
        Ok((self.journal.backup != BackupKind::None).then_some(start))
    }

    /// The pages the old cluster's WAL names from `start` to its shutdown checkpoint, read by
    /// the old major's pg_waldump in `tb`; why not, when it cannot tell them all.
    async fn wal_changes(
        &self,
        tb: &Toolbox<'_>,
        start: crate::cluster::WalStart,
    ) -> std::result::Result<Changes, String> {
        let old = self.journal.old_major;
        let data = tb.at(self.data());
        let text = tb
            .run(&pgcmd::controldata(old, &data))
            .await
            .map_err(|e| e.to_string())?;
        let control = ControlData::parse(&text).ok_or("pg_controldata said nothing")?;
        if !control.shut_down_cleanly() || control.timeline != start.timeline {
            return Err(format!(
                "the cluster is {} on timeline {}, not shut down on timeline {}",
                control.state, control.timeline, start.timeline
            ));
        }
        let out = self.layout.wal_changes();
        let argv = pgcmd::waldump(
            old,
            &format!("{data}/pg_wal"),
            start,
            &control.checkpoint,
            &tb.at(&out),
        );
        let dumped = tb.run(&argv).await.map_err(|e| e.to_string());
        let read = dumped.and_then(|_| {
            let file = std::fs::File::open(&out).map_err(|e| e.to_string())?;
            let file = std::io::BufReader::new(file);
            let end = control.checkpoint.parse()?;
            let (per_file, segment) = (control.blocks_per_segment, control.wal_segment_bytes);
            Changes::parse(file, (start.redo, end), per_file, segment).map_err(|e| e.to_string())
        });
        let _ = std::fs::remove_file(&out);
        read
    }

    /// Copies (or clones) the old cluster into the backup directory, unless a run before this
    /// one did: `live`, the first pass of a pre-copy while the server serves (left
    /// `.partial`); else the copy after the stop, over a pre-copy's when there is one.
    /// `cancel` stops it at the next file.
    async fn copy_backup(
        &self,
        cancel: Arc<AtomicBool>,
        live: bool,
        changes: Option<Changes>,
    ) -> Result<()> {
        let name = self
            .journal
            .backup_name
            .clone()
            .expect("a backup step has a backup");
        let dir = self.layout.backup(&name);
        if dir.exists() {
            return Ok(()); // renamed into place before the journal moved on
        }
        let precopy = self.journal.learned.precopy.as_ref();
        let over = precopy
            .and_then(|p| p.since)
            .map(std::time::SystemTime::from);
        let rate = precopy.and_then(|p| p.rate).filter(|_| live);
        let wal_pages = changes.as_ref().map(Changes::page_count);
        self.printer.step(match (live, over.is_some()) {
            (true, _) => format!(
                "copying the old cluster to {} while the server serves (pass 1 of 2{})",
                self.layout.partial_backup(&name).display(),
                rate.map(|r| format!(", at most {}/s", indicatif::HumanBytes(r)))
                    .unwrap_or_default()
            ),
            (false, true) => format!(
                "making the backup exact now the server is stopped (pass 2 of 2: {}), then {}",
                match wal_pages {
                    Some(n) =>
                        format!("the {n} pages the WAL names, and the files it does not follow"),
                    None => "what changed, page by page".into(),
                },
                dir.display()
            ),
            (false, false) => format!("backing up the old cluster to {}", dir.display()),
        });
        let data = self.data().to_owned();
        let old = self.journal.old_major;
        let locations = self.journal.locations.clone();
        let mut total = tree::data_size(&data)?.bytes;
        for l in &locations {
            total += tree::tree_bytes(&l.host, |n| !l.holds(n, old))?;
        }
        let bar = self.printer.bytes_bar(total);
        let method = if self.journal.backup == BackupKind::Clone {
            tree::CopyMethod::Clone
        } else {
            tree::CopyMethod::Copy
        };
        let progress = bar.clone();
        let layout = self.layout.clone();
        let digests = self.digests.clone();
        let began = std::time::Instant::now();
        let made = tokio::task::spawn_blocking(move || {
            let copied = std::sync::atomic::AtomicU64::new(0);
            let midway = if live {
                "precopy-midway"
            } else {
                "backup-midway"
            };
            let options = tree::CopyOptions {
                method,
                skip: &layout::is_pgup_entry,
                progress: &|n| {
                    progress.inc(n);
                    let before = copied.fetch_add(n, Ordering::Relaxed);
                    if before <= 1 << 20 && before + n > 1 << 20 {
                        failpoint::hit(midway);
                    }
                },
                interrupted: &|| interrupt::interrupted() || cancel.load(Ordering::Relaxed),
                over,
                live,
                rate,
                refresh: &|_| tree::Refresh::Compare,
                digests: digests.as_deref(),
            };
            // Each tree's files as the WAL names them: PGDATA's, a tablespace's (by its oid).
            let guided = |root: &Path, tree: walchanges::Tree| {
                let (root, changes) = (root.to_owned(), changes.as_ref());
                move |rel: &Path| match changes {
                    Some(c) => c.refresh(rel, tree, walchanges::is_unlogged(&root.join(rel))),
                    None => tree::Refresh::Compare,
                }
            };
            // PGDATA's last: its backup's rename says the whole backup is there.
            let mut done = tree::Copied::default();
            for l in locations
                .iter()
                .filter(|l| !l.layout().backup(&name).exists())
            {
                let tree = l
                    .tablespace()
                    .map_or(walchanges::Tree::Wal, walchanges::Tree::Tablespace);
                let refresh = guided(&l.host, tree);
                let options = tree::CopyOptions {
                    refresh: &refresh,
                    ..options
                };
                done += backup::make_in(l, old, &name, &options)?;
            }
            let refresh = guided(&data, walchanges::Tree::Data);
            let options = tree::CopyOptions {
                refresh: &refresh,
                ..options
            };
            done += backup::make(&data, &layout, &name, &options)?;
            Ok::<_, backup::BackupError>(done)
        })
        .await?;
        bar.finish_and_clear();
        let copied = made.context("the backup failed")?;
        let pass = CopyPass::new(copied, began.elapsed(), wal_pages);
        let mut copies = self.copies.lock().expect("not poisoned");
        if live {
            copies.while_serving = Some(pass);
        } else {
            copies.while_stopped = Some(pass);
        }
        Ok(())
    }

    /// The shared toolbox (the mount root mounted read-write at [`VOL`]), started unless one
    /// runs, lent to a step, which hands it back with [`Upgrade::give_back`].
    async fn borrow_tools(&mut self) -> Result<Toolbox<'a>> {
        match self.tools.take() {
            Some(tb) => Ok(tb),
            None => self.start_tools().await,
        }
    }

    async fn start_tools(&self) -> Result<Toolbox<'a>> {
        let mut mounts = vec![ToolMount::Bind {
            host: self.root().to_owned(),
            target: VOL.into(),
            read_only: false,
        }];
        // Where the server's container has them, so that the links out of PGDATA resolve.
        mounts.extend(
            location::mounts(&self.journal.locations)
                .into_iter()
                .map(|m| ToolMount::Bind {
                    host: m.source,
                    target: m.destination.display().to_string(),
                    read_only: false,
                }),
        );
        let spec = crate::toolbox::ToolboxSpec {
            image: &self.journal.image,
            role: "upgrade",
            data: self.data(),
            uid: self.uid,
            gid: self.gid,
            mounts,
        };
        Ok(Toolbox::start(self.docker, spec).await?)
    }

    /// Takes back the toolbox a step borrowed, keeping what ran in it in the log.
    fn give_back(&mut self, tb: Toolbox<'a>) {
        self.append_log(&tb.take_transcript());
        self.tools = Some(tb);
    }

    /// The new cluster made while the server still serves, with the settings the live checks
    /// read (pg_upgrade compares the stopped cluster with it): the downtime is spared initdb.
    /// A run killed midway makes it anew.
    async fn prepare(&mut self) -> Result<()> {
        self.fresh_staging()?;
        let settings = self
            .journal
            .learned
            .settings
            .clone()
            .context("a preparing step without the running server's settings")?;
        self.printer.step(format!(
            "initdb PostgreSQL {} while the server serves",
            self.journal.new_major
        ));
        let tb = self.borrow_tools().await?;
        // The journal will say it is ready for as long as the first pass takes: on disk,
        // not in the page cache only (initdb --no-sync, as after the stop pg_upgrade syncs).
        let staging = tb.at(&self.layout.staging());
        let made = match tb.run(&self.initdb(&tb, &settings)).await {
            Ok(_) => {
                tb.run(&pgcmd::sync_cluster(self.journal.new_major, &staging))
                    .await
            }
            failed => failed,
        };
        self.give_back(tb);
        made?;
        failpoint::hit("prepared");
        self.journal.learned.staged = true;
        let root = self.root().to_owned();
        Ok(self.journal.save(&root)?)
    }

    /// Drops what an earlier attempt left of the new cluster and makes the work directories
    /// initdb writes into (the new WAL goes into the WAL directory's).
    fn fresh_staging(&self) -> Result<()> {
        restore::undo_pg_upgrade(self.data(), &self.layout.staging(), &self.journal)?;
        for l in &self.journal.locations {
            backup::work_dir(&l.layout(), self.uid, self.gid)
                .with_context(|| format!("cannot create {}", l.layout().work().display()))?;
        }
        Ok(())
    }

    /// initdb of the new cluster into the staging directory, as `tb` runs it.
    fn initdb(&self, tb: &Toolbox<'_>, settings: &InitSettings) -> Vec<String> {
        let waldir = self
            .journal
            .locations
            .iter()
            .find(|l| l.is_wal())
            .map(|l| l.staging_path().display().to_string());
        let staging = tb.at(&self.layout.staging());
        pgcmd::initdb(
            self.journal.new_major,
            &staging,
            settings,
            waldir.as_deref(),
        )
    }

    /// The old cluster's data recorded, initdb (unless made while the server served) and
    /// pg_upgrade --link into the staging directory, then the old configuration.
    async fn pg_upgrade(&mut self) -> Result<()> {
        let staged = self.journal.learned.staged && self.layout.staging().exists();
        if staged {
            // From here on pg_upgrade may write into it: a resumed run makes it anew.
            self.journal.learned.staged = false;
            let root = self.root().to_owned();
            self.journal.save(&root)?;
        } else {
            self.fresh_staging()?;
        }
        let running = self.docker.running_using(self.data()).await?;
        if !running.is_empty() {
            bail!(
                "container {} runs on the old cluster; stop it and run the same command again",
                running.join(", ")
            );
        }
        // This container's own server (a run killed beside its private one): the lock file
        // is how it is stopped.
        if !self.docker.has_engine() && crate::cluster::server_holds(self.data()) {
            bail!(
                "a PostgreSQL server runs on {} in this container; stop it (`pg_ctl stop -D {}`), then run the same command again",
                self.data().display(),
                self.data().display()
            );
        }
        // A server killed on the data (a crash, or pgup killed beside its toolbox) leaves its
        // postmaster.pid, whose PID a new container may well be using: the server would take
        // it for a live one and refuse to start. Nothing runs on the data now.
        let _ = std::fs::remove_file(self.data().join("postmaster.pid"));
        let settings = match self.journal.learned.settings.clone() {
            Some(settings) => settings,
            None => self.check_in_place().await?,
        };
        let (old, new) = (self.journal.old_major, self.journal.new_major);
        let tb = self.borrow_tools().await?;
        let (old_in, new_in) = (tb.at(self.data()), tb.at(&self.layout.staging()));
        let result = async {
            self.printer.step(format!(
                "recording the old cluster's catalog{}{}",
                if self.journal.learned.verify.counts() {
                    " and counting its rows"
                } else {
                    ""
                },
                if staged {
                    format!(" (PostgreSQL {new}'s new cluster was made while the server served)")
                } else {
                    format!("; initdb PostgreSQL {new} with its settings")
                }
            ));
            let initdb = async {
                if !staged {
                    tb.run(&self.initdb(&tb, &settings)).await?;
                }
                anyhow::Ok(())
            };
            let (recorded, made) =
                tokio::join!(self.record_before(&tb, &settings.superuser), initdb);
            recorded?;
            made?;
            failpoint::hit("recorded");
            let transfer = self.journal.learned.transfer;
            self.printer.step(format!(
                "pg_upgrade {} --jobs {}",
                transfer.flag(),
                self.journal.jobs
            ));
            if transfer == Transfer::Swap {
                self.journal.learned.swapping = true;
                let root = self.root().to_owned();
                self.journal.save(&root)?;
            }
            let up = PgUpgrade {
                old_major: old,
                new_major: new,
                old_datadir: &old_in,
                new_datadir: &new_in,
                superuser: &settings.superuser,
                run_dir: &tb.run_dir(),
                transfer,
                jobs: self.journal.jobs,
                check_only: false,
            };
            if let Err(e) = tb.run(&up.argv()).await {
                return Err(self.explain_pg_upgrade(e, &new_in));
            }
            failpoint::hit("pg_upgrade-done");
            // pg_upgrade writes update_extensions.sql into its working directory, which
            // goes with the toolbox: keep it for the verification step.
            let script = tb.at(&self.layout.extensions_script());
            tb.run(&[
                "sh".into(),
                "-c".into(),
                r#"test ! -f update_extensions.sql || mv update_extensions.sql "$0""#.into(),
                script,
            ])
            .await?;
            let accepted =
                config::parse_describe_config(&tb.run(&pgcmd::describe_config(new)).await?);
            let changes = carry_config(
                self.data(),
                &self.layout.staging(),
                &accepted,
                new,
                settings.wal_segment_bytes,
            )?;
            anyhow::Ok((changes, accepted))
        }
        .await;
        self.give_back(tb);
        let (mut changes, accepted) = result?;
        // The re-created container gets a command its new server accepts.
        if let (Some(c), Some(_)) = (&self.target.container, &self.journal.new_image) {
            let adjusted =
                config::adjust_command(&c.cmd, &accepted, new, settings.wal_segment_bytes);
            if !adjusted.changes.is_empty() {
                changes.extend(adjusted.changes.iter().map(ToString::to_string));
                self.journal.learned.container_command = Some(adjusted.command);
            }
        }
        self.journal.learned.config_changes = changes;
        Ok(())
    }

    /// Records the old cluster's catalog, relation files, sequences, extensions and roles (and
    /// with --verify counts its row counts) for the verification, unless a run before this one
    /// did. The old server is started in
    /// place, privately, as pg_upgrade itself starts it; never before the backup is complete,
    /// so that the backup is the stopped cluster byte for byte. (On the throwaway view of the
    /// checks, counting would copy every table: see [`preflight::cluster_checks`].)
    ///
    /// A run killed while a server ran on the old cluster (this count, or pg_upgrade's own
    /// start) left it stopped uncleanly, which pg_upgrade refuses: a start and a clean stop
    /// let PostgreSQL recover it from its WAL first.
    async fn record_before(&self, tb: &Toolbox<'_>, superuser: &str) -> Result<()> {
        let (old, data) = (self.journal.old_major, tb.at(self.data()));
        let path = self.layout.before();
        let removed = self.layout.options_removed();
        let strip = !self.journal.learned.unknown_options.is_empty() && !removed.exists();
        let control = ControlData::parse(&tb.run(&pgcmd::controldata(old, &data)).await?);
        // Settings read before the stop, compared with the stopped cluster's.
        if let (Some(c), Some(s)) = (&control, &self.journal.learned.settings)
            && (c.checksums, c.wal_segment_bytes) != (s.checksums, s.wal_segment_bytes)
        {
            bail!(
                "the old cluster's data checksums or WAL segment size changed since it was checked; run the same command again to check it anew"
            );
        }
        if control.is_some_and(|c| !c.shut_down_cleanly()) {
            // pg_control says the same of a live server: make sure none runs (a restart
            // policy may have started the container again) before the lock file goes as stale.
            let running = self.docker.running_using(self.data()).await?;
            if !running.is_empty() || crate::cluster::server_holds(self.data()) {
                bail!(
                    "a PostgreSQL server runs on {} again{}; stop it, then run the same command to go on",
                    self.data().display(),
                    if running.is_empty() {
                        String::new()
                    } else {
                        format!(" (container {})", running.join(", "))
                    }
                );
            }
            tb.run(&pgcmd::remove_stale_lock(&data)).await?;
            self.printer
                .step("recovering the old cluster from its unclean stop");
            if path.exists() && !strip {
                tb.with_server(old, &data, async || anyhow::Ok(())).await?;
            }
        }
        if path.exists() && !strip {
            return Ok(());
        }
        let snapshot = tb
            .with_server(old, &data, async || {
                if strip {
                    self.strip_unknown_options(tb, superuser, &removed).await?;
                }
                if path.exists() {
                    return anyhow::Ok(None);
                }
                failpoint::hit("recording");
                let count = self.journal.learned.verify.counts();
                Ok(Some(verify::take(tb.socket_dir(), superuser, count).await?))
            })
            .await?;
        if let Some(mut snapshot) = snapshot {
            // Once the server stopped: the files as pg_upgrade will find them.
            verify::record_files(&mut snapshot, self.data(), &self.journal.locations)
                .context("cannot read the old cluster's relation files")?;
            let json = serde_json::to_vec(&snapshot)?;
            backup::private_file(&path, &json, self.uid, self.gid)?;
        }
        Ok(())
    }

    /// Removes the catalog options the new major does not know from the old cluster (its
    /// backup, made before, keeps them), logging each object changed, and records how many.
    async fn strip_unknown_options(
        &self,
        tb: &Toolbox<'_>,
        superuser: &str,
        record: &Path,
    ) -> Result<()> {
        let unknown = &self.journal.learned.unknown_options;
        let names: Vec<String> = unknown.iter().map(ToString::to_string).collect();
        self.printer.step(format!(
            "removing options PostgreSQL {} does not know from the old cluster: {}",
            self.journal.new_major,
            names.join(", ")
        ));
        let removed = options::strip(tb.socket_dir(), superuser, unknown)
            .await
            .context("cannot remove the unknown options from the old cluster")?;
        let mut log = format!(
            "removed {} option(s) ({}) from the old cluster's catalogs:\n",
            removed.total(),
            names.join(", ")
        );
        for line in &removed.lines {
            log.push_str(line);
            log.push('\n');
        }
        self.append_log(&log);
        // A crash before the record is written loses only the count (the log has the lines):
        // the next run finds nothing left to remove.
        let json = serde_json::to_vec(&removed.per_database)?;
        backup::private_file(record, &json, self.uid, self.gid)?;
        failpoint::hit("options-removed");
        Ok(())
    }

    /// Keeps pg_upgrade's output directory with the logs of failed runs (the staging directory
    /// it is in goes with the undo) and says why it failed, from the files it points at.
    /// `staging_in`: the staging directory where pg_upgrade saw it.
    fn explain_pg_upgrade(&self, e: crate::toolbox::ToolError, staging_in: &str) -> anyhow::Error {
        let crate::toolbox::ToolError::Failed {
            output, code, tail, ..
        } = &e
        else {
            return anyhow::Error::from(e).context("pg_upgrade failed");
        };
        let kept = self.layout.pg_upgrade_logs(&self.journal.stamp);
        let _ = backup::logs_dir(&self.layout, self.uid, self.gid);
        let _ = std::fs::remove_dir_all(&kept);
        let kept = std::fs::rename(pg_upgrade_output::output_dir(&self.layout.staging()), &kept)
            .is_ok()
            .then_some(kept);
        let in_toolbox = pg_upgrade_output::output_dir(Path::new(staging_in));
        let files: Vec<(String, String)> = pg_upgrade_output::referenced_files(output)
            .into_iter()
            .filter_map(|file| {
                let below = Path::new(&file).strip_prefix(&in_toolbox).ok()?;
                let text = std::fs::read_to_string(kept.as_ref()?.join(below)).ok()?;
                Some((file, text))
            })
            .collect();
        let why = pg_upgrade_output::summarize(output, &files)
            .unwrap_or_else(|| format!("exit code {code}: {tail}"));
        match kept {
            Some(dir) => anyhow::anyhow!(
                "pg_upgrade failed: {why} (its logs are kept in {})",
                dir.display()
            ),
            None => anyhow::anyhow!("pg_upgrade failed: {why}"),
        }
    }

    fn append_log(&self, text: &str) {
        self.log().append(text, self.printer);
    }

    /// Starts the new cluster privately, compares it with the record made before the upgrade
    /// (the catalogs, and each relation's files: the old cluster's), then updates extensions,
    /// rebuilds text indexes, and gathers statistics unless they wait for the hand-over.
    async fn verify(&mut self) -> Result<()> {
        let later = self.statistics_after_hand_over();
        // What an earlier upgrade of this data left pending is not this one's.
        let _ = std::fs::remove_file(self.layout.statistics_pending());
        self.printer.step(format!(
            "starting the new cluster privately: verification{}, extensions{}",
            if self.journal.learned.verify.counts() {
                " (with row counts)"
            } else {
                ""
            },
            if later { "" } else { ", statistics" }
        ));
        let settings = self
            .journal
            .learned
            .settings
            .clone()
            .context("the journal lacks the checked settings")?;
        let before: Snapshot = serde_json::from_slice(&std::fs::read(self.layout.before())?)?;
        let new = self.journal.new_major;
        let script = self.layout.extensions_script();
        let superuser = &settings.superuser;
        let count = self.journal.learned.verify.counts();
        let tb = self.borrow_tools().await?;
        let data_in = tb.at(self.data());
        let result = async {
            let after = tb
                .with_server(new, &data_in, async || {
                    failpoint::hit("verifying");
                    let mut after = verify::take(tb.socket_dir(), superuser, count).await?;
                    verify::record_files(&mut after, self.data(), &self.journal.locations)
                        .context("cannot read the new cluster's relation files")?;
                    let diffs = verify::differences(&before, &after);
                    if !diffs.is_empty() {
                        bail!("verification found differences: {}", diffs.join("; "));
                    }
                    // Only then the extensions: their update scripts may change the tables
                    // they own, which is no difference pg_upgrade made.
                    let run_dir = tb.run_dir();
                    if script.exists() {
                        let file = tb.at(&script);
                        tb.run(&pgcmd::psql_file(new, &run_dir, superuser, &file))
                            .await
                            .context("update_extensions.sql failed")?;
                    }
                    let failed = extension::update_all(tb.socket_dir(), superuser).await?;
                    let now = extension::installed(tb.socket_dir(), superuser).await?;
                    let updated = extension::changes(&before.extensions(), &now, &failed);
                    let rebuilt = self.text_indexes(tb.socket_dir(), superuser).await?;
                    if !later {
                        self.printer.step("gathering statistics");
                        let stages = statistics::stages(new, false);
                        self.gather(tb.socket_dir(), superuser, &stages).await?;
                    }
                    anyhow::Ok((after, updated, rebuilt))
                })
                .await?;
            let control = ControlData::parse(&tb.run(&pgcmd::controldata(new, &data_in)).await?);
            anyhow::Ok((after, control))
        }
        .await;
        self.give_back(tb);
        let ((after, updated, rebuilt), control) = result?;
        self.extensions = updated;
        self.rebuilt = Some(rebuilt);
        let relations = after.databases.values().flat_map(|d| d.relations.values());
        self.verified = Some(VerifySummary {
            proof: self.journal.learned.verify,
            databases: after.databases.len(),
            relations: relations.clone().count(),
            files: relations.map(|r| r.files.len()).sum(),
            tables: after.databases.values().map(|d| d.tables.len()).sum(),
            rows: after
                .databases
                .values()
                .flat_map(|d| d.tables.values())
                .sum(),
            sequences: after.databases.values().map(|d| d.sequences.len()).sum(),
            roles: after.roles.len(),
            indexes_rebuilt: self.rebuilt.as_ref().map_or(0, |r| r.count),
        });
        if let (Some(name), Some(control)) = (&self.journal.backup_name, control) {
            let mut record = Record::read(self.root(), name)?;
            record.upgraded_checkpoint = Some(control.checkpoint);
            record.write(self.root(), self.uid, self.gid)?;
        }
        self.options_removed = std::fs::read(self.layout.options_removed())
            .ok()
            .and_then(|j| serde_json::from_slice(&j).ok());
        // The old cluster set aside mid-swap and the files the steps handed each other.
        restore::remove_leftovers(&self.layout, &self.journal.locations);
        if self.statistics_after_hand_over() {
            let pending = statistics::Pending {
                major: new,
                container: self
                    .journal
                    .container
                    .clone()
                    .context("a container to hand over")?,
                superuser: superuser.clone(),
                jobs: self.journal.jobs,
                since: chrono::Utc::now(),
            };
            let json = serde_json::to_vec_pretty(&pending)?;
            let path = self.layout.statistics_pending();
            backup::private_file(&path, &json, self.uid, self.gid)?;
        }
        Ok(())
    }

    /// Whether the statistics wait until the re-created container serves the new cluster: the
    /// server is down only for what proves the upgrade. Without a container to hand over to,
    /// they are gathered on the private server.
    fn statistics_after_hand_over(&self) -> bool {
        self.steps.contains(&Step::Recreating)
    }

    /// Statistics on the private server listening in `socket` (while down), for the report.
    async fn gather(
        &mut self,
        socket: &Path,
        superuser: &str,
        stages: &[statistics::Stage],
    ) -> Result<()> {
        let began = std::time::Instant::now();
        let gathered =
            gather_statistics(self.printer, socket, superuser, stages, self.journal.jobs).await?;
        self.statistics = Some(StatisticsReport::complete(false, stages, &gathered, began));
        Ok(())
    }

    /// Rebuilds the indexes on text that --reindex asks for (by default those on a collation
    /// whose library changed), on the new cluster's private server listening in `socket`,
    /// then records the collation versions it now has. With --reindex never, the indexes left
    /// are recorded for `status`.
    async fn text_indexes(&self, socket: &Path, superuser: &str) -> Result<Rebuilt> {
        let new = self.journal.new_major;
        let learned = &self.journal.learned;
        // A journal from before the libraries were checked: as if nobody could tell.
        let pair = learned.libraries.clone().unwrap_or(collation::Pair {
            old: None,
            new: collation::Libraries::default(),
        });
        let changed = pair.changed();
        let rebuild = collation::to_rebuild(learned.reindex, changed);
        let pending = self.layout.reindex_pending();
        let _ = std::fs::remove_file(&pending);
        if !rebuild.any() && !changed.any() {
            return Ok(Rebuilt::default());
        }
        let indexes = collation::dependent(socket, superuser, new).await?;
        let (todo, left): (Vec<TextIndex>, Vec<TextIndex>) =
            indexes.into_iter().partition(|i| rebuild.touches(i));
        let left: Vec<TextIndex> = left.into_iter().filter(|i| changed.touches(i)).collect();
        let change = pair.describe_change();
        if !todo.is_empty() {
            self.printer.step(format!(
                "rebuilding {} index(es) on text ({change}), {} at a time",
                todo.len(),
                self.journal.jobs
            ));
            let bar = self.printer.count_bar(todo.len() as u64, "indexes");
            let done = |n: usize| bar.set_position(n as u64);
            let jobs = self.journal.jobs as usize;
            failpoint::hit("reindexing");
            collation::rebuild(socket, superuser, &todo, jobs, &done)
                .await
                .map_err(|e| match e {
                    RebuildError::Duplicates { .. } => anyhow::Error::from(Refusal(format!(
                        "{e}; remove the duplicate rows on the old cluster and REINDEX that index there, then upgrade again"
                    ))),
                    other => anyhow::Error::from(other).context("rebuilding the text indexes failed"),
                })?;
            bar.finish_and_clear();
        }
        let refreshed = if rebuild.any() {
            collation::refresh_versions(socket, superuser, new).await?
        } else {
            Vec::new()
        };
        let mut log = format!("text indexes ({change}): {} rebuilt\n", todo.len());
        for line in todo
            .iter()
            .map(|i| format!("rebuilt {} in {}", i.name, i.database))
            .chain(refreshed)
        {
            log.push_str(&line);
            log.push('\n');
        }
        self.append_log(&log);
        if !left.is_empty() {
            let record = collation::Pending {
                major: new,
                superuser: superuser.to_owned(),
                change,
                indexes: left.clone(),
            };
            let json = serde_json::to_vec_pretty(&record)?;
            backup::private_file(&pending, &json, self.uid, self.gid)?;
        }
        Ok(Rebuilt {
            count: todo.len(),
            left: left.len(),
        })
    }

    async fn recreate(&self) -> Result<UpgradeReport> {
        let name = self
            .journal
            .container
            .clone()
            .expect("recreating a container");
        let image = self.journal.new_image.clone().expect("with a new image");
        let superuser = &self
            .journal
            .learned
            .settings
            .as_ref()
            .context("the journal lacks the settings")?
            .superuser;
        self.printer
            .step(format!("re-creating container {name} on {image}"));
        let to = recreate::Move {
            name: &name,
            image: &image,
            root: self.root(),
            data: self.data(),
            keep_as: recreate::kept_name(&name, &self.journal.stamp),
            superuser,
            major: self.journal.new_major,
            command: self.journal.learned.container_command.as_deref(),
        };
        let moved = recreate::recreate(self.docker, &to)
            .await
        .with_context(|| {
            format!(
                "the upgrade is done and verified, but re-creating container {name} on {image} failed; run the same command again to retry, or `pgup rollback` to go back"
            )
        })?;
        let mut report = self.report(Some(moved.server_version_num));
        report.serving_at = Some(chrono::Utc::now());
        report.downtime_s = report
            .stopped_at
            .zip(report.serving_at)
            .map(|(stopped, serving)| seconds(serving - stopped));
        report.container = Some(name);
        report.image = Some(image);
        report.next = moved.compose_hint;
        Ok(report)
    }

    /// The report of an upgrade whose container a run before this one re-created: what it
    /// serves now (when it began to is that run's to say).
    async fn served(&self) -> Result<UpgradeReport> {
        let name = self.journal.container.clone().expect("re-created");
        let settings = self.journal.learned.settings.as_ref();
        let superuser = settings.context("the journal lacks the settings")?;
        let version = recreate::server_version(self.docker, &name, &superuser.superuser).await?;
        let mut report = self.report(Some(version));
        report.image = Some(self.docker.container(&name).await?.image);
        report.container = Some(name);
        report.downtime_s = None;
        Ok(report)
    }

    fn report(&self, version: Option<i32>) -> UpgradeReport {
        let next = match (&self.journal.container, version) {
            (_, Some(_)) => None,
            (Some(c), None) => Some(format!(
                "Container {c} stays stopped: it still names the PostgreSQL {} image. Re-create it on a PostgreSQL {} image (pgup upgrade --new-image, or docker/compose), keeping its volumes.",
                self.journal.old_major, self.journal.new_major
            )),
            (None, None) => Some(format!(
                "Start the data on a PostgreSQL {} server image; PGDATA is {}.",
                self.journal.new_major,
                self.data().display()
            )),
        };
        UpgradeReport {
            target: self.target.label.clone(),
            changed: true,
            from: self.journal.old_major,
            to: self.journal.new_major,
            backup: self.backup_dir(),
            transfer: self.journal.learned.transfer,
            settings_changed: self.journal.learned.config_changes.clone(),
            options_removed: self.options_removed.iter().flat_map(|m| m.values()).sum(),
            options_removed_by_database: self.options_removed.clone().unwrap_or_default(),
            extensions: self.extensions.clone(),
            verified: self.verified.clone(),
            libraries: self
                .journal
                .learned
                .libraries
                .as_ref()
                .filter(|p| p.changed().any())
                .map(collation::Pair::describe_change),
            reindex_pending: self.rebuilt.as_ref().map_or(0, |r| r.left),
            stopped_at: self.journal.learned.stopped_at,
            serving_at: None,
            downtime_s: self
                .journal
                .learned
                .stopped_at
                .map(|stopped| seconds(chrono::Utc::now() - stopped)),
            steps: plan::step_times(&self.journal.timeline, chrono::Utc::now()),
            statistics: self.statistics.clone(),
            backup_copy: Some(*self.copies.lock().expect("not poisoned"))
                .filter(|c| c.while_serving.is_some() || c.while_stopped.is_some()),
            container: None,
            image: None,
            server_version_num: version,
            hooks: Vec::new(),
            next,
        }
    }

    /// After a failure (not an interruption): before the swap, everything is undone and the
    /// servers restarted; during the swap or verification, or when the post-upgrade hook
    /// fails, the backup is put back; while re-creating the container, the journal stays for
    /// a retry. What became of the old cluster, for `end`.
    async fn recover(&mut self, e: anyhow::Error) -> (anyhow::Error, Outcome) {
        if interrupt::interrupted() {
            return (e, Outcome::Failed);
        }
        // Programs killed by a full disk do not always say so: measured before the undo
        // frees this run's space.
        let free = crate::space::free_bytes(self.root()).unwrap_or(u64::MAX);
        let enospc = format!("{e:#}").contains("No space left on device");
        let e = if enospc || free < 16 * 1024 * 1024 {
            e.context(format!(
                "the filesystem holding {} is full ({} free then): free space, then try again",
                self.root().display(),
                indicatif::HumanBytes(free)
            ))
        } else {
            e
        };
        let step = self.journal.step;
        if step <= Step::Upgrading {
            let undone =
                restore::undo_before_swap(self.docker, self.printer, &self.target, &self.journal)
                    .await;
            return match undone {
                Ok(()) => (
                    e.context("nothing was changed: the old cluster is as it was"),
                    Outcome::Failed,
                ),
                Err(u) => (
                    e.context(NotUndone(format!(
                        "the upgrade failed and so did undoing it ({u:#}); run `pgup rollback` with the same target flags to restore the old cluster"
                    ))),
                    Outcome::Failed,
                ),
            };
        }
        let keep = self
            .journal
            .learned
            .hooks
            .as_ref()
            .is_some_and(|h| h.keep_on_failure);
        if step == Step::PostUpgrade && (keep || self.journal.backup == BackupKind::None) {
            let why = if keep {
                "the new cluster stays, as --keep-on-hook-failure asks (`pgup rollback` goes back)"
            } else {
                "the new cluster stays: no backup was kept to go back to"
            };
            if let Err(f) = self.finish().await {
                return (e.context(f), Outcome::Failed);
            }
            finish_statistics(self.docker, self.printer, &self.layout).await;
            return (e.context(why), Outcome::Failed);
        }
        if step == Step::Recreating || self.journal.backup == BackupKind::None {
            return (e, Outcome::Failed);
        }
        let from = self.journal.put_back_from();
        let lost = if from == Step::Stopping {
            format!(
                "; what was written to PostgreSQL {} since the hand-over is lost",
                self.journal.new_major
            )
        } else {
            String::new()
        };
        self.hook_told(Phase::PreRollback, None).await;
        self.printer
            .step("putting the old cluster back from the backup");
        let mut journal = self.journal.clone();
        let put_back = async {
            if from == Step::Stopping {
                journal.stop_also(self.docker.running_using(self.data()).await?);
            }
            restore::from_backup(self.docker, self.printer, &self.target, journal, from).await
        }
        .await;
        match put_back {
            Ok(_) => {
                self.hook_told(Phase::PostRollback, None).await;
                (
                    e.context(format!(
                        "the old cluster was put back from the backup{lost}"
                    )),
                    Outcome::RolledBack,
                )
            }
            Err(r) => (
                e.context(NotUndone(format!(
                    "and putting the backup back failed too ({r:#}); run `pgup rollback` on this data"
                ))),
                Outcome::Failed,
            ),
        }
    }
}

/// What became of the planner statistics.
#[derive(Debug, Clone, Serialize)]
pub struct StatisticsReport {
    /// Gathered once the new cluster served (else on the private server, while down).
    pub after_hand_over: bool,
    pub complete: bool,
    /// ANALYZE commands run, over all stages.
    pub analyzed: usize,
    /// The rule for the new major, as the vacuumdb commands that do the same.
    pub rule: &'static str,
    pub seconds: f64,
    /// Why they are incomplete.
    pub error: Option<String>,
}

impl StatisticsReport {
    fn complete(
        after_hand_over: bool,
        stages: &[statistics::Stage],
        gathered: &Gathered,
        began: std::time::Instant,
    ) -> Self {
        Self {
            after_hand_over,
            complete: true,
            analyzed: gathered.analyzed,
            rule: statistics::rule(stages),
            seconds: began.elapsed().as_secs_f64(),
            error: None,
        }
    }
}

impl std::fmt::Display for StatisticsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error {
            None => write!(
                f,
                "Statistics gathered in {:.1} s {} ({} ANALYZE; {}).",
                self.seconds,
                if self.after_hand_over {
                    "after the hand-over, while the server served"
                } else {
                    "before the end"
                },
                self.analyzed,
                self.rule
            ),
            Some(e) => write!(
                f,
                "Warning: the statistics are incomplete ({e}); the server serves meanwhile with what it has. Run the same command again to finish them (`pgup status` tells)."
            ),
        }
    }
}

/// ANALYZE in `stages` on the server listening in `socket`, with a bar per stage.
async fn gather_statistics(
    printer: &Printer,
    socket: &Path,
    superuser: &str,
    stages: &[statistics::Stage],
    jobs: u32,
) -> Result<Gathered> {
    let bar = printer.count_bar(0, "relations");
    let progress = |stage: usize, done: usize, total: usize| {
        if done == 0 {
            bar.set_length(total as u64);
            bar.set_message(format!("stage {stage}/{}", stages.len()));
        }
        bar.set_position(done as u64);
    };
    let gathered = statistics::gather(socket, superuser, stages, jobs as usize, &progress)
        .await
        .context("gathering statistics failed")?;
    bar.finish_and_clear();
    Ok(gathered)
}

/// Gathers the statistics an upgrade left pending on the container now serving its new
/// cluster (in stages: rough ones first), then forgets them. None when none are pending.
async fn finish_statistics(
    docker: &Docker,
    printer: &Printer,
    layout: &Layout,
) -> Option<StatisticsReport> {
    let path = layout.statistics_pending();
    let pending = statistics::Pending::read(&path)?;
    let began = std::time::Instant::now();
    let stages = statistics::stages(pending.major, true);
    let result = async {
        let socket = crate::recreate::served_socket(docker, &pending.container).await?;
        printer.step(format!(
            "gathering statistics while container {} serves",
            pending.container
        ));
        failpoint::hit("statistics");
        let gathered =
            gather_statistics(printer, &socket, &pending.superuser, &stages, pending.jobs).await?;
        std::fs::remove_file(&path)?;
        anyhow::Ok(gathered)
    }
    .await;
    Some(match result {
        Ok(gathered) => StatisticsReport::complete(true, &stages, &gathered, began),
        Err(e) => StatisticsReport {
            after_hand_over: true,
            complete: false,
            analyzed: 0,
            rule: statistics::rule(&stages),
            seconds: began.elapsed().as_secs_f64(),
            error: Some(format!("{e:#}")),
        },
    })
}

fn seconds(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds().max(0) as f64 / 1000.0
}

/// Puts the new cluster's WAL, written into the WAL directory's staging directory, in the WAL
/// directory (the old WAL was set aside) and points `staging`'s `pg_wal` at it. Renames only,
/// the link replaced atomically: running it again after an interruption finishes it.
fn wal_in_place(wal: &Location, staging: &Path) -> Result<()> {
    let link = staging.join("pg_wal");
    if std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
        let tmp = staging.join("pg_wal.pgup-new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&wal.path, &tmp)
            .and_then(|()| std::fs::rename(&tmp, &link))
            .with_context(|| {
                format!("cannot point {} at {}", link.display(), wal.path.display())
            })?;
        tree::sync_dir(staging)?;
    }
    let new_wal = wal.layout().staging();
    if new_wal.exists() {
        tree::move_entries(&new_wal, &wal.host, &|_| false)
            .with_context(|| format!("cannot move the new WAL into {}", wal.host.display()))?;
        std::fs::remove_dir(&new_wal)?;
    }
    Ok(())
}

/// Copies the old cluster's configuration files into the new one, adjusting settings the new
/// major no longer accepts, keeping each file's owner and mode. Returns the changes made.
fn carry_config(
    data: &Path,
    staging: &Path,
    accepted: &std::collections::BTreeSet<String>,
    new_major: u32,
    wal: u64,
) -> Result<Vec<String>> {
    let mut changes = Vec::new();
    for file in [
        "postgresql.conf",
        "postgresql.auto.conf",
        "pg_hba.conf",
        "pg_ident.conf",
    ] {
        let from = data.join(file);
        let Ok(text) = std::fs::read_to_string(&from) else {
            continue;
        };
        let text = if file.starts_with("postgresql") {
            let adjusted = config::adjust(file, &text, accepted, new_major, wal);
            changes.extend(adjusted.changes.iter().map(ToString::to_string));
            adjusted.text
        } else {
            text
        };
        let meta = std::fs::metadata(&from)?;
        let to = staging.join(file);
        std::fs::write(&to, text).with_context(|| format!("cannot write {}", to.display()))?;
        tree::set_metadata(&to, &meta)?;
    }
    Ok(changes)
}
