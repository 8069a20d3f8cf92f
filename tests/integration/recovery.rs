//! `pgup rollback`, `pgup cleanup`, and upgrades that are killed, interrupted, starved of
//! disk or raced: every path ends with the data intact and no stray containers.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const NEW_IMAGE: &str = "pgup/postgres:17";

fn upgrade_cmd(container: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgup"));
    cmd.args(upgrade_on(container, "17", NEW_IMAGE));
    cmd
}

/// pgup's temporary containers working on `data`: after any ending there must be none.
fn strays(data: &Path) -> String {
    let label = format!("label=org.pgup.data={}", data.display());
    docker(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"])
}

fn backup_dir(root: &Path) -> std::path::PathBuf {
    std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.is_dir()
                && p.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with("upgrade_backup_")
        })
        .expect("a backup")
}

#[tokio::test]
async fn rollback_after_writes_restores_the_exact_old_cluster() {
    rollback_after_writes("pgup/postgres:13", "17").await;
}

#[tokio::test]
async fn rollback_from_19_restores_the_exact_18_cluster() {
    rollback_after_writes("pgup/postgres:18", "19").await;
}

/// A server of `image` upgraded to `to`, written to, then rolled back: the old cluster byte
/// for byte, the old data, and a second rollback that does nothing.
async fn rollback_after_writes(image: &'static str, to: &str) {
    let mut s = Server::start(ServerSpec::new(image)).await;
    s.seed("postgres").await;
    let before = s.content().await;
    let root = s.mount_root();
    // PGDATA: the mount root up to 17, a directory below it from 18 on.
    let status = pgup_json(&["status", "--container", &s.name]);
    let data = std::path::PathBuf::from(status["data_dir"].as_str().unwrap());
    let new_image = format!("pgup/postgres:{to}");
    pgup_json(&upgrade_on(&s.name, to, &new_image));
    s.refresh_port();
    // Writes on the new server, then it stops: its checkpoint moves.
    let c = s.client("postgres").await;
    c.batch_execute(&format!(
        "INSERT INTO items (name) VALUES ('written on {to}')"
    ))
    .await
    .unwrap();
    s.stop();
    let backup = backup_dir(&root);
    let backup_hash = cluster_hash(&backup);
    let root_stat = |p: &Path| docker_free_stat(p);
    let backup_root = root_stat(&backup);

    pgup(&["rollback", "--container", &s.name]).assert_usage_error("pass --yes");
    let r = pgup(&["rollback", "--container", &s.name, "--yes", "--json"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("has run since the upgrade"),
        "{}",
        r.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let old = &image["pgup/postgres:".len()..];
    assert_eq!(report["to"], old.parse::<u32>().unwrap());
    assert_eq!(report["image"], image);
    assert_eq!(
        cluster_hash(&data),
        backup_hash,
        "the restored cluster is the backup, byte for byte"
    );
    assert_eq!(
        root_stat(&data),
        backup_root,
        "PGDATA itself has the backed-up mode, owner and times"
    );

    docker(&["start", &s.name]);
    s.refresh_port();
    assert_eq!(&s.setting("server_version_num").await[..2], old);
    assert_eq!(
        s.content().await,
        before,
        "the old data, without what was written on the new major"
    );
    let status = pgup_json(&["status", "--container", &s.name]);
    assert_eq!(
        status["set_aside"].as_array().unwrap().len(),
        1,
        "the upgraded cluster is set aside"
    );
    // Run again, the finished rollback does nothing, successfully (automation re-runs).
    let again = pgup_json(&["rollback", "--container", &s.name, "--yes"]);
    assert_eq!(again["changed"], false, "{again}");
    assert!(
        again["reason"]
            .as_str()
            .unwrap()
            .contains("was already put back"),
        "{again}"
    );
    assert_eq!(strays(&s.mount_root()), "");
}

/// One field of every entry a cleanup report lists.
fn removed(report: &serde_json::Value, field: &str) -> Vec<String> {
    let entries = report["removed"].as_array().expect("a cleanup report");
    entries
        .iter()
        .map(|r| r[field].as_str().unwrap().to_owned())
        .collect()
}

/// Mode, owner and modification time of a directory itself.
fn docker_free_stat(p: &Path) -> String {
    let out = Command::new("stat")
        .args(["-c", "%a %u %g %.9Y"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn upgrade(container: &str) -> serde_json::Value {
    pgup_json(&upgrade_on(container, "17", NEW_IMAGE))
}

#[tokio::test]
async fn rollback_refusals_change_nothing() {
    let s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    s.stop();
    let root = s.mount_root();
    pgup(&["rollback", "--container", &s.name, "--yes"]).assert_user_error("nothing to roll back");
    // Two upgrades, 13 → 15 → 17: the first backup is of the wrong major for the data now.
    pgup_json(&["upgrade", "--container", &s.name, "--to", "15", "--yes"]);
    let first = backup_dir(&root)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    pgup_json(&["upgrade", "--container", &s.name, "--to", "17", "--yes"]);
    let hash = tree_hash(&root);
    pgup(&[
        "rollback",
        "--container",
        &s.name,
        "--backup",
        &first,
        "--yes",
    ])
    .assert_user_error("does not belong");
    pgup(&[
        "rollback",
        "--container",
        &s.name,
        "--backup",
        "upgrade_backup_nosuch",
        "--yes",
    ])
    .assert_user_error("there is no backup upgrade_backup_nosuch");
    assert_eq!(tree_hash(&root), hash);
}

#[tokio::test]
async fn no_backup_means_no_rollback() {
    let s = Server::start(ServerSpec::new("pgup/postgres:15")).await;
    s.seed("postgres").await;
    let before = s.content().await;
    let r = pgup_json(&[
        "upgrade",
        "--container",
        &s.name,
        "--to",
        "17",
        "--mode",
        "link",
        "--no-backup",
        "--yes",
    ]);
    assert_eq!(r["backup"], serde_json::Value::Null);
    pgup(&["rollback", "--container", &s.name, "--yes"])
        .assert_user_error("--no-backup keeps none");
    let on_17 = s.attach(NEW_IMAGE, &s.mount, &[]).await;
    assert_eq!(on_17.content().await, before);
}

#[tokio::test]
async fn cleanup_keep_older_than_and_dry_run() {
    let mut s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    s.seed("postgres").await;
    upgrade(&s.name);
    s.refresh_port();
    let content = s.content().await;
    let root = s.mount_root();
    // Two older backups, as earlier upgrades would have left.
    for old in [
        "upgrade_backup_20200101T000000Z",
        "upgrade_backup_20250101T000000Z",
    ] {
        let ok = Command::new("cp")
            .arg("-a")
            .arg(root.join("base"))
            .arg(root.join(old))
            .status()
            .unwrap();
        assert!(ok.success());
    }
    // A temporary container whose pgup is gone.
    let stray = unique("stray");
    docker(&[
        "create",
        "--name",
        &stray,
        "--label",
        "org.pgup.role=upgrade",
        "--label",
        "org.pgup.pid=999999",
        "pgup/postgres:17",
    ]);

    // The running 17 server writes to its files: compare them while it is stopped.
    s.stop();
    let hash = tree_hash(&root);
    let dry = pgup_json(&["cleanup", "--container", &s.name, "--dry-run"]);
    assert_eq!(tree_hash(&root), hash, "--dry-run removes nothing");
    docker(&["start", &s.name]);
    s.refresh_port();
    // Serving: its entrypoint's walk over PGDATA (the backups in it too) is over before
    // cleanup removes any of them.
    s.client("postgres").await;
    let kinds = removed(&dry, "kind");
    assert_eq!(
        kinds.iter().filter(|k| *k == "backup").count(),
        3,
        "{kinds:?}"
    );
    assert!(
        kinds.iter().any(|k| k == "container"),
        "the kept old container and the stray: {kinds:?}"
    );
    assert!(docker_output(&["inspect", &stray]).status.success());
    pgup(&["cleanup", "--container", &s.name]).assert_usage_error("pass --yes");

    let keep = pgup_json(&["cleanup", "--container", &s.name, "--keep", "1", "--yes"]);
    let names = removed(&keep, "name");
    assert!(
        names.iter().any(|k| k == "upgrade_backup_20200101T000000Z")
            && names.iter().any(|k| k == "upgrade_backup_20250101T000000Z")
    );
    assert!(keep["freed_bytes"].as_u64().unwrap() > 1_000_000);
    assert!(
        !docker_output(&["inspect", &stray]).status.success(),
        "the stray container is gone"
    );
    assert_eq!(
        pgup_json(&["status", "--container", &s.name])["backups"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let none = pgup_json(&[
        "cleanup",
        "--container",
        &s.name,
        "--older-than",
        "7d",
        "--yes",
    ]);
    assert_eq!(
        none["removed"],
        serde_json::json!([]),
        "the remaining backup is newer than 7 days"
    );

    let all = pgup_json(&["cleanup", "--container", &s.name, "--yes"]);
    let kinds = removed(&all, "kind");
    assert!(
        kinds.iter().any(|k| k == "backup")
            && kinds.iter().any(|k| k == "record")
            && kinds.iter().any(|k| k == "log")
            && kinds.iter().any(|k| k == "kept container"),
        "{kinds:?}"
    );
    let status = pgup_json(&["status", "--container", &s.name]);
    assert_eq!(status["backups"], serde_json::json!([]));
    assert_eq!(
        status["containers"].as_array().unwrap().len(),
        1,
        "the kept old container is removed"
    );
    assert_eq!(s.content().await, content, "the live cluster is untouched");
}

/// An upgrade the crash tests kill: from a server of `image` to `to`, with `more` arguments.
struct Route {
    image: &'static str,
    to: &'static str,
    more: &'static [&'static str],
}

const TO_17: Route = Route {
    image: "pgup/postgres:13",
    to: "17",
    more: &[],
};

/// pg_upgrade --swap uses up the cluster in place: only the backup holds it then.
const SWAP_TO_19: Route = Route {
    image: "pgup/postgres:18",
    to: "19",
    more: &["--transfer", "swap"],
};

async fn crash_at(point: &str) {
    crash_on(&TO_17, point).await;
}

/// Kills pgup at `point` of `path`, then: rollback restores the old cluster; killed again
/// there, the same upgrade command finishes the upgrade. Data compared each time, no strays.
async fn crash_on(path: &Route, point: &str) {
    // With data checksums the WAL guides the backup's second pass: a replication slot keeps
    // it from the first pass on, and no run may leave it behind.
    let mut spec = ServerSpec::new(path.image);
    spec.options = vec!["-e".into(), "POSTGRES_INITDB_ARGS=--data-checksums".into()];
    let mut s = Server::start(spec).await;
    s.seed("postgres").await;
    let before = s.content().await;
    let old = &path.image["pgup/postgres:".len()..];
    let new_image = format!("pgup/postgres:{}", path.to);
    let upgrade_cmd = |name: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgup"));
        cmd.args(upgrade_on(name, path.to, &new_image))
            .args(path.more);
        cmd
    };

    let killed = run(upgrade_cmd(&s.name).env("PGUP_KILL_AT", point));
    assert_eq!(
        killed.code, -1,
        "pgup was killed at {point}: {}{}",
        killed.stdout, killed.stderr
    );
    let status = pgup_json(&["status", "--container", &s.name]);
    let line = status["interrupted"]
        .as_str()
        .unwrap_or_else(|| panic!("status explains the interruption at {point}: {status}"));
    assert!(
        line.contains(&format!("upgrade to {} interrupted while", path.to))
            && line.contains("pgup rollback"),
        "{line}"
    );
    if point == "precopy-midway" {
        assert!(
            line.contains("replication slot pgup_") && line.contains("keeps the old server's WAL"),
            "a slot held on the serving server is named: {line}"
        );
    }

    let r = pgup(&["rollback", "--container", &s.name, "--yes"]);
    assert_eq!(r.code, 0, "rollback after a kill at {point}: {}", r.stderr);
    if docker(&["inspect", "--format", "{{.State.Running}}", &s.name]) != "true" {
        docker(&["start", &s.name]);
    }
    assert_eq!(
        docker(&["inspect", "--format", "{{.Config.Image}}", &s.name]),
        path.image
    );
    runs_with(
        &mut s,
        old,
        &before,
        &format!("the rollback after a kill at {point}"),
    )
    .await;
    assert_eq!(
        slots(&mut s).await,
        Vec::<String>::new(),
        "the rollback after a kill at {point} let the WAL go"
    );

    let killed = run(upgrade_cmd(&s.name).env("PGUP_KILL_AT", point));
    assert_eq!(killed.code, -1, "killed again at {point}");
    let finished = run(&mut upgrade_cmd(&s.name));
    assert_eq!(
        finished.code, 0,
        "re-running the upgrade after a kill at {point}: {}",
        finished.stderr
    );
    let swapped = path.more.contains(&"swap") && point == "pg_upgrade-done";
    let resumed = if swapped {
        "pg_upgrade --swap had begun, which uses up the cluster in place; putting the old cluster back from the backup and starting again"
    } else {
        "resuming"
    };
    assert!(finished.stderr.contains(resumed), "{}", finished.stderr);
    runs_with(
        &mut s,
        path.to,
        &before,
        &format!("the resumed upgrade after a kill at {point}"),
    )
    .await;
    assert_eq!(slots(&mut s).await, Vec::<String>::new());
    assert_eq!(
        pgup_json(&["status", "--container", &s.name])["interrupted"],
        serde_json::Value::Null
    );
}

/// The replication slots of the server.
async fn slots(s: &mut Server) -> Vec<String> {
    let c = s.client("postgres").await;
    c.query("SELECT slot_name::text FROM pg_replication_slots", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The server runs `major` with the data it had before, and nothing pgup started is left.
async fn runs_with(s: &mut Server, major: &str, before: &BTreeMap<String, String>, after: &str) {
    s.refresh_port();
    assert_eq!(
        &s.setting("server_version_num").await[..2],
        major,
        "after {after}"
    );
    assert_eq!(&s.content().await, before, "the data after {after}");
    assert_eq!(
        strays(&s.mount_root()),
        "",
        "no stray containers after {after}"
    );
}

macro_rules! crash_tests {
    ($($name:ident => $point:literal),* $(,)?) => {
        $(#[tokio::test] async fn $name() { crash_at($point).await; })*
    };
}

crash_tests! {
    kill_before_making_the_new_cluster_while_serving => "Preparing",
    kill_after_making_the_new_cluster_while_serving => "prepared",
    kill_before_the_copy_while_serving => "PreCopying",
    kill_in_the_middle_of_the_copy_while_serving => "precopy-midway",
    kill_after_recording_the_stop => "Stopping",
    kill_before_the_checks => "Checking",
    kill_before_the_backup => "BackingUp",
    kill_in_the_middle_of_the_backup => "backup-midway",
    kill_before_the_backup_is_renamed => "backup-complete",
    kill_before_pg_upgrade => "Upgrading",
    kill_while_recording_the_old_cluster => "recording",
    kill_after_pg_upgrade => "pg_upgrade-done",
    kill_before_the_swap => "SwappingOut",
    kill_in_the_middle_of_the_swap => "move-midway",
    kill_halfway_through_the_swap => "SwappingIn",
    kill_before_verification => "Verifying",
    kill_before_recreating_the_container => "Recreating",
}

/// Killed once pg_upgrade --swap has moved the old cluster's directories into the new one:
/// rollback puts the backup back, and the same command starts again from the backup.
#[tokio::test]
async fn kill_after_pg_upgrade_swap() {
    crash_on(&SWAP_TO_19, "pg_upgrade-done").await;
}

#[tokio::test]
async fn kill_before_pg_upgrade_swap() {
    crash_on(&SWAP_TO_19, "recorded").await;
}

/// Writes go on while the backup's first pass copies the running cluster, on a cluster with
/// data checksums: the WAL names every page changed since, hint bits' changes too (each read
/// of the table sets some), and the second pass reads those pages only; the unlogged table,
/// the table re-created and the one truncated each time are compared. The backup is the
/// stopped cluster exactly (entries, modes, owners, times, contents), the slot that kept the
/// WAL is in neither, and every committed row reaches the new major.
#[tokio::test]
async fn writes_during_the_copy_while_serving_reach_the_backup_by_the_wal() {
    let wal_pages = writes_reach_the_backup(
        true,
        "INSERT INTO load (v) SELECT md5(g::text) FROM generate_series(1, 200) g;
         UPDATE load SET v = md5(v) WHERE id % 997 = (extract(epoch FROM now()) * 1000)::bigint % 997;
         SELECT count(*) FROM load WHERE v LIKE 'a%';
         INSERT INTO scratch SELECT g FROM generate_series(1, 100) g;
         TRUNCATE churn; INSERT INTO churn SELECT g FROM generate_series(1, 500) g;
         DROP TABLE IF EXISTS remade; CREATE TABLE remade AS SELECT g FROM generate_series(1, 500) g;
         CREATE INDEX ON remade (g)",
    )
    .await;
    assert!(
        wal_pages.is_some_and(|n| n > 0),
        "the WAL guided the second pass"
    );
}

/// The same without data checksums (nor wal_log_hints): a hint bit's change leaves no WAL, so
/// the second pass compares every file changed since the first began.
#[tokio::test]
async fn writes_during_the_copy_while_serving_reach_the_backup_by_comparing() {
    let wal_pages = writes_reach_the_backup(
        false,
        "INSERT INTO load (v) SELECT md5(g::text) FROM generate_series(1, 200) g;
         UPDATE load SET v = md5(v) WHERE id % 997 = (extract(epoch FROM now()) * 1000)::bigint % 997",
    )
    .await;
    assert_eq!(wal_pages, None, "compared, not guided by the WAL");
}

/// Upgrades a 13 server (with data checksums or not) while `load` runs on it in a loop,
/// inserting 200 rows into table `load` each time; pgup is frozen once the backup is renamed
/// to compare it with the stopped cluster. The pages the WAL named in the second pass.
async fn writes_reach_the_backup(checksums: bool, load: &'static str) -> Option<u64> {
    let mut spec = ServerSpec::new("pgup/postgres:13");
    if checksums {
        spec.options = vec!["-e".into(), "POSTGRES_INITDB_ARGS=--data-checksums".into()];
    }
    let mut s = Server::start(spec).await;
    s.seed("postgres").await;
    let c = s.client("postgres").await;
    c.batch_execute(
        "CREATE TABLE load (id bigserial PRIMARY KEY, v text);
         INSERT INTO load (v) SELECT repeat(md5(g::text), 20) FROM generate_series(1, 100000) g;
         CREATE UNLOGGED TABLE scratch (g int);
         CREATE TABLE churn (g int)",
    )
    .await
    .unwrap();
    // New rows at the end, and old pages all over the table rewritten.
    let writer = write_until_stopped(c, load);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let root = s.mount_root();
    let mut cmd = upgrade_cmd(&s.name);
    cmd.args(["--precopy-rate", "40M", "--json"]);
    // Waited for off the runtime, where the load runs meanwhile.
    let child = tokio::task::spawn_blocking(move || frozen_at(&mut cmd, "Upgrading"))
        .await
        .unwrap();
    let committed = writer.await.unwrap();
    assert!(committed > 0, "the load ran");
    assert_eq!(
        cluster_hash(&backup_dir(&root)),
        cluster_hash(&root),
        "the backup is the stopped cluster, byte for byte"
    );
    for dir in [root.clone(), backup_dir(&root)] {
        let slots = std::fs::read_dir(dir.join("pg_replslot")).unwrap().count();
        assert_eq!(slots, 0, "no replication slot is left in {}", dir.display());
    }
    let _ = Command::new("kill")
        .args(["-CONT", &child.id().to_string()])
        .status();
    let done = finish(child);
    assert_eq!(done.code, 0, "{}", done.stderr);
    let report: serde_json::Value = serde_json::from_str(&done.stdout).unwrap();
    let copy = &report["backup_copy"];
    let (first, second) = (&copy["while_serving"], &copy["while_stopped"]);
    assert!(
        first["written"].as_u64().unwrap() > 50 << 20 && second["written"].as_u64().unwrap() > 0,
        "what was written while serving was copied again: {report}"
    );
    if checksums {
        // The table is about 70 MB, and the load's rows and updates in a few hundred pages
        // of it; the WAL written meanwhile is compared and copied like any file.
        assert!(
            second["kept"].as_u64().unwrap() > 40 << 20,
            "the pages of the table the WAL does not name are kept unread: {report}"
        );
    }
    assert_eq!(
        load_rows(&mut s).await,
        100_000 + 200 * committed,
        "every committed insert"
    );
    second["wal_pages"].as_u64()
}

/// pgup killed while the new cluster's private server runs (rebuilding the text indexes the
/// change from bullseye's glibc to trixie's asks for): the re-run shuts that server down cleanly before removing the dead run's container, so no crash recovery
/// empties the unlogged tables, and the same command finishes the upgrade.
#[tokio::test]
async fn killed_during_verification_the_rerun_keeps_unlogged_tables() {
    let mut s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    s.seed("postgres").await;
    let c = s.client("postgres").await;
    c.batch_execute(
        "CREATE UNLOGGED TABLE scratch AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g",
    )
    .await
    .unwrap();
    drop(c);
    let before = s.content().await;
    let killed = run(upgrade_cmd(&s.name).env("PGUP_KILL_AT", "reindexing"));
    assert_eq!(
        killed.code, -1,
        "killed while reindexing: {}",
        killed.stderr
    );
    let finished = run(&mut upgrade_cmd(&s.name));
    assert_eq!(finished.code, 0, "{}", finished.stderr);
    runs_with(&mut s, "17", &before, "the resumed upgrade").await;
}

/// A server killed (`docker kill`) while it writes: `check` says the upgrade will recover it,
/// and `upgrade` does, with no hand work: every committed row is there on 17.
#[tokio::test]
async fn killed_under_write_load_then_upgraded_with_no_hand_work() {
    let mut s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    s.seed("postgres").await;
    let before = s.content().await;
    let c = s.client("postgres").await;
    c.batch_execute("CREATE TABLE load (id bigserial PRIMARY KEY, v text)")
        .await
        .unwrap();
    let writer = write_until_stopped(
        c,
        "INSERT INTO load (v) SELECT md5(g::text) FROM generate_series(1, 500) g",
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    docker(&["kill", &s.name]);
    let committed = writer.await.unwrap();
    assert!(committed > 0, "the load ran");

    let check = pgup_json(&["check", "--container", &s.name, "--to", "17"]);
    assert_eq!(check["ok"], true, "{check}");
    assert_mentioned(
        &items(&check, "server", "warn"),
        "not shut down cleanly (state: in production); upgrade starts it privately first",
    );
    pgup_json(&upgrade_on(&s.name, "17", NEW_IMAGE));
    let rows = load_rows(&mut s).await;
    assert!(
        rows >= committed * 500 && rows <= (committed + 1) * 500,
        "{rows} rows after the upgrade, {committed} inserts of 500 committed before the kill"
    );
    let mut after = s.content().await;
    after.remove("postgres.public.load");
    assert_eq!(after, before, "the rest is as before");
}

/// A standby cannot be upgraded by pg_upgrade: refused in one line, nothing changed.
#[tokio::test]
async fn a_standby_is_refused() {
    let s = Server::start(ServerSpec::new("pgup/postgres:15")).await;
    s.stop();
    let root = s.mount_root();
    std::fs::write(root.join("standby.signal"), "").unwrap();
    let hash = cluster_hash(&root);
    pgup(&upgrade_on(&s.name, "17", "pgup/postgres:17"))
        .assert_refused("the cluster is a standby (standby.signal in PGDATA)");
    assert_eq!(cluster_hash(&root), hash);
}

/// Runs `sql` (one transaction) again and again until the server stops answering; the
/// number of times it committed.
fn write_until_stopped(
    c: tokio_postgres::Client,
    sql: &'static str,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut committed = 0u64;
        loop {
            match c.batch_execute(sql).await {
                Ok(()) => committed += 1,
                Err(e) => {
                    // What ended it: the stop, as a rule.
                    eprintln!("the load ended after {committed} rounds: {e:?}");
                    break committed;
                }
            }
        }
    })
}

/// The rows of table `load` once the server (re-created by the upgrade) answers.
async fn load_rows(s: &mut Server) -> u64 {
    s.refresh_port();
    let c = s.client("postgres").await;
    let rows: i64 = c
        .query_one("SELECT count(*) FROM load", &[])
        .await
        .unwrap()
        .get(0);
    rows as u64
}

/// Waits until `probe` answers, or panics after `secs`.
fn wait_for(secs: u64, what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(child: Child) -> Run {
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Starts `cmd` (a pgup) with `PGUP_STOP_AT=point` and waits until it is frozen there; send
/// it SIGCONT to go on.
fn frozen_at(cmd: &mut Command, point: &str) -> Child {
    let child = spawn(cmd.env("PGUP_STOP_AT", point));
    let stat = format!("/proc/{}/stat", child.id());
    wait_for(120, &format!("pgup to freeze at {point}"), || {
        std::fs::read_to_string(&stat).is_ok_and(|s| {
            // The state follows the parenthesised command name.
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('T'))
        })
    });
    child
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn temporary_container_killed_mid_upgrade() {
    let mut s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    s.seed("postgres").await;
    let before = s.content().await;
    let data = s.mount_root();
    let child = spawn(&mut upgrade_cmd(&s.name));
    let mut victim = String::new();
    wait_for(120, "the upgrade toolbox to run pg_upgrade", || {
        let mine = format!("label=org.pgup.data={}", data.display());
        let ids = docker(&[
            "ps",
            "-q",
            "--filter",
            "label=org.pgup.role=upgrade",
            "--filter",
            &mine,
        ]);
        ids.lines().any(|id| {
            let top = docker_output(&["top", id]);
            let running = String::from_utf8_lossy(&top.stdout).contains("pg_upgrade");
            if running {
                victim = id.to_owned();
            }
            running
        })
    });
    docker(&["kill", &victim]);
    let r = finish(child);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("nothing was changed"), "{}", r.stderr);
    s.refresh_port();
    assert_eq!(
        &s.setting("server_version_num").await[..2],
        "13",
        "restarted on the old cluster"
    );
    assert_eq!(s.content().await, before);
    assert_eq!(strays(&s.mount_root()), "");
    assert_eq!(
        pgup_json(&["status", "--container", &s.name])["backups"],
        serde_json::json!([]),
        "the backup of the failed run is gone"
    );
    upgrade(&s.name);
    s.refresh_port();
    assert_eq!(s.content().await, before);
}

/// The old cluster stopped uncleanly while an upgrade waits at pg_upgrade (pgup and its
/// toolbox killed while pg_upgrade had the old server up, as in a host crash; here: killed
/// after counting, then the old server run and killed): pg_upgrade refuses such a cluster, so
/// the re-run lets PostgreSQL recover it first.
#[tokio::test]
async fn an_uncleanly_stopped_old_cluster_is_recovered_before_pg_upgrade() {
    let mut s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    s.seed("postgres").await;
    let before = s.content().await;
    let killed = run(upgrade_cmd(&s.name).env("PGUP_KILL_AT", "recorded"));
    assert_eq!(killed.code, -1, "{}", killed.stderr);
    docker(&["start", &s.name]);
    s.refresh_port();
    s.setting("server_version_num").await;
    docker(&["kill", &s.name]);
    let finished = run(&mut upgrade_cmd(&s.name));
    assert_eq!(finished.code, 0, "{}", finished.stderr);
    assert!(
        finished.stderr.contains("recovering the old cluster"),
        "{}",
        finished.stderr
    );
    runs_with(&mut s, "17", &before, "the resumed upgrade").await;
}

/// A stopped cluster of about 90 MB on a 900 MB tmpfs, its container and its tree hash.
fn tmpfs_cluster_to_fill() -> (TmpfsServer, String) {
    let s = TmpfsServer::start("pgup/postgres:15", "900m");
    docker(&[
        "exec",
        &s.name,
        "psql",
        "-q",
        "-U",
        "postgres",
        "-c",
        "CREATE TABLE big AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 400000) g",
    ]);
    docker(&["stop", &s.name]);
    let hash = cluster_hash(&s.dir);
    (s, hash)
}

/// Starts `pgup upgrade` frozen at `point` (see `PGUP_STOP_AT`), lets another process fill
/// the disk, resumes pgup and returns how it ended. The filler is removed before returning.
fn upgrade_while_the_disk_fills_at(name: &str, dir: &Path, point: &str) -> Run {
    let child = frozen_at(
        Command::new(env!("CARGO_BIN_EXE_pgup")).args([
            "upgrade",
            "--container",
            name,
            "--to",
            "17",
            "--yes",
        ]),
        point,
    );
    let filler = dir.join("filler");
    // dd writes until the filesystem is full.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    let _ = Command::new("kill")
        .args(["-CONT", &child.id().to_string()])
        .status();
    let r = finish(child);
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(r.code, 1, "{}", r.stderr);
    let last = r.stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: ")
            && (last.contains("is full") || last.contains("No space left on device")),
        "{}",
        r.stderr
    );
    r
}

/// What a failed upgrade must leave: the cluster as it was, no backup, record or temporary
/// container, the space free again, the container stopped as it was before.
fn nothing_is_left(s: &TmpfsServer, hash: &str, free_before: u64) {
    assert_eq!(cluster_hash(&s.dir), hash, "the original cluster is intact");
    let leftovers: Vec<String> = std::fs::read_dir(&s.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("upgrade_backup_") && !n.ends_with(".log"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new(), "partial files removed");
    let free_after = df_avail(&s.dir);
    assert!(
        free_before - free_after < 1024 * 1024,
        "free space is back: {free_before} before, {free_after} after"
    );
    assert_eq!(
        docker(&["inspect", "--format", "{{.State.Running}}", &s.name]),
        "false",
        "it was stopped before"
    );
    assert_eq!(strays(&s.dir), "");
}

#[tokio::test]
async fn disk_full_during_the_backup() {
    let (s, hash) = tmpfs_cluster_to_fill();
    let free_before = df_avail(&s.dir);
    upgrade_while_the_disk_fills_at(&s.name, &s.dir, "backup-midway");
    nothing_is_left(&s, &hash, free_before);
}

/// The disk fills once the backup is whole: initdb and the old server cannot write. Putting
/// the backup back needs a few bytes for the journal, which another process may take first;
/// then the error says to run `pgup rollback`, which must restore everything once there is
/// room.
#[tokio::test]
async fn disk_full_after_the_backup() {
    let (s, hash) = tmpfs_cluster_to_fill();
    let free_before = df_avail(&s.dir);
    let r = upgrade_while_the_disk_fills_at(&s.name, &s.dir, "Upgrading");
    if r.stderr.contains("pgup rollback") {
        let rolled = pgup(&["rollback", "--container", &s.name, "--yes"]);
        assert_eq!(rolled.code, 0, "{}", rolled.stderr);
    }
    nothing_is_left(&s, &hash, free_before);
}

#[tokio::test]
async fn a_second_upgrade_is_refused_while_one_runs() {
    let mut s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    s.seed("postgres").await;
    let before = s.content().await;
    let journal = s.mount_root().join(".pgup/journal.json");
    let first = spawn(&mut upgrade_cmd(&s.name));
    wait_for(60, "the first upgrade to start", || journal.exists());
    let second = run(&mut upgrade_cmd(&s.name));
    second.assert_user_error("another pgup (pid");
    let first = finish(first);
    assert_eq!(first.code, 0, "{}", first.stderr);
    s.refresh_port();
    assert_eq!(s.content().await, before);
}

#[tokio::test]
async fn sigterm_stops_at_a_safe_point_and_the_run_can_be_finished() {
    let mut s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    s.seed("postgres").await;
    let before = s.content().await;
    let journal = s.mount_root().join(".pgup/journal.json");
    let child = spawn(&mut upgrade_cmd(&s.name));
    let pid = child.id();
    wait_for(60, "the upgrade to record a step past the checks", || {
        std::fs::read_to_string(&journal).is_ok_and(|j| {
            j.contains("\"step\": \"upgrading\"") || j.contains("\"step\": \"backing-up\"")
        })
    });
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let r = finish(child);
    assert_eq!(r.code, 130, "interrupted: {}", r.stderr);
    let last = r.stderr.lines().last().unwrap();
    assert!(
        last.starts_with("error: interrupted: upgrade to 17 interrupted while"),
        "{last}"
    );
    let mine = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=org.pgup.pid={pid}"),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(mine, "", "its temporary containers are removed");
    let finished = run(&mut upgrade_cmd(&s.name));
    assert_eq!(finished.code, 0, "{}", finished.stderr);
    s.refresh_port();
    assert_eq!(s.content().await, before);
}

/// A relation file of the new cluster that is not the old cluster's (here: the same bytes, but
/// a copy, as a transfer that copied instead of linking would leave): the verification, which
/// scans no table, names it and fails the upgrade before the hand-over; the old cluster is
/// put back and serves as before.
#[tokio::test]
async fn a_relation_file_not_the_old_clusters_fails_the_verification() {
    let mut s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    s.seed("postgres").await;
    let before = s.content().await;
    // pg_upgrade to 15 and later keeps file numbers: the new cluster's file has this path.
    let c = s.client("postgres").await;
    let file: String = c
        .query_one("SELECT pg_relation_filepath('items')", &[])
        .await
        .unwrap()
        .get(0);
    let status = pgup_json(&["status", "--container", &s.name]);
    let path = Path::new(status["data_dir"].as_str().unwrap()).join(&file);

    let child = frozen_at(&mut upgrade_cmd(&s.name), "Verifying");
    let copy = path.with_extension("copy");
    let cp = Command::new("cp")
        .arg("-p")
        .arg(&path)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    std::fs::rename(&copy, &path).unwrap();
    let _ = Command::new("kill")
        .args(["-CONT", &child.id().to_string()])
        .status();
    let r = finish(child);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "public.items: file {file} is not the old cluster's"
        )) && r.stderr.contains("put back from the backup"),
        "{}",
        r.stderr
    );
    assert_eq!(
        docker(&["inspect", "--format", "{{.Config.Image}}", &s.name]),
        "pgup/postgres:13"
    );
    runs_with(&mut s, "13", &before, "a failed verification").await;
    let status = pgup_json(&["status", "--container", &s.name]);
    assert!(status["interrupted"].is_null(), "{status}");
}

/// Killed while gathering statistics after the hand-over: the upgrade is done and the new
/// cluster serves; `status` says the statistics are incomplete, and the same command
/// finishes them.
#[tokio::test]
async fn killed_while_gathering_statistics_the_new_cluster_serves() {
    let mut s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    s.seed("postgres").await;
    let before = s.content().await;
    let killed = run(upgrade_cmd(&s.name).env("PGUP_KILL_AT", "statistics"));
    assert_eq!(killed.code, -1, "{}", killed.stderr);
    runs_with(&mut s, "17", &before, "a kill while gathering statistics").await;
    let status = pgup_json(&["status", "--container", &s.name]);
    assert!(status["interrupted"].is_null(), "{status}");
    let pending = status["statistics_pending"].as_str().unwrap_or_default();
    assert!(
        pending.starts_with("incomplete since") && pending.contains("pgup upgrade --to 17"),
        "{status}"
    );

    let finished = run(&mut upgrade_cmd(&s.name));
    assert_eq!(finished.code, 0, "{}", finished.stderr);
    assert!(
        finished
            .stdout
            .contains("already PostgreSQL 17; Statistics gathered in"),
        "{}",
        finished.stdout
    );
    let status = pgup_json(&["status", "--container", &s.name]);
    assert!(status["statistics_pending"].is_null(), "{status}");
    assert!(s.has_statistics("postgres", "items").await);
}
