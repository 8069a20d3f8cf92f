//! What the data looks like through PostgreSQL (tokio-postgres, over a temporary server's
//! private socket) and on disk: the cluster's locale settings, and a snapshot taken before the
//! upgrade and compared after. The snapshot holds the catalogs' structure (databases, schemas,
//! relations with their columns, constraints and index definitions), sequence values,
//! extensions and roles: O(catalog). The data itself is proven from the file system: every
//! user relation's files in the new cluster are the old cluster's (pg_upgrade --link makes
//! them hard links: same inode, same size), found through each catalog's file paths. Row
//! counts, two full scans while the database is down, only with `--verify counts`.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::cluster::LocaleProvider;
use crate::extension;
use crate::location::Location;
use crate::pgclient::{ClientError, connect, databases, query_err};

type Result<T> = std::result::Result<T, ClientError>;

/// The data as a snapshot sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub databases: BTreeMap<String, Database>,
    /// Role name → its attributes (super, login, ...), predefined pg_* roles left out.
    pub roles: BTreeMap<String, String>,
    /// The catalogs' structure was read (false in a snapshot of an older pgup).
    #[serde(default)]
    pub catalog: bool,
    /// Every table's rows were counted (--verify counts).
    #[serde(default)]
    pub counted: bool,
}

impl Snapshot {
    /// Each database's extensions and their versions.
    pub fn extensions(&self) -> extension::Installed {
        self.databases
            .iter()
            .map(|(name, db)| (name.clone(), db.extensions.clone()))
            .collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Database {
    /// `schema.table` → rows, when counted.
    pub tables: BTreeMap<String, i64>,
    /// Schema → its owner.
    #[serde(default)]
    pub schemas: BTreeMap<String, String>,
    /// `schema.relation` → what it is; a TOAST table and its index under their table's name
    /// ("public.t (toast)"), as their own names hold OIDs.
    #[serde(default)]
    pub relations: BTreeMap<String, Relation>,
    /// `schema.sequence` → last value (None before the first nextval).
    pub sequences: BTreeMap<String, Option<i64>>,
    /// Extension → version.
    pub extensions: BTreeMap<String, String>,
}

/// One relation of a database's catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relation {
    /// relkind and relpersistence ("rp": a permanent table).
    pub kind: String,
    /// Columns with their types, constraints, and an index's definition.
    pub definition: String,
    /// The main fork's path below PGDATA, for the relations pg_upgrade hands over by their
    /// files (tables, materialized views, TOAST tables, indexes; not sequences, which it
    /// dumps and restores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Its files on disk (forks and segments, not the init fork the new cluster makes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileId>,
}

/// A relation file as the file system knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    /// The fork and segment suffix: "", ".1", "_fsm", "_vm".
    pub suffix: String,
    pub inode: u64,
    pub bytes: u64,
}

/// What a running old server tells about itself.
pub struct ServerFacts {
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    pub provider: LocaleProvider,
    /// Every libc locale a database uses.
    pub locales: Vec<String>,
}

pub async fn server_facts(socket_dir: &Path, superuser: &str, major: u32) -> Result<ServerFacts> {
    let db = "template1";
    let client = connect(socket_dir, superuser, db).await?;
    // The locale columns moved between majors.
    let provider_cols = match major {
        ..=14 => "'c', NULL::text",
        15 | 16 => "datlocprovider::text, daticulocale::text",
        _ => "datlocprovider::text, datlocale::text",
    };
    let row = client
        .query_one(
            &format!(
                "SELECT pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text, {provider_cols} \
                 FROM pg_database WHERE datname = 'template0'"
            ),
            &[],
        )
        .await
        .map_err(query_err(db))?;
    let locale: Option<String> = row.get(4);
    let provider = match (row.get::<_, String>(3).as_str(), locale) {
        ("i", Some(l)) => LocaleProvider::Icu(l),
        ("b", Some(l)) => LocaleProvider::Builtin(l),
        _ => LocaleProvider::Libc,
    };
    let mut locales: Vec<String> = Vec::new();
    for r in client
        .query("SELECT DISTINCT unnest(ARRAY[datcollate::text, datctype::text]) FROM pg_database ORDER BY 1", &[])
        .await
        .map_err(query_err(db))?
    {
        locales.push(r.get(0));
    }
    Ok(ServerFacts {
        encoding: row.get(0),
        collate: row.get(1),
        ctype: row.get(2),
        provider,
        locales,
    })
}

