//! `pgup upgrade`: executes the plan. Every step before the swap leaves the old cluster where
//! and as it was; from the backup's rename on, the old cluster is intact in the backup; the
//! swap puts the new cluster in place; a failed verification puts the backup back.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::backup::{self, Record};
use crate::check::{self, ClusterFacts, Preflight};
use crate::cli::{UpgradeArgs, UpgradePlanArgs};
use crate::cluster::Cluster;
use crate::config;
use crate::docker::Docker;
use crate::pgcmd::{self, PgUpgrade, Transfer};
use crate::plan::{self, Backup, Plan};
use crate::recreate;
use crate::target::Target;
use crate::toolbox::{RUN, ToolMount, Toolbox};
use crate::tree;
use crate::ui::Printer;
use crate::verify;

/// Where the mount root is mounted in the upgrade toolbox.
const VOL: &str = "/pgup/vol";
/// pgup's work directory in the mount root: staging and set-aside clusters.
pub const WORK_DIR: &str = ".pgup";

#[derive(Debug, Serialize)]
pub struct UpgradeReport {
    pub target: String,
    pub from: u32,
    pub to: u32,
    pub backup: Option<PathBuf>,
    pub settings_changed: Vec<String>,
    pub extensions_updated: bool,
    pub verified: VerifySummary,
    pub container: Option<String>,
    pub image: Option<String>,
    pub server_version_num: Option<i32>,
    pub next: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct VerifySummary {
    pub databases: usize,
    pub tables: usize,
    pub rows: i64,
    pub sequences: usize,
    pub roles: usize,
}

impl std::fmt::Display for UpgradeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = &self.verified;
        writeln!(
            f,
            "Upgraded {} from PostgreSQL {} to {}.",
            self.target, self.from, self.to
        )?;
        writeln!(
            f,
            "Verified: {} databases, {} tables ({} rows), {} sequences, {} roles as before.",
            v.databases, v.tables, v.rows, v.sequences, v.roles
        )?;
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
        if let (Some(c), Some(image), Some(v)) =
            (&self.container, &self.image, self.server_version_num)
        {
            writeln!(f, "Container {c} runs {image} (server_version_num {v}).")?;
        }
        if let Some(next) = &self.next {
            writeln!(f, "{next}")?;
        }
        Ok(())
    }
}

pub async fn run(args: UpgradeArgs, printer: &Printer) -> Result<bool> {
    if args.no_backup && !args.yes {
        bail!(
            "--no-backup keeps no copy of the old cluster, so there will be no rollback; add --yes to confirm that"
        );
    }
    let docker = Docker::connect().await?;
    let target = Target::resolve(&args.target, &docker).await?;
    let mut pre = check::static_checks(&docker, target, &args.plan, Some(args.no_backup)).await?;
    if pre.failed() {
        bail!("the upgrade cannot start: {}", pre.failures());
    }
    let kind = plan::backup_kind(
        args.plan.mode,
        args.no_backup,
        pre.reflinks,
        &pre.target.mount_root,
    )?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let plan = Plan {
        target: pre.target.label.clone(),
        old_major: pre.old_major,
        new_major: pre.new_major,
        data_dir: pre.target.data_dir.clone(),
        data_bytes: pre.data_bytes,
        free_bytes: pre.free_bytes,
        need_bytes: plan::need_bytes(kind, pre.data_bytes),
        backup: kind,
        backup_dir: (kind != Backup::None)
            .then(|| pre.target.mount_root.join(plan::backup_name(&stamp))),
        image: pre.image.clone(),
        new_image: args.plan.new_image.clone(),
        stop: pre.running.iter().map(|c| c.name.clone()).collect(),
        jobs,
        config_changes: pre.config_changes.iter().map(ToString::to_string).collect(),
    };
    if !args.yes && !printer.confirm(&plan, "Proceed?")? {
        bail!("nothing was changed: the upgrade was not confirmed");
    }
    if args.no_backup {
        printer.step(
            "--no-backup: no copy of the old cluster is kept; once the new cluster is in place there is no rollback",
        );
    }

    // Stop the servers; from here on, a failure restarts what was running.
    for c in &pre.running {
        printer.step(format!("stopping container {}", c.name));
        docker.stop(&c.name, 120).await?;
    }
    let result = upgrade(&docker, &mut pre, &plan, &args.plan, &stamp, printer).await;
    match result {
        Ok(report) => {
            printer.report(&report)?;
            Ok(true)
        }
        Err(e) => {
            for c in &pre.running {
                if docker.start(&c.name).await.is_ok() {
                    printer.step(format!("restarted container {} on the old cluster", c.name));
                }
            }
            Err(e)
        }
    }
}

