//! `pgup cleanup`: removes what pgup kept once it is no longer wanted: backups (with their
//! records, logs and kept containers), set-aside clusters, leftovers of interrupted runs, and
//! temporary containers and volumes that no running pgup owns. Never the live cluster. A
//! directory is first renamed into `.pgup/trash-*`, so an interrupted removal never leaves a
//! half-deleted directory that still looks like a backup.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::HumanBytes;
use serde::Serialize;

use crate::backup::{self, Record};
use crate::docker::Docker;
use crate::error::Status;
use crate::interrupt;
use crate::journal::{Journal, Lock};
use crate::layout::{self, Layout, RootEntry, WorkEntry};
use crate::location::Location;
use crate::plan::{Operation, Step};
use crate::recreate;
use crate::settings;
use crate::target::{self, Target};
use crate::toolbox;
use crate::tree;
use crate::ui::Printer;

#[derive(Debug, Clone, Serialize)]
pub struct Removal {
    /// "backup", "record", "log", "set-aside cluster", "leftover", "kept container"
    /// (the old container an upgrade kept for rollback), "container", "volume" (pgup's
    /// temporary ones).
    pub kind: &'static str,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct CleanupReport {
    pub target: String,
    pub dry_run: bool,
    pub removed: Vec<Removal>,
    /// Bytes of the files removed (or that would be, with --dry-run).
    pub freed_bytes: u64,
}

impl fmt::Display for CleanupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.removed.is_empty() {
            return writeln!(f, "Nothing to clean up in {}.", self.target);
        }
        let verb = if self.dry_run {
            "Would remove"
        } else {
            "Removed"
        };
        writeln!(f, "{verb} from {}:", self.target)?;
        write!(f, "{}", Listing(&self.removed))?;
        writeln!(
            f,
            "{} {}.",
            if self.dry_run {
                "That would free"
            } else {
                "Freed"
            },
            HumanBytes(self.freed_bytes)
        )
    }
}

struct Listing<'a>(&'a [Removal]);

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in self.0 {
            writeln!(
                f,
                "  {:<18} {:>10}  {}",
                r.kind,
                HumanBytes(r.bytes).to_string(),
                r.name
            )?;
        }
        Ok(())
    }
}

pub async fn run(args: settings::Cleanup, printer: &Printer) -> Result<Status> {
    let docker = Docker::connect_for(args.target.is_data_dir()).await?;
    let target = Target::resolve(&args.target, &docker).await?;
    let flags = args.target.flags();
    let root = target.mount_root.clone();
    if let Some(j) = Journal::read(&root)?.filter(|j| j.operation != Operation::Cleanup) {
        bail!(
            "{}; cleanup waits until then, as it could remove the backup that needs",
            j.explain(&flags)
        );
    }
    let removals = plan(&docker, &target, &args).await?;
    let freed_bytes = removals.iter().map(|r| r.bytes).sum();
    let mut report = CleanupReport {
        target: target.label.clone(),
        dry_run: args.dry_run,
        removed: removals,
        freed_bytes,
    };
    if args.dry_run || report.removed.is_empty() {
        printer.report(&report)?;
        return Ok(Status::Done);
    }
    let listing = format!(
        "pgup cleanup will remove from {}:\n{}",
        target.label,
        Listing(&report.removed)
    );
    if !args.yes && !printer.confirm(&listing, "Proceed?")? {
        bail!("nothing was removed: the cleanup was not confirmed");
    }
    let (uid, gid) = target::owner(&target.data_dir)?;
    let _lock = Lock::take(&root, uid, gid)?;
    let mut journal = Journal::begin(
        Operation::Cleanup,
        target.pgdata_below_root(),
        format!("pgup cleanup {flags}"),
    );
    journal.advance(&root, Step::Removing)?;
    interrupt::journal_at(root.clone(), flags);
    for r in &report.removed {
        printer.step(format!("removing {} {}", r.kind, r.name));
        remove(&docker, &target, r, (uid, gid)).await?;
    }
    Journal::finish(&root)?;
    report.dry_run = false;
    printer.report(&report)?;
    Ok(Status::Done)
}

