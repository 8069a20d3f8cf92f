//! The directories a cluster keeps outside PGDATA through links: a separate WAL directory
//! (`pg_wal` → a directory) and tablespaces (`pg_tblspc/<oid>` → a LOCATION). Each is found on
//! this host through the mounts the server container has (or that `--location` names), and
//! temporary containers mount the same mount at the same place, so the links resolve there as
//! they do in the server's container. pgup keeps its own entries in each location as it does in
//! the mount root (see `layout`): the backup `upgrade_backup_<stamp>` of the old cluster's part,
//! and the work directory `.pgup`. Pure: where things are and what belongs to whom.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layout::{Layout, WORK_DIR, is_pgup_entry};

/// A mount of the server's container: its host directory and where the container sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostMount {
    pub destination: PathBuf,
    pub source: PathBuf,
}

/// One directory of the cluster outside PGDATA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// `pg_wal` or `pg_tblspc/<oid>`: the link in PGDATA.
    pub entry: String,
    /// Where the link points, as the server sees it.
    pub path: PathBuf,
    /// That directory on this host.
    pub host: PathBuf,
    /// The mount holding it.
    pub mount: HostMount,
}

/// The link a mount could not be found for: (entry, where it points).
pub type Unplaced = (String, PathBuf);

impl Location {
    pub fn is_wal(&self) -> bool {
        self.entry == "pg_wal"
    }

    /// Whether `name`, directly in this location, belongs to the cluster of `major`: every
    /// entry of a WAL directory but pgup's; in a tablespace, the version directory
    /// `PG_<major>_<catalog version>` that server creates in it.
    pub fn holds(&self, name: &str, major: u32) -> bool {
        if self.is_wal() {
            !is_pgup_entry(name)
        } else {
            name.strip_prefix(&format!("PG_{major}_"))
                .is_some_and(|cat| !cat.is_empty() && cat.bytes().all(|b| b.is_ascii_digit()))
        }
    }

    /// The tablespace's oid (None for the WAL directory).
    pub fn tablespace(&self) -> Option<u32> {
        self.entry.strip_prefix("pg_tblspc/")?.parse().ok()
    }

    /// pgup's names in this location.
    pub fn layout(&self) -> Layout {
        Layout::new(&self.host)
    }

    /// Where the new cluster's WAL is written while pg_upgrade makes it (the location's
    /// staging directory), as containers see it: on the WAL's own filesystem, so that putting
    /// it in place is renames.
    pub fn staging_path(&self) -> PathBuf {
        let staging = self.layout().staging();
        let below = staging
            .strip_prefix(&self.host)
            .unwrap_or(Path::new(WORK_DIR));
        self.path.join(below)
    }

    /// What the operator reads: "pg_tblspc/16385 (/tblspc)".
    pub fn label(&self) -> String {
        format!("{} ({})", self.entry, self.path.display())
    }
}

/// Places each link (`entry` → path) in the mount whose destination holds its path (the
/// deepest one, as the kernel resolves it); the links no mount holds come back apart.
pub fn place(
    outside: &[(String, PathBuf)],
    mounts: &[HostMount],
) -> (Vec<Location>, Vec<Unplaced>) {
    let mut placed = Vec::new();
    let mut unplaced = Vec::new();
    for (entry, path) in outside {
        let mount = mounts
            .iter()
            .filter(|m| path.is_absolute() && path.starts_with(&m.destination))
            .max_by_key(|m| m.destination.components().count());
        match mount {
            Some(m) => placed.push(Location {
                entry: entry.clone(),
                // (Joining "" would add a trailing slash.)
                host: match path
                    .strip_prefix(&m.destination)
                    .expect("filtered by prefix")
                {
                    rest if rest.as_os_str().is_empty() => m.source.clone(),
                    rest => m.source.join(rest),
                },
                path: path.clone(),
                mount: m.clone(),
            }),
            None => unplaced.push((entry.clone(), path.clone())),
        }
    }
    (placed, unplaced)
}

/// The distinct mounts `locations` need in a temporary container.
pub fn mounts(locations: &[Location]) -> Vec<HostMount> {
    let mut out: Vec<HostMount> = Vec::new();
    for l in locations {
        if !out.contains(&l.mount) {
            out.push(l.mount.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(destination: &str, source: &str) -> HostMount {
        HostMount {
            destination: destination.into(),
            source: source.into(),
        }
    }

    #[test]
    fn places_links_in_the_deepest_mount() {
        let mounts = [
            mount("/var/lib/postgresql", "/v/root"),
            mount("/tblspc", "/v/ts"),
            mount("/var/lib/postgresql/wal", "/v/wal"),
        ];
        let outside = [
            (
                "pg_wal".to_owned(),
                PathBuf::from("/var/lib/postgresql/wal/17"),
            ),
            ("pg_tblspc/16385".to_owned(), PathBuf::from("/tblspc")),
            ("pg_tblspc/16386".to_owned(), PathBuf::from("/elsewhere/ts")),
        ];
        let (placed, unplaced) = place(&outside, &mounts);
        assert_eq!(placed.len(), 2);
        assert_eq!(placed[0].host, PathBuf::from("/v/wal/17"));
        assert_eq!(placed[0].mount, mounts[2]);
        assert_eq!(placed[1].host.as_os_str(), "/v/ts");
        assert_eq!(
            placed[0].staging_path(),
            PathBuf::from("/var/lib/postgresql/wal/17/.pgup/new")
        );
        assert_eq!(unplaced, vec![outside[2].clone()]);
        assert_eq!(mounts_of(&placed), 2);
    }

    fn mounts_of(l: &[Location]) -> usize {
        mounts(l).len()
    }

    #[test]
    fn what_belongs_to_a_cluster() {
        let (placed, _) = place(
            &[
                ("pg_wal".to_owned(), "/w".into()),
                ("pg_tblspc/1".to_owned(), "/t".into()),
            ],
            &[mount("/w", "/h/w"), mount("/t", "/h/t")],
        );
        let (wal, ts) = (&placed[0], &placed[1]);
        assert!(wal.holds("000000010000000000000001", 13));
        assert!(wal.holds("archive_status", 13));
        assert!(!wal.holds(".pgup", 13));
        assert!(!wal.holds("upgrade_backup_20261203T100000Z", 13));
        assert!(ts.holds("PG_13_202007201", 13));
        assert!(!ts.holds("PG_13_202007201", 17));
        assert!(!ts.holds("PG_17_", 17));
        assert!(!ts.holds("PG_13_x", 13));
        assert!(!ts.holds("upgrade_backup_20261203T100000Z", 13));
    }
}
