//! What a PostgreSQL major removed that an old cluster may still use, and where the cluster
//! uses it. A cluster that does cannot run on (or be upgraded to) that major until the operator
//! changes it, and no tool can make that change for them: the upgrade would fail late, after
//! the stop, or the new server would not start. [`REMOVALS`] holds a row per removal with the
//! first major without it, so that a new major's removals are new rows; the finders here are
//! pure (the old cluster's files and catalogs come in as text and rows), and [`gather`] reads
//! the catalogs. Settings removed by name are [`config`]'s (a file's line is commented out);
//! here they count only where a catalog holds them (`ALTER DATABASE/ROLE … SET`, a function's
//! `SET`), which pg_upgrade's restore refuses. Only those: a catalog also holds settings no
//! configuration file may (`role`, `transaction_isolation`, ...), which `--describe-config`
//! does not list.

use std::fmt;
use std::path::Path;

use serde::Serialize;
use tokio_postgres::types::ToSql;

use crate::config;
use crate::pgclient::{self, ClientError};

/// What a major removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// An authentication method of `pg_hba.conf`.
    AuthMethod(&'static str),
    /// The value `off` of a boolean setting, which can only be on.
    Off(&'static str),
    /// A server encoding, as `pg_encoding_to_char` names it.
    Encoding(&'static str),
    /// Operator classes an extension provides (extension, class), which pg_upgrade refuses
    /// in an index.
    OpClasses(&'static str, &'static [&'static str]),
    /// A line feed or carriage return in the name of a database, role or tablespace, which
    /// pg_upgrade refuses.
    LineBreakInNames,
}

/// A row of [`REMOVALS`].
#[derive(Debug)]
pub struct Removal {
    /// The first major without it.
    pub major: u32,
    pub removed: Removed,
    /// What the operator does about it, ahead of the upgrade.
    pub fix: &'static str,
}

/// Every removal pgup finds ahead, oldest first.
pub const REMOVALS: &[Removal] = &[
    Removal {
        major: 19,
        removed: Removed::AuthMethod("radius"),
        fix: "change the line to another method (pam can still reach a RADIUS server) and reload",
    },
    Removal {
        major: 19,
        removed: Removed::Off("standard_conforming_strings"),
        fix: "make the application write backslash escapes as E'…' strings, then remove the setting",
    },
    Removal {
        major: 19,
        removed: Removed::Encoding("MULE_INTERNAL"),
        fix: "dump the database and restore it into one of another encoding (UTF8) before upgrading",
    },
    Removal {
        major: 19,
        removed: Removed::OpClasses("btree_gist", &["gist_inet_ops", "gist_cidr_ops"]),
        fix: "drop the index and create it again with the built-in operator class inet_ops",
    },
    Removal {
        major: 19,
        removed: Removed::LineBreakInNames,
        fix: "rename it without the line break",
    },
];

/// The removals that apply from `old` to `new`.
fn crossed(old: u32, new: u32) -> impl Iterator<Item = &'static Removal> {
    REMOVALS
        .iter()
        .filter(move |r| old < r.major && r.major <= new)
}

/// One use of a removal in the old cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Use {
    /// Where: "pg_hba.conf line 7", "database app", "ALTER ROLE app SET …".
    pub place: String,
    /// What, and that the new major removed it.
    pub what: String,
    pub fix: String,
}

impl fmt::Display for Use {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; {}", self.place, self.what, self.fix)
    }
}

/// The uses in `pg_hba.conf`'s text of authentication methods removed by `new`.
pub fn in_hba(text: &str, old: u32, new: u32) -> Vec<Use> {
    let methods: Vec<(&str, &Removal)> = crossed(old, new)
        .filter_map(|r| match r.removed {
            Removed::AuthMethod(m) => Some((m, r)),
            _ => None,
        })
        .collect();
    let mut uses = Vec::new();
    for (line, fields) in hba_records(text) {
        let Some(method) = hba_method(&fields) else {
            continue;
        };
        for (removed, r) in &methods {
            if method == *removed {
                uses.push(Use {
                    place: format!("pg_hba.conf line {line}"),
                    what: format!(
                        "authentication method {method}, which PostgreSQL {} removed",
                        r.major
                    ),
                    fix: r.fix.to_owned(),
                });
            }
        }
    }
    uses
}

/// `pg_hba.conf`'s records: the 1-based line each starts on and its fields, comments
/// dropped, lines ending in a backslash joined (as PostgreSQL 16 and later read them).
fn hba_records(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut records = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let line = strip_comment(line);
        let (start, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
        match line.trim_end().strip_suffix('\\') {
            Some(head) => {
                joined.push_str(head);
                joined.push(' ');
                pending = Some((start, joined));
            }
            None => {
                joined.push_str(line);
                let fields = hba_fields(&joined);
                if !fields.is_empty() {
                    records.push((start, fields));
                }
            }
        }
    }
    records
}

/// `line` up to a `#` outside double quotes.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

/// A record's whitespace-separated fields, double quotes kept; a list's items stay one field
/// across blanks after a comma (`db1, db2`), as PostgreSQL reads them.
fn hba_fields(record: &str) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let end = |field: &mut String, fields: &mut Vec<String>| {
        if field.is_empty() {
            return;
        }
        match fields.last_mut() {
            Some(last) if last.ends_with(',') => last.push_str(field),
            _ => fields.push(field.clone()),
        }
        field.clear();
    };
    for c in record.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                field.push(c);
            }
            c if c.is_whitespace() && !quoted => end(&mut field, &mut fields),
            c => field.push(c),
        }
    }
    end(&mut field, &mut fields);
    fields
}

