//! What pg_upgrade leaves when it fails, turned into one line that says why: the check that
//! failed and its explanation, the `ERROR:` lines of the log it points at (with the statement
//! behind them), or the first entries of the list of objects it refuses. pg_upgrade (15 and
//! later) keeps its logs in `pg_upgrade_output.d` inside the new data directory after a
//! failure; the upgrade keeps that directory beside its own log.

use std::path::{Path, PathBuf};

/// The directory pg_upgrade keeps its logs and lists in, inside the new data directory.
pub fn output_dir(new_datadir: &Path) -> PathBuf {
    new_datadir.join("pg_upgrade_output.d")
}

/// The files pg_upgrade's output names as holding the cause: "Consult the last few lines of
/// "…/log/pg_upgrade_dump_16384.log"" and "… is in the file:\n    …/postfix_ops.txt".
pub fn referenced_files(output: &str) -> Vec<String> {
    let mut files = Vec::new();
    let mut lines = output.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if let Some(rest) = line.split("last few lines of \"").nth(1) {
            files.extend(rest.split('"').next().map(str::to_owned));
        } else if line.ends_with("in the file:") {
            files.extend(lines.next().map(str::to_owned));
        }
    }
    files.retain(|f| f.starts_with('/'));
    files.dedup();
    files
}

/// One line saying why pg_upgrade failed, from its output and the files it named (path,
/// content); None when they tell nothing more than the output's last lines.
pub fn summarize(output: &str, files: &[(String, String)]) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(check) = failed_check(output) {
        parts.push(check);
    }
    for (path, content) in files {
        let errors = error_lines(content);
        if !errors.is_empty() {
            parts.push(errors.join(" / "));
        } else if path.ends_with(".txt") {
            let listed: Vec<&str> = content
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .take(6)
                .collect();
            if !listed.is_empty() {
                parts.push(format!("listed: {}", listed.join(" / ")));
            }
        }
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// "Checking for user-defined postfix operators    fatal" and the paragraph after it, up to
/// where pg_upgrade names the list.
fn failed_check(output: &str) -> Option<String> {
    let mut lines = output.lines().map(str::trim);
    // 17 and later group the data type checks: "Checking data type usage   failed check:
    // Checking for incompatible "aclitem" data type", then "Data type checks failed:".
    let check = lines.find_map(|l| match l.split_once("failed check: ") {
        Some((_, check)) => Some(check.trim().to_owned()),
        None => l
            .strip_suffix("fatal")
            .map(|c| c.trim_end_matches([' ', '.']).to_owned()),
    })?;
    let why: Vec<&str> = lines
        .skip_while(|l| l.is_empty() || l.ends_with("checks failed:"))
        .take_while(|l| !l.is_empty() && !l.starts_with("A list of") && !l.contains("in the file"))
        .collect();
    Some(if why.is_empty() {
        check
    } else {
        clip(&format!("{check}: {}", why.join(" ")), 400)
    })
}

/// The first distinct ERROR/FATAL/PANIC lines of a log, each with the object pg_restore was
/// restoring ("from TOC entry 200; 1259 16384 VIEW checkpoint_load app") and the
/// statement that failed: the first line after "Command was:" that is not a comment or one of
/// pg_upgrade's own binary_upgrade calls.
fn error_lines(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut found: Vec<String> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(at) = ["ERROR:", "FATAL:", "PANIC:"]
            .iter()
            .filter_map(|w| line.find(w))
            .min()
        else {
            continue;
        };
        let mut text = line[at..].split_whitespace().collect::<Vec<_>>().join(" ");
        let mut about = Vec::new();
        if let Some(object) = lines[i.saturating_sub(3)..i]
            .iter()
            .rev()
            .find_map(|l| toc_object(l))
        {
            about.push(format!("object: {object}"));
        }
        if let Some(statement) = failed_statement(&lines[i + 1..]) {
            about.push(format!("statement: {}", clip(statement, 200)));
        }
        if !about.is_empty() {
            text.push_str(&format!(" ({})", about.join("; ")));
        }
        if !found.contains(&text) {
            found.push(text);
        }
        if found.len() == 3 {
            break;
        }
    }
    found
}

/// "pg_restore: from TOC entry 200; 1259 16384 VIEW v app" (type, name, owner) → "VIEW v".
fn toc_object(line: &str) -> Option<String> {
    let entry = line.split("from TOC entry ").nth(1)?;
    let words: Vec<&str> = entry.split("; ").nth(1)?.split_whitespace().collect();
    (words.len() > 3).then(|| words[2..words.len() - 1].join(" "))
}

fn failed_statement<'a>(after: &[&'a str]) -> Option<&'a str> {
    let start = after
        .iter()
        .take(10)
        .position(|l| l.starts_with("Command was:"))?;
    let first = after[start].trim_start_matches("Command was:").trim();
    std::iter::once(first)
        .chain(after[start + 1..].iter().map(|l| l.trim()))
        .take_while(|l| !l.starts_with("pg_restore:"))
        .find(|l| {
            !l.is_empty()
                && !l.starts_with("--")
                && !l.starts_with("SELECT pg_catalog.binary_upgrade_")
        })
}

fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESTORE_FAILED: &str = "\
Restoring database schemas in the new cluster
  app
*failure*

Consult the last few lines of \"/pgup/vol/.pgup/new/pg_upgrade_output.d/20261202T181500.123/log/pg_upgrade_dump_16384.log\" for
the probable cause of the failure.
Failure, exiting
child process exited abnormally: status 256
Failure, exiting
";

    const DUMP_LOG: &str = "\
command: \"/usr/lib/postgresql/18/bin/pg_restore\" --dbname template1 ...
pg_restore: creating TABLE \"public.items\"
pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 215; 1259 16385 TABLE items app
pg_restore: error: could not execute query: ERROR:  unrecognized parameter \"pg_attver\"
Command was: ALTER TABLE ONLY \"public\".\"items\" ALTER COLUMN \"id\" SET (pg_attver=22117776);
";

    #[test]
    fn a_failed_restore_shows_the_error_and_its_statement() {
        let files = referenced_files(RESTORE_FAILED);
        assert_eq!(
            files,
            [
                "/pgup/vol/.pgup/new/pg_upgrade_output.d/20261202T181500.123/log/pg_upgrade_dump_16384.log"
            ]
        );
        assert_eq!(
            summarize(RESTORE_FAILED, &[(files[0].clone(), DUMP_LOG.into())]).unwrap(),
            "ERROR: unrecognized parameter \"pg_attver\" (object: TABLE items; statement: ALTER TABLE ONLY \"public\".\"items\" ALTER COLUMN \"id\" SET (pg_attver=22117776);)"
        );
    }

    #[test]
    fn a_failed_check_shows_its_explanation_and_the_objects() {
        let output = "\
Checking for user-defined postfix operators                   fatal

Your installation contains user-defined postfix operators, which are not
supported anymore.  Consider dropping the postfix operators and replacing
them with prefix operators or function calls.
A list of user-defined postfix operators is in the file:
    /tmp/pgup-check-new/pg_upgrade_output.d/20261202T1/postfix_ops.txt

Failure, exiting
";
        let files = referenced_files(output);
        assert_eq!(
            files,
            ["/tmp/pgup-check-new/pg_upgrade_output.d/20261202T1/postfix_ops.txt"]
        );
        let list = "In database: app\n  (oid=16390) public.!! (pg_catalog.int8)\n";
        assert_eq!(
            summarize(output, &[(files[0].clone(), list.into())]).unwrap(),
            "Checking for user-defined postfix operators: Your installation contains user-defined postfix operators, which are not supported anymore.  Consider dropping the postfix operators and replacing them with prefix operators or function calls.; listed: In database: app / (oid=16390) public.!! (pg_catalog.int8)"
        );
    }

    #[test]
    fn a_failed_data_type_check_of_17() {
        let output = "\
Checking data type usage                                      failed check: Checking for incompatible \"aclitem\" data type

Data type checks failed: 
Your installation contains the \"aclitem\" data type in user tables.
The internal format of \"aclitem\" changed in PostgreSQL version 16
so this cluster cannot currently be upgraded.  You can drop the
problem columns and restart the upgrade.

A list of the problem columns is in the file:
    /tmp/new/pg_upgrade_output.d/20261203T200604.042/tables_using_aclitem.txt

Failure, exiting
";
        let files = referenced_files(output);
        let list = "In database: postgres\n  public.acl.a\n";
        assert_eq!(
            summarize(output, &[(files[0].clone(), list.into())]).unwrap(),
            "Checking for incompatible \"aclitem\" data type: Your installation contains the \"aclitem\" data type in user tables. The internal format of \"aclitem\" changed in PostgreSQL version 16 so this cluster cannot currently be upgraded.  You can drop the problem columns and restart the upgrade.; listed: In database: postgres / public.acl.a"
        );
    }

    #[test]
    fn the_statement_is_found_behind_pg_upgrade_s_own_calls() {
        let log = "\
pg_restore: while PROCESSING TOC:
pg_restore: from TOC entry 200; 1259 16384 VIEW checkpoint_load postgres
pg_restore: error: could not execute query: ERROR:  column pg_stat_bgwriter.checkpoints_timed does not exist
LINE 18:  SELECT \"pg_stat_bgwriter\".\"checkpoints_timed\"
                 ^
Command was:
-- For binary upgrade, must preserve pg_type oid
SELECT pg_catalog.binary_upgrade_set_next_pg_type_oid('16386'::pg_catalog.oid);

CREATE VIEW \"public\".\"checkpoint_load\" AS
 SELECT \"pg_stat_bgwriter\".\"checkpoints_timed\"
";
        assert_eq!(
            error_lines(log),
            [
                "ERROR: column pg_stat_bgwriter.checkpoints_timed does not exist (object: VIEW checkpoint_load; statement: CREATE VIEW \"public\".\"checkpoint_load\" AS)"
            ]
        );
    }

    #[test]
    fn nothing_telling_gives_none() {
        assert_eq!(summarize("a\nb\n\nc\nd\n", &[]), None);
    }
}
