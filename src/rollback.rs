//! `pgup rollback`: back to the cluster an upgrade kept, and to the old container: which
//! backup, whether it belongs to the data as it is now, whether the new server has run since
//! (what going back loses), and the operator's confirmation; `restore` does the putting back.
//! An upgrade that was interrupted is undone or rolled back from its journal.

use std::fmt;

use anyhow::{Context, Result, bail};

use crate::backup::{self, Record};
use crate::cluster::{Cluster, ControlData};
use crate::docker::Docker;
use crate::error::{Kind, Refusal, Status};
use crate::hooks::{self, Hooks, Outcome, Phase, RunLog};
use crate::interrupt;
use crate::journal::{self, Journal, Lock};
use crate::layout::{Layout, RootEntry};
use crate::pgcmd;
use crate::plan::{BackupKind, Operation, Step};
use crate::restore::{self, RollbackReport};
use crate::settings;
use crate::target::{self, Target};
use crate::toolbox::{self, OLD, ToolMount, Toolbox, ToolboxSpec};
use crate::ui::{Printer, Unchanged};

/// What a rollback will do, shown before it is confirmed.
struct Summary<'a> {
    target: &'a str,
    record: &'a Record,
    ran: Option<String>,
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.record;
        writeln!(
            f,
            "Roll {} back from PostgreSQL {} to {}, restoring {} (made {}).",
            self.target,
            r.new_major,
            r.old_major,
            r.name,
            r.created.format("%Y-%m-%d %H:%M:%S UTC")
        )?;
        if let Some(ran) = &self.ran {
            writeln!(f, "{ran}")?;
        }
        Ok(())
    }
}

/// The site's hooks over one rollback, once it knows what it puts back.
struct Site {
    hooks: Hooks,
    env: hooks::Env,
    layout: Layout,
    /// The backup put back, and the stamp of the run whose log the hooks write to.
    backup: Option<String>,
    stamp: String,
    owner: (u32, u32),
    /// The old cluster is back.
    done: bool,
}

impl Site {
    /// What the hooks of a rollback by `journal` are told.
    fn new(hooks: Hooks, target: &Target, journal: &Journal) -> Result<Self> {
        let layout = Layout::new(&target.mount_root);
        Ok(Self {
            env: hooks::Env {
                target: target.label.clone(),
                container: journal.container.clone(),
                data_dir: target.data_dir.clone(),
                backup_dir: journal.backup_name.as_ref().map(|n| layout.backup(n)),
                from: journal.old_major,
                to: journal.new_major,
                result: None,
            },
            hooks,
            layout,
            backup: journal.backup_name.clone(),
            stamp: journal.stamp.clone(),
            owner: target::owner(&target.data_dir)?,
            done: false,
        })
    }

    /// The upgrade's log, which follows its backup's record.
    fn log(&self) -> RunLog {
        let (uid, gid) = self.owner;
        RunLog::of(&self.layout, self.backup.as_deref(), &self.stamp, uid, gid)
    }

    async fn run(&self, phase: Phase, env: &hooks::Env, printer: &Printer) -> Result<()> {
        self.hooks
            .run(phase, env, printer, Some(&self.log()))
            .await?;
        Ok(())
    }

    /// pre-rollback: its failure stops the rollback before it changes anything.
    async fn before(&self, printer: &Printer) -> Result<()> {
        self.run(Phase::PreRollback, &self.env, printer)
            .await
            .map_err(|e| Refusal(format!("{e}; nothing was changed")).into())
    }

    /// post-rollback, once the old cluster is back.
    async fn after(&mut self, printer: &Printer) -> Result<()> {
        self.done = true;
        self.run(Phase::PostRollback, &self.env, printer)
            .await
            .context("the old cluster is back, but the post-rollback hook failed")
    }
}

pub async fn run(args: settings::Rollback, printer: &Printer) -> Result<Status> {
    let hooks = Hooks::given(args.hooks.as_ref())?;
    let mut site = None;
    let result = roll_back(args, hooks, &mut site, printer).await;
    if let Some(site) = site {
        let outcome = match &result {
            _ if site.done => Outcome::RolledBack,
            Err(e) if Kind::of(e, false) == Kind::Refused => Outcome::Refused,
            _ => Outcome::Failed,
        };
        let env = hooks::Env {
            result: Some(outcome),
            ..site.env.clone()
        };
        if let Err(e) = site.run(Phase::End, &env, printer).await {
            printer.step(format!("warning: {e}"));
        }
    }
    result
}

