//! The rules of the preflight checks: pure functions from facts to check items, table-tested;
//! `preflight` gathers the facts (Docker, files, a toolbox, a scratch server) and calls them
//! in order. Each rule returns the items of one check as `check` and `upgrade` report them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::cluster::{ControlData, InitSettings, LocaleProvider};
use crate::collation::{self, Changed, Pair, TextIndex};
use crate::compose::Service;
use crate::config::{self, Change};
use crate::extension;
use crate::location::{Location, Unplaced};
use crate::options::{self, Stored, Verdict};
use crate::pgcmd;
use crate::plan::{self, BackupKind, ModeError};
use crate::removals::Use;
use crate::settings::{Mode, Reindex};

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

impl Item {
    pub fn new(check: &'static str, outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            check,
            outcome,
            detail: detail.into(),
        }
    }
}

/// The "versions" item. `pg_version` is PG_VERSION as written ("9.6"), `old` its major (0
/// when it is not a whole number).
pub fn versions(pg_version: &str, old: u32, new: u32) -> Item {
    if old < 10 {
        Item::new(
            "versions",
            Outcome::Fail,
            format!("the cluster is PostgreSQL {pg_version}; pgup upgrades from 10 or later"),
        )
    } else if new <= old {
        Item::new(
            "versions",
            Outcome::Fail,
            format!(
                "--to {new} is not newer than the cluster's PostgreSQL {old}; give a higher major"
            ),
        )
    } else {
        Item::new("versions", Outcome::Ok, format!("PostgreSQL {old} → {new}"))
    }
}

/// The upgrade image `toolbox::pick_image` found, or the "image" failure saying why there is
/// none.
pub fn upgrade_image(picked: Result<String, String>) -> Result<String, Item> {
    picked.map_err(|why| Item::new("image", Outcome::Fail, why))
}

/// The "extensions" items: a failure for each extension installed in the old cluster that
/// the new major's image (`image`) does not provide, control file and module; else one item
/// listing them with the versions they will be updated to.
pub fn extensions(
    installed: &extension::Installed,
    provided: &extension::Provided,
    image: &str,
    new: u32,
) -> Vec<Item> {
    // Extension → (versions installed, databases).
    let mut seen: BTreeMap<&str, (BTreeSet<&str>, Vec<&str>)> = BTreeMap::new();
    for (db, exts) in installed {
        for (name, version) in exts {
            let e = seen.entry(name).or_default();
            e.0.insert(version);
            e.1.push(db);
        }
    }
    let mut fails = Vec::new();
    let mut fine = Vec::new();
    for (name, (versions, dbs)) in &seen {
        let versions = versions.iter().copied().collect::<Vec<_>>().join("/");
        let dbs = dbs.join(", ");
        let what = format!("extension {name} {versions} (in {dbs})");
        match provided.controls.get(*name) {
            None => fails.push(format!(
                "{what} is not in {image}: it has no {name}.control for PostgreSQL {new}; use a new image that provides {name}"
            )),
            Some(c) if c.module.as_ref().is_some_and(|m| !provided.modules.contains(m)) => {
                fails.push(format!(
                    "{what}: {image} has {name}.control but not its module {}.so; use a new image that provides {name}",
                    c.module.as_deref().unwrap_or_default()
                ));
            }
            Some(_) if *name == "plpgsql" => {}
            Some(c) if c.default_version == versions => fine.push(format!("{name} {versions}")),
            Some(c) => fine.push(format!("{name} {versions} → {}", c.default_version)),
        }
    }
    if !fails.is_empty() {
        return fails
            .into_iter()
            .map(|f| Item::new("extensions", Outcome::Fail, f))
            .collect();
    }
    let detail = if fine.is_empty() {
        "none besides plpgsql".to_owned()
    } else {
        format!("{image} provides {}", fine.join(", "))
    };
    vec![Item::new("extensions", Outcome::Ok, detail)]
}

/// Whether the old server image (named `name`, running `runs`) is the cluster's major: an
/// assembled toolbox holds the old image's programs. The error is the "image" failure's text.
pub fn old_image(name: &str, runs: u32, cluster: u32) -> Result<(), String> {
    if runs == cluster {
        Ok(())
    } else {
        Err(format!(
            "{name} runs PostgreSQL {runs}, but the cluster is PostgreSQL {cluster}; name the image it ran on with --old-image"
        ))
    }
}

/// The "image" item once the upgrade image runs: it holds both majors, or a failure per major
/// whose bin directory it lacks (`missing`).
pub fn bin_dirs(image: &str, old: u32, new: u32, missing: &[u32]) -> Result<Item, Vec<Item>> {
    if missing.is_empty() {
        return Ok(Item::new(
            "image",
            Outcome::Ok,
            format!("{image} holds PostgreSQL {old} and {new}"),
        ));
    }
    Err(missing
        .iter()
        .map(|&major| {
            Item::new(
                "image",
                Outcome::Fail,
                format!(
                    "{image} has no {}: use an upgrade image holding PostgreSQL {major}",
                    pgcmd::bindir(major)
                ),
            )
        })
        .collect())
}

/// The "new image" item for `--new-image NAME`. `found` is None when the image is not here,
/// else the major its PG_MAJOR names (None without one).
pub fn new_image(name: &str, new: u32, found: Option<Option<u32>>) -> Item {
    match found {
        None => Item::new(
            "new image",
            Outcome::Fail,
            format!("{name} is not here; build or load it first (see images/README.md)"),
        ),
        Some(Some(m)) if m == new => Item::new(
            "new image",
            Outcome::Ok,
            format!("{name} runs PostgreSQL {m}"),
        ),
        Some(Some(m)) => Item::new(
            "new image",
            Outcome::Fail,
            format!("{name} runs PostgreSQL {m}, not {new}; pass a PostgreSQL {new} server image"),
        ),
        Some(None) => Item::new(
            "new image",
            Outcome::Warn,
            format!("cannot tell which major {name} runs (no PG_MAJOR); make sure it is {new}"),
        ),
    }
}