async fn upgrade(
    docker: &Docker,
    pre: &mut Preflight,
    plan: &Plan,
    args: &UpgradePlanArgs,
    stamp: &str,
    printer: &Printer,
) -> Result<UpgradeReport> {
    let cluster = Cluster::open(&pre.target.data_dir)?;
    if !pre.running.is_empty() {
        // What was read while the server ran is stale: read the stopped cluster again.
        let reread = check::static_checks(
            docker,
            pre.target.clone(),
            args,
            Some(plan.backup == Backup::None),
        )
        .await?;
        if reread.failed() {
            bail!("the upgrade cannot start: {}", reread.failures());
        }
        *pre = Preflight {
            running: std::mem::take(&mut pre.running),
            ..reread
        };
    }
    printer.step("checking the stopped cluster on a throwaway view (pg_upgrade --check)");
    let facts = check::cluster_checks(docker, pre, true).await?;
    let Some(ClusterFacts { settings, snapshot }) = facts.filter(|_| !pre.failed()) else {
        bail!("the upgrade cannot start: {}", pre.failures());
    };
    let before = snapshot.expect("asked for a snapshot");

    let root = pre.target.mount_root.clone();
    let data = pre.target.data_dir.clone();
    let work = root.join(WORK_DIR);
    make_private_dir(&work, &cluster)?;

    // 1. The backup: complete and synced under a temporary name, then renamed into place.
    let record = Record {
        name: plan::backup_name(stamp),
        old_major: plan.old_major,
        new_major: plan.new_major,
        old_image: pre.target.container.as_ref().map(|c| c.image.clone()),
        container: pre.target.container.as_ref().map(|c| c.name.clone()),
        pgdata_below_root: data.strip_prefix(&root).unwrap_or(Path::new("")).to_owned(),
        mode: plan.backup,
        created: chrono::Utc::now(),
    };
    if let Some(backup_dir) = &plan.backup_dir {
        printer.step(format!(
            "backing up the old cluster to {}",
            backup_dir.display()
        ));
        make_backup(&data, backup_dir, plan, printer)?;
        record.write(&root, cluster.uid, cluster.gid)?;
    }

    // 2. initdb and pg_upgrade --link into a staging directory in the same volume.
    let rel = data.strip_prefix(&root).unwrap_or(Path::new("")).to_owned();
    let old_in = Path::new(VOL).join(&rel).display().to_string();
    let staging = work.join("new");
    let _ = std::fs::remove_dir_all(&staging);
    let new_in = format!("{VOL}/{WORK_DIR}/new");
    let volume = ToolMount::Bind {
        host: root.clone(),
        target: VOL.into(),
        read_only: false,
    };
    let mut tb = Toolbox::start(docker, pre.toolbox("upgrade", volume)).await?;
    let outcome = transfer_and_verify(
        &mut tb, pre, plan, &settings, &before, &old_in, &new_in, printer,
    )
    .await;
    let transcript = std::mem::take(&mut tb.transcript);
    tb.close().await;
    let log = if plan.backup_dir.is_some() {
        backup::log_path(&root, &record.name)
    } else {
        work.join(format!("upgrade-{stamp}.log"))
    };
    backup::private_file(&log, transcript.as_bytes(), cluster.uid, cluster.gid)
        .with_context(|| format!("cannot write the log {}", log.display()))?;
    let (summary, extensions_updated) = match outcome {
        Ok(v) => v,
        Err(e) => {
            restore_after_failure(&data, &staging, &work, plan, printer)?;
            return Err(e);
        }
    };
    let _ = std::fs::remove_dir_all(work.join("old"));
    // The old servers stay stopped from here on: their data is now the new cluster's.
    pre.running.clear();

    // 3. The container on the new image, or what to do.
    let mut report = UpgradeReport {
        target: plan.target.clone(),
        from: plan.old_major,
        to: plan.new_major,
        backup: plan.backup_dir.clone(),
        settings_changed: plan.config_changes.clone(),
        extensions_updated,
        verified: summary,
        container: None,
        image: None,
        server_version_num: None,
        next: None,
    };
    match (&pre.target.container, &plan.new_image) {
        (Some(c), Some(image)) => {
            printer.step(format!("re-creating container {} on {image}", c.name));
            let moved = recreate::recreate(docker, &c.name, image, plan, &root, stamp, &settings.superuser)
                .await
                .with_context(|| {
                    format!(
                        "the upgrade is done and verified, but re-creating container {} on {image} failed (the old container is kept as {}); fix the cause and start a PostgreSQL {} container on the volume, or `pgup rollback` to go back",
                        c.name,
                        recreate::kept_name(&c.name, stamp),
                        plan.new_major
                    )
                })?;
            report.container = Some(c.name.clone());
            report.image = Some(image.clone());
            report.server_version_num = Some(moved.server_version_num);
            report.next = moved.compose_hint;
        }
        (Some(c), None) => {
            report.next = Some(format!(
                "Container {} stays stopped: it still names the PostgreSQL {} image. Re-create it on a PostgreSQL {} image (pgup upgrade --new-image, or docker/compose), keeping its volumes.",
                c.name, plan.old_major, plan.new_major
            ));
        }
        (None, _) => {
            report.next = Some(format!(
                "Start the data on a PostgreSQL {} server image; PGDATA is {}.",
                plan.new_major,
                data.display()
            ));
        }
    }
    Ok(report)
}

