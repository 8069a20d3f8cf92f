//! Options stored in the old cluster's catalogs that the new major does not know: column
//! options (`pg_attribute.attoptions`) and storage options of tables, TOAST tables, views and
//! indexes (`pg_class.reloptions`). pg_upgrade restores them with the new major's DDL, which
//! refuses a parameter it does not know and stops the upgrade (Debian's 17.12 writes
//! `pg_attver=<n>` on every column, which 18 rejects). Each stored option is found on the old
//! server, judged by trying it on a scratch server of the new major (with the owning
//! extension created, so that an extension's own index options count as known), and an
//! unknown one is removed from the old cluster's catalogs once its backup exists.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::pgclient::{self, ClientError};

type Result<T> = std::result::Result<T, ClientError>;

/// The kind of object an option is stored on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Column,
    Table,
    Toast,
    View,
    Index,
}

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "column" => Kind::Column,
            "table" => Kind::Table,
            "toast" => Kind::Toast,
            "view" => Kind::View,
            "index" => Kind::Index,
            _ => return None,
        })
    }

    /// The `pg_class.relkind`s holding this kind's options (none for columns).
    fn relkinds(self) -> &'static str {
        match self {
            Kind::Column => "",
            Kind::Table => "'r', 'm', 'p'",
            Kind::Toast => "'t'",
            Kind::View => "'v'",
            Kind::Index => "'i', 'I'",
        }
    }
}

/// One option name on one kind of object (for indexes: of one access method).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_method: Option<String>,
    pub name: String,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, &self.access_method) {
            (Kind::Index, Some(am)) => write!(f, "{} ({am} index option)", self.name),
            (Kind::Column, _) => write!(f, "{} (column option)", self.name),
            (Kind::Table, _) => write!(f, "{} (table option)", self.name),
            (Kind::Toast, _) => write!(f, "toast.{} (table option)", self.name),
            (Kind::View, _) => write!(f, "{} (view option)", self.name),
            (Kind::Index, None) => write!(f, "{} (index option)", self.name),
        }
    }
}

/// An option as the old cluster stores it: one of its values, and how many objects carry it
/// in each database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub key: Key,
    /// The extension owning the index access method, when one does.
    pub extension: Option<String>,
    pub sample: String,
    pub per_database: BTreeMap<String, u64>,
}

impl Stored {
    pub fn count(&self) -> u64 {
        self.per_database.values().sum()
    }
}

/// What the new major says of a stored option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Known,
    /// "unrecognized parameter": pg_upgrade would stop on it.
    Unknown,
    /// The name is known but the stored value is not accepted (the server's message).
    Refused(String),
    /// Could not be tried (why).
    Untested(String),
}

/// Every option stored in the databases of the server listening in `socket_dir`, merged over
/// the databases. Only catalogs are read.
pub async fn gather(socket_dir: &Path, superuser: &str) -> Result<Vec<Stored>> {
    let mut merged: BTreeMap<Key, Stored> = BTreeMap::new();
    for db in pgclient::connectable_databases(socket_dir, superuser).await? {
        let client = pgclient::connect(socket_dir, superuser, &db).await?;
        let rows = client
            .query(GATHER, &[])
            .await
            .map_err(pgclient::query_err(&db))?;
        for row in rows {
            let Some(kind) = Kind::parse(row.get(0)) else {
                continue;
            };
            let key = Key {
                kind,
                access_method: row.get(1),
                name: row.get(3),
            };
            let stored = merged.entry(key.clone()).or_insert_with(|| Stored {
                key,
                extension: row.get(2),
                sample: row.get(4),
                per_database: BTreeMap::new(),
            });
            stored
                .per_database
                .insert(db.clone(), row.get::<_, i64>(5) as u64);
        }
    }
    Ok(merged.into_values().collect())
}