/// The "server" item. `running` names the running containers using the data, `container`
/// the one pgup was pointed at: pgup stops only that one.
/// Without an engine, from inside a container: a server of this container holds the data
/// (`here`), or the data has a lock file (`lock`) that a server in another container, which
/// pgup cannot see, may hold; unless the operator says none runs (`stopped`).
pub fn server_unseen(here: bool, lock: bool, stopped: bool) -> Option<Item> {
    let detail = if here {
        "a PostgreSQL server runs on the data in this container; stop it (`pg_ctl stop`), then run the same command again"
    } else if lock && !stopped {
        "postmaster.pid is in PGDATA, and from inside a container pgup cannot see whether a server in another container runs on this volume: stop every container using it; if none runs (the server was killed), say so with --server-stopped (PGUP_SERVER_STOPPED=yes for the entrypoint)"
    } else {
        return None;
    };
    Some(Item::new("server", Outcome::Fail, detail))
}

pub fn server(
    running: &[&str],
    container: Option<&str>,
    control: &ControlData,
    standby: Option<&str>,
    stop_others: bool,
) -> Item {
    let others: Vec<&str> = running
        .iter()
        .copied()
        .filter(|&n| Some(n) != container)
        .collect();
    if !others.is_empty() && !stop_others {
        Item::new("server", Outcome::Fail, others_running(&others))
    } else if let Some(why) = standby.map(|file| format!("{file} in PGDATA")).or_else(|| {
        matches!(
            control.state.as_str(),
            "shut down in recovery" | "in archive recovery"
        )
        .then(|| format!("state: {}", control.state))
    }) {
        Item::new(
            "server",
            Outcome::Fail,
            format!(
                "the cluster is a standby ({why}), which pg_upgrade cannot upgrade: promote it (`pg_ctl promote`, or `SELECT pg_promote()`), or upgrade the primary and rebuild this standby from it"
            ),
        )
    } else if !others.is_empty() {
        Item::new(
            "server",
            Outcome::Warn,
            format!(
                "running, and container {} too: upgrade stops them gracefully first, and starts {} again at the end (--stop-others)",
                others.join(", "),
                others.join(", ")
            ),
        )
    } else if !running.is_empty() {
        Item::new(
            "server",
            Outcome::Warn,
            "running; upgrade stops it gracefully first",
        )
    } else if !control.shut_down_cleanly() {
        Item::new(
            "server",
            Outcome::Warn,
            format!(
                "the cluster was not shut down cleanly (state: {}); upgrade starts it privately first, so that PostgreSQL finishes crash recovery from its WAL, and stops it cleanly",
                control.state
            ),
        )
    } else {
        Item::new("server", Outcome::Ok, "stopped, shut down cleanly")
    }
}

/// A directory the cluster keeps outside PGDATA, as found on this host.
pub struct Found<'a> {
    pub location: &'a Location,
    pub exists: bool,
    /// It lies inside PGDATA (the backup of PGDATA would hold it twice) or holds it (what is
    /// set aside of the location would take PGDATA along).
    pub overlaps_data: bool,
    /// A version directory of the new major already in the tablespace.
    pub leftover: Option<String>,
}

/// The "layout" items for the directories kept outside PGDATA: each found one is backed up,
/// upgraded and rolled back with the cluster. Fails: a link no mount holds (`container`: the
/// target's container, whose own filesystem it is then in), a directory not on this host or
/// inside PGDATA, a tablespace already holding the new major's directory (pg_upgrade refuses).
pub fn layout(
    found: &[Found],
    unplaced: &[Unplaced],
    container: Option<&str>,
    new: u32,
) -> Vec<Item> {
    let mut items: Vec<Item> = unplaced
        .iter()
        .map(|(entry, path)| {
            let what = match container {
                Some(c) => format!(
                    "{entry} points to {}, in container {c}'s own filesystem, not in a volume or bind mount: it would be lost with the container; move it to a volume first",
                    path.display()
                ),
                None => format!(
                    "{entry} points to {0}, which pgup cannot find without the server's container: name what that container mounts at {0} or above it, as --location MOUNT_PATH=VOLUME|DIR (e.g. --location {0}=VOLUME)",
                    path.display()
                ),
            };
            Item::new("layout", Outcome::Fail, what)
        })
        .collect();
    for f in found {
        let (label, host) = (f.location.label(), f.location.host.display());
        let (outcome, detail) = if !f.exists {
            (
                Outcome::Fail,
                format!(
                    "{label}: {host} does not exist on this host; point --location at the volume or directory the server's container mounts there"
                ),
            )
        } else if f.overlaps_data {
            (
                Outcome::Fail,
                format!(
                    "{label} is inside PGDATA or holds it ({host}), so pgup cannot keep it apart from the cluster: give it a directory of its own first"
                ),
            )
        } else if let Some(dir) = &f.leftover {
            (
                Outcome::Fail,
                format!(
                    "{label} already holds {dir}, a PostgreSQL {new} directory (from an earlier attempt?), which pg_upgrade will not write over: remove it if no server uses it"
                ),
            )
        } else {
            (
                Outcome::Ok,
                format!("{label} on {host}: backed up, upgraded and rolled back with the cluster"),
            )
        };
        items.push(Item::new("layout", outcome, detail));
    }
    items
}

/// The "compose" warning for a container Compose manages: its file names the old image.
pub fn compose(service: &Service, new_image: Option<&str>) -> Item {
    Item::new(
        "compose",
        Outcome::Warn,
        format!(
            "the container is {}: the upgrade keeps the old container out of Compose's sight, but the file still names the old image; change `image:` there to {} as the report will say (a service re-created on the old image does not start on the upgraded data)",
            service.describe(),
            new_image.unwrap_or("the new major's image")
        ),
    )
}

/// Why a command that changes the data refuses while `others` (containers pgup was not
/// pointed at) run on it.
pub fn others_running(others: &[&str]) -> String {
    format!(
        "a server still holds the data: container {} is running on it; stop it, pass --stop-others to have pgup stop it and start it again at the end, or name it with --container",
        others.join(", ")
    )
}

/// The "layout" failures for mounts of `container` inside PGDATA: pgup's backup and
/// pg_upgrade see the data directory on the host, where such a mount is an empty directory.
pub fn mounted_inside(container: &str, inside: &[std::path::PathBuf]) -> Vec<Item> {
    inside
        .iter()
        .map(|dest| {
            Item::new(
                "layout",
                Outcome::Fail,
                format!(
                    "container {container} mounts {} inside PGDATA from another volume or directory, which pgup's backup and pg_upgrade would not see: move what it holds into PGDATA (for the WAL: mount that volume elsewhere and make pg_wal a link to it, as initdb --waldir does)",
                    dest.display()
                ),
            )
        })
        .collect()
}

