//! Catalog options the new major does not know, and pg_upgrade's own refusals: found by
//! `check`, removed by `upgrade` after the backup (rollback gives the old catalog back byte for
//! byte), and every pg_upgrade failure explained by the PostgreSQL error behind it.

use std::path::Path;

use crate::common::*;

/// An option no PostgreSQL knows, written straight into the catalogs: on every column of
/// `items` and on its primary key index. Returns how many were written.
async fn write_made_up_options(s: &Server) -> i64 {
    let c = s.client("postgres").await;
    c.batch_execute(
        "SET allow_system_table_mods = on;
         UPDATE pg_attribute SET attoptions = array_append(attoptions, 'pgup_made_up=7')
          WHERE attrelid = 'items'::regclass AND attnum > 0 AND NOT attisdropped;
         UPDATE pg_class SET reloptions = array_append(reloptions, 'pgup_index_knob=1')
          WHERE oid = 'items_pkey'::regclass;",
    )
    .await
    .expect("writing made-up options");
    let columns: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'items'::regclass AND 'pgup_made_up=7' = ANY (attoptions)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    columns + 1
}

/// Options every major knows, core and an extension's (bloom's index options).
async fn write_known_options(s: &Server) {
    let c = s.client("postgres").await;
    c.batch_execute(
        "ALTER TABLE items SET (fillfactor = 70, toast.autovacuum_enabled = false);
         ALTER TABLE items ALTER COLUMN name SET (n_distinct = 100);
         CREATE EXTENSION bloom;
         CREATE INDEX items_bloom ON items USING bloom (id, name) WITH (length = 80, col1 = 2);
         CREATE VIEW cheap WITH (security_barrier = true) AS SELECT * FROM items WHERE price < 10;",
    )
    .await
    .expect("writing known options");
}

async fn options_of(c: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    c.query_one(sql, &[])
        .await
        .unwrap()
        .get::<_, Option<Vec<String>>>(0)
        .unwrap_or_default()
}