/// A record's authentication method: `local DATABASE USER METHOD`, `host* DATABASE USER
/// ADDRESS [MASK] METHOD`, a mask following an IP address written without a prefix length.
fn hba_method(fields: &[String]) -> Option<&str> {
    let at = match fields.first()?.as_str() {
        "local" => 3,
        t if t.starts_with("host") => {
            let address = fields.get(3)?;
            if !address.contains('/') && address.parse::<std::net::IpAddr>().is_ok() {
                5
            } else {
                4
            }
        }
        // include directives and anything else name no method.
        _ => return None,
    };
    fields.get(at).map(String::as_str)
}

/// PostgreSQL's boolean false, as `parse_bool` reads it: a prefix of `false` or `no`, `off`
/// (or `of`), `0`; any case, quotes and surrounding blanks dropped.
fn is_false(value: &str) -> bool {
    let v = value.trim();
    let v = v
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(v)
        .trim()
        .to_ascii_lowercase();
    !v.is_empty()
        && ("false".starts_with(&v) || "no".starts_with(&v) || v == "off" || v == "of" || v == "0")
}

/// The settings of removed values in a configuration file: `settings` as
/// [`config::file_settings`] returns them for `file`.
pub fn in_file(file: &str, settings: &[(usize, String, String)], old: u32, new: u32) -> Vec<Use> {
    settings
        .iter()
        .flat_map(|(line, name, value)| {
            off_settings(old, new, name, value).map(move |(r, what)| Use {
                place: format!("{file} line {line}"),
                what,
                fix: r.fix.to_owned(),
            })
        })
        .collect()
}

/// The settings of removed values in a server container's command.
pub fn in_command(cmd: &[String], old: u32, new: u32) -> Vec<Use> {
    config::command_settings(cmd)
        .iter()
        .flat_map(|s| {
            off_settings(old, new, &s.name, &s.value).map(|(r, what)| Use {
                place: format!("{} (argument {})", config::COMMAND, s.at + 1),
                what,
                fix: format!("{}, and from the container's command", r.fix),
            })
        })
        .collect()
}

/// The rows whose removed `off` is `name = value`, with what to say of it.
fn off_settings<'a>(
    old: u32,
    new: u32,
    name: &'a str,
    value: &'a str,
) -> impl Iterator<Item = (&'static Removal, String)> + 'a {
    crossed(old, new).filter_map(move |r| match r.removed {
        Removed::Off(setting) if setting == name && is_false(value) => Some((
            r,
            format!(
                "{name} = {value}, which PostgreSQL {} no longer takes",
                r.major
            ),
        )),
        _ => None,
    })
}

/// Where a catalog holds a setting, which pg_upgrade's restore sets again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    Database(String),
    Role(String),
    RoleInDatabase(String, String),
    /// A function's `SET` clause: database, signature.
    Function(String, String),
}