async fn roll_back(
    args: settings::Rollback,
    hooks: Option<Hooks>,
    site: &mut Option<Site>,
    printer: &Printer,
) -> Result<Status> {
    let docker = Docker::connect_for(args.target.is_data_dir()).await?;
    let target = Target::resolve(&args.target, &docker).await?;
    let flags = args.target.flags();
    let root = target.mount_root.clone();
    let layout = Layout::new(&root);
    let (uid, gid) = target::owner(&target.data_dir)?;

    if let Some(mut journal) = Journal::read(&root)? {
        let _lock = Lock::take(&root, uid, gid)?;
        interrupt::journal_at(root.clone(), flags.clone());
        printer.step(format!("found: {}", journal.explain(&flags)));
        docker
            .remove_strays(&target.data_dir, toolbox::pgup_alive)
            .await?;
        let from = match (journal.operation, journal.step) {
            (Operation::Cleanup, _) => bail!("{}", journal.explain(&flags)),
            (Operation::Rollback, step) => Some(step),
            (Operation::Upgrade, step) if step <= Step::Upgrading => None,
            (Operation::Upgrade, _) if journal.backup == BackupKind::None => bail!(
                "the interrupted upgrade keeps no backup (--no-backup), so there is nothing to go back to; run `{}` to finish it",
                journal.command
            ),
            (Operation::Upgrade, _) => Some(journal.put_back_from()),
        };
        // Without --hooks, those the interrupted upgrade was given.
        if let Some(hooks) = hooks.or_else(|| journal.learned.hooks.clone()) {
            let s = site.insert(Site::new(hooks, &target, &journal)?);
            s.before(printer).await?;
        }
        if from == Some(Step::Stopping) {
            journal.stop_also(docker.running_using(&target.data_dir).await?);
        }
        let report = match from {
            None => {
                restore::undo_before_swap(&docker, printer, &target, &journal).await?;
                RollbackReport {
                    target: target.label.clone(),
                    changed: true,
                    from: journal.new_major,
                    to: journal.old_major,
                    backup: None,
                    set_aside: None,
                    container: journal.container.clone(),
                    image: None,
                    server_version_num: None,
                    note: Some(
                        "The interrupted upgrade was undone: the old cluster is as it was.".into(),
                    ),
                }
            }
            Some(from) => restore::from_backup(&docker, printer, &target, journal, from).await?,
        };
        // Again: a container the killed pgup asked for may appear only after the first sweep.
        docker
            .remove_strays(&target.data_dir, toolbox::pgup_alive)
            .await?;
        if let Some(s) = site {
            s.after(printer).await?;
        }
        printer.report(&report)?;
        return Ok(Status::Done);
    }

    // A completed upgrade: its backup and record say where to go back to.
    let backups = backup::find(&layout.backup_dirs(&target.data_dir))?;
    let chosen = match &args.backup {
        Some(name) => Some(backups.iter().find(|b| &b.name == name).with_context(|| {
            format!(
                "there is no backup {name} in {}; `pgup status` lists the backups",
                root.display()
            )
        })?),
        None => backups.last(),
    };
    let Some(chosen) = chosen else {
        // A rollback that finished: running it again does nothing.
        return match put_back_last(&layout) {
            Some(r) => {
                printer.report(&Unchanged::new(
                    &target.label,
                    format!(
                        "{} was already put back on {}, and no other backup is here",
                        r.name,
                        r.rolled_back
                            .expect("filtered")
                            .format("%Y-%m-%d %H:%M:%S UTC")
                    ),
                ))?;
                Ok(Status::Done)
            }
            None => bail!(
                "nothing to roll back: {} holds no upgrade_backup_* (an upgrade with --no-backup keeps none, and cleanup removes them)",
                root.display()
            ),
        };
    };
    let record = Record::read(&root, &chosen.name).with_context(|| {
        format!(
            "backup {} has no readable record ({}.json), so pgup cannot tell what it holds; see docs/rollback.md to restore it by hand",
            chosen.name, chosen.name
        )
    })?;
    let current = Cluster::open(&target.data_dir)?;
    let backup_major = std::fs::read_to_string(chosen.path.join("PG_VERSION")).unwrap_or_default();
    if current.major != record.new_major.to_string()
        || backup_major.trim() != record.old_major.to_string()
    {
        bail!(
            "backup {} holds PostgreSQL {} from an upgrade to {}, but this data is PostgreSQL {}: it does not belong to the cluster as it is now; nothing was changed",
            chosen.name,
            backup_major.trim(),
            record.new_major,
            current.major
        );
    }
    if !docker.has_engine() {
        if let Some(c) = &record.container {
            return Err(Refusal(format!(
                "backup {} was made by an upgrade of container {c}, which pgup puts back too, and there is no Docker engine here: roll it back on the Docker host (`pgup rollback --container {c}`); nothing was changed",
                chosen.name
            ))
            .into());
        }
        if crate::cluster::server_holds(&target.data_dir) {
            return Err(Refusal(
                "a PostgreSQL server runs on the data in this container: stop it, then run the same command again; nothing was changed".into(),
            )
            .into());
        }
    }
    let ran = new_server_ran(&docker, &target, &record, uid, gid).await?;
    let summary = Summary {
        target: &target.label,
        record: &record,
        ran,
    };
    if args.yes {
        if let Some(ran) = &summary.ran {
            printer.step(ran);
        }
    } else if !printer.confirm(&summary, "Proceed?")? {
        bail!("nothing was changed: the rollback was not confirmed");
    }

    let lock = Lock::take(&root, uid, gid)?;
    let running = docker.running_using(&target.data_dir).await?;
    let container = target.container.as_ref().map(|c| c.name.clone());
    let others: Vec<&str> = running
        .iter()
        .filter(|n| Some(*n) != container.as_ref() && Some(*n) != record.container.as_ref())
        .map(String::as_str)
        .collect();
    if !others.is_empty() && !args.stop_others {
        return Err(Refusal(format!(
            "nothing was changed: {}",
            crate::rules::others_running(&others)
        ))
        .into());
    }
    let journal = Journal {
        old_major: record.old_major,
        new_major: record.new_major,
        new_image: record.old_image.clone(),
        backup: record.mode,
        backup_name: Some(record.name.clone()),
        container: target
            .container
            .as_ref()
            .map(|c| c.name.clone())
            .or(record.container.clone()),
        running,
        locations: record.locations.clone(),
        ..Journal::begin(
            Operation::Rollback,
            target.pgdata_below_root(),
            journal::this_command(),
        )
    };
    if let Some(hooks) = hooks {
        let s = site.insert(Site::new(hooks, &target, &journal)?);
        s.before(printer).await?;
    }
    interrupt::journal_at(root.clone(), flags);
    let stamp = journal.stamp.clone();
    let mut report =
        restore::from_backup(&docker, printer, &target, journal, Step::Stopping).await?;
    drop(lock);
    if args.discard_upgraded {
        restore::remove_set_aside(report.set_aside.take(), &record.locations, &stamp)?;
    }
    if let Some(s) = site {
        s.after(printer).await?;
    }
    printer.report(&report)?;
    Ok(Status::Done)
}