/// Takes a snapshot of the server listening in `socket_dir`, one connection per database;
/// with `count`, every table's rows too.
pub async fn take(socket_dir: &Path, superuser: &str, count: bool) -> Result<Snapshot> {
    let db = "template1";
    let client = connect(socket_dir, superuser, db).await?;
    let mut snap = Snapshot {
        catalog: true,
        counted: count,
        ..Snapshot::default()
    };
    for r in client
        .query(
            "SELECT rolname::text, concat_ws(',', CASE WHEN rolsuper THEN 'super' END, CASE WHEN rolcanlogin THEN 'login' END, \
             CASE WHEN rolcreatedb THEN 'createdb' END, CASE WHEN rolcreaterole THEN 'createrole' END, \
             CASE WHEN rolreplication THEN 'replication' END, CASE WHEN rolbypassrls THEN 'bypassrls' END) \
             FROM pg_roles WHERE rolname !~ '^pg_'",
            &[],
        )
        .await
        .map_err(query_err(db))?
    {
        snap.roles.insert(r.get(0), r.get(1));
    }
    for name in databases(&client).await? {
        let c = connect(socket_dir, superuser, &name).await?;
        snap.databases
            .insert(name.clone(), database(&c, &name, count).await?);
    }
    Ok(snap)
}

/// The relations of user schemas, keyed as [`Database::relations`] says. Invalid indexes (a
/// failed CREATE INDEX CONCURRENTLY) are left out: pg_upgrade does not carry them over. An
/// index is described column by column with every operator class named, not by
/// `pg_get_indexdef`, which leaves out a class that is the default: 19 made `inet_ops` the
/// default for inet in GiST, so its text differs from 18's for the very same index. Joins,
/// not a subquery per TOAST relation: a catalog of 10,000 tables must not cost a square.
const RELATIONS: &str = "\
WITH owner AS ( \
  SELECT c.reltoastrelid AS toast, format('%I.%I', n.nspname, c.relname) AS name \
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
  WHERE c.reltoastrelid <> 0 AND n.nspname NOT IN ('pg_catalog', 'information_schema')) \
SELECT key, kind, definition, file FROM ( \
  SELECT CASE n.nspname \
      WHEN 'pg_toast' THEN coalesce(t.name || ' (toast)', ti.name || ' (toast index)') \
      ELSE format('%I.%I', n.nspname, c.relname) END AS key, \
    c.relkind::text || c.relpersistence::text AS kind, \
    concat_ws(' | ', \
      (SELECT string_agg(format('%I %s%s', a.attname, format_type(a.atttypid, a.atttypmod), \
         CASE WHEN a.attnotnull THEN ' not null' END), ', ' ORDER BY a.attnum) \
       FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), \
      (SELECT string_agg(format('%I %s', k.conname, pg_get_constraintdef(k.oid)), '; ' \
         ORDER BY k.conname) FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype <> 'n'), \
      CASE WHEN c.relkind IN ('i', 'I') AND n.nspname <> 'pg_toast' THEN concat_ws(' ', \
        'on ' || x.indrelid::regclass::text, (SELECT amname FROM pg_am WHERE oid = c.relam), \
        CASE WHEN x.indisunique THEN 'unique' END, \
        x.indoption::text, \
        (SELECT string_agg(concat_ws(' ', pg_get_indexdef(c.oid, k, false), o.opcname, l.collname), \
           ', ' ORDER BY k) FROM generate_series(1, x.indnatts) k \
         LEFT JOIN pg_opclass o ON o.oid = x.indclass[k - 1] \
         LEFT JOIN pg_collation l ON l.oid = x.indcollation[k - 1]), \
        'where ' || pg_get_expr(x.indpred, x.indrelid), 'with ' || c.reloptions::text) END \
    ) AS definition, \
    CASE WHEN c.relkind IN ('r', 'm', 't', 'i') THEN pg_relation_filepath(c.oid) END AS file \
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
  LEFT JOIN owner t ON t.toast = c.oid \
  LEFT JOIN pg_index x ON x.indexrelid = c.oid \
  LEFT JOIN owner ti ON ti.toast = x.indrelid \
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
    AND n.nspname !~ '^pg_(toast_)?temp_' AND c.relpersistence <> 't' \
    AND (x.indexrelid IS NULL OR x.indisvalid) \
) r WHERE key IS NOT NULL";

