//! `pgup status` on every kind of target, and every kind of bad target.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use crate::common::*;

#[tokio::test]
async fn stopped_13_container_matches_du_and_df() {
    let s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    s.seed("postgres").await;
    s.stop();
    let root = s.mount_root();
    let j = pgup_json(&["status", "--container", &s.name]);
    assert_eq!(j["pg_version"], "13");
    let (data, free) = (
        j["data_bytes"].as_u64().unwrap(),
        j["free_bytes"].as_u64().unwrap(),
    );
    assert!(
        within(data, du_bytes(&root), 0.05),
        "data_bytes {data} vs du {}",
        du_bytes(&root)
    );
    assert!(
        within(free, df_avail(&root), 0.05),
        "free_bytes {free} vs df {}",
        df_avail(&root)
    );
    assert_eq!(j["owner"], "999:999");
    assert_eq!(j["server_running"], false);
    assert_eq!(j["postmaster_pid"], false);
    assert_eq!(j["image"], "pgup/postgres:13");
    assert_eq!(j["volume"], s.volume.as_deref().unwrap());
    assert_eq!(j["backups"], serde_json::json!([]));

    let text = pgup(&["status", "--volume", s.volume.as_deref().unwrap()]);
    assert_eq!(text.code, 0, "{}", text.stderr);
    assert!(text.stdout.contains("postgresql   13"), "{}", text.stdout);
    assert!(
        text.stdout.contains("server       stopped"),
        "{}",
        text.stdout
    );
}

#[tokio::test]
async fn running_18_layout_by_container_and_by_volume() {
    let s = Server::start(ServerSpec::new("pgup/postgres:18")).await;
    let by_container = pgup_json(&["status", "--container", &s.name]);
    assert_eq!(by_container["pg_version"], "18");
    assert_eq!(by_container["server_running"], true);
    assert_eq!(by_container["postmaster_pid"], true);
    let data_dir = by_container["data_dir"].as_str().unwrap().to_owned();
    assert!(data_dir.ends_with("/18/docker"), "{data_dir}");

    let vol = s.volume.as_deref().unwrap();
    let by_volume = pgup_json(&["status", "--volume", vol]);
    assert_eq!(
        by_volume["data_dir"],
        data_dir.as_str(),
        "the 18 layout is found below the volume root"
    );
    assert_eq!(
        by_volume["image"], "pgup/postgres:18",
        "the one container using the volume"
    );
    let explicit = pgup_json(&["status", "--volume", vol, "--pgdata-subdir", "18/docker"]);
    assert_eq!(explicit["data_dir"], data_dir.as_str());
    pgup(&["status", "--volume", vol, "--pgdata-subdir", "17/docker"])
        .assert_user_error("holds no PostgreSQL data directory");
}

#[tokio::test]
async fn bind_mount_with_a_backup_inside() {
    let s = Server::start(ServerSpec::new("pgup/postgres:15").bind()).await;
    s.stop();
    let dir = s.bind_dir.clone().unwrap();
    let backup = dir.join("upgrade_backup_20261121T101530Z");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(dir.join("base"))
        .arg(&backup)
        .status()
        .unwrap();
    assert!(cp.success());
    let j = pgup_json(&["status", "--data-dir", dir.to_str().unwrap()]);
    assert_eq!(j["pg_version"], "15");
    assert_eq!(j["data_dir"], dir.to_str().unwrap());
    assert_eq!(j["volume"], serde_json::Value::Null);
    let backups = j["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "{j}");
    assert_eq!(backups[0]["name"], "upgrade_backup_20261121T101530Z");
    assert_eq!(backups[0]["created"], "2026-11-21T10:15:30Z");
    assert_eq!(backups[0]["bytes"].as_u64().unwrap(), du_bytes(&backup));
    let data = j["data_bytes"].as_u64().unwrap();
    assert!(
        within(data, du_bytes(&dir) - du_bytes(&backup), 0.05),
        "the backup is not counted as data"
    );

    let by_container = pgup_json(&["status", "--container", &s.name]);
    assert_eq!(by_container["data_dir"], dir.to_str().unwrap());
    assert_eq!(by_container["backups"], j["backups"]);
}

#[tokio::test]
async fn uid_70_owner() {
    let s = Server::start(ServerSpec::new("pgup/postgres:15-uid70")).await;
    let j = pgup_json(&["status", "--container", &s.name]);
    assert_eq!(j["owner"], "70:70");
    assert_eq!(j["pg_version"], "15");
}

#[test]
fn missing_container_volume_and_directory() {
    pgup(&["status", "--container", &unique("nosuch")]).assert_user_error("no container named");
    pgup(&["status", "--volume", &unique("nosuch")]).assert_user_error("no volume named");
    pgup(&["status", "--data-dir", "/nonexistent/pgup"])
        .assert_user_error("cannot read /nonexistent/pgup");
}

#[test]
fn not_a_data_directory() {
    let empty = unique("empty");
    docker(&["volume", "create", "--label", "org.pgup.test=1", &empty]);
    let r = pgup(&["status", "--volume", &empty]);
    docker(&["volume", "rm", &empty]);
    r.assert_user_error("holds no PostgreSQL data directory");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("PG_VERSION"), "not a version\n").unwrap();
    pgup(&["status", "--data-dir", dir.path().to_str().unwrap()])
        .assert_user_error("does not hold a PostgreSQL major version");
    pgup(&[
        "status",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--pgdata-subdir",
        "../etc",
    ])
    .assert_usage_error("must be a relative path inside the mount");
}

#[test]
fn docker_unreachable() {
    run(Command::new(env!("CARGO_BIN_EXE_pgup"))
        .args(["status", "--container", "db"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"))
    .assert_user_error("cannot reach the Docker daemon");
}

#[test]
fn pgdata_outside_any_mount_or_on_tmpfs() {
    let inside = unique("inside");
    docker(&[
        "create",
        "--name",
        &inside,
        "--label",
        "org.pgup.test=1",
        "-e",
        "PGDATA=/srv/pg",
        "pgup/postgres:17",
    ]);
    let r = pgup(&["status", "--container", &inside]);
    docker(&["rm", "-v", &inside]);
    r.assert_user_error("in its own filesystem");

    let tmpfs = unique("tmpfs");
    docker(&[
        "create",
        "--name",
        &tmpfs,
        "--label",
        "org.pgup.test=1",
        "--tmpfs",
        "/var/lib/postgresql/data",
        "pgup/postgres:13",
    ]);
    let r = pgup(&["status", "--container", &tmpfs]);
    docker(&["rm", "-v", &tmpfs]);
    r.assert_user_error("from a tmpfs mount");
}

/// A user who may use Docker but not read the volume's files (not root on the Docker host).
#[tokio::test]
async fn volume_this_user_cannot_read() {
    let s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    let socket_gid = std::fs::metadata("/var/run/docker.sock")
        .expect("the Docker socket")
        .gid();
    run(Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            &format!("--groups={socket_gid}"),
            "--",
        ])
        .arg(env!("CARGO_BIN_EXE_pgup"))
        .args(["status", "--volume", s.volume.as_deref().unwrap()]))
    .assert_user_error("run pgup on the Docker host, as a user that can read the data");
}