/// The record of the backup a rollback put back last, kept with the logs (or, from a
/// rollback killed before it moved it, in the mount root).
fn put_back_last(layout: &Layout) -> Option<Record> {
    [layout.logs(), layout.root().to_owned()]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .is_some_and(|n| RootEntry::classify(n) == Some(RootEntry::Backup))
        })
        .filter_map(|e| Record::read_file(&e.path()).ok())
        .filter(|r| r.rolled_back.is_some())
        .max_by_key(|r| r.rolled_back)
}

/// Whether the upgraded server has run since the upgrade: it runs now, or its latest
/// checkpoint moved (a running server may not have checkpointed yet, so only a stopped
/// cluster's checkpoint tells). Says so in one line, or None when it has not.
async fn new_server_ran(
    docker: &Docker,
    target: &Target,
    record: &Record,
    uid: u32,
    gid: u32,
) -> Result<Option<String>> {
    let lost = format!(
        "anything written to PostgreSQL {} since the upgrade is lost by going back",
        record.new_major
    );
    let running = docker.running_using(&target.data_dir).await?;
    if !running.is_empty() {
        return Ok(Some(format!(
            "The PostgreSQL {} server runs now (container {}): {lost}.",
            record.new_major,
            running.join(", ")
        )));
    }
    let image = match toolbox::pick_image(docker, None, record.old_major, record.new_major, None)
        .await?
    {
        Ok(image) => image,
        Err(_) => {
            return Ok(Some(format!(
                "pgup cannot tell whether the new server has run (no upgrade image here): {lost}"
            )));
        }
    };
    let spec = ToolboxSpec {
        image: &image,
        role: "rollback",
        data: &target.data_dir,
        uid,
        gid,
        mounts: vec![ToolMount::Bind {
            host: target.data_dir.clone(),
            target: OLD.into(),
            read_only: true,
        }],
    };
    let tb = Toolbox::start(docker, spec).await?;
    let out = tb
        .run(&pgcmd::controldata(
            record.new_major,
            &tb.at(&target.data_dir),
        ))
        .await;
    tb.close().await;
    let now = ControlData::parse(&out?).map(|c| c.checkpoint);
    Ok(match (&record.upgraded_checkpoint, now) {
        (Some(then), Some(now)) if *then == now => None,
        (Some(then), Some(now)) => Some(format!(
            "The PostgreSQL {} server has run since the upgrade (checkpoint {then} → {now}): {lost}.",
            record.new_major
        )),
        _ => Some(format!(
            "The PostgreSQL {} server may have run since the upgrade: {lost}.",
            record.new_major
        )),
    })
}
