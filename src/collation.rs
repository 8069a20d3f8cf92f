//! Text sort order and the libraries behind it. An index on text is ordered by its collation,
//! which the C library (libc collations, and a libc database default) or ICU defines; a new
//! image with another glibc or ICU may order the same strings differently, and an index built
//! under the old one then misses rows, silently. This module owns: which C library and ICU a
//! server image's PostgreSQL uses (the [`PROBE`] run in the image), which indexes depend on a
//! collation of a library that changed (asked of the catalogs), rebuilding them on a private
//! server, and recording the collation versions the new cluster then has.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::pgclient::{ClientError, connect, databases, each_in_parallel, message, query_err};
use crate::settings::Reindex;

/// Where an assembled upgrade image records the libraries of the images its old majors came
/// from: a line per major, `<major>\t<libc>\t<icu>` (`-` for none).
pub const RECORD: &str = "/usr/lib/pgup/libraries";

/// A POSIX shell script that prints what an image's PostgreSQL sorts text with: `libc <name>
/// <version>`, `icu <postgres binary> <ICU library file>` per server binary linked with ICU,
/// and the lines of [`RECORD`] behind `held`.
pub const PROBE: &str = r#"v=$(getconf GNU_LIBC_VERSION 2>/dev/null) && echo "libc $v"
for l in /lib/ld-musl-*.so.1; do
	[ -e "$l" ] && echo "libc musl $("$l" 2>&1 | sed -n 's/^Version //p')"