/// A general rule, not a list: an option the new major does not know is found by asking it,
/// counted, removed after the backup, and the rollback gives back the untouched catalog.
#[tokio::test]
async fn a_made_up_option_is_found_removed_and_rolled_back() {
    let mut s = Server::start(ServerSpec::new("pgup/postgres:15")).await;
    s.seed("postgres").await;
    write_known_options(&s).await;
    let written = write_made_up_options(&s).await;
    let before = s.content().await;
    s.stop();
    let root = s.mount_root();
    let hash = cluster_hash(&root);

    let check = pgup_json(&["check", "--container", &s.name, "--to", "17"]);
    assert_eq!(check["ok"], true, "{check}");
    let warned = items(&check, "options", "warn");
    assert_eq!(warned.len(), 2, "only the made-up options: {warned:?}");
    assert_mentioned(
        &warned,
        &format!(
            "pgup_made_up (column option) stored {} time(s) (postgres {})",
            written - 1,
            written - 1
        ),
    );
    assert_mentioned(
        &warned,
        "pgup_index_knob (btree index option) stored 1 time(s)",
    );
    assert_eq!(
        cluster_hash(&root),
        hash,
        "check changed the data directory"
    );

    let report = pgup_json(&[
        "upgrade",
        "--container",
        &s.name,
        "--to",
        "17",
        "--new-image",
        "pgup/postgres:17",
        "--yes",
    ]);
    assert_eq!(report["options_removed"], written, "{report}");
    assert_eq!(report["options_removed_by_database"]["postgres"], written);
    s.refresh_port();
    assert_eq!(s.content().await, before, "the data after the upgrade");
    let c = s.client("postgres").await;
    let name_options = options_of(
        &c,
        "SELECT attoptions FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'name'",
    )
    .await;
    assert_eq!(name_options, ["n_distinct=100"], "known options are kept");
    assert_eq!(
        options_of(
            &c,
            "SELECT reloptions FROM pg_class WHERE oid = 'items'::regclass"
        )
        .await,
        ["fillfactor=70"]
    );
    assert_eq!(
        options_of(
            &c,
            "SELECT reloptions FROM pg_class WHERE oid = 'items_bloom'::regclass"
        )
        .await,
        ["length=80", "col1=2"]
    );
    assert!(
        options_of(
            &c,
            "SELECT reloptions FROM pg_class WHERE oid = 'items_pkey'::regclass"
        )
        .await
        .is_empty()
    );
    let backup = report["backup"].as_str().unwrap();
    let log = std::fs::read_to_string(format!("{backup}.log")).unwrap();
    assert!(
        log.contains("postgres: items.name: pgup_made_up=7"),
        "the log names each object changed"
    );

    // Stopped first, so that the rollback leaves the old server stopped and its files as
    // they were.
    s.stop();
    let r = pgup(&["rollback", "--container", &s.name, "--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        cluster_hash(&root),
        hash,
        "the rollback restores the untouched catalog, byte for byte"
    );
    docker(&["start", &s.name]);
    s.refresh_port();
    assert_eq!(&s.setting("server_version_num").await[..2], "15");
    let c = s.client("postgres").await;
    let restored = options_of(
        &c,
        "SELECT attoptions FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'name'",
    )
    .await;
    assert_eq!(restored, ["n_distinct=100", "pgup_made_up=7"]);
}

/// A stopped 15 cluster on a volume with made-up options, and what the tests compare with.
struct StoppedWithMadeUp {
    s: Server,
    written: i64,
    before: std::collections::BTreeMap<String, String>,
    vol: String,
    root: std::path::PathBuf,
    hash: String,
}

async fn stopped_with_made_up_options() -> StoppedWithMadeUp {
    let s = Server::start(ServerSpec::new("pgup/postgres:15")).await;
    s.seed("postgres").await;
    let written = write_made_up_options(&s).await;
    let before = s.content().await;
    s.stop();
    let (vol, root) = (s.volume.clone().unwrap(), s.mount_root());
    let hash = cluster_hash(&root);
    StoppedWithMadeUp {
        s,
        written,
        before,
        vol,
        root,
        hash,
    }
}

/// Killed right after the options were removed: the rollback gives back the untouched
/// catalog, and a second kill there followed by the same command finishes the upgrade and
/// still counts what was removed.
#[tokio::test]
async fn killed_after_removing_options() {
    let StoppedWithMadeUp {
        s,
        written,
        before,
        vol,
        root,
        hash,
    } = stopped_with_made_up_options().await;
    let args = upgrade_15_to_17(&vol, &["--yes"]);
    let killed = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pgup"));
        cmd.args(&args).env("PGUP_KILL_AT", "options-removed");
        let r = run(&mut cmd);
        assert_eq!(r.code, -1, "killed: {}{}", r.stdout, r.stderr);
    };
    killed();
    let r = pgup(&["rollback", "--volume", &vol, "--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        cluster_hash(&root),
        hash,
        "the rollback gives back the old catalog"
    );
    killed();
    let report = pgup_json(&args);
    assert_eq!(report["options_removed"], written, "{report}");
    let on_17 = s.attach("pgup/postgres:17", &s.mount, &[]).await;
    assert_eq!(on_17.content().await, before);
}

/// `pgup upgrade` of volume `vol` from the 15 to the 17 image, with `more` arguments.
fn upgrade_15_to_17<'a>(vol: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    [
        &["upgrade", "--volume", vol, "--to", "17"],
        &IMAGES_15_TO_17[..],
        more,
    ]
    .concat()
}

/// Without a backup the options would be removed from the only copy: refused, unless asked.
#[tokio::test]
async fn without_a_backup_removing_options_needs_to_be_asked_for() {
    let StoppedWithMadeUp {
        s,
        written,
        before,
        vol,
        root,
        hash,
    } = stopped_with_made_up_options().await;
    let args = upgrade_15_to_17(&vol, &["--no-backup", "--yes"]);
    pgup(&args).assert_refused_after_steps("add --strip-unknown-options");
    assert_eq!(
        cluster_hash(&root),
        hash,
        "a refused upgrade changed the data"
    );
    let report = pgup_json(&[&args[..], &["--strip-unknown-options"]].concat());
    assert_eq!(report["options_removed"], written, "{report}");
    let on_17 = s.attach("pgup/postgres:17", &s.mount, &[]).await;
    assert_eq!(on_17.content().await, before);
}