impl Holder {
    /// The statement that sets and resets it, and the database to run that in (None: any).
    fn alter(&self) -> (String, Option<&str>) {
        match self {
            Holder::Database(d) => (format!("ALTER DATABASE {}", quote(d)), None),
            Holder::Role(r) => (format!("ALTER ROLE {}", quote(r)), None),
            Holder::RoleInDatabase(r, d) => (
                format!("ALTER ROLE {} IN DATABASE {}", quote(r), quote(d)),
                None,
            ),
            Holder::Function(d, f) => (format!("ALTER FUNCTION {f}"), Some(d)),
        }
    }
}

/// What the old cluster's catalogs hold that a removal may concern, from [`gather`].
#[derive(Debug, Clone, Default)]
pub struct Catalogs {
    /// Each database and its encoding's name.
    pub encodings: Vec<(String, String)>,
    /// `ALTER DATABASE/ROLE … SET` and functions' `SET`: holder, setting, value.
    pub settings: Vec<(Holder, String, String)>,
    /// Indexes using an operator class of an extension: database, index, extension, class.
    pub opclass_indexes: Vec<(String, String, String, String)>,
    /// Databases, roles and tablespaces ("database", name) whose names hold a line break.
    pub line_breaks: Vec<(&'static str, String)>,
}

/// The uses in the old cluster's catalogs of what `new` removed, settings included.
pub fn in_catalogs(catalogs: &Catalogs, old: u32, new: u32) -> Vec<Use> {
    let mut uses = Vec::new();
    for (holder, name, value) in &catalogs.settings {
        let (alter, database) = holder.alter();
        let place = format!("{alter} SET {name}");
        let reset = match database {
            Some(d) => format!("run {alter} RESET {name} in database {}", quote(d)),
            None => format!("run {alter} RESET {name}"),
        };
        if let Some(major) = config::removed_between(name, old, new) {
            uses.push(Use {
                place,
                what: format!(
                    "PostgreSQL {major} removed the setting {name}, so pg_upgrade could not restore it"
                ),
                fix: reset,
            });
            continue;
        }
        for (r, what) in off_settings(old, new, name, value) {
            uses.push(Use {
                place: place.clone(),
                what,
                fix: format!("{}: {reset}", r.fix),
            });
        }
    }
    for r in crossed(old, new) {
        match r.removed {
            Removed::Encoding(encoding) => {
                uses.extend(
                    catalogs
                        .encodings
                        .iter()
                        .filter(|(_, e)| e.eq_ignore_ascii_case(encoding))
                        .map(|(db, e)| Use {
                            place: format!("database {}", quote(db)),
                            what: format!("encoding {e}, which PostgreSQL {} removed", r.major),
                            fix: r.fix.to_owned(),
                        }),
                );
            }
            Removed::OpClasses(extension, classes) => {
                uses.extend(
                    catalogs
                        .opclass_indexes
                        .iter()
                        .filter(|(_, _, ext, class)| {
                            ext == extension && classes.contains(&class.as_str())
                        })
                        .map(|(db, index, ext, class)| Use {
                            place: format!("index {index} in database {}", quote(db)),
                            what: format!(
                                "operator class {class} of {ext}, which pg_upgrade {} refuses",
                                r.major
                            ),
                            fix: r.fix.to_owned(),
                        }),
                );
            }
            Removed::LineBreakInNames => {
                uses.extend(catalogs.line_breaks.iter().map(|(kind, name)| Use {
                    place: format!("{kind} {name:?}"),
                    what: format!(
                        "a line break in its name, which pg_upgrade {} refuses",
                        r.major
                    ),
                    fix: format!(
                        "{} (ALTER {} … RENAME TO …)",
                        r.fix,
                        kind.to_ascii_uppercase()
                    ),
                }));
            }
            Removed::AuthMethod(_) | Removed::Off(_) => {}
        }
    }
    uses
}

/// An identifier as SQL would quote it, when it needs quotes.
fn quote(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Reads [`Catalogs`] through the old server at `socket_dir`: the shared catalogs once, the
/// indexes in every database that takes connections. Only what the removals of `old` to
/// `new` can concern is asked for.
pub async fn gather(
    socket_dir: &Path,
    superuser: &str,
    old: u32,
    new: u32,
) -> Result<Catalogs, ClientError> {
    let client = pgclient::connect(socket_dir, superuser, "template1").await?;
    let query = async |sql: &str| {
        client
            .query(sql, &[])
            .await
            .map_err(pgclient::query_err("template1"))
    };
    let mut catalogs = Catalogs::default();
    for row in query(SETTINGS).await? {
        let holder = match (row.get(0), row.get(1)) {
            (Some(d), Some(r)) => Holder::RoleInDatabase(r, d),
            (Some(d), None) => Holder::Database(d),
            (None, Some(r)) => Holder::Role(r),
            (None, None) => continue,
        };
        catalogs.settings.push(setting(holder, row.get(2)));
    }
    let removed: Vec<Removed> = crossed(old, new).map(|r| r.removed).collect();
    catalogs.encodings = query(ENCODINGS)
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // A client speaks UTF8, which no server converts to a removed encoding.
    let unreadable: Vec<&str> = catalogs
        .encodings
        .iter()
        .filter(|(_, e)| {
            removed
                .iter()
                .any(|r| matches!(r, Removed::Encoding(x) if x.eq_ignore_ascii_case(e)))
        })
        .map(|(db, _)| db.as_str())
        .collect();
    if removed.contains(&Removed::LineBreakInNames) {
        catalogs.line_breaks = query(LINE_BREAKS)
            .await?
            .iter()
            .filter_map(|r| {
                let kind = ["database", "role", "tablespace"]
                    .into_iter()
                    .find(|k| *k == r.get::<_, &str>(0))?;
                Some((kind, r.get(1)))
            })
            .collect();
    }
    let classes: Vec<String> = removed
        .iter()
        .filter_map(|r| match r {
            Removed::OpClasses(ext, classes) => {
                Some(classes.iter().map(move |c| format!("{ext}.{c}")))
            }
            _ => None,
        })
        .flatten()
        .collect();
    for db in pgclient::databases(&client).await? {
        if unreadable.contains(&db.as_str()) {
            continue;
        }
        let c = pgclient::connect(socket_dir, superuser, &db).await?;
        let query = async |sql: &str, params: &[&(dyn ToSql + Sync)]| {
            c.query(sql, params).await.map_err(pgclient::query_err(&db))
        };
        for row in query(FUNCTION_SETTINGS, &[]).await? {
            let holder = Holder::Function(db.clone(), row.get(0));
            catalogs.settings.push(setting(holder, row.get(1)));
        }
        if !classes.is_empty() {
            for row in query(OPCLASS_INDEXES, &[&classes]).await? {
                catalogs
                    .opclass_indexes
                    .push((db.clone(), row.get(0), row.get(1), row.get(2)));
            }
        }
    }
    Ok(catalogs)
}

/// A catalog's `name=value` entry of `holder`, the name lowercased.
fn setting(holder: Holder, entry: String) -> (Holder, String, String) {
    let (name, value) = entry.split_once('=').unwrap_or((&entry, ""));
    (holder, name.to_ascii_lowercase(), value.to_owned())
}

/// Every `ALTER DATABASE/ROLE … SET`: database, role, `name=value`.
const SETTINGS: &str = "\
SELECT d.datname::text, r.rolname::text, s.setting
FROM pg_db_role_setting c
LEFT JOIN pg_database d ON d.oid = c.setdatabase
LEFT JOIN pg_authid r ON r.oid = c.setrole
CROSS JOIN LATERAL unnest(c.setconfig) AS s(setting)
ORDER BY 1, 2, 3";

/// Every function's `SET` clause in this database: signature, `name=value`.
const FUNCTION_SETTINGS: &str = "\
SELECT p.oid::regprocedure::text, s.setting
FROM pg_proc p
CROSS JOIN LATERAL unnest(p.proconfig) AS s(setting)
ORDER BY 1, 2";

const ENCODINGS: &str =
    "SELECT datname::text, pg_encoding_to_char(encoding)::text FROM pg_database ORDER BY 1";

/// chr() rather than escapes: the session may read literals without backslash escapes.
const LINE_BREAKS: &str = "\
SELECT kind, name FROM (
  SELECT 'database' AS kind, datname::text AS name FROM pg_database
  UNION ALL SELECT 'role', rolname::text FROM pg_authid
  UNION ALL SELECT 'tablespace', spcname::text FROM pg_tablespace) n
WHERE strpos(name, chr(10)) > 0 OR strpos(name, chr(13)) > 0
ORDER BY 1, 2";

/// The indexes of this database using one of $1's `extension.class` operator classes.
const OPCLASS_INDEXES: &str = "\
SELECT DISTINCT i.indexrelid::regclass::text, e.extname::text, o.opcname::text
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indclass::oid[]) AS k(oid)
JOIN pg_opclass o ON o.oid = k.oid
JOIN pg_depend d ON d.classid = 'pg_opclass'::regclass AND d.objid = o.oid AND d.deptype = 'e'
JOIN pg_extension e ON e.oid = d.refobjid
WHERE e.extname || '.' || o.opcname = ANY($1)
ORDER BY 1, 2, 3";