/// Every option in the catalogs of one database: kind, index access method and the extension
/// owning it, name, the smallest stored value, and how many objects carry it.
const GATHER: &str = "\
WITH stored AS (
  SELECT CASE WHEN c.relkind IN ('i', 'I') THEN 'index' WHEN c.relkind = 't' THEN 'toast'
              WHEN c.relkind = 'v' THEN 'view' ELSE 'table' END AS kind,
         CASE WHEN c.relkind IN ('i', 'I') THEN a.amname::text END AS am,
         CASE WHEN c.relkind IN ('i', 'I') THEN e.extname::text END AS ext,
         o
  FROM pg_class c
  LEFT JOIN pg_am a ON a.oid = c.relam
  LEFT JOIN pg_depend d ON d.classid = 'pg_am'::regclass AND d.objid = a.oid
       AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
  LEFT JOIN pg_extension e ON e.oid = d.refobjid
  CROSS JOIN LATERAL unnest(c.reloptions) AS o
  UNION ALL
  SELECT 'column', NULL, NULL, o FROM pg_attribute CROSS JOIN LATERAL unnest(attoptions) AS o
)
SELECT kind, am, ext, split_part(o, '=', 1), min(substr(o, strpos(o, '=') + 1)), count(*)
FROM stored GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 4";

/// Tries each stored option on the scratch server of the new major listening in
/// `socket_dir`, each in a transaction that is rolled back.
pub async fn judge(socket_dir: &Path, superuser: &str, stored: &[Stored]) -> Result<Vec<Verdict>> {
    let db = "postgres";
    let mut client = pgclient::connect(socket_dir, superuser, db).await?;
    let mut verdicts = Vec::with_capacity(stored.len());
    for option in stored {
        verdicts.push(
            try_option(&mut client, option)
                .await
                .map_err(pgclient::query_err(db))?,
        );
    }
    Ok(verdicts)
}

async fn try_option(
    client: &mut Client,
    option: &Stored,
) -> std::result::Result<Verdict, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    if let Some(ext) = &option.extension {
        let create = format!("CREATE EXTENSION IF NOT EXISTS {} CASCADE", ident(ext));
        if let Err(e) = tx.batch_execute(&create).await {
            tx.rollback().await?;
            return Ok(Verdict::Untested(format!(
                "extension {ext} cannot be created on the new major: {}",
                server_message(&e)
            )));
        }
    }
    let column_type = match (&option.key.kind, &option.key.access_method) {
        (Kind::Index, Some(am)) => match tx.query_opt(INDEX_COLUMN_TYPE, &[am]).await? {
            Some(row) => Some(row.get::<_, String>(0)),
            None => {
                tx.rollback().await?;
                return Ok(Verdict::Untested(format!(
                    "the new major has no index access method {am} with a default operator class"
                )));
            }
        },
        _ => None,
    };
    let tried = tx
        .batch_execute(&probe_sql(
            &option.key,
            &option.sample,
            column_type.as_deref(),
        ))
        .await;
    tx.rollback().await?;
    Ok(match tried {
        Ok(()) => Verdict::Known,
        Err(e) => classify(&e),
    })
}

/// A column type an index of access method `$1` can be built on: a default operator class's
/// input type, a concrete one where the class takes a polymorphic type.
const INDEX_COLUMN_TYPE: &str = "\
SELECT CASE t.typname WHEN 'anyarray' THEN 'int4[]' WHEN 'anyrange' THEN 'int4range'
                      WHEN 'anymultirange' THEN 'int4multirange'
                      ELSE format_type(o.opcintype, NULL) END
FROM pg_opclass o JOIN pg_am a ON a.oid = o.opcmethod JOIN pg_type t ON t.oid = o.opcintype
WHERE a.amname = $1 AND o.opcdefault
  AND (t.typtype <> 'p' OR t.typname IN ('anyarray', 'anyrange', 'anymultirange'))
ORDER BY t.typtype = 'p', t.typname <> 'int4', t.typname <> 'text', t.typname
LIMIT 1";

/// The statements that store `key = value` on a new object of its kind.
fn probe_sql(key: &Key, value: &str, column_type: Option<&str>) -> String {
    let opt = format!("{} = {}", ident(&key.name), literal(value));
    match key.kind {
        Kind::Column => format!(
            "CREATE TABLE pgup_probe (c int); ALTER TABLE pgup_probe ALTER COLUMN c SET ({opt})"
        ),
        Kind::Table => format!("CREATE TABLE pgup_probe (c int) WITH ({opt})"),
        Kind::Toast => format!("CREATE TABLE pgup_probe (c text) WITH (toast.{opt})"),
        Kind::View => format!("CREATE VIEW pgup_probe WITH ({opt}) AS SELECT 1 AS c"),
        Kind::Index => format!(
            "CREATE TABLE pgup_probe (c {}); CREATE INDEX pgup_probe_index ON pgup_probe USING {} (c) WITH ({opt})",
            column_type.unwrap_or("int"),
            ident(key.access_method.as_deref().unwrap_or("btree"))
        ),
    }
}