async fn database(c: &Client, db: &str, count: bool) -> Result<Database> {
    let err = query_err(db);
    let mut out = Database::default();
    for r in c
        .query(
            "SELECT n.nspname::text, pg_get_userbyid(n.nspowner)::text FROM pg_namespace n \
             WHERE n.nspname !~ '^pg_(toast|temp_|toast_temp_)' AND n.nspname <> 'information_schema'",
            &[],
        )
        .await
        .map_err(&err)?
    {
        out.schemas.insert(r.get(0), r.get(1));
    }
    for r in c.query(RELATIONS, &[]).await.map_err(&err)? {
        let relation = Relation {
            kind: r.get(1),
            definition: r.get(2),
            file: r.get(3),
            files: Vec::new(),
        };
        out.relations.insert(r.get(0), relation);
    }
    if count {
        out.tables = counts(c, db).await?;
    }
    for r in c
        .query(
            "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences",
            &[],
        )
        .await
        .map_err(&err)?
    {
        out.sequences.insert(r.get(0), r.get(1));
    }
    out.extensions = extension::of_database(c, db).await?;
    Ok(out)
}

/// Every table's rows (the old per-table proof): a full scan of each.
async fn counts(c: &Client, db: &str) -> Result<BTreeMap<String, i64>> {
    let err = query_err(db);
    let tables = c
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't' AND (c.relkind <> 'm' OR c.relispopulated) \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)' ORDER BY 1",
            &[],
        )
        .await
        .map_err(&err)?;
    let mut out = BTreeMap::new();
    for t in tables {
        let name: String = t.get(0);
        let rows: i64 = c
            .query_one(&format!("SELECT count(*) FROM ONLY {name}"), &[])
            .await
            .map_err(&err)?
            .get(0);
        out.insert(name, rows);
    }
    Ok(out)
}

/// Where a relation file `below` PGDATA (as pg_relation_filepath gives it) is on this host: a
/// tablespace's through its location, as the link in PGDATA points where only the server's
/// container sees it.
pub fn host_path(below: &str, data: &Path, locations: &[Location]) -> PathBuf {
    let mut parts = below.splitn(3, '/');
    if let (Some("pg_tblspc"), Some(oid), Some(rest)) = (parts.next(), parts.next(), parts.next())
        && let Some(l) = locations
            .iter()
            .find(|l| l.entry == format!("pg_tblspc/{oid}"))
    {
        return l.host.join(rest);
    }
    data.join(below)
}

