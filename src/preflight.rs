//! Every precondition of an upgrade, verified without changing anything on disk or in
//! Docker: `pgup check` reports them, `upgrade` runs them first and builds its plan from what
//! they learned ([`Preflight`]). This module gathers the facts; `rules` judges them.
//!
//! Checks that need the old server running (the bootstrap superuser, the databases' locales,
//! `pg_upgrade --check`) run against an overlay of PGDATA: the data directory is the read-only
//! lower layer and every write goes to a scratch directory, so the data stays byte-identical.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, Result};

use crate::assemble::{self, AssembleError};
use crate::cluster::{Cluster, ControlData, InitSettings};
use crate::collation::{self, Pair};
use crate::compose;
use crate::config::{self, Change};
use crate::docker::{Container, Docker};
use crate::extension;
use crate::location::{self, Location};
use crate::options;
use crate::pg_upgrade_output;
use crate::pgclient;
use crate::pgcmd::{self, PgUpgrade, Transfer};
use crate::relay;
use crate::removals;
use crate::rules::{self, Found, Room};
pub use crate::rules::{Item, Outcome};
use crate::settings::{Intent, Reindex};
use crate::space;
use crate::target::Target;
use crate::toolbox::{self, OLD, ToolError, ToolMount, Toolbox, ToolboxSpec};
use crate::tree;
use crate::ui::Printer;
use crate::verify;

/// What the checks learned; `upgrade` acts on it.
pub struct Preflight {
    pub target: Target,
    pub cluster: Cluster,
    pub old_major: u32,
    pub new_major: u32,
    pub image: String,
    /// The new major's server image, when named: the extensions must be in it.
    pub new_image: Option<String>,
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
    /// The directories the cluster keeps outside PGDATA, found on this host.
    pub locations: Vec<Location>,
    /// The old cluster's bytes in them.
    pub location_bytes: u64,
    /// What built the old cluster's text indexes and what the new server sorts with, once
    /// the toolbox was asked.
    pub libraries: Option<Pair>,
    /// --reindex.
    pub reindex: Reindex,
    pub items: Vec<Item>,
}

impl Preflight {
    pub fn push(&mut self, check: &'static str, outcome: Outcome, detail: impl Into<String>) {
        self.items.push(Item::new(check, outcome, detail));
    }