fn classify(e: &tokio_postgres::Error) -> Verdict {
    match e.as_db_error() {
        Some(db)
            if db.code() == &SqlState::INVALID_PARAMETER_VALUE
                && db.message().starts_with("unrecognized parameter") =>
        {
            Verdict::Unknown
        }
        _ => Verdict::Refused(server_message(e)),
    }
}

fn server_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |db| db.message().to_owned())
}

/// What was removed from one database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    /// Options removed, by database.
    pub per_database: BTreeMap<String, u64>,
    /// One line per object changed, for the log: `database: object: options`.
    #[serde(skip)]
    pub lines: Vec<String>,
}

impl Removed {
    pub fn total(&self) -> u64 {
        self.per_database.values().sum()
    }
}

/// Removes the `unknown` options from every database of the old server listening in
/// `socket_dir`. Catalog rows are changed with `allow_system_table_mods` (a superuser's
/// session setting from 12 on); each database in one transaction.
pub async fn strip(socket_dir: &Path, superuser: &str, unknown: &[Key]) -> Result<Removed> {
    let mut removed = Removed::default();
    for db in pgclient::connectable_databases(socket_dir, superuser).await? {
        let mut client = pgclient::connect(socket_dir, superuser, &db).await?;
        let err = pgclient::query_err(&db);
        let tx = client.transaction().await.map_err(&err)?;
        tx.batch_execute("SET LOCAL allow_system_table_mods = on")
            .await
            .map_err(&err)?;
        let mut count = 0;
        for sql in strip_sql(unknown) {
            for row in tx.query(&sql, &[]).await.map_err(&err)? {
                let (object, options): (String, Vec<String>) = (row.get(0), row.get(1));
                count += options.len() as u64;
                removed
                    .lines
                    .push(format!("{db}: {object}: {}", options.join(", ")));
            }
        }
        tx.commit().await.map_err(&err)?;
        removed.per_database.insert(db.clone(), count);
    }
    Ok(removed)
}

/// One UPDATE per kind (and access method) of the unknown options, each returning the objects
/// it changed and the options it removed from them.
fn strip_sql(unknown: &[Key]) -> Vec<String> {
    let mut groups: BTreeMap<(Kind, Option<&str>), Vec<String>> = BTreeMap::new();
    for key in unknown {
        groups
            .entry((key.kind, key.access_method.as_deref()))
            .or_default()
            .push(literal(&key.name));
    }
    groups
        .into_iter()
        .map(|((kind, am), names)| {
            let names = format!("ARRAY[{}]::text[]", names.join(", "));
            if kind == Kind::Column {
                return format!(
                    "WITH hit AS (SELECT attrelid, attnum, attoptions AS old, \
                     ARRAY(SELECT o FROM unnest(attoptions) o WHERE split_part(o, '=', 1) <> ALL ({names})) AS kept \
                     FROM pg_attribute WHERE attoptions IS NOT NULL) \
                     UPDATE pg_attribute a SET attoptions = NULLIF(h.kept, '{{}}') FROM hit h \
                     WHERE a.attrelid = h.attrelid AND a.attnum = h.attnum AND cardinality(h.kept) < cardinality(h.old) \
                     RETURNING format('%s.%I', a.attrelid::regclass, a.attname), \
                     ARRAY(SELECT o FROM unnest(h.old) o WHERE split_part(o, '=', 1) = ANY ({names}))"
                );
            }
            let am = am.map_or(String::new(), |am| {
                format!(" AND c.relam = (SELECT oid FROM pg_am WHERE amname = {})", literal(am))
            });
            format!(
                "WITH hit AS (SELECT c.oid, c.reloptions AS old, \
                 ARRAY(SELECT o FROM unnest(c.reloptions) o WHERE split_part(o, '=', 1) <> ALL ({names})) AS kept \
                 FROM pg_class c WHERE c.reloptions IS NOT NULL AND c.relkind IN ({}){am}) \
                 UPDATE pg_class c SET reloptions = NULLIF(h.kept, '{{}}') FROM hit h \
                 WHERE c.oid = h.oid AND cardinality(h.kept) < cardinality(h.old) \
                 RETURNING c.oid::regclass::text, \
                 ARRAY(SELECT o FROM unnest(h.old) o WHERE split_part(o, '=', 1) = ANY ({names}))",
                kind.relkinds()
            )
        })
        .collect()
}