/// Fills in every relation's files (each fork's segments, with inode and size) from the
/// cluster at `data`, which no server may be changing.
pub fn record_files(
    snapshot: &mut Snapshot,
    data: &Path,
    locations: &[Location],
) -> std::io::Result<()> {
    for relation in snapshot
        .databases
        .values_mut()
        .flat_map(|d| d.relations.values_mut())
    {
        let Some(below) = &relation.file else {
            continue;
        };
        let main = host_path(below, data, locations);
        relation.files.clear();
        for fork in ["", "_fsm", "_vm"] {
            for segment in 0.. {
                let suffix = match segment {
                    0 => fork.to_owned(),
                    n => format!("{fork}.{n}"),
                };
                let mut name = main.clone().into_os_string();
                name.push(&suffix);
                match std::fs::symlink_metadata(&name) {
                    Ok(m) => relation.files.push(FileId {
                        suffix,
                        inode: m.ino(),
                        bytes: m.len(),
                    }),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// What differs between the snapshot before and after, one line each. Extension versions
/// may rise (update_extensions.sql); anything else that differs is a difference.
pub fn differences(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut diffs = Vec::new();
    diff_maps("role", &before.roles, &after.roles, &mut diffs);
    for (name, b) in &before.databases {
        let Some(a) = after.databases.get(name) else {
            diffs.push(format!("database {name} is missing"));
            continue;
        };
        if before.counted && after.counted {
            diff_maps(&format!("{name}: table"), &b.tables, &a.tables, &mut diffs);
        }
        if before.catalog && after.catalog {
            diff_maps(
                &format!("{name}: schema"),
                &b.schemas,
                &a.schemas,
                &mut diffs,
            );
            let shape = |d: &Database| -> BTreeMap<String, (String, String)> {
                d.relations
                    .iter()
                    .map(|(k, r)| (k.clone(), (r.kind.clone(), r.definition.clone())))
                    .collect()
            };
            diff_maps(
                &format!("{name}: relation"),
                &shape(b),
                &shape(a),
                &mut diffs,
            );
            for (key, rb) in b.relations.iter().filter(|(_, r)| r.file.is_some()) {
                if let Some(ra) = a.relations.get(key) {
                    diff_files(&format!("{name}: {key}"), rb, ra, &mut diffs);
                }
            }
        }
        diff_maps(
            &format!("{name}: sequence"),
            &b.sequences,
            &a.sequences,
            &mut diffs,
        );
        let (be, ae): (Vec<_>, Vec<_>) =
            (b.extensions.keys().collect(), a.extensions.keys().collect());
        if be != ae {
            diffs.push(format!("{name}: extensions were {be:?}, are {ae:?}"));
        }
    }
    for name in after
        .databases
        .keys()
        .filter(|n| !before.databases.contains_key(*n))
    {
        diffs.push(format!("database {name} appeared"));
    }
    diffs
}

/// Whether the new relation's files are the old one's: each fork and segment the same inode
/// with the same size, none missing and none more.
fn diff_files(what: &str, before: &Relation, after: &Relation, out: &mut Vec<String>) {
    let path = after.file.as_deref().unwrap_or("?");
    for b in &before.files {
        match after.files.iter().find(|a| a.suffix == b.suffix) {
            None => out.push(format!("{what}: file {path}{} is missing", b.suffix)),
            Some(a) if a.inode != b.inode => out.push(format!(
                "{what}: file {path}{} is not the old cluster's (inode {} before, {} after)",
                b.suffix, b.inode, a.inode
            )),
            Some(a) if a.bytes != b.bytes => out.push(format!(
                "{what}: file {path}{} has {} bytes, the old cluster's {}",
                b.suffix, a.bytes, b.bytes
            )),
            Some(_) => {}
        }
    }
    for a in after
        .files
        .iter()
        .filter(|a| !before.files.iter().any(|b| b.suffix == a.suffix))
    {
        out.push(format!("{what}: file {path}{} appeared", a.suffix));
    }
}

fn diff_maps<V: PartialEq + std::fmt::Debug>(
    what: &str,
    before: &BTreeMap<String, V>,
    after: &BTreeMap<String, V>,
    out: &mut Vec<String>,
) {
    for (k, b) in before {
        match after.get(k) {
            None => out.push(format!("{what} {k} is missing")),
            Some(a) if a != b => out.push(format!("{what} {k}: {b:?} before, {a:?} after")),
            Some(_) => {}
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        out.push(format!("{what} {k} appeared"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::location::HostMount;

    fn file(suffix: &str, inode: u64, bytes: u64) -> FileId {
        FileId {
            suffix: suffix.into(),
            inode,
            bytes,
        }
    }

    fn snap(rows: i64, ext_version: &str) -> Snapshot {
        let mut db = Database::default();
        db.tables.insert("public.items".into(), rows);
        db.sequences
            .insert("public.items_id_seq".into(), Some(rows));
        db.extensions.insert("pg_trgm".into(), ext_version.into());
        db.schemas.insert("public".into(), "app".into());
        db.relations.insert(
            "public.items".into(),
            Relation {
                kind: "rp".into(),
                definition: "id integer not null, name text | items_pkey PRIMARY KEY (id)".into(),
                file: Some("base/16384/16385".into()),
                files: vec![file("", 7, 8192 * 131072), file(".1", 8, 8192)],
            },
        );
        let mut s = Snapshot {
            catalog: true,
            counted: true,
            ..Snapshot::default()
        };
        s.databases.insert("shop".into(), db);
        s.roles.insert("app".into(), "super,login".into());
        s
    }

    fn items(s: &mut Snapshot) -> &mut Relation {
        s.databases
            .get_mut("shop")
            .and_then(|d| d.relations.get_mut("public.items"))
            .unwrap()
    }

    #[test]
    fn equal_snapshots_and_extension_updates_pass() {
        assert!(differences(&snap(5, "1.5"), &snap(5, "1.6")).is_empty());
    }

    #[test]
    fn differences_are_named() {
        let d = differences(&snap(5, "1.5"), &snap(4, "1.5"));
        assert_eq!(
            d,
            vec![
                "shop: table public.items: 5 before, 4 after",
                "shop: sequence public.items_id_seq: Some(5) before, Some(4) after"
            ]
        );
        let mut after = snap(5, "1.5");
        after.roles.clear();
        after.databases.insert("other".into(), Database::default());
        let d = differences(&snap(5, "1.5"), &after);
        assert!(d.contains(&"role app is missing".to_owned()), "{d:?}");
        assert!(d.contains(&"database other appeared".to_owned()), "{d:?}");
    }

    #[test]
    fn counts_are_compared_only_when_both_were_taken() {
        let mut after = snap(4, "1.5");
        after.counted = false;
        let d = differences(&snap(5, "1.5"), &after);
        assert!(!d.iter().any(|l| l.contains("table")), "{d:?}");
    }

    #[test]
    fn structure_differences_are_named() {
        let mut after = snap(5, "1.5");
        items(&mut after).definition = "id integer not null, name text".into();
        after
            .databases
            .get_mut("shop")
            .unwrap()
            .schemas
            .insert("audit".into(), "app".into());
        let d = differences(&snap(5, "1.5"), &after);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("shop: schema audit appeared"), "{d:?}");
        assert!(d[1].starts_with("shop: relation public.items: "), "{d:?}");
    }

    #[test]
    fn files_must_be_the_old_clusters() {
        let before = snap(5, "1.5");
        // pg_upgrade's new relation file carries the old file number.
        let mut after = snap(5, "1.5");
        items(&mut after).files[0].inode = 9;
        items(&mut after).files[1].bytes = 0;
        items(&mut after).files.push(file("_vm", 10, 8192));
        assert_eq!(
            differences(&before, &after),
            [
                "shop: public.items: file base/16384/16385 is not the old cluster's (inode 7 before, 9 after)",
                "shop: public.items: file base/16384/16385.1 has 0 bytes, the old cluster's 8192",
                "shop: public.items: file base/16384/16385_vm appeared",
            ]
        );
        items(&mut after).files.clear();
        assert_eq!(differences(&before, &after).len(), 2);
        // A snapshot of an older pgup has no catalog to compare.
        let mut old = before.clone();
        old.catalog = false;
        assert!(differences(&old, &after).is_empty());
    }

    #[test]
    fn tablespace_files_are_found_through_their_location() {
        let ts = Location {
            entry: "pg_tblspc/16390".into(),
            path: "/tblspc".into(),
            host: "/var/lib/docker/volumes/ts/_data".into(),
            mount: HostMount {
                destination: "/tblspc".into(),
                source: "/var/lib/docker/volumes/ts/_data".into(),
            },
        };
        let data = Path::new("/v/data");
        assert_eq!(
            host_path(
                "pg_tblspc/16390/PG_17_202406281/5/16391",
                data,
                std::slice::from_ref(&ts)
            ),
            Path::new("/var/lib/docker/volumes/ts/_data/PG_17_202406281/5/16391")
        );
        assert_eq!(
            host_path("base/5/16385", data, &[ts]),
            Path::new("/v/data/base/5/16385")
        );
        // Without a location (inside the server's container) the link resolves as it is.
        assert_eq!(
            host_path("pg_tblspc/7/PG_17_1/5/9", data, &[]),
            Path::new("/v/data/pg_tblspc/7/PG_17_1/5/9")
        );
    }

    #[test]
    fn record_files_lists_forks_and_segments() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("base/5");
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["16385", "16385.1", "16385_fsm", "16385_init", "163850"] {
            std::fs::write(dir.join(name), name).unwrap();
        }
        let mut s = snap(5, "1.5");
        items(&mut s).file = Some("base/5/16385".into());
        record_files(&mut s, tmp.path(), &[]).unwrap();
        let suffixes: Vec<_> = items(&mut s)
            .files
            .iter()
            .map(|f| f.suffix.clone())
            .collect();
        assert_eq!(suffixes, ["", ".1", "_fsm"]);
        assert_eq!(items(&mut s).files[1].bytes, 7);
    }
}
