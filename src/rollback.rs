//! `pgup rollback`: back to the cluster an upgrade kept, and to the old container. Journaled
//! like the upgrade: the upgraded cluster is set aside (renamed, so a mistaken rollback can
//! itself be undone), the backup's entries are moved back (byte-identical: renames keep every
//! file, mode, owner, link and timestamp), the kept container is renamed back. An upgrade that
//! was interrupted is undone from its journal.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::backup::{self, Record};
use crate::check;
use crate::cli::RollbackArgs;
use crate::cluster::{Cluster, ControlData};
use crate::docker::Docker;
use crate::interrupt;
use crate::journal::{Journal, Learned, Lock, Operation, Step};
use crate::pgcmd;
use crate::plan::Backup;
use crate::recreate;
use crate::target::{self, Target};
use crate::toolbox::{ToolMount, Toolbox, ToolboxSpec};
use crate::ui::Printer;
use crate::upgrade;

#[derive(Debug, Serialize)]
pub struct RollbackReport {
    pub target: String,
    pub from: u32,
    pub to: u32,
    pub backup: Option<String>,
    /// Where the upgraded cluster was set aside (None when discarded or never in place).
    pub set_aside: Option<PathBuf>,
    pub container: Option<String>,
    pub image: Option<String>,
    pub server_version_num: Option<i32>,
    pub note: Option<String>,
}

impl fmt::Display for RollbackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Rolled {} back from PostgreSQL {} to {}.",
            self.target, self.from, self.to
        )?;
        if let Some(b) = &self.backup {
            writeln!(f, "Restored {b}.")?;
        }
        if let Some(a) = &self.set_aside {
            writeln!(
                f,
                "The upgraded cluster is set aside in {} (`pgup cleanup` removes it).",
                a.display()
            )?;
        }
        if let (Some(c), Some(v)) = (&self.container, self.server_version_num) {
            writeln!(
                f,
                "Container {c} runs {} (server_version_num {v}).",
                self.image.as_deref().unwrap_or("?")
            )?;
        }
        if let Some(n) = &self.note {
            writeln!(f, "{n}")?;
        }
        Ok(())
    }
}

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

pub async fn run(args: RollbackArgs, printer: &Printer) -> Result<bool> {
    let docker = Docker::connect().await?;
    let target = Target::resolve(&args.target, &docker).await?;
    let flags = target::flags(&args.target);
    let root = target.mount_root.clone();
    let (uid, gid) = target::owner(&target.data_dir)?;

    if let Some(mut journal) = Journal::read(&root)? {
        let _lock = Lock::take(&root, uid, gid)?;
        interrupt::journal_at(root.clone(), flags.clone());
        printer.step(format!("found: {}", journal.explain(&flags)));
        docker
            .remove_strays(&target.data_dir, crate::journal::pgup_alive)
            .await?;
        let from = match (journal.operation, journal.step) {
            (Operation::Cleanup, _) => bail!("{}", journal.explain(&flags)),
            (Operation::Rollback, step) => Some(step),
            (Operation::Upgrade, step) if step <= Step::Upgrading => None,
            (Operation::Upgrade, _) if journal.backup == Backup::None => bail!(
                "the interrupted upgrade keeps no backup (--no-backup), so there is nothing to go back to; run `{}` to finish it",
                journal.command
            ),
            (Operation::Upgrade, _) => Some(Step::SettingAside),
        };
        let report = match from {
            None => {
                upgrade::undo_before_swap(&docker, printer, &target, &journal).await?;
                RollbackReport {
                    target: target.label.clone(),
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
            Some(from) => {
                journal.operation = Operation::Rollback;
                finish(&docker, printer, &target, journal, from).await?
            }
        };
        // Again: a container the killed pgup asked for may appear only after the first sweep.
        docker
            .remove_strays(&target.data_dir, crate::journal::pgup_alive)
            .await?;
        printer.report(&report)?;
        return Ok(true);
    }

    // A completed upgrade: its backup and record say where to go back to.
    let mut dirs = vec![root.as_path()];
    if target.data_dir != root {
        dirs.push(&target.data_dir);
    }
    let backups = backup::find(&dirs)?;
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
        bail!("{}", nothing_to_roll_back(&root));
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
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let journal = Journal {
        operation: Operation::Rollback,
        step: Step::Stopping,
        stamp: chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string(),
        command: format!("pgup {}", pgcmd::display(&argv)),
        pgdata: target
            .data_dir
            .strip_prefix(&root)
            .unwrap_or(Path::new(""))
            .to_owned(),
        old_major: record.old_major,
        new_major: record.new_major,
        image: String::new(),
        new_image: record.old_image.clone(),
        backup: record.mode,
        backup_name: Some(record.name.clone()),
        jobs: 1,
        container: target
            .container
            .as_ref()
            .map(|c| c.name.clone())
            .or(record.container.clone()),
        running,
        learned: Learned::default(),
        updated: chrono::Utc::now(),
    };
    interrupt::journal_at(root.clone(), flags);
    let mut report = finish(&docker, printer, &target, journal, Step::Stopping).await?;
    drop(lock);
    if let Some(aside) = report.set_aside.take_if(|_| args.discard_upgraded) {
        std::fs::remove_dir_all(&aside)
            .with_context(|| format!("cannot remove {}", aside.display()))?;
    }
    printer.report(&report)?;
    Ok(true)
}

fn nothing_to_roll_back(root: &Path) -> String {
    let rolled_back = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".json")
                .map(str::to_owned)
        })
        .filter(|n| backup::is_backup_name(n))
        .filter_map(|n| Record::read(root, &n).ok())
        .filter(|r| r.rolled_back.is_some())
        .max_by_key(|r| r.rolled_back);
    match rolled_back {
        Some(r) => format!(
            "nothing to roll back: {} was already put back on {}, and no other backup is here",
            r.name,
            r.rolled_back
                .expect("filtered")
                .format("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => format!(
            "nothing to roll back: {} holds no upgrade_backup_* (an upgrade with --no-backup keeps none, and cleanup removes them)",
            root.display()
        ),
    }
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
    let image = match check::pick_image(docker, None, record.old_major, record.new_major).await? {
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
            target: check::OLD.into(),
            read_only: true,
        }],
    };
    let tb = Toolbox::start(docker, spec).await?;
    let out = tb
        .run(&pgcmd::controldata(record.new_major, check::OLD))
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