#[cfg(test)]
mod tests {
    use super::*;

    fn places(uses: &[Use]) -> Vec<&str> {
        uses.iter().map(|u| u.place.as_str()).collect()
    }

    #[test]
    fn radius_lines_are_found_by_line() {
        let hba = "# TYPE DATABASE USER ADDRESS METHOD\n\
                   local all all trust\n\
                   host all all 10.0.0.0/8 radius radiusservers=\"a,b\" radiussecrets=x\n\
                   host all all 192.168.1.1 255.255.255.255 radius radiusservers=a radiussecrets=x\n\
                   host all all db.example.com radius radiusservers=a radiussecrets=x # a comment\n\
                   host all \"radius\" 10.0.0.0/8 md5\n\
                   local app, radius all md5\n\
                   host app, web all 10.0.0.0/8 radius radiusservers=a radiussecrets=x\n\
                   host all all \\\n    10.1.0.0/16 radius radiusservers=a radiussecrets=x\n\
                   # host all all 0.0.0.0/0 radius\n\
                   hostssl all all ::1/128 scram-sha-256\n\
                   include radius.conf\n";
        let uses = in_hba(hba, 18, 19);
        assert_eq!(
            places(&uses),
            [
                "pg_hba.conf line 3",
                "pg_hba.conf line 4",
                "pg_hba.conf line 5",
                "pg_hba.conf line 8",
                "pg_hba.conf line 9"
            ]
        );
        assert!(
            uses[0].to_string().contains(
                "authentication method radius, which PostgreSQL 19 removed; change the line"
            ),
            "{}",
            uses[0]
        );
        assert!(in_hba(hba, 17, 18).is_empty(), "18 still has radius");
        assert!(in_hba(hba, 19, 20).is_empty(), "a 19 cluster has none");
    }