/// What the flags select, with sizes. Pure reading: nothing is removed here.
async fn plan(docker: &Docker, target: &Target, args: &settings::Cleanup) -> Result<Vec<Removal>> {
    let root = &target.mount_root;
    let layout = Layout::new(root);
    let backups =
        backup::find(&layout.backup_dirs(&target.data_dir)).context("cannot list the backups")?;
    let keep_newest = args.keep.unwrap_or(0);
    let cutoff = args.older_than.map(|d| {
        chrono::Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
    });
    let removable = backups.len().saturating_sub(keep_newest);
    let mut out = Vec::new();
    for b in backups
        .iter()
        .take(removable)
        .filter(|b| cutoff.is_none_or(|c| b.created < c))
    {
        out.push(Removal {
            kind: "backup",
            name: b.name.clone(),
            path: Some(b.path.clone()),
            bytes: b.bytes,
        });
        for (kind, path) in [
            ("record", layout.record(&b.name)),
            ("log", layout.backup_log(&b.name)),
        ] {
            if let Some(removal) = removal(kind, path) {
                out.push(removal);
            }
        }
        let record = Record::read(root, &b.name).ok();
        // Its parts in the directories the cluster keeps outside PGDATA.
        for l in record.iter().flat_map(|r| &r.locations) {
            if let Some(mut part) = removal("backup", l.layout().backup(&b.name)) {
                part.name = format!("{} in {}", b.name, l.label());
                out.push(part);
            }
        }
        // The container an upgrade kept for going back to this backup.
        // Without an engine there is none to see (the host's cleanup removes it).
        if let Some(c) = record
            .and_then(|r| r.container)
            .filter(|_| docker.has_engine())
        {
            let kept = recreate::kept_name(&c, layout::stamp_of(&b.name).unwrap_or_default());
            if docker.exists(&kept).await? {
                out.push(Removal {
                    kind: "kept container",
                    name: kept,
                    path: None,
                    bytes: 0,
                });
            }
        }
    }
    // Set-aside clusters and what interrupted runs left, in the work directory and the root,
    // and likewise in every directory a record says the cluster keeps outside PGDATA.
    out.extend(set_aside_and_leftovers(&layout, None));
    for l in recorded_locations(&layout) {
        out.extend(set_aside_and_leftovers(&l.layout(), Some(&l)));
    }
    // What is kept of failed runs and of backups put back.
    for entry in std::fs::read_dir(layout.logs())
        .into_iter()
        .flatten()
        .flatten()
    {
        out.extend(removal("log", entry.path()));
    }
    // Records and logs in the root whose backup is gone (left by earlier versions, or by a
    // rollback killed before it moved them).
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = file_name(&entry.path());
        let log = matches!(
            RootEntry::classify(&name),
            Some(RootEntry::Log | RootEntry::PgUpgradeLogs | RootEntry::Record)
        );
        let made_by = RootEntry::backup_of(&name).unwrap_or_default();
        if log && !layout.backup(made_by).exists() {
            out.extend(removal("failed run's log", entry.path()));
        }
    }
    for (kind, name) in docker.strays(None, toolbox::pgup_alive).await? {
        out.push(Removal {
            kind,
            name,
            path: None,
            bytes: 0,
        });
    }
    Ok(out)
}

/// The set-aside clusters in the work directory of `layout` (a mount root's or a location's),
/// what interrupted runs left there, and partial backups beside it.
fn set_aside_and_leftovers(layout: &Layout, location: Option<&Location>) -> Vec<Removal> {
    let in_work = std::fs::read_dir(layout.work())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let kind = match WorkEntry::classify(&file_name(&e.path()))? {
                WorkEntry::SetAside => "set-aside cluster",
                WorkEntry::Staging | WorkEntry::OldAside | WorkEntry::Trash => "leftover",
                _ => return None,
            };
            Some((kind, e))
        });
    let in_root = std::fs::read_dir(layout.root())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| RootEntry::classify(&file_name(&e.path())) == Some(RootEntry::PartialBackup))
        .map(|e| ("leftover", e));
    in_work
        .chain(in_root)
        .filter(|(_, entry)| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|(kind, entry)| {
            let name = file_name(&entry.path());
            Removal {
                kind,
                bytes: tree::tree_bytes(&entry.path(), |_| false).unwrap_or(0),
                name: match location {
                    Some(l) => format!("{name} in {}", l.label()),
                    None => name,
                },
                path: Some(entry.path()),
            }
        })
        .collect()
}

/// The directories outside PGDATA that the records name (of backups here, and of backups put
/// back, kept with the logs), each once.
fn recorded_locations(layout: &Layout) -> Vec<Location> {
    let mut found: Vec<Location> = Vec::new();
    let records = [layout.root().to_owned(), layout.logs()]
        .into_iter()
        .flat_map(|dir| std::fs::read_dir(dir).into_iter().flatten().flatten())
        .filter_map(|e| {
            let name = file_name(&e.path());
            let backup = name.strip_suffix(".json")?;
            (RootEntry::classify(backup) == Some(RootEntry::Backup))
                .then(|| Record::read_file(&e.path()).ok())
                .flatten()
        });
    for l in records.flat_map(|r| r.locations) {
        if !found.iter().any(|f| f.host == l.host) {
            found.push(l);
        }
    }
    found
}

async fn remove(docker: &Docker, target: &Target, r: &Removal, owner: (u32, u32)) -> Result<()> {
    match (r.kind, &r.path) {
        // Never with its volumes: the upgraded container mounts the same ones, anonymous
        // volumes included (Docker would delete those with the container that made them).
        ("kept container", _) => docker.discard(&r.name).await?,
        ("container", _) => docker.remove_temp(&r.name).await,
        ("volume", _) => docker.remove_volume(&r.name).await,
        (_, Some(path)) if path.is_dir() => {
            // Into the work directory of the mount root or location it is in (one filesystem).
            let parent = path.parent().unwrap_or(path);
            let home = match parent.file_name() {
                _ if parent == target.data_dir => &target.mount_root,
                Some(n) if n == layout::WORK_DIR => parent.parent().unwrap_or(parent),
                _ => parent,
            };
            let home = Layout::new(home);
            backup::work_dir(&home, owner.0, owner.1)?;
            let trash = home.trash(&file_name(path));
            if *path != trash {
                std::fs::rename(path, &trash)
                    .with_context(|| format!("cannot move {} away", path.display()))?;
                tree::sync_dir(parent)?;
            }
            std::fs::remove_dir_all(&trash)
                .with_context(|| format!("cannot remove {}", trash.display()))?;
        }
        (_, Some(path)) => std::fs::remove_file(path)
            .with_context(|| format!("cannot remove {}", path.display()))?,
        (_, None) => {}
    }
    Ok(())
}

/// A file or directory to remove, with its size, if it exists.
fn removal(kind: &'static str, path: PathBuf) -> Option<Removal> {
    let meta = std::fs::symlink_metadata(&path).ok()?;
    let bytes = if meta.is_dir() {
        tree::tree_bytes(&path, |_| false).unwrap_or(0)
    } else {
        meta.len()
    };
    Some(Removal {
        kind,
        name: file_name(&path),
        path: Some(path),
        bytes,
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