/// The check's lines about the stored options the new major does not simply accept, each
/// with its verdict.
pub fn describe(stored: &[Stored], verdicts: &[Verdict], new_major: u32) -> Vec<(Verdict, String)> {
    let mut lines = Vec::new();
    for (option, verdict) in stored.iter().zip(verdicts) {
        let text = match verdict {
            Verdict::Known => continue,
            Verdict::Unknown => format!(
                "PostgreSQL {new_major} does not know {} stored {} time(s) ({}); pg_upgrade would stop on it",
                option.key,
                option.count(),
                per_database(&option.per_database)
            ),
            Verdict::Refused(why) => format!(
                "PostgreSQL {new_major} refuses {} = {} ({why}); change or reset it before the upgrade",
                option.key, option.sample
            ),
            Verdict::Untested(why) => format!(
                "cannot tell whether PostgreSQL {new_major} knows {}: {why}",
                option.key
            ),
        };
        lines.push((verdict.clone(), text));
    }
    lines
}

/// "app 500, postgres 489".
pub fn per_database(counts: &BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(db, n)| format!("{db} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A quoted identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted string literal (standard_conforming_strings is on for pgup's sessions).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: Kind, am: Option<&str>, name: &str) -> Key {
        Key {
            kind,
            access_method: am.map(str::to_owned),
            name: name.into(),
        }
    }

    #[test]
    fn probes_store_the_option_on_an_object_of_its_kind() {
        assert_eq!(
            probe_sql(&key(Kind::Column, None, "pg_attver"), "22117776", None),
            "CREATE TABLE pgup_probe (c int); ALTER TABLE pgup_probe ALTER COLUMN c SET (\"pg_attver\" = '22117776')"
        );
        assert_eq!(
            probe_sql(&key(Kind::Toast, None, "autovacuum_enabled"), "false", None),
            "CREATE TABLE pgup_probe (c text) WITH (toast.\"autovacuum_enabled\" = 'false')"
        );
        assert_eq!(
            probe_sql(&key(Kind::Index, Some("hnsw"), "m"), "16", Some("vector")),
            "CREATE TABLE pgup_probe (c vector); CREATE INDEX pgup_probe_index ON pgup_probe USING \"hnsw\" (c) WITH (\"m\" = '16')"
        );
        assert_eq!(
            probe_sql(&key(Kind::View, None, "security_barrier"), "it's", None),
            "CREATE VIEW pgup_probe WITH (\"security_barrier\" = 'it''s') AS SELECT 1 AS c"
        );
    }

    #[test]
    fn strip_statements_group_by_kind_and_access_method() {
        let sql = strip_sql(&[
            key(Kind::Column, None, "pg_attver"),
            key(Kind::Column, None, "x\"y"),
            key(Kind::Index, Some("bloom"), "len'gth"),
        ]);
        assert_eq!(sql.len(), 2);
        assert!(
            sql[0].starts_with("WITH hit AS (SELECT attrelid"),
            "{}",
            sql[0]
        );
        assert!(
            sql[0].contains("ARRAY['pg_attver', 'x\"y']::text[]"),
            "{}",
            sql[0]
        );
        assert!(
            sql[1].contains("c.relkind IN ('i', 'I') AND c.relam = (SELECT oid FROM pg_am WHERE amname = 'bloom')"),
            "{}",
            sql[1]
        );
        assert!(sql[1].contains("ARRAY['len''gth']::text[]"), "{}", sql[1]);
    }

    #[test]
    fn only_what_is_not_known_is_described() {
        let stored = |name: &str| Stored {
            key: key(Kind::Column, None, name),
            extension: None,
            sample: "1".into(),
            per_database: [("app".to_owned(), 3), ("postgres".to_owned(), 2)].into(),
        };
        let lines = describe(
            &[stored("n_distinct"), stored("pg_attver")],
            &[Verdict::Known, Verdict::Unknown],
            18,
        );
        assert_eq!(lines.len(), 1);
        assert_eq!(
            lines[0].1,
            "PostgreSQL 18 does not know pg_attver (column option) stored 5 time(s) (app 3, postgres 2); pg_upgrade would stop on it"
        );
    }
}