    #[test]
    fn only_a_false_standard_conforming_strings_counts() {
        let text = "standard_conforming_strings = off\n\
                    #standard_conforming_strings = off\n\
                    standard_conforming_strings = 'OFF'  # legacy app\n\
                    Standard_Conforming_Strings = f\n\
                    standard_conforming_strings = on\n\
                    standard_conforming_strings = 'true'\n\
                    standard_conforming_strings = 0\n\
                    standard_conforming_strings = o\n";
        let uses = in_file("postgresql.conf", &config::file_settings(text), 13, 19);
        assert_eq!(
            places(&uses),
            [
                "postgresql.conf line 1",
                "postgresql.conf line 3",
                "postgresql.conf line 4",
                "postgresql.conf line 7"
            ]
        );
        assert!(in_file("postgresql.conf", &config::file_settings(text), 13, 18).is_empty());
        let cmd: Vec<String> = [
            "postgres",
            "-c",
            "standard_conforming_strings=no",
            "--standard-conforming-strings=on",
        ]
        .map(String::from)
        .into();
        let uses = in_command(&cmd, 18, 19);
        assert_eq!(places(&uses), ["the container's command (argument 2)"]);
    }

    #[test]
    fn catalogs_name_the_object_and_the_fix() {
        let catalogs = Catalogs {
            encodings: vec![
                ("app".into(), "UTF8".into()),
                ("Legacy".into(), "MULE_INTERNAL".into()),
            ],
            settings: vec![
                (
                    Holder::Database("app".into()),
                    "escape_string_warning=off".into(),
                ),
                (
                    Holder::Role("web".into()),
                    "standard_conforming_strings=off".into(),
                ),
                (
                    Holder::RoleInDatabase("web".into(), "app".into()),
                    "work_mem=64MB".into(),
                ),
                (Holder::Role("web".into()), "myext.level=3".into()),
                // Kept in catalogs only, and not described by --describe-config.
                (Holder::Role("web".into()), "role=app_owner".into()),
                (
                    Holder::Database("app".into()),
                    "default_transaction_isolation=serializable".into(),
                ),
                (
                    Holder::Function("app".into(), "legacy(text)".into()),
                    "standard_conforming_strings=false".into(),
                ),
            ]
            .into_iter()
            .map(|(holder, entry)| setting(holder, entry))
            .collect(),
            opclass_indexes: vec![
                (
                    "app".into(),
                    "hosts_addr_idx".into(),
                    "btree_gist".into(),
                    "gist_inet_ops".into(),
                ),
                (
                    "app".into(),
                    "hosts_id_idx".into(),
                    "btree_gist".into(),
                    "gist_int4_ops".into(),
                ),
            ],
            line_breaks: vec![("role", "a\nb".into())],
        };
        let lines: Vec<String> = in_catalogs(&catalogs, 18, 19)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "ALTER DATABASE app SET escape_string_warning: PostgreSQL 19 removed the setting escape_string_warning, so pg_upgrade could not restore it; run ALTER DATABASE app RESET escape_string_warning",
                "ALTER ROLE web SET standard_conforming_strings: standard_conforming_strings = off, which PostgreSQL 19 no longer takes; make the application write backslash escapes as E'…' strings, then remove the setting: run ALTER ROLE web RESET standard_conforming_strings",
                "ALTER FUNCTION legacy(text) SET standard_conforming_strings: standard_conforming_strings = false, which PostgreSQL 19 no longer takes; make the application write backslash escapes as E'…' strings, then remove the setting: run ALTER FUNCTION legacy(text) RESET standard_conforming_strings in database app",
                "database \"Legacy\": encoding MULE_INTERNAL, which PostgreSQL 19 removed; dump the database and restore it into one of another encoding (UTF8) before upgrading",
                "index hosts_addr_idx in database app: operator class gist_inet_ops of btree_gist, which pg_upgrade 19 refuses; drop the index and create it again with the built-in operator class inet_ops",
                "role \"a\\nb\": a line break in its name, which pg_upgrade 19 refuses; rename it without the line break (ALTER ROLE … RENAME TO …)",
            ]
        );
        // Up to 18 nothing counts; from 15, a setting 16 removed.
        assert!(in_catalogs(&catalogs, 17, 18).is_empty());
        let old = Catalogs {
            settings: vec![setting(
                Holder::Role("web".into()),
                "force_parallel_mode=on".into(),
            )],
            ..Catalogs::default()
        };
        assert_eq!(
            places(&in_catalogs(&old, 15, 17)),
            ["ALTER ROLE web SET force_parallel_mode"]
        );
        assert!(in_catalogs(&old, 16, 17).is_empty());
    }

    #[test]
    fn false_as_postgres_reads_it() {
        for v in [
            "off", "OFF", "'off'", "of", "f", "fal", "false", "n", "no", "0", " 'No' ",
        ] {
            assert!(is_false(v), "{v}");
        }
        for v in ["on", "o", "true", "yes", "1", "", "''", "offf", "nope"] {
            assert!(!is_false(v), "{v}");
        }
    }
}