/// Objects pg_upgrade refuses, at its checks (a postfix operator, gone in 14) and in its
/// restore (a view on a column 17 removed, which no check catches): each failure says what
/// PostgreSQL said, keeps pg_upgrade's logs, and leaves the cluster as it was.
#[tokio::test]
async fn pg_upgrade_refusals_name_the_cause() {
    let mut s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    s.seed("postgres").await;
    let c = s.client("postgres").await;
    c.batch_execute(
        "CREATE FUNCTION pgup_fact(int8) RETURNS int8 LANGUAGE sql AS 'SELECT $1';
         CREATE OPERATOR !!! (LEFTARG = int8, FUNCTION = pgup_fact);",
    )
    .await
    .unwrap();
    s.stop();
    let root = s.mount_root();
    let hash = cluster_hash(&root);

    let check = pgup(&["check", "--container", &s.name, "--to", "17", "--json"]);
    assert_eq!(check.code, 3, "{}", check.stdout);
    let check: serde_json::Value = serde_json::from_str(&check.stdout).unwrap();
    let failed = items(&check, "pg_upgrade", "fail");
    assert!(
        failed.len() == 1
            && failed[0].contains("postfix operators")
            && failed[0].contains("public.!!!"),
        "{failed:?}"
    );

    let name = s.name.clone();
    let upgrade = ["upgrade", "--container", &name, "--to", "17", "--yes"];
    let r = pgup(&upgrade);
    r.assert_failed_with("postfix operators");
    assert!(r.stderr.contains("public.!!!"), "{}", r.stderr);
    let kept = kept_logs(&r.stderr);
    assert!(
        kept.read_dir().is_ok_and(|mut d| d.next().is_some()),
        "{} holds pg_upgrade's files",
        kept.display()
    );
    assert_eq!(
        cluster_hash(&root),
        hash,
        "the cluster after a refused check"
    );

    docker(&["start", &s.name]);
    s.refresh_port();
    let c = s.client("postgres").await;
    c.batch_execute(
        "DROP OPERATOR !!! (int8, NONE);
         CREATE VIEW checkpoint_load AS SELECT checkpoints_timed FROM pg_stat_bgwriter;",
    )
    .await
    .unwrap();
    s.stop();
    let hash = cluster_hash(&root);
    let r = pgup(&upgrade);
    r.assert_failed_with("ERROR: column pg_stat_bgwriter.checkpoints_timed does not exist");
    assert!(
        r.stderr
            .contains("object: VIEW checkpoint_load; statement: CREATE VIEW"),
        "{}",
        r.stderr
    );
    let kept = kept_logs(&r.stderr);
    let logs = std::fs::read_dir(kept).unwrap().count();
    assert!(logs > 0, "{} is empty", kept.display());
    assert_eq!(
        cluster_hash(&root),
        hash,
        "the cluster after a failed restore"
    );
    let status = pgup_json(&["status", "--container", &s.name]);
    assert_eq!(status["backups"].as_array().unwrap().len(), 0, "{status}");
    assert_eq!(status["interrupted"], serde_json::Value::Null);
    // What the two failed runs kept in .pgup/logs (their logs, pg_upgrade's) is cleanup's to remove.
    let cleaned = pgup_json(&["cleanup", "--container", &s.name, "--yes"]);
    let kinds: Vec<&str> = cleaned["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["log"; 4], "{cleaned}");
    assert_eq!(
        cluster_hash(&root),
        hash,
        "cleanup leaves the cluster alone"
    );
    assert!(!kept.exists());
}

/// The directory a failure message names as holding pg_upgrade's logs.
fn kept_logs(stderr: &str) -> &Path {
    let path = stderr
        .split("its logs are kept in ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no kept logs named: {stderr}"));
    Path::new(path)
}