/// The "owner" failure when the data directory belongs to root.
pub fn owner(uid: u32) -> Option<Item> {
    (uid == 0).then(|| {
        Item::new(
            "owner",
            Outcome::Fail,
            "the data directory belongs to root; PostgreSQL refuses to run as root: chown it to the server's user",
        )
    })
}

/// One filesystem the upgrade writes to: where, the cluster's bytes on it, its free bytes.
pub struct Room<'a> {
    pub place: &'a Path,
    pub data: u64,
    pub free: u64,
}

/// The "mode" item when the mode cannot keep the backup asked for, else the "space" item for
/// the backup it keeps, on every filesystem the cluster uses (PGDATA's first). `no_backup` is
/// None for `check`, which then only says what link needs.
pub fn space(mode: Mode, no_backup: Option<bool>, reflinks: bool, rooms: &[Room]) -> Item {
    let kind = match plan::backup_kind(mode, no_backup.unwrap_or(false), reflinks, rooms[0].place) {
        Err(ModeError::LinkNeedsNoBackup) if no_backup.is_none() => {
            return Item::new(
                "mode",
                Outcome::Warn,
                "link keeps no independent backup; `pgup upgrade --mode link` needs --no-backup --yes",
            );
        }
        Err(e) => return Item::new("mode", Outcome::Fail, e.to_string()),
        Ok(kind) => kind,
    };
    let what = match kind {
        BackupKind::Copy => "a full copy of the data as backup",
        BackupKind::Clone => "a reflink copy as backup",
        BackupKind::None => "no backup",
    };
    let mut short = false;
    let parts: Vec<String> = rooms
        .iter()
        .map(|r| {
            let need = plan::need_bytes(kind, r.data);
            short |= r.free < need;
            format!(
                "{} free on {}, {} needed ({what}, data {})",
                indicatif::HumanBytes(r.free),
                r.place.display(),
                indicatif::HumanBytes(need),
                indicatif::HumanBytes(r.data)
            )
        })
        .collect();
    let detail = parts.join("; ");
    if short {
        Item::new(
            "space",
            Outcome::Fail,
            format!(
                "{detail}: free space first, or use --mode clone on a filesystem with reflinks"
            ),
        )
    } else {
        Item::new("space", Outcome::Ok, detail)
    }
}

/// The "settings" items: a warning per include directive, as `(file, directive)`, since pgup
/// does not follow them; then that every setting is accepted, or a warning per change the
/// upgrade makes.
pub fn settings(
    new: u32,
    includes: &[(&str, String)],
    changes: &[Change],
    recreated: bool,
) -> Vec<Item> {
    let mut items: Vec<Item> = includes
        .iter()
        .map(|(file, include)| {
            Item::new(
                "settings",
                Outcome::Warn,
                format!("{file} has `{include}`: pgup does not check included files; make sure they suit PostgreSQL {new}"),
            )
        })
        .collect();
    if changes.is_empty() {
        items.push(Item::new(
            "settings",
            Outcome::Ok,
            format!("every setting is accepted by PostgreSQL {new}"),
        ));
    }
    items.extend(changes.iter().map(|change| {
        let what = if change.file != config::COMMAND || recreated {
            "upgrade adjusts it"
        } else {
            "change it when you re-create the container, or pass --new-image so that pgup does"
        };
        Item::new("settings", Outcome::Warn, format!("{change} ({what})"))
    }));
    items
}

/// The check of what the new major removed.
pub const REMOVED: &str = "removed";

/// The "removed" items: a failure for each use of something the new major removed; with
/// `all_read_for` (the new major) when these are the last uses to find, an item saying there
/// are none.
pub fn removed(uses: &[Use], all_read_for: Option<u32>) -> Vec<Item> {
    let mut items: Vec<Item> = uses
        .iter()
        .map(|u| Item::new(REMOVED, Outcome::Fail, u.to_string()))
        .collect();
    if let (true, Some(new)) = (items.is_empty(), all_read_for) {
        items.push(Item::new(
            REMOVED,
            Outcome::Ok,
            format!("nothing that PostgreSQL {new} removed is in use"),
        ));
    }
    items
}

/// The "libraries" item: what the old cluster's text indexes were built with (`old_from`
/// names where that was learned) and what the new server sorts with (in `new_from`).
pub fn libraries(pair: &Pair, old_from: &str, new_from: &str) -> Item {
    let Some(old) = &pair.old else {
        return Item::new(
            "libraries",
            Outcome::Warn,
            format!(
                "neither the old server image nor {new_from} tells which C library and ICU built the old cluster's indexes; {new_from} has {}: text indexes count as needing a rebuild (name the old image with --old-image to know)",
                pair.new
            ),
        );
    };
    if !pair.changed().any() {
        return Item::new(
            "libraries",
            Outcome::Ok,
            format!("{old_from} and {new_from} sort text alike: {}", pair.new),
        );
    }
    Item::new(
        "libraries",
        Outcome::Warn,
        format!(
            "{old_from} has {old}, {new_from} has {}: indexes on text may sort differently ({})",
            pair.new,
            pair.describe_change()
        ),
    )
}

/// The "indexes" item: the text indexes on a collation of a library that changed (`changed`),
/// their size, and what the upgrade does with them under `reindex` with `jobs` connections.
pub fn text_indexes(changed: Changed, reindex: Reindex, indexes: &[TextIndex], jobs: u32) -> Item {
    let touched: Vec<&TextIndex> = indexes.iter().filter(|i| changed.touches(i)).collect();
    let bytes: i64 = touched.iter().map(|i| i.bytes).sum();
    let rebuilt: Vec<&&TextIndex> = touched
        .iter()
        .filter(|i| collation::to_rebuild(reindex, changed).touches(i))
        .collect();
    let extra = match reindex {
        Reindex::Always => indexes.len() - rebuilt.len(),
        _ => 0,
    };
    if touched.is_empty() && reindex != Reindex::Always {
        return Item::new(
            "indexes",
            Outcome::Ok,
            if changed.any() {
                format!(
                    "none of {} index(es) on text depends on a library that changed",
                    indexes.len()
                )
            } else {
                "no library that orders text changed: no index needs a rebuild".to_owned()
            },
        );
    }
    let unique = touched.iter().filter(|i| i.unique).count();
    let what = format!(
        "{} index(es) ({}, {unique} unique) depend on a collation whose library changed",
        touched.len(),
        indicatif::HumanBytes(bytes.max(0) as u64)
    );
    match reindex {
        Reindex::Never => Item::new(
            "indexes",
            Outcome::Warn,
            format!(
                "{what}; --reindex never leaves them as built: queries may miss rows until you REINDEX them (`pgup status` lists them after the upgrade)"
            ),
        ),
        Reindex::Auto | Reindex::Always => {
            let all: i64 = indexes.iter().map(|i| i.bytes).sum();
            let seconds = plan::rebuild_estimate(
                if reindex == Reindex::Always {
                    all
                } else {
                    bytes
                }
                .max(0) as u64,
                jobs,
            )
            .as_secs();
            let also = if extra > 0 {
                format!(", and {extra} more on libc or ICU collations (--reindex always)")
            } else {
                String::new()
            };
            Item::new(
                "indexes",
                Outcome::Ok,
                format!(
                    "{what}: the upgrade rebuilds them{also} on the new server before handing it back (about {seconds} s)"
                ),
            )
        }
    }
}