/// A directory only the data owner may enter.
fn make_private_dir(dir: &Path, cluster: &Cluster) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::os::unix::fs::chown(dir, Some(cluster.uid), Some(cluster.gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

fn make_backup(data: &Path, backup_dir: &Path, plan: &Plan, printer: &Printer) -> Result<()> {
    let partial = backup_dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let bar = printer.bytes_bar(plan.data_bytes);
    let copied = tree::copy_tree(
        data,
        &partial,
        &tree::CopyOptions {
            transfer: if plan.backup == Backup::Clone {
                tree::Transfer::Clone
            } else {
                tree::Transfer::Copy
            },
            skip: &is_pgup_entry,
            progress: &|n| bar.inc(n),
        },
    );
    bar.finish_and_clear();
    if let Err(e) = copied {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e)
            .context("the backup failed; nothing was changed and the partial copy was removed");
    }
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o700))?;
    std::fs::rename(&partial, backup_dir).with_context(|| {
        format!(
            "cannot rename {} to {}",
            partial.display(),
            backup_dir.display()
        )
    })?;
    sync_dir(backup_dir.parent().unwrap_or(Path::new("/")))?;
    Ok(())
}

/// Entries of a mount root that are pgup's, not the cluster's: backups, their records and
/// logs, and the work directory.
pub fn is_pgup_entry(name: &str) -> bool {
    backup::is_backup_name(name) || name == WORK_DIR
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

#[allow(clippy::too_many_arguments)]
async fn transfer_and_verify(
    tb: &mut Toolbox<'_>,
    pre: &Preflight,
    plan: &Plan,
    settings: &crate::cluster::InitSettings,
    before: &verify::Snapshot,
    old_in: &str,
    new_in: &str,
    printer: &Printer,
) -> Result<(VerifySummary, bool)> {
    let (old, new) = (plan.old_major, plan.new_major);
    printer.step(format!(
        "initdb PostgreSQL {new} with the old cluster's settings"
    ));
    tb.run(&pgcmd::initdb(new, new_in, settings)).await?;
    printer.step(format!("pg_upgrade --link --jobs {}", plan.jobs));
    let up = PgUpgrade {
        old_major: old,
        new_major: new,
        old_datadir: old_in,
        new_datadir: new_in,
        superuser: &settings.superuser,
        run_dir: RUN,
        transfer: Transfer::Link,
        jobs: plan.jobs,
        check_only: false,
    };
    tb.run(&up.argv())
        .await
        .context("pg_upgrade failed; the old cluster was put back as it was")?;

    // The old configuration, minus what the new major refuses.
    let root = &pre.target.mount_root;
    let data = &pre.target.data_dir;
    let staging = root.join(WORK_DIR).join("new");
    carry_config(data, &staging, pre, plan)?;

    printer.step(format!(
        "putting the new cluster in place at {}",
        data.display()
    ));
    swap(data, &staging, &root.join(WORK_DIR).join("old"))?;

    printer.step("starting the new cluster privately: extensions, statistics, verification");
    tb.run(&pgcmd::start_server(new, old_in, RUN)).await?;
    let verified = after_start(tb, plan, &settings.superuser, before).await;
    let stopped = tb.run(&pgcmd::stop_server(new, old_in)).await;
    let result = verified?;
    stopped?;
    Ok(result)
}

async fn after_start(
    tb: &mut Toolbox<'_>,
    plan: &Plan,
    superuser: &str,
    before: &verify::Snapshot,
) -> Result<(VerifySummary, bool)> {
    let new = plan.new_major;
    // pg_upgrade writes update_extensions.sql into its working directory.
    let updated = tb
        .run(&[
            "test".into(),
            "-f".into(),
            "/tmp/update_extensions.sql".into(),
        ])
        .await
        .is_ok();
    if updated {
        tb.run(&pgcmd::psql_file(
            new,
            RUN,
            superuser,
            "/tmp/update_extensions.sql",
        ))
        .await
        .context("update_extensions.sql failed")?;
    }
    tb.run(&pgcmd::vacuumdb(new, RUN, superuser, plan.jobs))
        .await?;
    let client = verify::connect(tb.socket_dir(), superuser, "template1").await?;
    let after = verify::take(tb.socket_dir(), superuser, &client).await?;
    let diffs = verify::differences(before, &after);
    if !diffs.is_empty() {
        bail!(
            "verification found differences, so the upgrade was rolled back: {}",
            diffs.join("; ")
        );
    }
    Ok((
        VerifySummary {
            databases: after.databases.len(),
            tables: after.databases.values().map(|d| d.tables.len()).sum(),
            rows: after
                .databases
                .values()
                .flat_map(|d| d.tables.values())
                .sum(),
            sequences: after.databases.values().map(|d| d.sequences.len()).sum(),
            roles: after.roles.len(),
        },
        updated,
    ))
}

/// Copies the old cluster's configuration files into the new one, adjusting settings the new
/// major no longer accepts, keeping each file's owner and mode.
fn carry_config(data: &Path, staging: &Path, pre: &Preflight, plan: &Plan) -> Result<()> {
    let wal = pre
        .control
        .as_ref()
        .map_or(16 * 1024 * 1024, |c| c.wal_segment_bytes);
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
            config::adjust(file, &text, &pre.accepted, plan.new_major, wal).text
        } else {
            text
        };
        let to = staging.join(file);
        std::fs::write(&to, text).with_context(|| format!("cannot write {}", to.display()))?;
        let meta = std::fs::metadata(&from)?;
        std::os::unix::fs::chown(
            &to,
            Some(std::os::unix::fs::MetadataExt::uid(&meta)),
            Some(std::os::unix::fs::MetadataExt::gid(&meta)),
        )?;
        std::fs::set_permissions(&to, meta.permissions())?;
    }
    Ok(())
}

