//! Extensions across an upgrade: which ones each database has installed, which ones the new
//! major's image provides (control file and module), and bringing the installed ones up to
//! the new image's default versions once the new cluster runs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::pgclient::{ClientError, connect, databases, message, query_err};

type Result<T> = std::result::Result<T, ClientError>;

/// Extension name → version, per database.
pub type Installed = BTreeMap<String, BTreeMap<String, String>>;

/// What a major's share and lib directories hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Provided {
    /// Extension name → its control file's default_version and module (file name without
    /// `.so`; None for an extension without one).
    pub controls: BTreeMap<String, Control>,
    /// The `.so` files in the lib directory, without the suffix.
    pub modules: BTreeSet<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Control {
    pub default_version: String,
    pub module: Option<String>,
}

/// A shell command listing, for `major`, every control file as `name<TAB>default_version<TAB>
/// module_pathname`, a `--` line, then the lib directory's `.so` files.
pub fn provided_argv(major: u32) -> Vec<String> {
    let script = r#"for f in /usr/share/postgresql/$1/extension/*.control; do
    [ -e "$f" ] || continue
    n=${f##*/}
    v=$(sed -n "s/^[[:space:]]*default_version[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" "$f")
    m=$(sed -n "s/^[[:space:]]*module_pathname[[:space:]]*=[[:space:]]*'\([^']*\)'.*/\1/p" "$f")
    printf '%s\t%s\t%s\n' "${n%.control}" "$v" "$m"
done
echo --
cd "/usr/lib/postgresql/$1/lib" && ls"#;
    ["sh", "-c", script, "sh"]
        .into_iter()
        .map(str::to_owned)
        .chain([major.to_string()])
        .collect()
}

pub fn parse_provided(out: &str) -> Provided {
    let mut provided = Provided::default();
    let mut lines = out.lines();
    for line in lines.by_ref() {
        if line == "--" {
            break;
        }
        let mut fields = line.split('\t');
        let (Some(name), Some(version), module) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let module = module
            .map(|m| m.trim_start_matches("$libdir/").trim_end_matches(".so"))
            .filter(|m| !m.is_empty())
            .map(str::to_owned);
        provided.controls.insert(
            name.to_owned(),
            Control {
                default_version: version.to_owned(),
                module,
            },
        );
    }
    provided.modules = lines
        .filter_map(|l| l.trim().strip_suffix(".so"))
        .map(str::to_owned)
        .collect();
    provided
}

/// Every extension installed in every database a client can connect to.
pub async fn installed(socket_dir: &Path, superuser: &str) -> Result<Installed> {
    let client = connect(socket_dir, superuser, "template1").await?;
    let mut out = Installed::new();
    for db in databases(&client).await? {
        let c = connect(socket_dir, superuser, &db).await?;
        out.insert(db.clone(), of_database(&c, &db).await?);
    }
    Ok(out)
}

/// The extensions installed in the database `c` is connected to.
pub async fn of_database(c: &tokio_postgres::Client, db: &str) -> Result<BTreeMap<String, String>> {
    Ok(
        c.query("SELECT extname::text, extversion FROM pg_extension", &[])
            .await
            .map_err(query_err(db))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect(),
    )
}

/// An extension brought to the new image's default version, or left where it was.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Updated {
    pub database: String,
    pub extension: String,
    pub from: String,
    pub to: String,
    /// Why it stays at `from` (the server's words), when its update failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl std::fmt::Display for Updated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (db, ext, from) = (&self.database, &self.extension, &self.from);
        match &self.failed {
            None => write!(f, "{db}: {ext} {from} → {}", self.to),
            Some(why) => write!(
                f,
                "{db}: {ext} stays {from} ({why}); update it by hand: ALTER EXTENSION {ext} UPDATE"
            ),
        }
    }
}

/// Why an extension's update failed, by (database, extension).
pub type Failed = BTreeMap<(String, String), String>;