/// Runs a rollback's journaled steps from `from`: stop the servers, set the upgraded cluster
/// aside, put the backup back, put the old container back and start it if it was running.
pub async fn finish(
    docker: &Docker,
    printer: &Printer,
    target: &Target,
    mut journal: Journal,
    from: Step,
) -> Result<RollbackReport> {
    let root = &target.mount_root;
    let data = &target.data_dir;
    let name = journal
        .backup_name
        .clone()
        .context("the journal names no backup")?;
    let backup_dir = root.join(&name);
    let aside = Journal::work_dir(root).join(format!("upgraded-{}", journal.stamp));
    journal.advance(root, from)?;
    let mut restored = None;
    loop {
        match journal.step {
            Step::Stopping => {
                for c in &journal.running {
                    printer.step(format!("stopping container {c}"));
                    docker.stop(c, 120).await?;
                }
                journal.advance(root, Step::SettingAside)?;
            }
            Step::SettingAside => {
                printer.step(format!(
                    "setting the upgraded cluster aside in {}",
                    aside.display()
                ));
                backup::set_aside(data, &aside)?;
                journal.advance(root, Step::Restoring)?;
            }
            Step::Restoring => {
                printer.step(format!("putting {name} back"));
                restored = backup::put_back(data, &backup_dir)?;
                journal.advance(root, Step::Restarting)?;
            }
            Step::Restarting => break,
            step => bail!("the journal holds step {step:?}, which is not a rollback's"),
        }
    }
    let mut record = Record::read(root, &name).ok();
    let mut report = RollbackReport {
        target: target.label.clone(),
        from: journal.new_major,
        to: journal.old_major,
        backup: Some(name.clone()),
        set_aside: Some(aside).filter(|a| a.exists()),
        container: journal.container.clone(),
        image: None,
        server_version_num: None,
        note: None,
    };
    if let Some(c) = &journal.container {
        let stamp = name.strip_prefix(backup::PREFIX).unwrap_or_default();
        let kept = recreate::kept_name(c, stamp);
        let policy = record.as_ref().and_then(|r| r.restart_policy.clone());
        if docker.exists(&kept).await? {
            printer.step(format!("putting container {c} back (kept as {kept})"));
            docker
                .restore_container(&kept, c, policy.as_deref())
                .await?;
        }
        let was_running = journal.running.contains(c);
        if was_running {
            docker.start(c).await?;
            let superuser = record
                .as_ref()
                .and_then(|r| r.superuser.clone())
                .unwrap_or_else(|| "postgres".to_owned());
            let version = recreate::server_version(docker, c, &superuser).await?;
            if version / 10000 != journal.old_major as i32 {
                bail!(
                    "container {c} runs server_version_num {version}, not PostgreSQL {}",
                    journal.old_major
                );
            }
            report.server_version_num = Some(version);
        } else {
            report.note = Some(format!("Container {c} was not running and stays stopped."));
        }
        report.image = Some(docker.container(c).await?.image);
    }
    if let Some(r) = record.as_mut() {
        r.rolled_back = Some(chrono::Utc::now());
        let (uid, gid) = target::owner(data)?;
        r.write(root, uid, gid)?;
    }
    Journal::finish(root)?;
    upgrade::remove_leftovers(root);
    // The record and the backup's removal touched PGDATA's own times when the backups live
    // in it: give it the backed-up cluster's times again, last.
    if let Some(meta) = restored {
        crate::tree::set_metadata(data, &meta)?;
    }
    Ok(report)
}

/// Starts containers again after an undone upgrade; a failure is reported, not fatal.
pub async fn restart(docker: &Docker, printer: &Printer, names: &[String]) {
    for name in names {
        match docker.start(name).await {
            Ok(()) => printer.step(format!("started container {name} again on the old cluster")),
            Err(e) => printer.step(format!("could not start container {name} again: {e}")),
        }
    }
}
