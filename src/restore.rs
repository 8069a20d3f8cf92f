//! Putting the old cluster back, the one way it is done: by `pgup rollback`, and by an upgrade
//! that fails or is undone. Journaled like the upgrade: the upgraded cluster is set aside
//! (renamed, so a mistaken rollback can itself be undone), the backup's entries are moved back
//! (byte-identical: renames keep every file, mode, owner, link and timestamp), the kept
//! container is renamed back and started. An upgrade stopped before its swap is undone
//! instead: its partial work removed, or, once the cluster in place has been started, its
//! backup put back.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::backup::{self, Record};
use crate::compose;
use crate::docker::Docker;
use crate::journal::Journal;
use crate::layout::{self, Layout, WorkEntry};
use crate::location::Location;
use crate::plan::{Operation, Step};
use crate::recreate;
use crate::target::{self, Target};
use crate::tree;
use crate::ui::Printer;
use crate::walchanges;

/// What putting the old cluster back did (`pgup rollback`'s report).
#[derive(Debug, Serialize)]
pub struct RollbackReport {
    pub target: String,
    /// Always true (a re-run that finds nothing to do reports `Unchanged`).
    pub changed: bool,
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

/// Runs a rollback's journaled steps from `from` (the journal becomes a rollback's): stop the
/// servers, set the upgraded cluster aside, put the backup back, put the old container back
/// and start it if it was running.
pub async fn from_backup(
    docker: &Docker,
    printer: &Printer,
    target: &Target,
    mut journal: Journal,
    from: Step,
) -> Result<RollbackReport> {
    let root = &target.mount_root;
    let layout = Layout::new(root);
    let data = &target.data_dir;
    let name = journal
        .backup_name
        .clone()
        .context("the journal names no backup")?;
    let backup_dir = layout.backup(&name);
    let aside = layout.set_aside(&journal.stamp);
    journal.operation = Operation::Rollback;
    journal.advance(root, from)?;
    // Statistics the new cluster still waits for are not the old one's.
    let _ = std::fs::remove_file(layout.statistics_pending());
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
                let majors = [journal.old_major, journal.new_major];
                for l in &journal.locations {
                    backup::set_aside_in(l, &majors, &l.layout().set_aside(&journal.stamp))?;
                }
                backup::set_aside(data, &aside)?;
                journal.advance(root, Step::Restoring)?;
            }
            Step::Restoring => {
                printer.step(format!("putting {name} back"));
                for l in &journal.locations {
                    backup::put_back(&l.host, &l.layout().backup(&name))?;
                }
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
        changed: true,
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
        let stamp = layout::stamp_of(&name).unwrap_or_default();
        let kept = recreate::kept_name(c, stamp);
        let policy = record.as_ref().and_then(|r| r.restart_policy.clone());
        docker.settle_relabel(&kept).await?;
        let mut service = None;
        if docker.exists(&kept).await? {
            printer.step(format!("putting container {c} back (kept as {kept})"));
            service = compose::Service::of(&docker.container(&kept).await?.labels);
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
        let image = docker.container(c).await?.image;
        if let Some(s) = service {
            let hint = s.rollback_hint(&image);
            report.note = Some(match report.note.take() {
                Some(n) => format!("{n}\n{hint}"),
                None => hint,
            });
        }
        report.image = Some(image);
    }
    restart(docker, printer, &journal.others()).await;
    let (uid, gid) = target::owner(data)?;
    if let Some(r) = record.as_mut() {
        r.rolled_back = Some(chrono::Utc::now());
        r.write(root, uid, gid)?;
    }
    Journal::finish(root)?;
    backup::retire_record(&layout, &name, uid, gid)?;
    remove_leftovers(&layout, &journal.locations);
    // The record and the backup's removal touched PGDATA's own times when the backups live
    // in it: give it the backed-up cluster's times again, last.
    if let Some(meta) = restored {
        tree::set_metadata(data, &meta)?;
    }
    Ok(report)
}

/// Starts containers again (after an undone upgrade, or the ones --stop-others stopped); a
/// failure is reported, not fatal.
pub async fn restart(docker: &Docker, printer: &Printer, names: &[String]) {
    for name in names {
        match docker.start(name).await {
            Ok(()) => printer.step(format!("started container {name} again")),
            Err(e) => printer.step(format!("could not start container {name} again: {e}")),
        }
    }
}

/// Undoes an upgrade stopped before the swap, ends its journal and starts the containers
/// that ran again. From pg_upgrade's step on, the cluster in place may have been started (to
/// count its rows, by pg_upgrade itself), so the backup, which is the stopped cluster byte for
/// byte, is put back by a rollback's journaled steps and the started copy removed. Before, the
/// cluster in place is untouched, and this run's backup, partial or whole, is removed (so the
/// space is free again); with no backup, pg_upgrade's rename of pg_control is undone.
pub async fn undo_before_swap(
    docker: &Docker,
    printer: &Printer,
    target: &Target,
    journal: &Journal,
) -> Result<()> {
    let layout = Layout::new(&target.mount_root);
    let whole_backup = journal
        .backup_name
        .as_ref()
        .filter(|name| journal.step == Step::Upgrading && layout.backup(name).exists());
    if journal.learned.swapping && whole_backup.is_none() {
        // The staging directory may hold the old cluster's files, moved: remove nothing.
        bail!(
            "pg_upgrade --swap began on {}, but its backup {} is not there: nothing was removed; look for the backup before anything else",
            target.data_dir.display(),
            journal.backup_name.as_deref().unwrap_or("(none)")
        );
    }
    if let Some(name) = whole_backup {
        undo_pg_upgrade(&target.data_dir, &layout.staging(), journal)?;
        printer.step(format!(
            "putting back {name}: the cluster in place has been started since the copy"
        ));
        let report =
            from_backup(docker, printer, target, journal.clone(), Step::SettingAside).await?;
        remove_set_aside(report.set_aside, &journal.locations, &journal.stamp)?;
        // An undone run, not a rollback: its log stays with the failed runs'.
        let _ = std::fs::remove_file(layout.put_back_record(name, "json"));
        let _ = std::fs::rename(
            layout.put_back_record(name, "log"),
            layout.failed_log(&journal.stamp),
        );
        return Ok(tree::sync_dir(layout.root())?);
    }
    release_wal(docker, printer, target, journal).await;
    let undone = undo_files(&layout, &target.data_dir, journal).and_then(|()| {
        Journal::finish(layout.root())?;
        Ok(())
    });
    restart(docker, printer, &journal.running).await;
    undone
}

/// Lets go of the WAL the first pass of the backup had the old server keep (its replication
/// slot): dropped by the server if it still runs, else removed from the stopped cluster.
/// A failure is reported with what to do, not fatal: the old cluster is whole either way.
async fn release_wal(docker: &Docker, printer: &Printer, target: &Target, journal: &Journal) {
    // Not yet asked for, never asked for, or asked for and refused (the slot then dropped
    // at once).
    let refused = |p: &crate::plan::PreCopy| p.unguided.is_some();
    if journal.step < Step::PreCopying || journal.learned.precopy.as_ref().is_none_or(refused) {
        return;
    }
    let slot = walchanges::slot_name(&journal.stamp);
    let released = async {
        let server = docker
            .containers_using(&target.data_dir)
            .await?
            .into_iter()
            // The server's, not a temporary container of pgup's (a killed run's toolbox).
            .find(|c| c.running && c.pid.is_some() && !c.is_pgups());
        let owner = target::owner(&target.data_dir)?;
        Ok::<_, anyhow::Error>(
            walchanges::release(server.as_ref(), &target.data_dir, owner, &slot).await?,
        )
    }
    .await;
    match released {
        Ok(true) => printer.step(format!(
            "dropped replication slot {slot}, which kept the WAL for the backup's second pass"
        )),
        Ok(false) => {}
        Err(e) => printer.step(format!(
            "could not drop replication slot {slot} ({e:#}), which keeps the old server's WAL: drop it with SELECT pg_drop_replication_slot('{slot}')"
        )),
    }
}

/// Removes what a run stopped before the swap made: pg_upgrade's work, this run's backup
/// (partial or whole) with its record, and the files the steps handed each other.
fn undo_files(layout: &Layout, data: &Path, journal: &Journal) -> Result<()> {
    undo_pg_upgrade(data, &layout.staging(), journal)?;
    if let Some(name) = &journal.backup_name {
        for l in journal
            .locations
            .iter()
            .map(Location::layout)
            .chain([layout.clone()])
        {
            let _ = std::fs::remove_dir_all(l.partial_backup(name));
            let _ = std::fs::remove_dir_all(l.backup(name));
        }
        let _ = std::fs::remove_file(layout.record(name));
        if layout.backup_log(name).exists() {
            let (uid, gid) = target::owner(data)?;
            backup::logs_dir(layout, uid, gid)?;
            std::fs::rename(layout.backup_log(name), layout.failed_log(&journal.stamp))?;
        }
    }
    remove_leftovers(layout, &journal.locations);
    Ok(tree::sync_dir(layout.root())?)
}

/// Removes the upgraded cluster a rollback set aside at `stamp`: `in_data` (PGDATA's part, if
/// any) and the parts in each location.
pub fn remove_set_aside(
    in_data: Option<PathBuf>,
    locations: &[Location],
    stamp: &str,
) -> Result<()> {
    let parts = locations.iter().map(|l| l.layout().set_aside(stamp));
    for dir in in_data.into_iter().chain(parts).filter(|d| d.exists()) {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    Ok(())
}

/// Removes what ended or undone operations leave in the work directories of the mount root
/// and of each location (staging, the old cluster set aside mid-swap, the files steps hand
/// each other). Only when no operation is under way: a journal's steps may still need them.
pub fn remove_leftovers(layout: &Layout, locations: &[Location]) {
    for l in locations {
        remove_leftovers_in(&l.layout());
    }
    remove_leftovers_in(layout);
}

fn remove_leftovers_in(layout: &Layout) {
    for entry in std::fs::read_dir(layout.work())
        .into_iter()
        .flatten()
        .flatten()
    {
        let leftover = entry
            .file_name()
            .to_str()
            .and_then(WorkEntry::classify)
            .is_some_and(|e| e.is_leftover());
        if leftover {
            let path = entry.path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
}

/// pg_upgrade --link renames the old cluster's pg_control once linking starts; a new attempt
/// (or an undo) renames it back and drops the half-made new cluster: its staging directory,
/// its WAL's in the WAL directory, its version directory in each tablespace (none was there
/// before: the checks refuse one).
pub fn undo_pg_upgrade(data: &Path, staging: &Path, journal: &Journal) -> Result<()> {
    for l in &journal.locations {
        let made = std::fs::read_dir(&l.host)
            .with_context(|| format!("cannot read {}", l.host.display()))?
            .flatten()
            .filter(|e| !l.is_wal() && l.holds(&e.file_name().to_string_lossy(), journal.new_major))
            .map(|e| e.path())
            .chain([l.layout().staging()]);
        for dir in made.filter(|d| d.exists()) {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
    }
    let (control, renamed) = (
        data.join("global/pg_control"),
        data.join("global/pg_control.old"),
    );
    // After --swap the old cluster is used up: it must not look startable again.
    if renamed.exists() && !control.exists() && !journal.learned.swapping {
        std::fs::rename(&renamed, &control)
            .with_context(|| format!("cannot rename {} back", renamed.display()))?;
    }
    if staging.exists() {
        std::fs::remove_dir_all(staging)
            .with_context(|| format!("cannot remove {}", staging.display()))?;
    }
    Ok(())
}
