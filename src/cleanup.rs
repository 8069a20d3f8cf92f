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
use crate::plan::{Operation, Step};
use crate::recreate;
use crate::settings;
use crate::target::{self, Target};
use crate::toolbox;
use crate::tree;
use crate::ui::Printer;

#[derive(Debug, Clone, Serialize)]
pub struct Removal {
    /// "backup", "record", "log", "set-aside cluster", "leftover", "container", "volume".
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
    let docker = Docker::connect().await?;
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
        remove(&docker, &root, r).await?;
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
        let log = layout.backup_log(&b.name);
        for (kind, path) in [
            ("record", layout.record(&b.name)),
            ("pg_upgrade logs", Layout::pg_upgrade_logs(&log)),
            ("log", log),
        ] {
            if let Some(removal) = removal(kind, path) {
                out.push(removal);
            }
        }
        // The container an upgrade kept for going back to this backup.
        if let Some(c) = Record::read(root, &b.name).ok().and_then(|r| r.container) {
            let kept = recreate::kept_name(&c, layout::stamp_of(&b.name).unwrap_or_default());
            if docker.exists(&kept).await? {
                out.push(Removal {
                    kind: "container",
                    name: kept,
                    path: None,
                    bytes: 0,
                });
            }
        }
    }
    // Set-aside clusters and what interrupted runs left, in the work directory and the root.
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
    let in_root = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| RootEntry::classify(&file_name(&e.path())) == Some(RootEntry::PartialBackup))
        .map(|e| ("leftover", e));
    for (kind, entry) in in_work.chain(in_root) {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = file_name(&entry.path());
        out.push(Removal {
            kind,
            bytes: tree::tree_bytes(&entry.path(), |_| false).unwrap_or(0),
            name,
            path: Some(entry.path()),
        });
    }
    // Logs of failed upgrades, whose backups their undo removed.
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = file_name(&entry.path());
        let log = matches!(
            RootEntry::classify(&name),
            Some(RootEntry::Log | RootEntry::PgUpgradeLogs)
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

async fn remove(docker: &Docker, root: &Path, r: &Removal) -> Result<()> {
    match (r.kind, &r.path) {
        ("container", _) => docker.remove_temp(&r.name).await,
        ("volume", _) => docker.remove_volume(&r.name).await,
        (_, Some(path)) if path.is_dir() => {
            let trash = Layout::new(root).trash(&r.name);
            if *path != trash {
                std::fs::rename(path, &trash)
                    .with_context(|| format!("cannot move {} away", path.display()))?;
                tree::sync_dir(path.parent().unwrap_or(root))?;
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
