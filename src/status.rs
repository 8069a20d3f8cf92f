//! `pgup status`: what is on disk and running for a target, derived afresh every time.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use indicatif::HumanBytes;
use serde::Serialize;

use crate::backup::{self, BackupDir};
use crate::cluster::Cluster;
use crate::collation;
use crate::compose;
use crate::docker::Docker;
use crate::error::Status as Exit;
use crate::journal::Journal;
use crate::layout::{Layout, WorkEntry};
use crate::location;
use crate::settings::TargetSpec;
use crate::space;
use crate::statistics;
use crate::target::{self, Target};
use crate::tree;
use crate::ui::Printer;

#[derive(Debug, Serialize)]
pub struct Status {
    pub target: String,
    /// The named volume holding the data; null for a bind mount or host directory.
    pub volume: Option<String>,
    pub data_dir: PathBuf,
    /// None only while an interrupted swap leaves PGDATA between two clusters.
    pub pg_version: Option<String>,
    pub data_bytes: u64,
    pub free_bytes: u64,
    pub owner: String,
    pub server_running: bool,
    /// Containers that mount this data, running or not.
    pub containers: Vec<String>,
    /// The image of the target container, or of the one container using the data.
    pub image: Option<String>,
    /// The Compose service the target container belongs to.
    pub compose: Option<String>,
    /// The directories the cluster keeps outside PGDATA, "pg_wal (/wal) on /host/dir"; one
    /// without a mount that holds it says so.
    pub locations: Vec<String>,
    /// postmaster.pid exists: a server runs, or was not shut down cleanly.
    pub postmaster_pid: bool,
    pub backups: Vec<BackupDir>,
    /// Upgraded clusters a rollback set aside.
    pub set_aside: Vec<String>,
    /// An operation that was interrupted, and how to finish or undo it.
    pub interrupted: Option<String>,
    /// Indexes on text an upgrade with --reindex never left as the old library built them,
    /// and not rebuilt since.
    pub reindex_pending: Option<ReindexPending>,
    /// The statistics an upgrade began gathering after the hand-over and did not finish.
    pub statistics_pending: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ReindexPending {
    /// What changed ("glibc 2.31 → glibc 2.41").
    pub change: String,
    /// `schema.index` per database.
    pub indexes: Vec<String>,
    /// What rebuilds them, without blocking writes: one command per database.
    pub commands: Vec<String>,
}

/// The indexes the record in `layout` names that the cluster of `major` at `data_dir` still
/// has as the old library built them.
fn reindex_pending(
    layout: &Layout,
    data_dir: &std::path::Path,
    major: Option<&str>,
) -> Option<ReindexPending> {
    let text = std::fs::read(layout.reindex_pending()).ok()?;
    let record: collation::Pending = serde_json::from_slice(&text).ok()?;
    if major != Some(record.major.to_string().as_str()) {
        return None;
    }
    let left = record.left(data_dir);
    if left.is_empty() {
        return None;
    }
    Some(ReindexPending {
        change: record.change.clone(),
        indexes: left
            .iter()
            .map(|i| format!("{} ({})", i.name, i.database))
            .collect(),
        commands: record.commands(&left),
    })
}

pub async fn run(spec: TargetSpec, printer: &Printer) -> Result<Exit> {
    let docker = Docker::connect_for(spec.is_data_dir()).await?;
    let target = Target::resolve(&spec, &docker).await?;
    let interrupted = Journal::read(&target.mount_root)?.map(|j| j.explain(&spec.flags()));
    let status = Status::read(&target, &docker, interrupted).await?;
    printer.report(&status)?;
    Ok(Exit::Done)
}

impl Status {
    pub async fn read(
        target: &Target,
        docker: &Docker,
        interrupted: Option<String>,
    ) -> Result<Self> {
        // Mid-swap PGDATA may hold no whole cluster for a moment: the journal explains it.
        let cluster = match Cluster::open(&target.data_dir) {
            Ok(c) => Some(c),
            Err(_) if interrupted.is_some() => None,
            Err(e) => return Err(e.into()),
        };
        let (uid, gid) = target::owner(&target.data_dir)?;
        let users = docker.containers_using(&target.data_dir).await?;
        let image = match (&target.container, users.as_slice()) {
            (Some(c), _) => Some(c.image.clone()),
            (None, [only]) => Some(only.image.clone()),
            _ => None,
        };
        let layout = Layout::new(&target.mount_root);
        let outside = cluster
            .as_ref()
            .map(|c| c.outside.clone())
            .unwrap_or_default();
        let (placed, unplaced) = location::place(&outside, &target.mounts);
        let locations = placed
            .iter()
            .map(|l| format!("{} on {}", l.label(), l.host.display()))
            .chain(unplaced.iter().map(|(entry, path)| {
                format!("{entry} ({}) in no mount pgup knows", path.display())
            }))
            .collect();
        Ok(Self {
            target: target.label.clone(),
            volume: target.volume.clone(),
            data_dir: target.data_dir.clone(),
            pg_version: cluster.as_ref().map(|c| c.major.clone()),
            data_bytes: tree::data_size(&target.data_dir)?.bytes,
            free_bytes: space::free_bytes(&target.data_dir).with_context(|| {
                format!("cannot measure free space at {}", target.data_dir.display())
            })?,
            owner: format!("{uid}:{gid}"),
            server_running: users.iter().any(|c| c.running),
            containers: users.iter().map(|c| c.name.clone()).collect(),
            image,
            compose: target
                .container
                .as_ref()
                .and_then(|c| compose::Service::of(&c.labels))
                .map(|s| s.describe()),
            locations,
            reindex_pending: reindex_pending(
                &layout,
                &target.data_dir,
                cluster.as_ref().map(|c| c.major.as_str()),
            ),
            statistics_pending: statistics::Pending::read(&layout.statistics_pending())
                .filter(|p| cluster.as_ref().is_some_and(|c| c.major == p.major.to_string()))
                .map(|p| {
                    format!(
                        "incomplete since {}: pgup stopped while gathering them after the upgrade, and PostgreSQL {} serves with what pg_upgrade carried over; run `pgup upgrade --to {}` with the same target flags again to finish them",
                        p.since.format("%Y-%m-%d %H:%M:%S UTC"),
                        p.major,
                        p.major
                    )
                }),
            postmaster_pid: cluster.is_some_and(|c| c.postmaster_pid),
            set_aside: std::fs::read_dir(layout.work())
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| WorkEntry::classify(n) == Some(WorkEntry::SetAside))
                .collect(),
            interrupted,
            backups: backup::find(&layout.backup_dirs(&target.data_dir)).with_context(|| {
                format!("cannot list backups in {}", target.mount_root.display())
            })?,
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row =
            |f: &mut fmt::Formatter<'_>, k: &str, v: &dyn fmt::Display| writeln!(f, "{k:<12} {v}");
        row(f, "target", &self.target)?;
        row(f, "data", &self.data_dir.display())?;
        row(f, "postgresql", &self.pg_version.as_deref().unwrap_or("-"))?;
        row(f, "size", &HumanBytes(self.data_bytes))?;
        row(f, "free", &HumanBytes(self.free_bytes))?;
        row(f, "owner", &self.owner)?;
        let server = match (self.server_running, self.postmaster_pid) {
            (true, _) => "running".to_owned(),
            (false, true) => {
                "stopped, but postmaster.pid is present: it was not shut down cleanly".to_owned()
            }
            (false, false) => "stopped".to_owned(),
        };
        row(f, "server", &server)?;
        if !self.containers.is_empty() {
            row(f, "containers", &self.containers.join(", "))?;
        }
        row(f, "image", &self.image.as_deref().unwrap_or("-"))?;
        if let Some(c) = &self.compose {
            row(f, "compose", c)?;
        }
        for (i, l) in self.locations.iter().enumerate() {
            row(f, if i == 0 { "outside" } else { "" }, l)?;
        }
        for aside in &self.set_aside {
            row(f, "set aside", aside)?;
        }
        if let Some(line) = &self.interrupted {
            row(f, "INTERRUPTED", line)?;
        }
        if let Some(p) = &self.reindex_pending {
            let line = format!(
                "{} index(es) on text still sort as before {} (--reindex never), so queries may miss rows: {}; rebuild them where the server runs (e.g. docker exec -u postgres CONTAINER …): {}",
                p.indexes.len(),
                p.change,
                p.indexes.join(", "),
                p.commands.join("; ")
            );
            row(f, "REINDEX", &line)?;
        }
        if let Some(line) = &self.statistics_pending {
            row(f, "STATISTICS", line)?;
        }
        if self.backups.is_empty() {
            row(f, "backups", &"none")?;
        }
        for (i, b) in self.backups.iter().enumerate() {
            let line = format!(
                "{}  {:>10}  {}",
                b.name,
                HumanBytes(b.bytes).to_string(),
                b.created.format("%Y-%m-%d %H:%M:%S UTC")
            );
            row(f, if i == 0 { "backups" } else { "" }, &line)?;
        }
        Ok(())
    }
}
