//! What the data looks like through PostgreSQL (tokio-postgres, over a temporary server's
//! private socket): the cluster's locale settings, and a snapshot of databases, per-table row
//! counts, sequence values, extensions and roles, taken before the upgrade and compared after.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::cluster::LocaleProvider;
use crate::extension;
use crate::pgclient::{ClientError, connect, databases, query_err};

type Result<T> = std::result::Result<T, ClientError>;

/// The data as a snapshot sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub databases: BTreeMap<String, Database>,
    /// Role name → its attributes (super, login, ...), predefined pg_* roles left out.
    pub roles: BTreeMap<String, String>,
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
    /// `schema.table` → rows.
    pub tables: BTreeMap<String, i64>,
    /// `schema.sequence` → last value (None before the first nextval).
    pub sequences: BTreeMap<String, Option<i64>>,
    /// Extension → version.
    pub extensions: BTreeMap<String, String>,
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

/// Takes a snapshot of the server listening in `socket_dir`, one connection per database.
pub async fn take(socket_dir: &Path, superuser: &str) -> Result<Snapshot> {
    let db = "template1";
    let client = connect(socket_dir, superuser, db).await?;
    let mut snap = Snapshot::default();
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
            .insert(name.clone(), database(&c, &name).await?);
    }
    Ok(snap)
}

async fn database(c: &Client, db: &str) -> Result<Database> {
    let err = query_err(db);
    let mut out = Database::default();
    let tables = c
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't' AND (c.relkind <> 'm' OR c.relispopulated) \
             AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)' ORDER BY 1",
            &[],
        )
        .await
        .map_err(&err)?;
    for t in tables {
        let name: String = t.get(0);
        let rows: i64 = c
            .query_one(&format!("SELECT count(*) FROM ONLY {name}"), &[])
            .await
            .map_err(&err)?
            .get(0);
        out.tables.insert(name, rows);
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
        diff_maps(&format!("{name}: table"), &b.tables, &a.tables, &mut diffs);
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

    fn snap(rows: i64, ext_version: &str) -> Snapshot {
        let mut db = Database::default();
        db.tables.insert("public.items".into(), rows);
        db.sequences
            .insert("public.items_id_seq".into(), Some(rows));
        db.extensions.insert("pg_trgm".into(), ext_version.into());
        let mut s = Snapshot::default();
        s.databases.insert("shop".into(), db);
        s.roles.insert("app".into(), "super,login".into());
        s
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
}