/// The "cluster" item: the settings the new cluster is initialised with.
pub fn cluster(settings: &InitSettings) -> Item {
    Item::new(
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
    )
}

/// The "locales" item: every locale a database `uses` must exist in `image`, where the new
/// cluster runs; `available` is `locale -a`'s output there.
pub fn locales(uses: &[String], available: &str, image: &str) -> Item {
    let available: BTreeSet<String> = available.lines().map(normalize_locale).collect();
    let missing: Vec<&String> = uses
        .iter()
        .filter(|l| !available.contains(&normalize_locale(l)))
        .collect();
    if missing.is_empty() {
        Item::new(
            "locales",
            Outcome::Ok,
            format!("{} available in {image}", join(uses)),
        )
    } else {
        Item::new(
            "locales",
            Outcome::Fail,
            format!(
                "{} missing in {image}: use an upgrade image that has them",
                join(&missing)
            ),
        )
    }
}

/// The "options" items for the `stored` options and what the new major said of each
/// (`verdicts`, in the same order): unknown ones are removed by the upgrade once the backup
/// exists; `may_strip` is false for an upgrade keeping no backup without
/// --strip-unknown-options, which then refuses.
pub fn options(stored: &[Stored], verdicts: &[Verdict], new: u32, may_strip: bool) -> Vec<Item> {
    let lines = options::describe(stored, verdicts, new);
    let mut items = Vec::new();
    if stored.is_empty() {
        items.push(Item::new(
            "options",
            Outcome::Ok,
            "no column or storage options are stored",
        ));
    } else if lines.is_empty() {
        items.push(Item::new(
            "options",
            Outcome::Ok,
            format!(
                "PostgreSQL {new} accepts each of the {} stored column and storage options",
                stored.len()
            ),
        ));
    }
    items.extend(lines.into_iter().map(|(verdict, text)| {
        let text = if verdict == Verdict::Unknown {
            format!(
                "{text}: the upgrade removes it from the old cluster once the backup (which keeps it) exists"
            )
        } else {
            text
        };
        Item::new("options", Outcome::Warn, text)
    }));
    let unknown: Vec<&Stored> = unknown_options(stored, verdicts).collect();
    if !may_strip && !unknown.is_empty() {
        let names: Vec<String> = unknown.iter().map(|s| s.key.to_string()).collect();
        items.push(Item::new(
            "options",
            Outcome::Fail,
            format!(
                "PostgreSQL {new} does not know {} stored option(s): {}; with --no-backup they would be removed from the only copy: add --strip-unknown-options to allow that, or keep a backup",
                unknown.iter().map(|s| s.count()).sum::<u64>(),
                names.join(", ")
            ),
        ));
    }
    items
}

/// The stored options the new major does not know: the upgrade removes them.
pub fn unknown_options<'a>(
    stored: &'a [Stored],
    verdicts: &'a [Verdict],
) -> impl Iterator<Item = &'a Stored> {
    stored
        .iter()
        .zip(verdicts)
        .filter(|(_, v)| **v == Verdict::Unknown)
        .map(|(s, _)| s)
}