/// Updates, in every database, each extension whose installed version is not the new
/// image's default: PostGIS and its companions through `postgis_extensions_upgrade()` (which
/// knows their order), the others with `ALTER EXTENSION … UPDATE`. An update that fails
/// leaves that extension as pg_upgrade carried it over (it still works at its old version);
/// returns those failures.
pub async fn update_all(socket_dir: &Path, superuser: &str) -> Result<Failed> {
    let client = connect(socket_dir, superuser, "template1").await?;
    let mut failed = Failed::new();
    for db in databases(&client).await? {
        let c = connect(socket_dir, superuser, &db).await?;
        let mut fail = |name: &str, e: &tokio_postgres::Error| {
            failed.insert((db.clone(), name.to_owned()), message(e));
        };
        if outdated(&c, &db).await?.iter().any(|n| n == "postgis") {
            // In postgis's own schema, whatever the search_path says.
            let schema: String = c
                .query_one(
                    "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'postgis'",
                    &[],
                )
                .await
                .map_err(query_err(&db))?
                .get(0);
            let sql = format!(
                "SELECT {}.postgis_extensions_upgrade()",
                quote_ident(&schema)
            );
            if let Err(e) = c.batch_execute(&sql).await {
                fail("postgis", &e);
            }
        }
        for name in outdated(&c, &db).await? {
            let sql = format!("ALTER EXTENSION {} UPDATE", quote_ident(&name));
            if let Err(e) = c.batch_execute(&sql).await {
                fail(&name, &e);
            }
        }
    }
    Ok(failed)
}

/// The extensions installed in a database at another version than the default one.
async fn outdated(c: &tokio_postgres::Client, db: &str) -> Result<Vec<String>> {
    Ok(c
        .query(
            "SELECT name::text FROM pg_available_extensions \
             WHERE installed_version IS NOT NULL AND installed_version <> default_version ORDER BY 1",
            &[],
        )
        .await
        .map_err(query_err(db))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The extensions whose version differs between `before` (the old cluster) and `after`,
/// and those left at their old version because their update `failed`.
pub fn changes(before: &Installed, after: &Installed, failed: &Failed) -> Vec<Updated> {
    let mut out = Vec::new();
    for (db, exts) in before {
        for (name, from) in exts {
            let Some(to) = after.get(db).and_then(|a| a.get(name)) else {
                continue;
            };
            let failed = failed
                .get(&(db.clone(), name.clone()))
                .filter(|_| to == from);
            if to != from || failed.is_some() {
                out.push(Updated {
                    database: db.clone(),
                    extension: name.clone(),
                    from: from.clone(),
                    to: to.clone(),
                    failed: failed.cloned(),
                });
            }
        }
    }
    out
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_gives_controls_and_modules() {
        let out = "postgis\t3.5.2\t$libdir/postgis-3\nplpgsql\t1.0\t$libdir/plpgsql\n\
                   tsm_system_rows\t1.0\t$libdir/tsm_system_rows\nsqlonly\t2.1\t\n\
                   --\npostgis-3.so\nplpgsql.so\nbitcode\n";
        let p = parse_provided(out);
        assert_eq!(
            p.controls["postgis"],
            Control {
                default_version: "3.5.2".into(),
                module: Some("postgis-3".into())
            }
        );
        assert_eq!(p.controls["sqlonly"].module, None);
        assert_eq!(
            p.modules,
            BTreeSet::from(["postgis-3".to_owned(), "plpgsql".to_owned()])
        );
    }

    #[test]
    fn an_empty_listing_provides_nothing() {
        assert_eq!(parse_provided("--\n"), Provided::default());
        assert_eq!(parse_provided(""), Provided::default());
    }

    #[test]
    fn changes_are_the_versions_that_moved() {
        let installed = |postgis: &str| {
            Installed::from([(
                "app".to_owned(),
                BTreeMap::from([
                    ("postgis".to_owned(), postgis.to_owned()),
                    ("plpgsql".to_owned(), "1.0".to_owned()),
                ]),
            )])
        };
        let postgis = Updated {
            database: "app".into(),
            extension: "postgis".into(),
            from: "3.1.1".into(),
            to: "3.5.2".into(),
            failed: None,
        };
        let (before, after) = (installed("3.1.1"), installed("3.5.2"));
        assert_eq!(
            changes(&before, &after, &Failed::new()),
            vec![postgis.clone()]
        );
        assert_eq!(postgis.to_string(), "app: postgis 3.1.1 → 3.5.2");
        // A failure that a later step made good is not one; one that stuck is reported.
        let failed = Failed::from([
            (("app".into(), "postgis".into()), "ERROR: x".to_owned()),
            (
                ("app".into(), "plpgsql".into()),
                "ERROR: no update path".to_owned(),
            ),
        ]);
        let got = changes(&before, &after, &failed);
        assert_eq!(got[0].failed.as_deref(), Some("ERROR: no update path"));
        assert_eq!(got[1], postgis);
        assert_eq!(
            got[0].to_string(),
            "app: plpgsql stays 1.0 (ERROR: no update path); update it by hand: ALTER EXTENSION plpgsql UPDATE"
        );
        assert!(changes(&before, &before, &Failed::new()).is_empty());
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("uuid-ossp"), "\"uuid-ossp\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
