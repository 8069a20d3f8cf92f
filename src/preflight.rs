//! Every precondition of an upgrade, verified without changing anything on disk or in
//! Docker: `pgup check` reports them, `upgrade` runs them first and builds its plan from what
//! they learned ([`Preflight`]).
//!
//! Checks that need the old server running (the bootstrap superuser, the databases' locales,
//! `pg_upgrade --check`) run against an overlay of PGDATA: the data directory is the read-only
//! lower layer and every write goes to a scratch directory, so the data stays byte-identical.

use std::collections::BTreeSet;
use std::fmt;
use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cluster::{Cluster, ControlData, InitSettings, LocaleProvider};
use crate::config::{self, Change};
use crate::docker::{Container, Docker};
use crate::options;
use crate::pg_upgrade_output;
use crate::pgcmd::{self, PgUpgrade, Transfer};
use crate::plan::{self, BackupKind};
use crate::settings::Intent;
use crate::space;
use crate::target::Target;
use crate::toolbox::{self, OLD, RUN, ToolError, ToolMount, Toolbox, ToolboxSpec};
use crate::tree;
use crate::verify;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Warn,
    Fail,
    Skip,
}

#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub check: &'static str,
    pub outcome: Outcome,
    pub detail: String,
}

/// What the checks learned; `upgrade` acts on it.
pub struct Preflight {
    pub target: Target,
    pub cluster: Cluster,
    pub old_major: u32,
    pub new_major: u32,
    pub image: String,
    pub data_bytes: u64,
    pub data_files: u64,
    pub free_bytes: u64,
    pub reflinks: bool,
    pub control: Option<ControlData>,
    /// Settings the new major accepts (`postgres --describe-config`).
    pub accepted: BTreeSet<String>,
    pub config_changes: Vec<Change>,
    /// Stored catalog options the new major does not know (found by the cluster checks).
    pub unknown_options: Vec<options::Key>,
    /// Running containers that use the data.
    pub running: Vec<Container>,
    pub items: Vec<Item>,
}

impl Preflight {
    pub fn push(&mut self, check: &'static str, outcome: Outcome, detail: impl Into<String>) {
        self.items.push(Item {
            check,
            outcome,
            detail: detail.into(),
        });
    }