/// Puts the staged new cluster where the old one was. The old cluster's entries go to
/// `aside` (they share files with the new one after --link); pgup's own entries stay.
fn swap(data: &Path, staging: &Path, aside: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(aside);
    std::fs::create_dir(aside).with_context(|| format!("cannot create {}", aside.display()))?;
    move_entries(data, aside, &is_pgup_entry)?;
    move_entries(staging, data, &|_| false)?;
    std::fs::remove_dir(staging).with_context(|| format!("cannot remove {}", staging.display()))?;
    sync_dir(data)
}

/// Renames every entry of `from` (except `keep`) into `to`, on one filesystem.
fn move_entries(from: &Path, to: &Path, keep: &dyn Fn(&str) -> bool) -> Result<()> {
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?
    {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_str().is_some_and(keep) {
            continue;
        }
        std::fs::rename(entry.path(), to.join(&name)).with_context(|| {
            format!(
                "cannot move {} into {}",
                entry.path().display(),
                to.display()
            )
        })?;
    }
    Ok(())
}

/// After a failure: the old cluster back in place as it was, the staging directory gone.
fn restore_after_failure(
    data: &Path,
    staging: &Path,
    work: &Path,
    plan: &Plan,
    printer: &Printer,
) -> Result<()> {
    let aside = work.join("old");
    if aside.exists() {
        // The swap ran: the data directory holds the new cluster (or part of it).
        let Some(backup_dir) = &plan.backup_dir else {
            bail!(
                "the upgrade failed after the new cluster was put in place, and there is no backup (--no-backup); the new cluster is in {}",
                data.display()
            );
        };
        printer.step(format!(
            "putting the old cluster back from {}",
            backup_dir.display()
        ));
        let failed = work.join("failed");
        let _ = std::fs::remove_dir_all(&failed);
        std::fs::create_dir(&failed)?;
        move_entries(data, &failed, &is_pgup_entry)?;
        move_entries(backup_dir, data, &|_| false)?;
        std::fs::remove_dir(backup_dir)?;
        let _ = std::fs::remove_dir_all(&failed);
        let _ = std::fs::remove_dir_all(&aside);
    } else {
        // pg_upgrade --link renames the old pg_control once linking starts.
        let control = data.join("global/pg_control");
        let renamed = data.join("global/pg_control.old");
        if renamed.exists() && !control.exists() {
            std::fs::rename(&renamed, &control)?;
        }
    }
    let _ = std::fs::remove_dir_all(staging);
    sync_dir(data)
}