/// The "pg_upgrade" item: `pg_upgrade --check` passed, or why it failed.
pub fn pg_upgrade_check(failure: Option<String>) -> Item {
    match failure {
        None => Item::new("pg_upgrade", Outcome::Ok, "pg_upgrade --check passed"),
        Some(why) => Item::new(
            "pg_upgrade",
            Outcome::Fail,
            format!("pg_upgrade --check: {why}"),
        ),
    }
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
    use crate::collation::Libraries;
    use std::collections::BTreeMap;
    use std::fmt::Debug;
    use std::path::PathBuf;

    use super::*;
    use crate::options::{Key, Kind};

    #[test]
    fn without_an_engine_a_lock_file_needs_the_operator_s_word() {
        assert!(server_unseen(false, false, false).is_none());
        assert!(server_unseen(false, true, true).is_none());
        let unseen = server_unseen(false, true, false).expect("refused");
        assert_eq!(unseen.outcome, Outcome::Fail);
        assert!(
            unseen.detail.contains("--server-stopped"),
            "{}",
            unseen.detail
        );
        let here = server_unseen(true, true, true).expect("refused");
        assert!(here.detail.contains("in this container"), "{}", here.detail);
    }

    /// Items expected, one by one: the outcome, and a part of the detail.
    type Want<'a> = &'a [(Outcome, &'a str)];

    /// `items` are all of `check`, and as `want` says.
    fn expect(case: impl Debug, check: &str, items: &[Item], want: Want) {
        assert_eq!(items.len(), want.len(), "{case:?}: {items:#?}");
        for (item, (outcome, part)) in items.iter().zip(want) {
            assert_eq!(item.check, check, "{case:?}: {item:?}");
            assert_eq!(item.outcome, *outcome, "{case:?}: {item:?}");
            assert!(
                item.detail.contains(part),
                "{case:?}: {item:?} lacks {part:?}"
            );
        }
    }

    fn control(state: &str) -> ControlData {
        ControlData {
            state: state.into(),
            checksums: true,
            wal_segment_bytes: 16 << 20,
            block_size: 8192,
            checkpoint: "0/1000028".into(),
            timeline: 1,
            blocks_per_segment: 131072,
            wal_level: "replica".into(),
            wal_log_hints: false,
        }
    }

    #[test]
    fn versions_go_up_from_10() {
        use Outcome::*;
        let cases = [
            (
                ("9.6", 0, 17),
                Fail,
                "the cluster is PostgreSQL 9.6; pgup upgrades from 10 or later",
            ),
            (("9", 9, 17), Fail, "pgup upgrades from 10 or later"),
            (
                ("13", 13, 13),
                Fail,
                "--to 13 is not newer than the cluster's PostgreSQL 13; give a higher major",
            ),
            (("17", 17, 15), Fail, "--to 15 is not newer"),
            (("10", 10, 11), Ok, "PostgreSQL 10 → 11"),
            (("13", 13, 18), Ok, "PostgreSQL 13 → 18"),
        ];
        for ((pg_version, old, new), outcome, part) in cases {
            let item = versions(pg_version, old, new);
            expect((pg_version, new), "versions", &[item], &[(outcome, part)]);
        }
    }

    #[test]
    fn the_upgrade_image_is_found_or_says_why_not() {
        assert_eq!(
            upgrade_image(Ok("pgup/upgrade:latest".into())).unwrap(),
            "pgup/upgrade:latest"
        );
        let why = "no local upgrade image holds PostgreSQL 13 and 18";
        let item = upgrade_image(Err(why.into())).unwrap_err();
        expect("not found", "image", &[item], &[(Outcome::Fail, why)]);
    }

    #[test]
    fn the_upgrade_image_holds_both_bin_dirs() {
        use Outcome::*;
        let no_13 =
            "img has no /usr/lib/postgresql/13/bin: use an upgrade image holding PostgreSQL 13";
        let no_18 =
            "img has no /usr/lib/postgresql/18/bin: use an upgrade image holding PostgreSQL 18";
        let cases: [(&[u32], Want); 4] = [
            (&[], &[(Ok, "img holds PostgreSQL 13 and 18")]),
            (&[13], &[(Fail, no_13)]),
            (&[18], &[(Fail, no_18)]),
            (&[13, 18], &[(Fail, no_13), (Fail, no_18)]),
        ];
        for (missing, want) in cases {
            let items = match bin_dirs("img", 13, 18, missing) {
                Result::Ok(item) => vec![item],
                Err(fails) => fails,
            };
            expect(missing, "image", &items, want);
        }
    }

    #[test]
    fn the_new_image_runs_the_new_major() {
        use Outcome::*;
        let cases = [
            (
                None,
                Fail,
                "pg:18 is not here; build or load it first (see images/README.md)",
            ),
            (
                Some(Some(17)),
                Fail,
                "pg:18 runs PostgreSQL 17, not 18; pass a PostgreSQL 18 server image",
            ),
            (
                Some(None),
                Warn,
                "cannot tell which major pg:18 runs (no PG_MAJOR); make sure it is 18",
            ),
            (Some(Some(18)), Ok, "pg:18 runs PostgreSQL 18"),
        ];
        for (found, outcome, part) in cases {
            let item = new_image("pg:18", 18, found);
            expect(found, "new image", &[item], &[(outcome, part)]);
        }
    }

    #[test]
    fn only_a_cleanly_stopped_or_the_target_server_may_hold_the_data() {
        use Outcome::*;
        let cases = [
            (
                vec!["other"],
                Some("db"),
                "shut down",
                Fail,
                "a server still holds the data: container other is running on it; stop it, pass --stop-others",
            ),
            (
                vec!["db", "a", "b"],
                Some("db"),
                "in production",
                Fail,
                "container a, b is running on it",
            ),
            (
                vec!["db"],
                None,
                "in production",
                Fail,
                "container db is running on it",
            ),
            (
                vec!["db"],
                Some("db"),
                "in production",
                Warn,
                "running; upgrade stops it gracefully first",
            ),
            (
                vec![],
                Some("db"),
                "in production",
                Warn,
                "the cluster was not shut down cleanly (state: in production); upgrade starts it privately first, so that PostgreSQL finishes crash recovery from its WAL, and stops it cleanly",
            ),
            (
                vec![],
                None,
                "in crash recovery",
                Warn,
                "(state: in crash recovery); upgrade starts it privately first",
            ),
            (
                vec![],
                None,
                "shut down in recovery",
                Fail,
                "the cluster is a standby (state: shut down in recovery), which pg_upgrade cannot upgrade: promote it",
            ),
            (
                vec!["db"],
                Some("db"),
                "in archive recovery",
                Fail,
                "the cluster is a standby (state: in archive recovery)",
            ),
            (
                vec![],
                Some("db"),
                "shut down",
                Ok,
                "stopped, shut down cleanly",
            ),
            (vec![], None, "shut down", Ok, "stopped, shut down cleanly"),
        ];
        for (running, container, state, outcome, part) in cases {
            let item = server(&running, container, &control(state), None, false);
            expect(
                (running, container, state),
                "server",
                &[item],
                &[(outcome, part)],
            );
        }
        let item = server(
            &["db", "agent"],
            Some("db"),
            &control("in production"),
            None,
            true,
        );
        expect(
            "--stop-others",
            "server",
            &[item],
            &[(
                Warn,
                "running, and container agent too: upgrade stops them gracefully first, and starts agent again at the end",
            )],
        );
        // A signal file makes a standby whatever pg_control says (it may have crashed).
        for (running, state) in [(vec![], "in production"), (vec!["db"], "in production")] {
            let item = server(
                &running,
                Some("db"),
                &control(state),
                Some("standby.signal"),
                false,
            );
            expect(
                state,
                "server",
                &[item],
                &[(
                    Fail,
                    "the cluster is a standby (standby.signal in PGDATA), which pg_upgrade cannot upgrade",
                )],
            );
        }
    }

    #[test]
    fn mounts_inside_pgdata_are_refused() {
        assert!(mounted_inside("db", &[]).is_empty());
        let items = mounted_inside("db", &[PathBuf::from("/var/lib/postgresql/data/pg_wal")]);
        assert_eq!(items[0].outcome, Outcome::Fail);
        assert!(items[0].detail.starts_with(
            "container db mounts /var/lib/postgresql/data/pg_wal inside PGDATA from another volume"
        ));
    }

    #[test]
    fn links_out_of_pgdata() {
        let (placed, _) = crate::location::place(
            &[
                ("pg_wal".into(), "/pgwal".into()),
                ("pg_tblspc/16384".into(), "/tblspc".into()),
            ],
            &[
                crate::location::HostMount {
                    destination: "/pgwal".into(),
                    source: "/h/wal".into(),
                },
                crate::location::HostMount {
                    destination: "/tblspc".into(),
                    source: "/h/ts".into(),
                },
            ],
        );
        let found = |i: usize, exists, overlaps_data, leftover: Option<&str>| Found {
            location: &placed[i],
            exists,
            overlaps_data,
            leftover: leftover.map(str::to_owned),
        };
        let unplaced = [("pg_tblspc/16385".to_owned(), PathBuf::from("/ts2"))];
        let items = layout(
            &[
                found(0, true, false, None),
                found(1, true, false, Some("PG_17_202406281")),
            ],
            &unplaced,
            None,
            17,
        );
        let details: Vec<(Outcome, &str)> = items
            .iter()
            .map(|i| (i.outcome, i.detail.as_str()))
            .collect();
        assert_eq!(details.len(), 3);
        assert_eq!(details[0].0, Outcome::Fail);
        assert!(
            details[0].1.contains("--location /ts2=VOLUME"),
            "{}",
            details[0].1
        );
        assert_eq!(details[1].0, Outcome::Ok);
        assert!(
            details[1]
                .1
                .starts_with("pg_wal (/pgwal) on /h/wal: backed up")
        );
        assert_eq!(details[2].0, Outcome::Fail);
        assert!(details[2].1.contains("already holds PG_17_202406281"));
        let in_container = layout(&[found(1, false, false, None)], &unplaced, Some("db"), 17);
        assert!(
            in_container[0]
                .detail
                .contains("in container db's own filesystem")
        );
        assert!(in_container[1].detail.contains("/h/ts does not exist"));
        let inside = layout(&[found(0, true, true, None)], &[], None, 17);
        assert!(inside[0].detail.contains("is inside PGDATA or holds it"));
    }

    #[test]
    fn root_may_not_own_the_data() {
        let cases: [(u32, Want); 3] = [
            (
                0,
                &[(
                    Outcome::Fail,
                    "the data directory belongs to root; PostgreSQL refuses to run as root",
                )],
            ),
            (999, &[]),
            (70, &[]),
        ];
        for (uid, want) in cases {
            expect(uid, "owner", owner(uid).as_slice(), want);
        }
    }

    #[test]
    fn the_mode_keeps_a_backup_that_fits() {
        use Outcome::*;
        const GIB: u64 = 1 << 30;
        // 1 GiB of data needs a 256 MiB reserve, and a copy of itself with --mode copy.
        let copy_need = GIB + GIB / 4;
        let reserve = GIB / 4;
        let cases = [
            (
                (Mode::Link, None, true, copy_need),
                "mode",
                Warn,
                "link keeps no independent backup; `pgup upgrade --mode link` needs --no-backup --yes",
            ),
            (
                (Mode::Link, Some(false), true, copy_need),
                "mode",
                Fail,
                "--mode link shares the data files between the old and the new cluster",
            ),
            (
                (Mode::Clone, None, false, copy_need),
                "mode",
                Fail,
                "the filesystem holding /mnt/pg does not support reflinks, which --mode clone needs",
            ),
            (
                (Mode::Link, Some(true), false, reserve),
                "space",
                Ok,
                "needed (no backup, data 1.00 GiB)",
            ),
            (
                (Mode::Copy, Some(true), false, reserve),
                "space",
                Ok,
                "(no backup,",
            ),
            (
                (Mode::Auto, None, true, reserve),
                "space",
                Ok,
                "256.00 MiB free on /mnt/pg, 256.00 MiB needed (a reflink copy as backup, data 1.00 GiB)",
            ),
            (
                (Mode::Clone, Some(false), true, reserve - 1),
                "space",
                Fail,
                "needed (a reflink copy as backup, data 1.00 GiB): free space first, or use --mode clone on a filesystem with reflinks",
            ),
            (
                (Mode::Auto, None, false, copy_need),
                "space",
                Ok,
                "1.25 GiB needed (a full copy of the data as backup, data 1.00 GiB)",
            ),
            (
                (Mode::Copy, Some(false), true, copy_need),
                "space",
                Ok,
                "(a full copy of the data as backup",
            ),
            (
                (Mode::Copy, None, true, copy_need - 1),
                "space",
                Fail,
                "(a full copy of the data as backup, data 1.00 GiB): free space first",
            ),
        ];
        for (facts @ (mode, no_backup, reflinks, free), check, outcome, part) in cases {
            let room = Room {
                place: Path::new("/mnt/pg"),
                data: GIB,
                free,
            };
            let item = space(mode, no_backup, reflinks, &[room]);
            expect(facts, check, &[item], &[(outcome, part)]);
        }
    }

    #[test]
    fn settings_are_accepted_or_adjusted() {
        use Outcome::*;
        let change = Change {
            file: "postgresql.conf".into(),
            line: 3,
            setting: "vacuum_defer_cleanup_age".into(),
            old: "vacuum_defer_cleanup_age = 10".into(),
            replacement: None,
            new_major: 18,
            note: "removed in PostgreSQL 16".into(),
        };
        let include = ("postgresql.conf", "include 'extra.conf'".to_owned());
        let auto_include = ("postgresql.auto.conf", "include_dir 'conf.d'".to_owned());
        let accepted = "every setting is accepted by PostgreSQL 18";
        let adjusted = "postgresql.conf:3: vacuum_defer_cleanup_age = 10 → commented out (removed in PostgreSQL 16) (upgrade adjusts it)";
        let included = "postgresql.conf has `include 'extra.conf'`: pgup does not check included files; make sure they suit PostgreSQL 18";
        // (include directives, changes, the items)
        type Case<'a> = (&'a [(&'a str, String)], &'a [Change], Want<'a>);
        let cases: [Case; 4] = [
            (&[], &[], &[(Ok, accepted)]),
            (&[], std::slice::from_ref(&change), &[(Warn, adjusted)]),
            (
                std::slice::from_ref(&include),
                &[],
                &[(Warn, included), (Ok, accepted)],
            ),
            (
                &[include.clone(), auto_include],
                &[change.clone(), change.clone()],
                &[
                    (Warn, included),
                    (Warn, "postgresql.auto.conf has `include_dir 'conf.d'`"),
                    (Warn, adjusted),
                    (Warn, adjusted),
                ],
            ),
        ];
        for (includes, changes, want) in cases {
            expect(
                (includes, changes.len()),
                "settings",
                &settings(18, includes, changes, true),
                want,
            );
        }
        // A setting on the container's command is changed only where pgup re-creates it.
        let command = Change {
            file: config::COMMAND.into(),
            line: 2,
            setting: "stats_temp_directory".into(),
            old: "-c stats_temp_directory=/x".into(),
            replacement: None,
            new_major: 18,
            note: "removed in PostgreSQL 15".into(),
        };
        for (recreated, want) in [
            (
                true,
                "→ dropped (removed in PostgreSQL 15) (upgrade adjusts it)",
            ),
            (
                false,
                "(change it when you re-create the container, or pass --new-image so that pgup does)",
            ),
        ] {
            expect(
                recreated,
                "settings",
                &settings(18, &[], std::slice::from_ref(&command), recreated),
                &[(Warn, want)],
            );
        }
    }

    #[test]
    fn libraries_side_by_side() {
        use Outcome::*;
        let libs = |libc: &str, icu: &str| Libraries {
            libc: Some(libc.into()),
            icu: Some(icu.into()),
        };
        let item = |old| {
            libraries(
                &Pair {
                    old,
                    new: libs("glibc 2.41", "76.1"),
                },
                "pg:13",
                "pg:17",
            )
        };
        let cases = [
            (
                Some(libs("glibc 2.31", "67.1")),
                Warn,
                "pg:13 has glibc 2.31, ICU 67.1, pg:17 has glibc 2.41, ICU 76.1: indexes on text may sort differently (glibc 2.31 → glibc 2.41, ICU 67.1 → ICU 76.1)",
            ),
            (
                Some(libs("glibc 2.41", "76.1")),
                Ok,
                "pg:13 and pg:17 sort text alike: glibc 2.41, ICU 76.1",
            ),
            (None, Warn, "count as needing a rebuild"),
        ];
        for (old, outcome, part) in cases {
            expect(&old, "libraries", &[item(old.clone())], &[(outcome, part)]);
        }
    }

    #[test]
    fn text_indexes_and_what_the_upgrade_does() {
        use Outcome::*;
        let index = |name: &str, bytes, libc, icu| TextIndex {
            database: "app".into(),
            name: name.into(),
            table: "public.t".into(),
            bytes,
            unique: name.ends_with("key"),
            libc,
            icu,
            file: "base/1/2".into(),
        };
        let all = [
            index("public.t_key", 1 << 20, true, false),
            index("public.t_icu", 1 << 20, false, true),
        ];
        let libc_only = Changed {
            libc: true,
            icu: false,
        };
        let cases = [
            (
                libc_only,
                Reindex::Auto,
                Ok,
                "1 index(es) (1.00 MiB, 1 unique) depend on a collation whose library changed: the upgrade rebuilds them on the new server",
            ),
            (
                libc_only,
                Reindex::Always,
                Ok,
                "rebuilds them, and 1 more on libc or ICU collations (--reindex always)",
            ),
            (
                Changed::ALL,
                Reindex::Never,
                Warn,
                "2 index(es) (2.00 MiB, 1 unique) depend on a collation whose library changed; --reindex never leaves them",
            ),
            (
                Changed::default(),
                Reindex::Auto,
                Ok,
                "no library that orders text changed",
            ),
            (
                Changed {
                    libc: false,
                    icu: true,
                },
                Reindex::Never,
                Warn,
                "1 index(es) (1.00 MiB, 0 unique)",
            ),
        ];
        for (changed, reindex, outcome, part) in cases {
            expect(
                (changed, reindex),
                "indexes",
                &[text_indexes(changed, reindex, &all, 2)],
                &[(outcome, part)],
            );
        }
        assert_eq!(
            text_indexes(libc_only, Reindex::Auto, &all[1..], 2).detail,
            "none of 1 index(es) on text depends on a library that changed"
        );
    }

    #[test]
    fn the_cluster_item_tells_the_init_settings() {
        let settings = |provider, checksums, wal_mb: u64| InitSettings {
            superuser: "app".into(),
            encoding: "UTF8".into(),
            collate: "en_US.utf8".into(),
            ctype: "C".into(),
            provider,
            checksums,
            wal_segment_bytes: wal_mb << 20,
        };
        let cases = [
            (
                settings(LocaleProvider::Libc, true, 16),
                "superuser app, UTF8 en_US.utf8/C, checksums on, WAL segments 16 MB",
            ),
            (
                settings(LocaleProvider::Icu("und".into()), false, 64),
                "UTF8 en_US.utf8/C, ICU und, checksums off, WAL segments 64 MB",
            ),
            (
                settings(LocaleProvider::Builtin("C.UTF-8".into()), true, 1),
                "en_US.utf8/C, builtin C.UTF-8, checksums on, WAL segments 1 MB",
            ),
        ];
        for (settings, part) in cases {
            expect(
                &settings,
                "cluster",
                &[cluster(&settings)],
                &[(Outcome::Ok, part)],
            );
        }
    }

    #[test]
    fn every_database_locale_is_in_the_image() {
        use Outcome::*;
        let available = "C\nC.utf8\nen_US.utf8\nPOSIX\n";
        let cases: [(&[&str], Outcome, &str); 5] = [
            (&["en_US.UTF-8"], Ok, "en_US.UTF-8 available in img"),
            (
                &["C", "en_US.utf8", " POSIX "],
                Ok,
                "C, en_US.utf8,  POSIX  available in img",
            ),
            (&[], Ok, " available in img"),
            (
                &["de_DE.UTF-8"],
                Fail,
                "de_DE.UTF-8 missing in img: use an upgrade image that has them",
            ),
            (
                &["de_DE.UTF-8", "en_US.UTF-8", "fr_FR.utf8"],
                Fail,
                "de_DE.UTF-8, fr_FR.utf8 missing in img",
            ),
        ];
        for (uses, outcome, part) in cases {
            let uses: Vec<String> = uses.iter().map(|&l| l.to_owned()).collect();
            let item = locales(&uses, available, "img");
            expect(&uses, "locales", &[item], &[(outcome, part)]);
        }
    }

    #[test]
    fn locale_names_normalize() {
        assert_eq!(
            normalize_locale("en_US.UTF-8"),
            normalize_locale("en_US.utf8")
        );
        assert_eq!(normalize_locale("C"), "c");
    }

    #[test]
    fn unknown_options_are_removed_unless_no_backup_keeps_them() {
        use Outcome::*;
        let stored = |name: &str, count: u64| Stored {
            key: Key {
                kind: Kind::Column,
                access_method: None,
                name: name.into(),
            },
            extension: None,
            sample: "1".into(),
            per_database: BTreeMap::from([("app".to_owned(), count)]),
        };
        let removes =
            "the upgrade removes it from the old cluster once the backup (which keeps it) exists";
        // (stored options and verdicts, may_strip, the items, the options the upgrade removes)
        type Case<'a> = (Vec<(Stored, Verdict)>, bool, Want<'a>, &'a [&'a str]);
        let cases: [Case; 7] = [
            (
                vec![],
                false,
                &[(Ok, "no column or storage options are stored")],
                &[],
            ),
            (
                vec![
                    (stored("a", 1), Verdict::Known),
                    (stored("b", 2), Verdict::Known),
                ],
                false,
                &[(
                    Ok,
                    "PostgreSQL 18 accepts each of the 2 stored column and storage options",
                )],
                &[],
            ),
            (
                vec![(stored("a", 3), Verdict::Unknown)],
                true,
                &[(
                    Warn,
                    "PostgreSQL 18 does not know a (column option) stored 3 time(s) (app 3); pg_upgrade would stop on it: the upgrade removes it",
                )],
                &["a"],
            ),
            (
                vec![(stored("a", 3), Verdict::Unknown)],
                false,
                &[
                    (Warn, removes),
                    (
                        Fail,
                        "PostgreSQL 18 does not know 3 stored option(s): a (column option); with --no-backup they would be removed from the only copy: add --strip-unknown-options",
                    ),
                ],
                &["a"],
            ),
            (
                vec![
                    (stored("a", 3), Verdict::Unknown),
                    (stored("k", 1), Verdict::Known),
                    (stored("b", 2), Verdict::Unknown),
                ],
                false,
                &[
                    (Warn, "a (column option)"),
                    (Warn, "b (column option)"),
                    (
                        Fail,
                        "does not know 5 stored option(s): a (column option), b (column option); ",
                    ),
                ],
                &["a", "b"],
            ),
            // The new major knows a refused option's name: it stays, with a warning only.
            (
                vec![(stored("a", 1), Verdict::Refused("invalid value".into()))],
                false,
                &[(
                    Warn,
                    "PostgreSQL 18 refuses a (column option) = 1 (invalid value); change or reset it",
                )],
                &[],
            ),
            (
                vec![(
                    stored("a", 1),
                    Verdict::Untested("no such extension".into()),
                )],
                false,
                &[(
                    Warn,
                    "cannot tell whether PostgreSQL 18 knows a (column option): no such extension",
                )],
                &[],
            ),
        ];
        for (pairs, may_strip, want, want_unknown) in cases {
            let (stored, verdicts): (Vec<Stored>, Vec<Verdict>) = pairs.into_iter().unzip();
            let case = (&verdicts, may_strip);
            expect(
                case,
                "options",
                &options(&stored, &verdicts, 18, may_strip),
                want,
            );
            let unknown: Vec<&str> = unknown_options(&stored, &verdicts)
                .map(|s| s.key.name.as_str())
                .collect();
            assert_eq!(unknown, want_unknown, "{case:?}");
        }
    }

    #[test]
    fn pg_upgrade_check_passes_or_says_why() {
        let cases = [
            (None, Outcome::Ok, "pg_upgrade --check passed"),
            (
                Some("your installation contains reg* data types"),
                Outcome::Fail,
                "pg_upgrade --check: your installation contains reg* data types",
            ),
        ];
        for (failure, outcome, part) in cases {
            let item = pg_upgrade_check(failure.map(str::to_owned));
            expect(failure, "pg_upgrade", &[item], &[(outcome, part)]);
        }
    }

    #[test]
    fn extensions_the_new_image_provides() {
        let installed = extension::Installed::from([
            (
                "app".to_owned(),
                BTreeMap::from([
                    ("plpgsql".to_owned(), "1.0".to_owned()),
                    ("postgis".to_owned(), "3.1.1".to_owned()),
                    ("hstore".to_owned(), "1.8".to_owned()),
                ]),
            ),
            (
                "gis".to_owned(),
                BTreeMap::from([("postgis".to_owned(), "3.1.1".to_owned())]),
            ),
        ]);
        let control = |v: &str, m: Option<&str>| extension::Control {
            default_version: v.to_owned(),
            module: m.map(str::to_owned),
        };
        let mut provided = extension::Provided {
            controls: BTreeMap::from([
                ("plpgsql".to_owned(), control("1.0", Some("plpgsql"))),
                ("postgis".to_owned(), control("3.5.2", Some("postgis-3"))),
                ("hstore".to_owned(), control("1.8", Some("hstore"))),
            ]),
            modules: BTreeSet::from(["plpgsql".into(), "postgis-3".into(), "hstore".into()]),
        };
        let items = extensions(&installed, &provided, "img:17", 17);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].outcome, Outcome::Ok);
        assert_eq!(
            items[0].detail,
            "img:17 provides hstore 1.8, postgis 3.1.1 → 3.5.2"
        );

        provided.modules.remove("postgis-3");
        let items = extensions(&installed, &provided, "img:17", 17);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].outcome, Outcome::Fail);
        assert_eq!(
            items[0].detail,
            "extension postgis 3.1.1 (in app, gis): img:17 has postgis.control but not its module postgis-3.so; use a new image that provides postgis"
        );

        provided.controls.remove("postgis");
        provided.controls.remove("hstore");
        let items = extensions(&installed, &provided, "img:17", 17);
        let details: Vec<&str> = items.iter().map(|i| i.detail.as_str()).collect();
        assert_eq!(
            details,
            vec![
                "extension hstore 1.8 (in app) is not in img:17: it has no hstore.control for PostgreSQL 17; use a new image that provides hstore",
                "extension postgis 3.1.1 (in app, gis) is not in img:17: it has no postgis.control for PostgreSQL 17; use a new image that provides postgis",
            ]
        );
        assert!(items.iter().all(|i| i.outcome == Outcome::Fail));
    }

    #[test]
    fn a_cluster_with_plpgsql_only() {
        let installed = extension::Installed::from([(
            "postgres".to_owned(),
            BTreeMap::from([("plpgsql".to_owned(), "1.0".to_owned())]),
        )]);
        let provided = extension::Provided {
            controls: BTreeMap::from([(
                "plpgsql".to_owned(),
                extension::Control {
                    default_version: "1.0".into(),
                    module: Some("plpgsql".into()),
                },
            )]),
            modules: BTreeSet::from(["plpgsql".into()]),
        };
        let items = extensions(&installed, &provided, "img", 17);
        assert_eq!(items[0].detail, "none besides plpgsql");
    }
}