    /// A toolbox of the upgrade image running as the data owner, with `mount`.
    pub fn toolbox(&self, role: &'static str, mount: ToolMount) -> ToolboxSpec<'_> {
        ToolboxSpec {
            image: &self.image,
            role,
            data: &self.target.data_dir,
            uid: self.cluster.uid,
            gid: self.cluster.gid,
            mounts: vec![mount],
        }
    }

    pub fn failed(&self) -> bool {
        self.items.iter().any(|i| i.outcome == Outcome::Fail)
    }

    /// The failures, one per line, for an error message.
    pub fn failures(&self) -> String {
        let fails: Vec<String> = self
            .items
            .iter()
            .filter(|i| i.outcome == Outcome::Fail)
            .map(|i| format!("{}: {}", i.check, i.detail))
            .collect();
        fails.join("; ")
    }
}

/// The checks that need no server: versions, image, space, settings files, server state.
pub async fn static_checks(docker: &Docker, target: Target, intent: &Intent) -> Result<Preflight> {
    let cluster = Cluster::open(&target.data_dir)?;
    let size = tree::data_size(&target.data_dir)
        .with_context(|| format!("cannot measure {}", target.data_dir.display()))?;
    let data_bytes = size.bytes;
    let free_bytes = space::free_bytes(&target.data_dir)
        .with_context(|| format!("cannot measure free space at {}", target.data_dir.display()))?;
    let running: Vec<Container> = docker
        .containers_using(&target.data_dir)
        .await?
        .into_iter()
        .filter(|c| c.running)
        .collect();
    let reflinks = tree::supports_reflink(&target.mount_root, &target.data_dir.join("PG_VERSION"));
    let mut pre = Preflight {
        old_major: cluster.major.parse().unwrap_or(0),
        new_major: intent.to,
        target,
        cluster,
        image: String::new(),
        data_bytes,
        data_files: size.files,
        free_bytes,
        reflinks,
        control: None,
        accepted: BTreeSet::new(),
        config_changes: Vec::new(),
        unknown_options: Vec::new(),
        running,
        items: Vec::new(),
    };

    // Versions.
    let (old, new) = (pre.old_major, pre.new_major);
    if old < 10 {
        pre.push(
            "versions",
            Outcome::Fail,
            format!(
                "the cluster is PostgreSQL {}; pgup upgrades from 10 or later",
                pre.cluster.major
            ),
        );
        return Ok(pre);
    }
    if new <= old {
        pre.push(
            "versions",
            Outcome::Fail,
            format!(
                "--to {new} is not newer than the cluster's PostgreSQL {old}; give a higher major"
            ),
        );
        return Ok(pre);
    }
    pre.push("versions", Outcome::Ok, format!("PostgreSQL {old} → {new}"));

    // The upgrade image, and the new server image.
    match toolbox::pick_image(docker, intent.image.as_deref(), old, new).await? {
        Ok(image) => pre.image = image,
        Err(why) => {
            pre.push("image", Outcome::Fail, why);
            return Ok(pre);
        }
    }
    if let Some(new_image) = &intent.new_image {
        match docker.image(new_image).await? {
            None => pre.push(
                "new image",
                Outcome::Fail,
                format!("{new_image} is not here; build or load it first (see images/README.md)"),
            ),
            Some((img, env)) => match img.pg_major(&env) {
                Some(m) if m == new => pre.push("new image", Outcome::Ok, format!("{new_image} runs PostgreSQL {m}")),
                Some(m) => pre.push(
                    "new image",
                    Outcome::Fail,
                    format!("{new_image} runs PostgreSQL {m}, not {new}; pass a PostgreSQL {new} server image"),
                ),
                None => pre.push(
                    "new image",
                    Outcome::Warn,
                    format!("cannot tell which major {new_image} runs (no PG_MAJOR); make sure it is {new}"),
                ),
            },
        }
    }

    // What PostgreSQL's own programs say, read through a toolbox with the data read-only.
    let data_read_only = ToolMount::Bind {
        host: pre.target.data_dir.clone(),
        target: OLD.into(),
        read_only: true,
    };
    // Which C library the old and the new server images use, side by side with the probe:
    // each asks the engine for a container.
    let to = intent
        .new_image
        .clone()
        .unwrap_or_else(|| pre.image.clone());
    let old_image = pre.target.container.as_ref().map(|c| c.image.clone());
    let libcs = async {
        match &old_image {
            Some(from) => {
                let (from, to) =
                    tokio::join!(docker.image_is_musl(from), docker.image_is_musl(&to));
                anyhow::Ok(Some((from?, to?)))
            }
            None => Ok(None),
        }
    };
    let probed = async {
        let tb = Toolbox::start(docker, pre.toolbox("check", data_read_only)).await?;
        let probed = probe(&tb, &mut pre).await;
        tb.close().await;
        probed
    };
    let (probed, libcs) = tokio::join!(probed, libcs);
    probed?;
    let libcs = libcs?;
    if pre.failed() {
        return Ok(pre);
    }

    // Server state.
    let control = pre.control.clone().expect("probe read pg_controldata");
    let target_name = pre.target.container.as_ref().map(|c| c.name.clone());
    let others: Vec<String> = pre
        .running
        .iter()
        .map(|c| c.name.clone())
        .filter(|n| Some(n) != target_name.as_ref())
        .collect();
    if !others.is_empty() {
        // pgup stops only the container it was pointed at.
        pre.push(
            "server",
            Outcome::Fail,
            format!(
                "a server still holds the data: container {} is running on it; stop it, or name it with --container so pgup stops it",
                others.join(", ")
            ),
        );
    } else if !pre.running.is_empty() {
        pre.push(
            "server",
            Outcome::Warn,
            "running; upgrade stops it gracefully first",
        );
    } else if !control.shut_down_cleanly() {
        let hint = pre
            .target
            .container
            .as_ref()
            .map(|c| format!("`docker start {0}` then `docker stop {0}`", c.name))
            .unwrap_or_else(|| "start and stop its server once".into());
        pre.push(
            "server",
            Outcome::Fail,
            format!(
                "the cluster was not shut down cleanly (state: {}); {hint}, so that PostgreSQL recovers, then try again",
                control.state
            ),
        );
    } else {
        pre.push("server", Outcome::Ok, "stopped, shut down cleanly");
    }
    if pre.cluster.uid == 0 {
        pre.push(
            "owner",
            Outcome::Fail,
            "the data directory belongs to root; PostgreSQL refuses to run as root: chown it to the server's user",
        );
    }

    // Space for the chosen mode.
    match plan::backup_kind(
        intent.mode,
        intent.no_backup.unwrap_or(false),
        reflinks,
        &pre.target.mount_root,
    ) {
        Err(plan::ModeError::LinkNeedsNoBackup) if intent.no_backup.is_none() => pre.push(
            "mode",
            Outcome::Warn,
            "link keeps no independent backup; `pgup upgrade --mode link` needs --no-backup --yes",
        ),
        Err(e) => pre.push("mode", Outcome::Fail, e.to_string()),
        Ok(kind) => {
            let need = plan::need_bytes(kind, data_bytes);
            let what = match kind {
                BackupKind::Copy => "a full copy of the data as backup",
                BackupKind::Clone => "a reflink copy as backup",
                BackupKind::None => "no backup",
            };
            let detail = format!(
                "{} free on {}, {} needed ({what}, data {})",
                indicatif::HumanBytes(free_bytes),
                pre.target.mount_root.display(),
                indicatif::HumanBytes(need),
                indicatif::HumanBytes(data_bytes)
            );
            if free_bytes >= need {
                pre.push("space", Outcome::Ok, detail);
            } else {
                pre.push("space", Outcome::Fail, format!("{detail}: free space first, or use --mode clone on a filesystem with reflinks"));
            }
        }
    }

    // Settings the new major no longer accepts.
    for file in ["postgresql.conf", "postgresql.auto.conf"] {
        let path = pre.target.data_dir.join(file);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let adjusted = config::adjust(file, &text, &pre.accepted, new, control.wal_segment_bytes);
        for include in &adjusted.includes {
            pre.push(
                "settings",
                Outcome::Warn,
                format!("{file} has `{include}`: pgup does not check included files; make sure they suit PostgreSQL {new}"),
            );
        }
        pre.config_changes.extend(adjusted.changes);
    }
    if pre.config_changes.is_empty() {
        pre.push(
            "settings",
            Outcome::Ok,
            format!("every setting is accepted by PostgreSQL {new}"),
        );
    }
    let changes: Vec<String> = pre.config_changes.iter().map(ToString::to_string).collect();
    for change in changes {
        pre.push(
            "settings",
            Outcome::Warn,
            format!("{change} (upgrade adjusts it)"),
        );
    }

    // C library: text indexes sort differently under musl and glibc.
    if let (Some(from), Some((from_musl, to_musl))) = (&old_image, libcs) {
        if from_musl != to_musl {
            let libc = |musl| {
                if musl {
                    "musl (Alpine)"
                } else {
                    "glibc (Debian)"
                }
            };
            pre.push(
                "libc",
                Outcome::Warn,
                format!(
                    "{from} uses {} but {to} uses {}: text indexes may sort differently; REINDEX them after the upgrade",
                    libc(from_musl),
                    libc(to_musl)
                ),
            );
        } else {
            pre.push(
                "libc",
                Outcome::Ok,
                format!("{from} and {to} use the same C library"),
            );
        }
    }
    Ok(pre)
}

/// Reads, in the toolbox: both bin directories exist, pg_controldata, the settings the new
/// major accepts.
async fn probe(tb: &Toolbox<'_>, pre: &mut Preflight) -> Result<()> {
    for major in [pre.old_major, pre.new_major] {
        let pg_upgrade = format!("{}/pg_upgrade", pgcmd::bindir(major));
        if tb
            .run(&["test".into(), "-x".into(), pg_upgrade])
            .await
            .is_err()
        {
            pre.push(
                "image",
                Outcome::Fail,
                format!(
                    "{} has no {}: use an upgrade image holding PostgreSQL {major}",
                    pre.image,
                    pgcmd::bindir(major)
                ),
            );
        }
    }
    if pre.failed() {
        return Ok(());
    }
    pre.push(
        "image",
        Outcome::Ok,
        format!(
            "{} holds PostgreSQL {} and {}",
            pre.image, pre.old_major, pre.new_major
        ),
    );
    let text = tb.run(&pgcmd::controldata(pre.old_major, OLD)).await?;
    let control = ControlData::parse(&text)
        .with_context(|| format!("cannot read pg_controldata's output: {text}"))?;
    pre.control = Some(control);
    pre.accepted =
        config::parse_describe_config(&tb.run(&pgcmd::describe_config(pre.new_major)).await?);
    Ok(())
}

/// The checks that start the old server, on an overlay of PGDATA; the old cluster's init
/// settings when they pass. For `check`, they end with `pg_upgrade --check` against a scratch
/// new cluster. An upgrade skips that: the real pg_upgrade makes the same checks before it
/// changes anything (and the one change --link makes when linking starts is undone on
/// failure), so running them twice would only cost time.
///
/// Only the catalogs are read here: the server opens every file it reads for writing, so the
/// overlay copies it up whole, and reading the tables would copy the data.
pub async fn cluster_checks(
    docker: &Docker,
    pre: &mut Preflight,
    for_upgrade: bool,
    may_strip: bool,
) -> Result<Option<InitSettings>> {
    let scratch = tempfile::Builder::new()
        .prefix("pgup-overlay-")
        .tempdir_in("/var/tmp")
        .context("cannot create a scratch directory in /var/tmp")?;
    let (upper, work) = (scratch.path().join("upper"), scratch.path().join("work"));
    for dir in [&upper, &work] {
        std::fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // The merged view's root takes the upper directory's owner and mode.
    std::os::unix::fs::chown(&upper, Some(pre.cluster.uid), Some(pre.cluster.gid))?;
    std::fs::set_permissions(&upper, std::fs::Permissions::from_mode(0o700))?;
    let volume = format!(
        "pgup-overlay-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    docker
        .create_overlay(&volume, &pre.target.data_dir, &upper, &work)
        .await?;
    let overlay = ToolMount::Volume {
        name: volume.clone(),
        target: OLD.into(),
    };
    let started = Toolbox::start(docker, pre.toolbox("check", overlay)).await;
    let result = match started {
        Ok(tb) => {
            let r = on_overlay(&tb, pre, for_upgrade, may_strip).await;
            tb.close().await;
            r
        }
        Err(e) => Err(e.into()),
    };
    docker.remove_volume(&volume).await;
    result
}

async fn on_overlay(
    tb: &Toolbox<'_>,
    pre: &mut Preflight,
    for_upgrade: bool,
    may_strip: bool,
) -> Result<Option<InitSettings>> {
    let (old, new) = (pre.old_major, pre.new_major);
    let control = pre
        .control
        .clone()
        .expect("static checks read pg_controldata");
    // Single-user mode always runs as the bootstrap superuser, whatever it is called.
    let single = format!(
        "echo 'SELECT current_user AS pgup_superuser;' | {}/postgres --single -D {OLD} -c archive_mode=off template1",
        pgcmd::bindir(old)
    );
    let out = tb.run(&["sh".into(), "-c".into(), single]).await?;
    let superuser = out
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("1: pgup_superuser = \"")?
                .split('"')
                .next()
        })
        .context("cannot learn the bootstrap superuser from single-user mode")?
        .to_owned();

    let (facts, stored) = tb
        .with_server(old, OLD, async || {
            let facts = verify::server_facts(tb.socket_dir(), &superuser, old).await?;
            anyhow::Ok((facts, options::gather(tb.socket_dir(), &superuser).await?))
        })
        .await?;
    let settings = InitSettings {
        superuser,
        encoding: facts.encoding,
        collate: facts.collate,
        ctype: facts.ctype,
        provider: facts.provider,
        checksums: control.checksums,
        wal_segment_bytes: control.wal_segment_bytes,
    };
    pre.push(
        "cluster",
        Outcome::Ok,
        format!(
            "superuser {}, {} {}/{}{}, checksums {}, WAL segments {} MB",
            settings.superuser,
            settings.encoding,
            settings.collate,
            settings.ctype,
            match &settings.provider {
                LocaleProvider::Libc => String::new(),
                LocaleProvider::Icu(l) => format!(", ICU {l}"),
                LocaleProvider::Builtin(l) => format!(", builtin {l}"),
            },
            if settings.checksums { "on" } else { "off" },
            settings.wal_segment_bytes / (1024 * 1024)
        ),
    );

    // Every database's locale must exist where the new cluster runs.
    let available = tb.run(&["locale".into(), "-a".into()]).await?;
    let available: BTreeSet<String> = available.lines().map(normalize_locale).collect();
    let missing: Vec<&String> = facts
        .locales
        .iter()
        .filter(|l| !available.contains(&normalize_locale(l)))
        .collect();
    if missing.is_empty() {
        pre.push(
            "locales",
            Outcome::Ok,
            format!("{} available in {}", join(&facts.locales), pre.image),
        );
    } else {
        pre.push(
            "locales",
            Outcome::Fail,
            format!(
                "{} missing in {}: use an upgrade image that has them",
                join(&missing),
                pre.image
            ),
        );
        return Ok(None);
    }

    // A scratch new cluster in the toolbox's own filesystem: it judges the stored options,
    // and pg_upgrade --check runs against it.
    let scratch_new = "/tmp/pgup-check-new";
    if !for_upgrade || !stored.is_empty() {
        tb.run(&pgcmd::initdb(new, scratch_new, &settings)).await?;
    }
    let verdicts = if stored.is_empty() {
        Vec::new()
    } else {
        tb.with_server(new, scratch_new, async || {
            anyhow::Ok(options::judge(tb.socket_dir(), &settings.superuser, &stored).await?)
        })
        .await?
    };
    judge_options(pre, &stored, &verdicts, may_strip);
    if for_upgrade {
        return Ok(Some(settings));
    }
    let check = PgUpgrade {
        old_major: old,
        new_major: new,
        old_datadir: OLD,
        new_datadir: scratch_new,
        superuser: &settings.superuser,
        run_dir: RUN,
        // The scratch cluster is on another filesystem, so links cannot be tried here.
        transfer: Transfer::Copy,
        jobs: 1,
        check_only: true,
    };
    match tb.run(&check.argv()).await {
        Ok(_) => pre.push("pg_upgrade", Outcome::Ok, "pg_upgrade --check passed"),
        Err(e) => {
            let why = explain_check_failure(tb, &e).await;
            pre.push(
                "pg_upgrade",
                Outcome::Fail,
                format!("pg_upgrade --check: {why}"),
            );
        }
    }
    Ok(Some(settings))
}

/// Why pg_upgrade --check failed, from the files it names in the toolbox (gone with it).
async fn explain_check_failure(tb: &Toolbox<'_>, e: &ToolError) -> String {
    let ToolError::Failed { output, .. } = e else {
        return e.to_string();
    };
    let mut files = Vec::new();
    for path in pg_upgrade_output::referenced_files(output) {
        if let Ok(content) = tb.run(&["cat".into(), path.clone()]).await {
            files.push((path, content));
        }
    }
    pg_upgrade_output::summarize(output, &files).unwrap_or_else(|| e.to_string())
}

/// The "options" items: stored options the new major does not know are removed by the
/// upgrade once the backup exists; `may_strip` is false for an upgrade keeping no backup
/// without --strip-unknown-options, which then refuses.
fn judge_options(
    pre: &mut Preflight,
    stored: &[options::Stored],
    verdicts: &[options::Verdict],
    may_strip: bool,
) {
    let new = pre.new_major;
    let lines = options::describe(stored, verdicts, new);
    if stored.is_empty() {
        pre.push(
            "options",
            Outcome::Ok,
            "no column or storage options are stored",
        );
    } else if lines.is_empty() {
        pre.push(
            "options",
            Outcome::Ok,
            format!(
                "PostgreSQL {new} accepts each of the {} stored column and storage options",
                stored.len()
            ),
        );
    }
    for (verdict, text) in lines {
        let text = if verdict == options::Verdict::Unknown {
            format!(
                "{text}: the upgrade removes it from the old cluster once the backup (which keeps it) exists"
            )
        } else {
            text
        };
        pre.push("options", Outcome::Warn, text);
    }
    let unknown: Vec<&options::Stored> = stored
        .iter()
        .zip(verdicts)
        .filter(|(_, v)| **v == options::Verdict::Unknown)
        .map(|(s, _)| s)
        .collect();
    if !may_strip && !unknown.is_empty() {
        let names: Vec<String> = unknown.iter().map(|s| s.key.to_string()).collect();
        pre.push(
            "options",
            Outcome::Fail,
            format!(
                "PostgreSQL {new} does not know {} stored option(s): {}; with --no-backup they would be removed from the only copy: add --strip-unknown-options to allow that, or keep a backup",
                unknown.iter().map(|s| s.count()).sum::<u64>(),
                names.join(", ")
            ),
        );
    }
    pre.unknown_options = unknown.iter().map(|s| s.key.clone()).collect();
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `en_US.UTF-8` and `en_US.utf8` name the same locale.
fn normalize_locale(name: &str) -> String {
    name.trim().to_lowercase().replace("utf-8", "utf8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locale_names_normalize() {
        assert_eq!(
            normalize_locale("en_US.UTF-8"),
            normalize_locale("en_US.utf8")
        );
        assert_eq!(normalize_locale("C"), "c");
    }
}
