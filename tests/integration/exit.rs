//! Exit statuses scripts rely on (README, `pgup --help`): 0 done, 1 error, 2 command line,
//! 3 refused by a check with nothing changed, 130 interrupted (in recovery.rs, with a real
//! SIGTERM); with --json a failure is one document with `error` and `kind`.

use std::process::Command;

use crate::common::*;

/// The one JSON document a failing run printed.
fn error_document(r: &Run) -> serde_json::Value {
    serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {}", r.stdout))
}

#[test]
fn a_wrong_command_line_exits_2() {
    // clap's own: no target.
    let r = pgup(&["status"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = pgup(&["status", "--json"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let doc = error_document(&r);
    assert_eq!(doc["kind"], "usage", "{doc}");
    assert!(
        doc["error"].as_str().unwrap().contains("--container"),
        "{doc}"
    );
    // Resolved after parsing: flags that do not go together.
    let r = pgup(&[
        "upgrade",
        "--data-dir",
        "/nonexistent",
        "--to",
        "17",
        "--no-backup",
        "--json",
    ]);
    r.assert_usage_error("add --yes to confirm");
    assert_eq!(error_document(&r)["kind"], "usage");
    // Help is not a failure.
    assert_eq!(pgup(&["--help"]).code, 0);
    assert!(pgup(&["--help"]).stdout.contains("130"));
}

#[test]
fn a_refusing_check_exits_3_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("PG_VERSION"), "15\n").unwrap();
    let data = dir.path().to_str().unwrap();
    let hash = tree_hash(dir.path());
    let r = pgup(&[
        "upgrade",
        "--data-dir",
        data,
        "--to",
        "13",
        "--yes",
        "--json",
    ]);
    r.assert_refused("--to 13 is not newer than the cluster's PostgreSQL 15");
    let doc = error_document(&r);
    assert_eq!(doc["kind"], "refused", "{doc}");
    let check = pgup(&["check", "--data-dir", data, "--to", "13", "--json"]);
    assert_eq!(check.code, 3, "{}", check.stderr);
    assert_eq!(error_document(&check)["ok"], false);
    assert_eq!(tree_hash(dir.path()), hash);
}

#[test]
fn an_error_exits_1() {
    let r = run(Command::new(env!("CARGO_BIN_EXE_pgup"))
        .args(["status", "--container", "db", "--json"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"));
    r.assert_user_error("cannot reach the Docker daemon");
    assert_eq!(error_document(&r)["kind"], "error");
}