    /// A toolbox of the upgrade image running as the data owner, with `mounts`.
    pub fn toolbox(&self, role: &'static str, mounts: Vec<ToolMount>) -> ToolboxSpec<'_> {
        ToolboxSpec {
            image: &self.image,
            role,
            data: &self.target.data_dir,
            uid: self.cluster.uid,
            gid: self.cluster.gid,
            mounts,
        }
    }

    pub fn failed(&self) -> bool {
        self.items.iter().any(|i| i.outcome == Outcome::Fail)
    }

    /// Whether a failure keeps the server-side checks from running: any but the uses of
    /// what the new major removed, which the operator fixes all at once, the catalogs' too.
    pub fn blocked(&self) -> bool {
        self.items
            .iter()
            .any(|i| i.outcome == Outcome::Fail && i.check != rules::REMOVED)
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

/// [`assemble::sibling`] of `old_name`, when it is a local image running `new`.
async fn sibling_here(
    docker: &Docker,
    old_name: &str,
    old: u32,
    new: u32,
) -> Result<Option<String>> {
    let Some(name) = assemble::sibling(old_name, old, new) else {
        return Ok(None);
    };
    let runs = docker
        .image(&name)
        .await?
        .and_then(|(image, env)| image.pg_major(&env));
    Ok((runs == Some(new)).then_some(name))
}

/// The toolbox assembled from server images `from` (the old major's) and `to`; or why there
/// is none.
async fn assembled(
    docker: &Docker,
    from: &str,
    to: &str,
    old: u32,
    printer: &Printer,
) -> Result<Result<String, String>> {
    let announce = |o: &assemble::Source, n: &assemble::Source| {
        printer.step(format_args!(
            "assembling the upgrade toolbox from {} (PostgreSQL {}) and {} ({})",
            o.name, o.major, n.name, n.major
        ));
    };
    // The old image must be the cluster's major before anything is built from it.
    let runs = docker
        .image(from)
        .await?
        .and_then(|(image, env)| image.pg_major(&env));
    if let Some(runs) = runs
        && let Err(why) = rules::old_image(from, runs, old)
    {
        return Ok(Err(why));
    }
    match assemble::toolbox(docker, from, to, None, announce).await {
        Ok(a) => Ok(Ok(a.image)),
        Err(AssembleError::Docker(e)) => Err(e.into()),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// The checks that need no server: versions, image, space, settings files, server state.
pub async fn static_checks(
    docker: &Docker,
    target: Target,
    intent: &Intent,
    printer: &Printer,
) -> Result<Preflight> {
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
        // This run's toolbox (a resumed run checks again beside its start) is no server
        // to stop.
        .filter(|c| c.running && !c.is_mine())
        .collect();
    let reflinks = tree::supports_reflink(&target.mount_root, &target.data_dir.join("PG_VERSION"));
    let mut pre = Preflight {
        old_major: cluster.major.parse().unwrap_or(0),
        new_major: intent.to,
        target,
        cluster,
        image: String::new(),
        new_image: intent.new_image.clone(),
        data_bytes,
        data_files: size.files,
        free_bytes,
        reflinks,
        control: None,
        accepted: BTreeSet::new(),
        config_changes: Vec::new(),
        unknown_options: Vec::new(),
        running,
        locations: Vec::new(),
        location_bytes: 0,
        libraries: None,
        reindex: intent.reindex,
        items: Vec::new(),
    };

    // Versions.
    let (old, new) = (pre.old_major, pre.new_major);
    pre.items
        .push(rules::versions(&pre.cluster.major, old, new));
    let (placed, unplaced) = location::place(&pre.cluster.outside, &pre.target.mounts);
    let found: Vec<Found> = placed
        .iter()
        .map(|l| Found {
            location: l,
            exists: l.host.is_dir(),
            overlaps_data: l.host.starts_with(&pre.target.data_dir)
                || pre.target.data_dir.starts_with(&l.host),
            leftover: std::fs::read_dir(&l.host)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .find(|n| !l.is_wal() && l.holds(n, new)),
        })
        .collect();
    let container = pre.target.container.as_ref().map(|c| c.name.as_str());
    pre.items
        .extend(rules::layout(&found, &unplaced, container, new));
    if let Some(c) = container {
        pre.items
            .extend(rules::mounted_inside(c, &pre.target.mounted_inside));
    }
    let service = pre
        .target
        .container
        .as_ref()
        .and_then(|c| compose::Service::of(&c.labels));
    if let Some(s) = service {
        pre.items
            .push(rules::compose(&s, intent.new_image.as_deref()));
    }
    pre.locations = placed;
    if pre.failed() {
        return Ok(pre);
    }

    // The new server image, and the upgrade image: --image, else one assembled from the old
    // and the new server image, else a local one labelled with both majors.
    if let Some(new_image) = &intent.new_image {
        let found = docker
            .image(new_image)
            .await?
            .map(|(img, env)| img.pg_major(&env));
        pre.items.push(rules::new_image(new_image, new, found));
        if pre.failed() {
            return Ok(pre);
        }
    }
    let old_image = intent
        .old_image
        .clone()
        .or_else(|| pre.target.container.as_ref().map(|c| c.image_id.clone()));
    // Without --new-image, the new major's image of the container's own repository, if here.
    let new_image = match (&intent.new_image, &pre.target.container) {
        (Some(name), _) => Some(name.clone()),
        (None, Some(c)) => sibling_here(docker, &c.image, old, new).await?,
        (None, None) => None,
    };
    pre.new_image.clone_from(&new_image);
    let picked = match (&intent.image, old_image, &new_image) {
        (None, Some(from), Some(to)) => assembled(docker, &from, to, old, printer).await?,
        (explicit, from, _) => {
            toolbox::pick_image(docker, explicit.as_deref(), old, new, from.as_deref()).await?
        }
    };
    match rules::upgrade_image(picked) {
        Ok(image) => pre.image = image,
        Err(item) => {
            pre.items.push(item);
            return Ok(pre);
        }
    }

    // What PostgreSQL's own programs say, read through a toolbox with the data read-only.
    let data_read_only = ToolMount::Bind {
        host: pre.target.data_dir.clone(),
        target: OLD.into(),
        read_only: true,
    };
    // What the old server image sorts text with, side by side with the probe (which asks
    // the toolbox the same of the new server): each asks the engine for a container.
    let old_image = intent
        .old_image
        .clone()
        .or_else(|| pre.target.container.as_ref().map(|c| c.image.clone()));
    let old_probe = async {
        match &old_image {
            // An image without a shell tells nothing: the record, else "unknown", decides.
            Some(from) => anyhow::Ok(
                docker
                    .script_in(from, "probe", collation::PROBE)
                    .await
                    .ok()
                    .map(|out| collation::Probe::parse(&out)),
            ),
            None => Ok(None),
        }
    };
    let probed = async {
        let tb = Toolbox::start(docker, pre.toolbox("check", vec![data_read_only])).await?;
        let probed = probe(&tb, &mut pre).await;
        tb.close().await;
        probed
    };
    let (probed, old_probe) = tokio::join!(probed, old_probe);
    let in_toolbox = probed?;
    let old_probe = old_probe?;
    if pre.failed() {
        return Ok(pre);
    }
    if let Some(in_toolbox) = in_toolbox {
        let (old, new) = (pre.old_major, pre.new_major);
        let new_from = pre.new_image.clone().unwrap_or_else(|| pre.image.clone());
        // The old image itself when known; else what the upgrade image recorded of the image
        // it took the old major from.
        let (old_libs, old_from) = match (&old_image, old_probe.map(|p| p.of_major(old))) {
            (Some(name), Some(libs)) if libs.libc.is_some() => (Some(libs), name.clone()),
            _ => (
                in_toolbox.held(old),
                format!("the image {} took PostgreSQL {old} from", pre.image),
            ),
        };
        let pair = Pair {
            old: old_libs,
            new: in_toolbox.of_major(new),
        };
        pre.items
            .push(rules::libraries(&pair, &old_from, &new_from));
        pre.libraries = Some(pair);
    }

    // Server state.
    let control = pre.control.clone().expect("probe read pg_controldata");
    let running: Vec<&str> = pre.running.iter().map(|c| c.name.as_str()).collect();
    let container = pre.target.container.as_ref().map(|c| c.name.as_str());
    pre.items.push(rules::server(
        &running,
        container,
        &control,
        pre.cluster.standby,
        intent.stop_others,
    ));
    // Without an engine, pgup sees this container's processes only.
    if !docker.has_engine() {
        let lock = pre.target.data_dir.join("postmaster.pid").exists();
        let here = crate::cluster::server_holds(&pre.target.data_dir);
        pre.items
            .extend(rules::server_unseen(here, lock, intent.server_stopped));
    }
    pre.items.extend(rules::owner(pre.cluster.uid));

    // Space for the chosen mode, on every filesystem the cluster uses.
    let (rooms, reflinks) = rooms(&pre, data_bytes, free_bytes, reflinks)?;
    let item = rules::space(intent.mode, intent.no_backup, reflinks, &rooms);
    let location_bytes = rooms.iter().map(|r| r.data).sum::<u64>() - data_bytes;
    (pre.reflinks, pre.location_bytes) = (reflinks, location_bytes);
    pre.items.push(item);

    // Settings the new major no longer accepts (adjusted), and what it removed (refused: the
    // operator changes it), in pg_hba.conf, the settings files and the container's command.
    let mut includes = Vec::new();
    let mut removed = Vec::new();
    if let Ok(text) = std::fs::read_to_string(pre.target.data_dir.join("pg_hba.conf")) {
        removed.extend(removals::in_hba(&text, old, new));
    }
    for file in ["postgresql.conf", "postgresql.auto.conf"] {
        let path = pre.target.data_dir.join(file);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        removed.extend(removals::in_file(
            file,
            &config::file_settings(&text),
            old,
            new,
        ));
        let adjusted = config::adjust(file, &text, &pre.accepted, new, control.wal_segment_bytes);
        includes.extend(adjusted.includes.into_iter().map(|include| (file, include)));
        pre.config_changes.extend(adjusted.changes);
    }
    if let Some(c) = &pre.target.container {
        removed.extend(removals::in_command(&c.cmd, old, new));
        let adjusted =
            config::adjust_command(&c.cmd, &pre.accepted, new, control.wal_segment_bytes);
        pre.config_changes.extend(adjusted.changes);
    }
    pre.items.extend(rules::removed(&removed, None));
    let recreated = pre.target.container.is_some() && intent.new_image.is_some();
    pre.items.extend(rules::settings(
        new,
        &includes,
        &pre.config_changes,
        recreated,
    ));
    Ok(pre)
}

/// The filesystems the cluster uses, PGDATA's first, with the old cluster's bytes on each
/// and their free space; and whether all of them support reflinks.
fn rooms<'p>(
    pre: &'p Preflight,
    data_bytes: u64,
    free_bytes: u64,
    reflinks: bool,
) -> Result<(Vec<Room<'p>>, bool)> {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &std::path::Path| {
        std::fs::metadata(p)
            .map(|m| m.dev())
            .with_context(|| format!("cannot read {}", p.display()))
    };
    let mut rooms = vec![(
        Room {
            place: &pre.target.mount_root,
            data: data_bytes,
            free: free_bytes,
        },
        dev(&pre.target.data_dir)?,
    )];
    let mut reflinks = reflinks;
    for l in &pre.locations {
        let bytes = tree::tree_bytes(&l.host, |n| !l.holds(n, pre.old_major))
            .with_context(|| format!("cannot measure {}", l.host.display()))?;
        let at = dev(&l.host)?;
        match rooms.iter_mut().find(|(_, d)| *d == at) {
            Some((room, _)) => room.data += bytes,
            None => {
                let free = space::free_bytes(&l.host).with_context(|| {
                    format!("cannot measure free space at {}", l.host.display())
                })?;
                reflinks &= walkdir::WalkDir::new(&l.host)
                    .into_iter()
                    .flatten()
                    .find(|e| e.file_type().is_file())
                    .is_none_or(|f| tree::supports_reflink(&l.host, f.path()));
                rooms.push((
                    Room {
                        place: &l.host,
                        data: bytes,
                        free,
                    },
                    at,
                ));
            }
        }
    }
    Ok((rooms.into_iter().map(|(r, _)| r).collect(), reflinks))
}

/// Reads, in the toolbox: both bin directories exist, pg_controldata, the settings the new
/// major accepts, and what its servers sort text with (None when a check failed first).
async fn probe(tb: &Toolbox<'_>, pre: &mut Preflight) -> Result<Option<collation::Probe>> {
    let mut missing = Vec::new();
    for major in [pre.old_major, pre.new_major] {
        let pg_upgrade = format!("{}/pg_upgrade", pgcmd::bindir(major));
        if tb
            .run(&["test".into(), "-x".into(), pg_upgrade])
            .await
            .is_err()
        {
            missing.push(major);
        }
    }
    match rules::bin_dirs(&pre.image, pre.old_major, pre.new_major, &missing) {
        Err(fails) => {
            pre.items.extend(fails);
            return Ok(None);
        }
        // The new server image failed: the checks end here.
        Ok(_) if pre.failed() => return Ok(None),
        Ok(holds) => pre.items.push(holds),
    }
    let data = tb.at(&pre.target.data_dir);
    let text = tb.run(&pgcmd::controldata(pre.old_major, &data)).await?;
    let control = ControlData::parse(&text)
        .with_context(|| format!("cannot read pg_controldata's output: {text}"))?;
    pre.control = Some(control);
    pre.accepted =
        config::parse_describe_config(&tb.run(&pgcmd::describe_config(pre.new_major)).await?);
    let argv = ["sh".into(), "-c".into(), collation::PROBE.into()];
    Ok(Some(collation::Probe::parse(&tb.run(&argv).await?)))
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
    if !docker.has_engine() {
        // No overlay without an engine: the checks start the cluster in place, which only an
        // upgrade does, once its backup holds the stopped cluster byte for byte.
        let tb = Toolbox::start(docker, pre.toolbox("check", Vec::new())).await?;
        let checked = on_cluster(&tb, pre, for_upgrade, may_strip).await;
        tb.close().await;
        return checked;
    }
    let scratch = tempfile::Builder::new()
        .prefix("pgup-overlay-")
        .tempdir_in("/var/tmp")
        .context("cannot create a scratch directory in /var/tmp")?;
    // PGDATA at OLD, and each mount holding a location where the server's container has it,
    // so that the links resolve: every one a throwaway view.
    let mut views = vec![(pre.target.data_dir.clone(), OLD.to_owned())];
    views.extend(
        location::mounts(&pre.locations)
            .into_iter()
            .map(|m| (m.source, m.destination.display().to_string())),
    );
    let mut volumes = Vec::new();
    let mut made = Ok(());
    for (i, (lower, target)) in views.into_iter().enumerate() {
        let name = format!(
            "pgup-overlay-{}-{}-{i}",
            std::process::id(),
            chrono::Utc::now().timestamp_micros()
        );
        made = overlay(docker, &scratch.path().join(i.to_string()), &lower, &name).await;
        if made.is_err() {
            break;
        }
        volumes.push((name, target, lower));
    }
    let result = match made {
        Ok(()) => {
            let mounts = volumes
                .iter()
                .map(|(name, target, shows)| ToolMount::Volume {
                    name: name.clone(),
                    target: target.clone(),
                    shows: shows.clone(),
                })
                .collect();
            let spec = pre.toolbox("check", mounts);
            match Toolbox::start(docker, spec).await {
                Ok(tb) => {
                    let r = on_cluster(&tb, pre, for_upgrade, may_strip).await;
                    tb.close().await;
                    r
                }
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e),
    };
    for (name, _, _) in &volumes {
        docker.remove_volume(name).await;
    }
    result
}

/// An overlay volume `name` over `lower`, its upper and work directories in `scratch`; its
/// root keeps `lower`'s owner and mode.
async fn overlay(
    docker: &Docker,
    scratch: &std::path::Path,
    lower: &std::path::Path,
    name: &str,
) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let (upper, work) = (scratch.join("upper"), scratch.join("work"));
    for dir in [&upper, &work] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // The merged view's root takes the upper directory's owner and mode.
    let meta =
        std::fs::metadata(lower).with_context(|| format!("cannot read {}", lower.display()))?;
    std::os::unix::fs::chown(&upper, Some(meta.uid()), Some(meta.gid()))?;
    std::fs::set_permissions(
        &upper,
        std::fs::Permissions::from_mode(meta.mode() & 0o7777),
    )?;
    Ok(docker.create_overlay(name, lower, &upper, &work).await?)
}

/// The checks of [`cluster_checks`] in `tb`, which shows the cluster at the data directory's
/// place (an overlay of it, or the cluster itself).
async fn on_cluster(
    tb: &Toolbox<'_>,
    pre: &mut Preflight,
    for_upgrade: bool,
    may_strip: bool,
) -> Result<Option<InitSettings>> {
    let old = pre.old_major;
    let control = pre
        .control
        .clone()
        .expect("static checks read pg_controldata");
    let data = tb.at(&pre.target.data_dir);
    if !control.shut_down_cleanly() {
        // On the throwaway view, or in place once the backup holds the cluster; nothing runs
        // on the data (the static checks said so).
        tb.run(&pgcmd::remove_stale_lock(&data)).await?;
    }
    // Single-user mode always runs as the bootstrap superuser, whatever it is called.
    let single = [
        "sh".into(),
        "-c".into(),
        r#"echo 'SELECT current_user AS pgup_superuser;' | "$0" --single -D "$1" -c archive_mode=off template1"#.into(),
        format!("{}/postgres", pgcmd::bindir(old)),
        data.clone(),
    ];
    let out = tb.run(&single).await?;
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

    let read = tb
        .with_server(old, &data, async || {
            read_old(tb.socket_dir(), &superuser, old, pre.new_major).await
        })
        .await?;
    judge(tb, pre, superuser, read, for_upgrade, may_strip).await
}

/// The checks of [`cluster_checks`] for `check` on a running server, made through the server
/// itself (see [`Relay`]), pg_upgrade's own included: it checks a live old server
/// ("Performing Consistency Checks on Old Live Server"). PGDATA is mounted read-only, so
/// pg_upgrade's first move, trying to start the old server, fails as it must.
///
/// The old cluster's settings for initdb when the checks could run (pg_upgrade's among them);
/// None when pgup cannot reach the server (an item says so). `may_strip` as in
/// [`cluster_checks`].
pub async fn live_checks(
    docker: &Docker,
    pre: &mut Preflight,
    server: &Container,
    may_strip: bool,
) -> Result<Option<InitSettings>> {
    let later = "`pgup upgrade` stops it and runs them first";
    let (uid, gid) = (pre.cluster.uid, pre.cluster.gid);
    let (relay, socket_dir) = match server
        .pid
        .ok_or_else(|| "is not running".to_owned())
        .and_then(|pid| relay::to_server(&pre.target.data_dir, pid, uid, gid))
    {
        Ok(reached) => reached,
        Err(why) => {
            pre.push(
                "pg_upgrade",
                Outcome::Skip,
                format!(
                    "the server in container {} {why}, which pg_upgrade's checks need; {later}",
                    server.name
                ),
            );
            return Ok(None);
        }
    };
    let login = server
        .env
        .get("POSTGRES_USER")
        .map_or("postgres", String::as_str);
    let superuser = match pgclient::bootstrap_superuser(relay.dir(), login).await {
        Ok(name) => name,
        Err(e) => {
            pre.push(
                "pg_upgrade",
                Outcome::Skip,
                format!("cannot reach the server in container {} as a local client ({e}), which pg_upgrade's checks need; {later}", server.name),
            );
            return Ok(None);
        }
    };
    let mut mounts = vec![
        ToolMount::Bind {
            host: pre.target.data_dir.clone(),
            target: OLD.into(),
            read_only: true,
        },
        ToolMount::Bind {
            host: relay.dir().to_owned(),
            target: socket_dir.display().to_string(),
            read_only: false,
        },
    ];
    mounts.extend(
        location::mounts(&pre.locations)
            .into_iter()
            .map(|m| ToolMount::Bind {
                host: m.source,
                target: m.destination.display().to_string(),
                read_only: true,
            }),
    );
    let tb = Toolbox::start(docker, pre.toolbox("check", mounts)).await?;
    let result = async {
        let read = read_old(relay.dir(), &superuser, pre.old_major, pre.new_major).await?;
        judge(&tb, pre, superuser, read, false, may_strip).await
    }
    .await;
    tb.close().await;
    result
}

/// The running server the checks can ask: the target's container, else the one container
/// running on the data.
pub fn live_server(pre: &Preflight) -> Option<Container> {
    let target = pre.target.container.as_ref().map(|c| c.name.as_str());
    pre.running
        .iter()
        .filter(|c| c.pid.is_some())
        .find(|c| Some(c.name.as_str()) == target || pre.running.len() == 1)
        .cloned()
}

/// What the checks read from the old server: its facts, stored catalog options, extensions,
/// indexes on text; or, first, the uses of what the new major removed, when there are any
/// (nothing more is read then: a database in a removed encoding takes no connection).
type OldFacts = std::result::Result<
    (
        verify::ServerFacts,
        Vec<options::Stored>,
        extension::Installed,
        Vec<collation::TextIndex>,
    ),
    Vec<removals::Use>,
>;

async fn read_old(
    socket_dir: &std::path::Path,
    superuser: &str,
    old: u32,
    new: u32,
) -> Result<OldFacts> {
    let catalogs = removals::gather(socket_dir, superuser, old, new).await?;
    let removed = removals::in_catalogs(&catalogs, old, new);
    if !removed.is_empty() {
        return Ok(Err(removed));
    }
    let facts = verify::server_facts(socket_dir, superuser, old).await?;
    let stored = options::gather(socket_dir, superuser).await?;
    let installed = extension::installed(socket_dir, superuser).await?;
    let indexes = collation::dependent(socket_dir, superuser, old).await?;
    Ok(Ok((facts, stored, installed, indexes)))
}

/// The checks on what was read from the old server, in `tb` (which has the old cluster at
/// [`OLD`]); for `check`, ending with `pg_upgrade --check` against a scratch new cluster.
async fn judge(
    tb: &Toolbox<'_>,
    pre: &mut Preflight,
    superuser: String,
    read: OldFacts,
    for_upgrade: bool,
    may_strip: bool,
) -> Result<Option<InitSettings>> {
    let (old, new) = (pre.old_major, pre.new_major);
    let none_before = !pre.items.iter().any(|i| i.check == rules::REMOVED);
    let (facts, stored, installed, indexes) = match read {
        Ok(read) => read,
        Err(removed) => {
            pre.items.extend(rules::removed(&removed, None));
            return Ok(None);
        }
    };
    pre.items
        .extend(rules::removed(&[], none_before.then_some(new)));
    if pre.failed() {
        return Ok(None);
    }
    let control = pre
        .control
        .clone()
        .expect("static checks read pg_controldata");
    let settings = InitSettings {
        superuser,
        encoding: facts.encoding,
        collate: facts.collate,
        ctype: facts.ctype,
        provider: facts.provider,
        checksums: control.checksums,
        wal_segment_bytes: control.wal_segment_bytes,
    };
    pre.items.push(rules::cluster(&settings));
    if let Some(pair) = &pre.libraries {
        let jobs = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        pre.items.push(rules::text_indexes(
            pair.changed(),
            pre.reindex,
            &indexes,
            jobs,
        ));
    }

    // Every extension installed must be in the new major's image, control file and module.
    let provided = extension::parse_provided(&tb.run(&extension::provided_argv(new)).await?);
    let image = pre.new_image.as_deref().unwrap_or(&pre.image);
    let items = rules::extensions(&installed, &provided, image, new);
    let missing = items.iter().any(|i| i.outcome == Outcome::Fail);
    pre.items.extend(items);
    if missing {
        return Ok(None);
    }

    // Every database's locale must exist where the new cluster runs.
    let available = tb.run(&["locale".into(), "-a".into()]).await?;
    let locales = rules::locales(&facts.locales, &available, &pre.image);
    let missing = locales.outcome == Outcome::Fail;
    pre.items.push(locales);
    if missing {
        return Ok(None);
    }

    // A scratch new cluster in the toolbox's own filesystem: it judges the stored options,
    // and pg_upgrade --check runs against it.
    let scratch_new = &format!("{}/check-new", tb.run_dir());
    if !for_upgrade || !stored.is_empty() {
        tb.run(&pgcmd::initdb(new, scratch_new, &settings, None))
            .await?;
    }
    let verdicts = if stored.is_empty() {
        Vec::new()
    } else {
        tb.with_server(new, scratch_new, async || {
            anyhow::Ok(options::judge(tb.socket_dir(), &settings.superuser, &stored).await?)
        })
        .await?
    };
    pre.items
        .extend(rules::options(&stored, &verdicts, new, may_strip));
    pre.unknown_options = rules::unknown_options(&stored, &verdicts)
        .map(|s| s.key.clone())
        .collect();
    if for_upgrade {
        return Ok(Some(settings));
    }
    let check = PgUpgrade {
        old_major: old,
        new_major: new,
        old_datadir: &tb.at(&pre.target.data_dir),
        new_datadir: scratch_new,
        superuser: &settings.superuser,
        run_dir: &tb.run_dir(),
        // The scratch cluster is on another filesystem, so links cannot be tried here.
        transfer: Transfer::Copy,
        jobs: 1,
        check_only: true,
    };
    let failure = match tb.run(&check.argv()).await {
        Ok(_) => None,
        Err(e) => Some(explain_check_failure(tb, &e).await),
    };
    pre.items.push(rules::pg_upgrade_check(failure));
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