done
for p in /usr/lib/postgresql/*/bin/postgres /usr/local/bin/postgres /usr/local/pgsql/bin/postgres; do
	[ -x "$p" ] || continue
	for f in $(ldd "$p" 2>/dev/null | awk '$1 ~ /^libicuuc\.so/ { print $3 }'); do
		echo "icu $p $(readlink -f "$f")"
	done
done
[ ! -f /usr/lib/pgup/libraries ] || sed 's/^/held	/' /usr/lib/pgup/libraries
exit 0"#;

/// The libraries a server sorts text with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Libraries {
    /// "glibc 2.41", "musl 1.2.5"; None when the image did not tell.
    pub libc: Option<String>,
    /// ICU's version as the server links it ("76.1"); None without ICU.
    pub icu: Option<String>,
}

impl std::fmt::Display for Libraries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {}",
            self.libc.as_deref().unwrap_or("an unknown C library"),
            self.icu
                .as_deref()
                .map_or_else(|| "no ICU".to_owned(), |v| format!("ICU {v}"))
        )
    }
}

/// What [`PROBE`] printed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Probe {
    libc: Option<String>,
    /// Major (None: a binary outside a versioned directory) → ICU version.
    icu: BTreeMap<Option<u32>, String>,
    /// The record of an assembled image: major → the libraries of the image it came from.
    held: BTreeMap<u32, Libraries>,
}

impl Probe {
    pub fn parse(out: &str) -> Self {
        let mut probe = Self::default();
        for line in out.lines() {
            if let Some(v) = line.strip_prefix("libc ") {
                let v = v.trim();
                // musl's loader may not say its version: the name still tells.
                probe.libc.get_or_insert_with(|| v.to_owned());
            } else if let Some(rest) = line.strip_prefix("icu ") {
                let Some((binary, file)) = rest.split_once(' ') else {
                    continue;
                };
                let major = binary
                    .strip_prefix("/usr/lib/postgresql/")
                    .and_then(|r| r.split('/').next())
                    .and_then(|m| m.parse().ok());
                if let Some((_, version)) = file.rsplit_once("libicuuc.so.") {
                    probe.icu.insert(major, version.to_owned());
                }
            } else if let Some(rest) = line.strip_prefix("held\t") {
                let fields: Vec<&str> = rest.split('\t').collect();
                if let [major, libc, icu] = fields[..]
                    && let Ok(major) = major.parse()
                {
                    let some = |s: &str| (s != "-" && !s.is_empty()).then(|| s.to_owned());
                    probe.held.insert(
                        major,
                        Libraries {
                            libc: some(libc),
                            icu: some(icu),
                        },
                    );
                }
            }
        }
        probe
    }

    /// The libraries the server of `major` in this image sorts with.
    pub fn of_major(&self, major: u32) -> Libraries {
        Libraries {
            libc: self.libc.clone(),
            icu: self
                .icu
                .get(&Some(major))
                .or_else(|| self.icu.get(&None))
                .cloned(),
        }
    }

    /// What the image records of the image `major` came from (assembled images only).
    pub fn held(&self, major: u32) -> Option<Libraries> {
        self.held.get(&major).cloned()
    }

    /// The record of an image assembled from this one (holding `major` of it) on `new`:
    /// what either recorded, and `major` as this image runs it.
    pub fn record_for(&self, major: u32, new: &Probe) -> String {
        let mut held = new.held.clone();
        held.extend(self.held.clone());
        held.insert(major, self.of_major(major));
        held.iter()
            .map(|(m, l)| {
                format!(
                    "{m}\t{}\t{}\n",
                    l.libc.as_deref().unwrap_or("-"),
                    l.icu.as_deref().unwrap_or("-")
                )
            })
            .collect()
    }
}

/// The libraries the old cluster's indexes were built with, and those of the new server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// None: neither the old image nor the upgrade image tells.
    pub old: Option<Libraries>,
    pub new: Libraries,
}

/// Which providers' sort order may differ between the old and the new server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    pub libc: bool,
    pub icu: bool,
}

impl Changed {
    pub const ALL: Self = Self {
        libc: true,
        icu: true,
    };

    pub fn any(self) -> bool {
        self.libc || self.icu
    }

    /// Whether `index` depends on a library this change names.
    pub fn touches(self, index: &TextIndex) -> bool {
        (self.libc && index.libc) || (self.icu && index.icu)
    }
}

/// What `reindex` rebuilds when `changed` is what the libraries changed.
pub fn to_rebuild(reindex: Reindex, changed: Changed) -> Changed {
    match reindex {
        Reindex::Auto => changed,
        Reindex::Always => Changed::ALL,
        Reindex::Never => Changed::default(),
    }
}

impl Pair {
    /// What changed; an old side nobody could tell counts as changed, libc and ICU both:
    /// an index that sorts wrong loses rows silently, a needless rebuild only costs time.
    pub fn changed(&self) -> Changed {
        let Some(old) = &self.old else {
            return Changed::ALL;
        };
        Changed {
            libc: old.libc.is_none() || old.libc != self.new.libc,
            // A server without ICU has no ICU collations to change.
            icu: old.icu.is_some() && old.icu != self.new.icu,
        }
    }

    /// "glibc 2.31 → glibc 2.41, ICU 67.1 → ICU 76.1", of what changed.
    pub fn describe_change(&self) -> String {
        let Some(old) = &self.old else {
            return format!(
                "the old server's libraries are unknown (the new server has {})",
                self.new
            );
        };
        let changed = self.changed();
        let side = |o: &Option<String>, n: &Option<String>, what: &str| {
            format!(
                "{what}{} → {what}{}",
                o.as_deref().unwrap_or("unknown"),
                n.as_deref().unwrap_or("none")
            )
        };
        let mut parts = Vec::new();
        if changed.libc {
            parts.push(side(&old.libc, &self.new.libc, ""));
        }
        if changed.icu {
            parts.push(side(&old.icu, &self.new.icu, "ICU "));
        }
        if parts.is_empty() {
            format!("{} on both", self.new)
        } else {
            parts.join(", ")
        }
    }
}

/// An index whose order depends on a collation that a library defines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextIndex {
    pub database: String,
    /// `schema.index`, quoted as SQL needs it.
    pub name: String,
    pub table: String,
    pub bytes: i64,
    pub unique: bool,
    /// It depends on a libc collation (or a libc database default other than C/POSIX).
    pub libc: bool,
    /// It depends on an ICU collation (or an ICU database default).
    pub icu: bool,
    /// Its file below PGDATA (`pg_relation_filepath`): gone once it is rebuilt.
    pub file: String,
}

/// The indexes an upgrade with `--reindex never` left as the old library built them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The major they were left on: a rollback makes them the old cluster's own again.
    pub major: u32,
    pub superuser: String,
    /// What changed ("glibc 2.31 → glibc 2.41").
    pub change: String,
    pub indexes: Vec<TextIndex>,
}

impl Pending {
    /// Those not rebuilt since in the cluster at `data_dir`: their file is still there with
    /// its pages (REINDEX gives an index a new file; the old one goes at a checkpoint, emptied
    /// first). An index in a tablespace is taken as still pending.
    pub fn left(&self, data_dir: &Path) -> Vec<&TextIndex> {
        self.indexes
            .iter()
            .filter(|i| {
                i.file.starts_with("pg_tblspc/")
                    || std::fs::metadata(data_dir.join(&i.file)).is_ok_and(|m| m.len() > 0)
            })
            .collect()
    }

    /// The commands that rebuild `left` without blocking writes, one per database.
    pub fn commands(&self, left: &[&TextIndex]) -> Vec<String> {
        let mut by_db: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for i in left {
            by_db.entry(&i.database).or_default().push(&i.name);
        }
        by_db
            .iter()
            .map(|(db, names)| {
                let mut line = format!("reindexdb -U {} -d {db} --concurrently", self.superuser);
                for n in names {
                    line.push_str(&format!(" -i '{n}'"));
                }
                line
            })
            .collect()
    }
}

type Result<T> = std::result::Result<T, ClientError>;

/// Every valid index of user tables whose keys, expressions or predicate use a collation
/// that libc or ICU defines, in every database the server listening in `socket_dir` has.
pub async fn dependent(socket_dir: &Path, superuser: &str, major: u32) -> Result<Vec<TextIndex>> {
    let mut out = Vec::new();
    let first = connect(socket_dir, superuser, "template1").await?;
    for db in databases(&first).await? {
        let c = connect(socket_dir, superuser, &db).await?;
        out.extend(dependent_in(&c, &db, major).await?);
    }
    Ok(out)
}

async fn dependent_in(c: &Client, db: &str, major: u32) -> Result<Vec<TextIndex>> {
    // The database's default collation (OID 100) is its locale provider's; the provider
    // column is 15's.
    let provider = if major >= 15 {
        "datlocprovider::text"
    } else {
        "'c'::text"
    };
    // Collations an expression or a predicate compares with are its nodes' :inputcollid.
    let sql = format!(
        "WITH d AS (SELECT {provider} AS provider, datcollate::text AS dcollate FROM pg_database WHERE datname = current_database()), \
         ix AS (SELECT i.indexrelid, i.indrelid, i.indisunique, \
           ARRAY(SELECT unnest(i.indcollation::oid[]) UNION \
                 SELECT m[1]::oid FROM regexp_matches(coalesce(i.indexprs::text, '') || ' ' || coalesce(i.indpred::text, ''), ':inputcollid ([0-9]+)', 'g') AS m) AS colls \
           FROM pg_index i WHERE i.indisvalid) \
         SELECT format('%I.%I', n.nspname, c.relname), format('%I.%I', tn.nspname, t.relname), \
           pg_relation_size(c.oid), ix.indisunique, coalesce(pg_relation_filepath(c.oid), '')::text, \
           bool_or(CASE WHEN co.oid = 100 THEN d.provider = 'c' AND d.dcollate NOT IN ('C', 'POSIX') \
                        ELSE co.collprovider = 'c' AND co.collcollate NOT IN ('C', 'POSIX') END), \
           bool_or(CASE WHEN co.oid = 100 THEN d.provider = 'i' ELSE co.collprovider = 'i' END) \
         FROM ix CROSS JOIN d \
         JOIN pg_class c ON c.oid = ix.indexrelid AND c.relkind = 'i' \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_class t ON t.oid = ix.indrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace \
         CROSS JOIN LATERAL unnest(ix.colls) AS k(coll) \
         JOIN pg_collation co ON co.oid = k.coll \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)' \
         GROUP BY 1, 2, 3, 4, 5 ORDER BY 1"
    );
    let rows = c.query(&sql, &[]).await.map_err(query_err(db))?;
    Ok(rows
        .iter()
        .map(|r| TextIndex {
            database: db.to_owned(),
            name: r.get(0),
            table: r.get(1),
            bytes: r.get(2),
            unique: r.get(3),
            file: r.get(4),
            libc: r.get::<_, Option<bool>>(5).unwrap_or(false),
            icu: r.get::<_, Option<bool>>(6).unwrap_or(false),
        })
        .filter(|i| i.libc || i.icu)
        .collect())
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(
        "unique index {index} of table {table} (database {database}) cannot be rebuilt: the table holds duplicate keys, which its index, built under the old library, did not see: {keys}"
    )]
    Duplicates {
        database: String,
        index: String,
        table: String,
        keys: String,
    },
}

/// Rebuilds `indexes` with `jobs` connections at once, the largest first; `done` is told
/// each time one more is rebuilt. The first failure stops the others taking more.
pub async fn rebuild(
    socket_dir: &Path,
    superuser: &str,
    indexes: &[TextIndex],
    jobs: usize,
    done: &(dyn Fn(usize) + Sync),
) -> std::result::Result<(), RebuildError> {
    let mut order: Vec<&TextIndex> = indexes.iter().collect();
    // One database after the other keeps reconnecting rare; the largest first within each.
    order.sort_by(|a, b| a.database.cmp(&b.database).then(b.bytes.cmp(&a.bytes)));
    let items = order.into_iter().map(|i| (i.database.clone(), i)).collect();
    let reindex = async |c: &Client, db: &str, index: &&TextIndex| {
        let Err(err) = c
            .batch_execute(&format!("REINDEX INDEX {}", index.name))
            .await
        else {
            return Ok(());
        };
        if err.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            let keys = duplicates(c, index)
                .await
                .unwrap_or_else(|e| format!("{} ({})", detail(&err), message(&e)));
            return Err(RebuildError::Duplicates {
                database: db.to_owned(),
                index: index.name.clone(),
                table: index.table.clone(),
                keys,
            });
        }
        Err(query_err(db)(err).into())
    };
    each_in_parallel(socket_dir, superuser, items, jobs, "", reindex, done).await
}

fn detail(err: &tokio_postgres::Error) -> String {
    err.as_db_error()
        .and_then(|e| e.detail())
        .unwrap_or("duplicate keys")
        .to_owned()
}

/// Up to five keys `index` holds more than once, counted from the table itself (no index
/// scans), as "(key) ×2".
async fn duplicates(
    c: &Client,
    index: &TextIndex,
) -> std::result::Result<String, tokio_postgres::Error> {
    let row = c
        .query_one(
            "SELECT ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k ORDER BY k), \
             pg_get_expr(i.indpred, i.indrelid, true) FROM pg_index i WHERE i.indexrelid = $1::text::regclass",
            &[&index.name],
        )
        .await?;
    let keys: Vec<String> = row.get(0);
    let predicate: Option<String> = row.get(1);
    let keys = keys.join(", ");
    let sql = format!(
        "SET enable_indexscan = off; SET enable_indexonlyscan = off; SET enable_bitmapscan = off; \
         SELECT ROW({keys})::text || ' ×' || count(*) FROM {} WHERE ROW({keys}) IS NOT NULL{} \
         GROUP BY {keys} HAVING count(*) > 1 ORDER BY count(*) DESC, 1 LIMIT 5",
        index.table,
        predicate.map(|p| format!(" AND ({p})")).unwrap_or_default()
    );
    let mut found = Vec::new();
    for message in c.simple_query(&sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message
            && let Some(key) = row.get(0)
        {
            found.push(key.to_owned());
        }
    }
    Ok(found.join(", "))
}

/// Records the collation versions the new server's libraries have, so that it does not warn
/// of a mismatch the rebuild resolved: each database's (15 and later), and each collation's
/// whose recorded version differs. A collation the server cannot load is left, said in the
/// returned lines.
pub async fn refresh_versions(
    socket_dir: &Path,
    superuser: &str,
    major: u32,
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let first = connect(socket_dir, superuser, "template1").await?;
    for db in databases(&first).await? {
        let c = connect(socket_dir, superuser, &db).await?;
        let err = query_err(&db);
        if major >= 15 {
            let stale: bool = c
                .query_one(
                    "SELECT datcollversion IS DISTINCT FROM pg_database_collation_actual_version(oid) \
                     FROM pg_database WHERE datname = current_database()",
                    &[],
                )
                .await
                .map_err(&err)?
                .get(0);
            if stale {
                c.batch_execute(&format!(
                    "ALTER DATABASE {} REFRESH COLLATION VERSION",
                    quote(&db)
                ))
                .await
                .map_err(&err)?;
                lines.push(format!("database {db}: collation version refreshed"));
            }
        }
        let recorded = c
            .query(
                "SELECT c.oid, format('%I.%I', n.nspname, c.collname) FROM pg_collation c \
                 JOIN pg_namespace n ON n.oid = c.collnamespace WHERE c.collversion IS NOT NULL",
                &[],
            )
            .await
            .map_err(&err)?;
        for r in recorded {
            let (oid, name): (u32, String) = (r.get(0), r.get(1));
            let stale = c
                .query_one(
                    "SELECT collversion IS DISTINCT FROM pg_collation_actual_version(oid) FROM pg_collation WHERE oid = $1",
                    &[&oid],
                )
                .await;
            match stale.map(|row| row.get::<_, bool>(0)) {
                Ok(true) => {
                    c.batch_execute(&format!("ALTER COLLATION {name} REFRESH VERSION"))
                        .await
                        .map_err(&err)?;
                    lines.push(format!("{db}: collation {name}: version refreshed"));
                }
                Ok(false) => {}
                Err(e) => lines.push(format!(
                    "{db}: collation {name}: version left as recorded ({})",
                    message(&e)
                )),
            }
        }
    }
    Ok(lines)
}

/// `name` as an SQL identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BULLSEYE: &str = "libc glibc 2.31\n\
        icu /usr/lib/postgresql/13/bin/postgres /usr/lib/x86_64-linux-gnu/libicuuc.so.67.1\n";

    #[test]
    fn a_probe_gives_each_majors_libraries() {
        let probe = Probe::parse(
            "libc glibc 2.41\n\
             icu /usr/lib/postgresql/17/bin/postgres /usr/lib/x86_64-linux-gnu/libicuuc.so.76.1\n\
             icu /usr/lib/postgresql/13/bin/postgres /usr/lib/pgup/old-13/libicuuc.so.67\n\
             held\t13\tglibc 2.31\t67.1\n",
        );
        assert_eq!(
            probe.of_major(17),
            Libraries {
                libc: Some("glibc 2.41".into()),
                icu: Some("76.1".into())
            }
        );
        // The held major's ICU as this image links it, its C library as recorded.
        assert_eq!(probe.of_major(13).icu.as_deref(), Some("67"));
        assert_eq!(
            probe.held(13),
            Some(Libraries {
                libc: Some("glibc 2.31".into()),
                icu: Some("67.1".into())
            })
        );
        assert_eq!(probe.held(15), None);
    }

    #[test]
    fn musl_and_binaries_outside_versioned_directories() {
        let probe = Probe::parse(
            "libc musl 1.2.5\nicu /usr/local/bin/postgres /usr/lib/libicuuc.so.74.2\n",
        );
        assert_eq!(
            probe.of_major(16),
            Libraries {
                libc: Some("musl 1.2.5".into()),
                icu: Some("74.2".into())
            }
        );
        // A loader that does not say its version.
        assert_eq!(
            Probe::parse("libc musl \n").of_major(16).libc.as_deref(),
            Some("musl")
        );
        assert_eq!(Probe::parse("").of_major(16), Libraries::default());
    }

    #[test]
    fn records_carry_over_and_parse_back() {
        let probe = Probe::parse(BULLSEYE);
        let record = probe.record_for(13, &Probe::default());
        assert_eq!(record, "13\tglibc 2.31\t67.1\n");
        let chained = Probe::parse(&format!("libc glibc 2.36\nheld\t{}", record.trim_end()));
        let new = Probe::parse("libc glibc 2.41\nheld\t12\tglibc 2.28\t63.1\n");
        assert_eq!(
            chained.record_for(15, &new),
            "12\tglibc 2.28\t63.1\n13\tglibc 2.31\t67.1\n15\tglibc 2.36\t-\n"
        );
    }

    #[test]
    fn what_changed() {
        let libs = |libc: &str, icu: Option<&str>| Libraries {
            libc: Some(libc.into()),
            icu: icu.map(Into::into),
        };
        let pair = |old, new| Pair { old, new };
        let p = pair(
            Some(libs("glibc 2.31", Some("67.1"))),
            libs("glibc 2.41", Some("76.1")),
        );
        assert_eq!(p.changed(), Changed::ALL);
        assert_eq!(
            p.describe_change(),
            "glibc 2.31 → glibc 2.41, ICU 67.1 → ICU 76.1"
        );
        let same = pair(
            Some(libs("glibc 2.41", Some("76.1"))),
            libs("glibc 2.41", Some("76.1")),
        );
        assert!(!same.changed().any());
        assert_eq!(same.describe_change(), "glibc 2.41, ICU 76.1 on both");
        let icu_only = pair(
            Some(libs("glibc 2.41", Some("76.1"))),
            libs("glibc 2.41", Some("77.1")),
        );
        assert_eq!(
            icu_only.changed(),
            Changed {
                libc: false,
                icu: true
            }
        );
        // No ICU before: no ICU collation can exist.
        assert!(
            !pair(
                Some(libs("glibc 2.41", None)),
                libs("glibc 2.41", Some("76.1"))
            )
            .changed()
            .any()
        );
        let unknown = pair(None, libs("glibc 2.41", None));
        assert_eq!(unknown.changed(), Changed::ALL);
        assert!(unknown.describe_change().contains("unknown"));
    }

    #[test]
    fn pending_indexes_are_those_whose_file_has_pages() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("base/5")).unwrap();
        std::fs::write(dir.path().join("base/5/100"), [0u8; 8192]).unwrap();
        // Rebuilt: the old file emptied until the next checkpoint removes it.
        std::fs::write(dir.path().join("base/5/101"), []).unwrap();
        let index = |db: &str, name: &str, file: &str| TextIndex {
            database: db.into(),
            name: name.into(),
            table: "public.t".into(),
            bytes: 8192,
            unique: false,
            libc: true,
            icu: false,
            file: file.into(),
        };
        let pending = Pending {
            major: 17,
            superuser: "postgres".into(),
            change: "glibc 2.31 → glibc 2.41".into(),
            indexes: vec![
                index("app", "public.a", "base/5/100"),
                index("app", "public.b", "base/5/101"),
                index("app", "public.c", "base/5/102"),
                index("app", "public.\"D\"", "pg_tblspc/9/PG_17/5/103"),
                index("other", "s.e", "base/6/104"),
            ],
        };
        let left = pending.left(dir.path());
        let names: Vec<&str> = left.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["public.a", "public.\"D\""]);
        assert_eq!(
            pending.commands(&left),
            ["reindexdb -U postgres -d app --concurrently -i 'public.a' -i 'public.\"D\"'"]
        );
    }

    #[test]
    fn a_change_touches_the_indexes_of_its_providers() {
        let index = |libc, icu| TextIndex {
            database: "app".into(),
            name: "public.i".into(),
            table: "public.t".into(),
            bytes: 8192,
            unique: false,
            libc,
            icu,
            file: "base/1/2".into(),
        };
        let icu_only = Changed {
            libc: false,
            icu: true,
        };
        assert!(!icu_only.touches(&index(true, false)));
        assert!(icu_only.touches(&index(false, true)));
        assert!(Changed::ALL.touches(&index(true, false)));
        assert!(!Changed::default().touches(&index(true, true)));
    }
}
