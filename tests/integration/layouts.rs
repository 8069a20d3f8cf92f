//! Clusters that keep data outside PGDATA: a tablespace and a separate WAL directory, each on
//! a volume (or host directory) of its own, as operators lay them out. Upgraded with the
//! cluster, written on the new major, rolled back byte for byte (content hashes of each
//! location), cleaned up; killed at the steps that touch them; refused, changing nothing,
//! where pgup cannot keep them.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

/// A server of `image` whose WAL is in volume `wal` (at /pgwal, in /pgwal/wal) and with
/// tablespace `ts` in volume `tblspc` (at /tblspc, in /tblspc/ts), holding seeded tables,
/// tables in the tablespace, an index there and an unlogged table.
struct Spread {
    s: Server,
    wal: String,
    tblspc: String,
}

impl Spread {
    async fn start(image: &'static str) -> Self {
        let (wal, tblspc) = (unique("wal"), unique("ts"));
        for v in [&wal, &tblspc] {
            docker(&["volume", "create", "--label", "org.pgup.test=1", v]);
        }
        let mut spec = ServerSpec::new(image);
        spec.options = [
            "-e",
            "POSTGRES_INITDB_WALDIR=/pgwal/wal",
            "-v",
            &format!("{wal}:/pgwal"),
            "-v",
            &format!("{tblspc}:/tblspc"),
        ]
        .map(str::to_owned)
        .to_vec();
        let s = Server::start(spec).await;
        docker(&[
            "exec",
            &s.name,
            "sh",
            "-c",
            "mkdir /tblspc/ts && chown postgres: /tblspc/ts",
        ]);
        s.seed("postgres").await;
        let c = s.client("postgres").await;
        // One at a time: CREATE TABLESPACE and CREATE DATABASE refuse a transaction block.
        for statement in [
            "CREATE TABLESPACE ts LOCATION '/tblspc/ts'",
            "CREATE TABLE spaced (id int PRIMARY KEY USING INDEX TABLESPACE ts, v text) TABLESPACE ts",
            "INSERT INTO spaced SELECT g, md5(g::text) FROM generate_series(1, 3000) g",
            "CREATE INDEX spaced_v ON spaced (v) TABLESPACE ts",
            "CREATE UNLOGGED TABLE scratch TABLESPACE ts AS SELECT g FROM generate_series(1, 500) g",
            "CREATE DATABASE elsewhere TABLESPACE ts",
        ] {
            c.batch_execute(statement).await.unwrap();
        }
        let e = s.client("elsewhere").await;
        e.batch_execute("CREATE TABLE t AS SELECT g, g * 2 AS h FROM generate_series(1, 700) g")
            .await
            .unwrap();
        Self { s, wal, tblspc }
    }

    fn wal_dir(&self) -> PathBuf {
        volume_dir(&self.wal).join("wal")
    }

    fn ts_dir(&self) -> PathBuf {
        volume_dir(&self.tblspc).join("ts")
    }

    /// Hashes of PGDATA and of both locations, pgup's own entries left out.
    fn hashes(&self) -> [String; 3] {
        [
            cluster_hash(&self.s.mount_root()),
            cluster_hash(&self.wal_dir()),
            cluster_hash(&self.ts_dir()),
        ]
    }
}

impl Drop for Spread {
    fn drop(&mut self) {
        // The server and the containers pgup kept of it (`<name>-pgup-*`) go before the volumes
        // they mount.
        drop(Cleanup(vec![self.s.name.clone()], None));
        for v in [&self.wal, &self.tblspc] {
            let _ = docker_output(&["volume", "rm", "-f", v]);
        }
    }
}

fn volume_dir(name: &str) -> PathBuf {
    docker(&["volume", "inspect", "--format", "{{.Mountpoint}}", name]).into()
}

fn sql(container: &str, sql: &str) -> String {
    docker(&[
        "exec", "-u", "postgres", container, "psql", "-X", "-qAt", "-c", sql,
    ])
}

/// The whole life of a cluster with a tablespace and a WAL directory: 13 → 17 on a new
/// image, rows written and updated in the tablespace on 17, rollback to exactly the 13
/// cluster (PGDATA, WAL directory and tablespace hashed), cleanup of every part.
#[tokio::test]
async fn tablespace_and_wal_directory_13_to_17_and_back() {
    spread_and_back("pgup/postgres:13", "17", "/var/lib/postgresql/data").await;
}

/// The same from 18 to 19, where pg_upgrade moves the directories (`--swap`), the
/// tablespace's included.
#[tokio::test]
async fn tablespace_and_wal_directory_18_to_19_swapped_and_back() {
    spread_and_back("pgup/postgres:18", "19", "/var/lib/postgresql/18/docker").await;
}

/// A cluster of `image` spread over a tablespace and a WAL directory (PGDATA at `pgdata` in
/// its container), upgraded to `to`, written to, rolled back, cleaned up.
async fn spread_and_back(image: &'static str, to: &str, pgdata: &str) {
    let old = &image["pgup/postgres:".len()..];
    let new_image = format!("pgup/postgres:{to}");
    let mut sp = Spread::start(image).await;
    let before = sp.s.content().await;
    sp.s.stop();
    let hashes = sp.hashes();

    let status = pgup_json(&["status", "--container", &sp.s.name]);
    let outside = status["locations"].to_string();
    assert!(
        outside.contains("pg_wal (/pgwal/wal) on ") && outside.contains("(/tblspc/ts) on "),
        "{status}"
    );
    let check = pgup_json(&["check", "--container", &sp.s.name, "--to", to]);
    let layout = items(&check, "layout", "ok");
    assert_eq!(layout.len(), 2, "{check}");
    assert_mentioned(&layout, "pg_wal (/pgwal/wal) on ");
    assert_mentioned(&layout, "(/tblspc/ts) on ");

    let up = pgup_json(&upgrade_on(&sp.s.name, to, &new_image));
    assert_eq!(up["to"].to_string(), to, "{up}");
    let transfer = if to == "19" { "--swap" } else { "--link" };
    assert_eq!(up["transfer"], transfer[2..], "{up}");
    let backup = up["backup"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    // Each location keeps its part of the backup under the backup's name.
    assert!(sp.wal_dir().join(&backup).is_dir());
    assert!(
        names_in(&sp.ts_dir().join(&backup))
            .iter()
            .all(|n| n.starts_with(&format!("PG_{old}_"))),
        "only the old version directory is backed up"
    );
    let in_ts = names_in(&sp.ts_dir());
    assert!(
        in_ts.iter().any(|n| n.starts_with(&format!("PG_{to}_"))),
        "{in_ts:?}"
    );
    assert!(
        !in_ts.iter().any(|n| n.starts_with(&format!("PG_{old}_"))),
        "the old cluster's link-shared directory is gone from the tablespace: {in_ts:?}"
    );

    sp.s.refresh_port();
    assert_eq!(&sp.s.setting("server_version_num").await[..2], to);
    assert_eq!(sp.s.content().await, before);
    assert_eq!(
        docker(&["exec", &sp.s.name, "readlink", &format!("{pgdata}/pg_wal")]),
        "/pgwal/wal",
        "the new cluster's WAL stays in the WAL directory"
    );
    assert_eq!(
        sql(
            &sp.s.name,
            "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts'"
        ),
        "/tblspc/ts"
    );
    // Writes on the new major reach files pg_upgrade linked or moved: the backup must not
    // share them.
    sql(
        &sp.s.name,
        "UPDATE spaced SET v = 'on the new major' WHERE id % 3 = 0; INSERT INTO spaced SELECT g, 'new' FROM generate_series(3001, 4000) g; CHECKPOINT",
    );

    // Stopped first, so that the rollback leaves it stopped and the files can be compared.
    sp.s.stop();
    let r = pgup(&["rollback", "--container", &sp.s.name, "--yes"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        docker(&["inspect", "--format", "{{.Config.Image}}", &sp.s.name]),
        image
    );
    assert_eq!(
        sp.hashes(),
        hashes,
        "PGDATA, WAL directory and tablespace as before"
    );
    docker(&["start", &sp.s.name]);
    wait_ready(&sp.s.name);
    sp.s.refresh_port();
    assert_eq!(&sp.s.setting("server_version_num").await[..2], old);
    assert_eq!(sp.s.content().await, before);

    let cleaned = pgup_json(&["cleanup", "--container", &sp.s.name, "--yes"]);
    let removed = cleaned["removed"].to_string();
    assert!(removed.contains("in pg_tblspc/"), "{removed}");
    assert!(removed.contains("in pg_wal (/pgwal/wal)"), "{removed}");
    for dir in [sp.wal_dir(), sp.ts_dir()] {
        let left: Vec<String> = names_in(&dir)
            .into_iter()
            .filter(|n| n.starts_with("upgrade_backup_"))
            .collect();
        assert!(left.is_empty(), "{left:?} in {}", dir.display());
        assert_eq!(names_in(&dir.join(".pgup")), Vec::<String>::new());
    }
    assert_eq!(
        sp.s.content().await,
        before,
        "cleanup left the cluster alone"
    );
}

/// A volume target has no container to say where its locations are: refused, naming the flag;
/// with --location (a volume for the WAL, a host directory for the tablespace) it upgrades,
/// and the rollback, which reads them from the record, needs no flag.
#[tokio::test]
async fn a_volume_target_names_its_locations() {
    let (name, data, wal) = (unique("db"), unique("vol"), unique("wal"));
    let ts = std::env::temp_dir().join(unique("ts"));
    std::fs::create_dir_all(&ts).unwrap();
    for v in [&data, &wal] {
        docker(&["volume", "create", "--label", "org.pgup.test=1", v]);
    }
    let _gone = (
        Cleanup(vec![name.clone()], Some(data.clone())),
        Cleanup(vec![], Some(wal.clone())),
    );
    let (wal_mount, ts_mount) = (format!("{wal}:/pgwal"), format!("{}:/tblspc", ts.display()));
    run_db(
        &name,
        &format!("{data}:/var/lib/postgresql/data"),
        "pgup/postgres:15",
        &[
            "-e",
            "POSTGRES_INITDB_WALDIR=/pgwal",
            "-v",
            &wal_mount,
            "-v",
            &ts_mount,
        ],
    );
    wait_ready(&name);
    docker(&["exec", &name, "chown", "postgres:", "/tblspc"]);
    sql(&name, "CREATE TABLESPACE ts LOCATION '/tblspc'");
    sql(
        &name,
        "CREATE TABLE t TABLESPACE ts AS SELECT g, md5(g::text) AS m FROM generate_series(1, 2000) g",
    );
    let count = "SELECT count(*) || ' ' || md5(string_agg(m, ',' ORDER BY g)) FROM t";
    let before = sql(&name, count);
    docker(&["stop", &name]);
    let data_dir = volume_dir(&data);
    let hashes = || {
        [
            cluster_hash(&data_dir),
            cluster_hash(&volume_dir(&wal)),
            cluster_hash(&ts),
        ]
    };
    let was = hashes();

    let volume = ["--volume", data.as_str()];
    let bare = pgup(
        &[
            &["upgrade"],
            &volume[..],
            &["--to", "17", "--yes"],
            &IMAGES_15_TO_17,
        ]
        .concat(),
    );
    bare.assert_refused("--location /pgwal=VOLUME");
    assert_eq!(hashes(), was, "a refusal changes nothing");

    let (wal_flag, ts_flag) = (format!("/pgwal={wal}"), format!("/tblspc={}", ts.display()));
    let located = [
        "--location",
        wal_flag.as_str(),
        "--location",
        ts_flag.as_str(),
    ];
    let up = pgup_json(
        &[
            &["upgrade"],
            &volume[..],
            &located,
            &["--to", "17", "--yes"],
            &IMAGES_15_TO_17,
        ]
        .concat(),
    );
    assert_eq!(up["to"], 17, "{up}");
    // A server of `image` on the same mounts, in place of the container there.
    let server_on = |image: &str| {
        docker(&["rm", &name]);
        run_db(
            &name,
            &format!("{data}:/var/lib/postgresql/data"),
            image,
            &["-v", &wal_mount, "-v", &ts_mount],
        );
        wait_ready(&name);
    };
    server_on("pgup/postgres:17");
    assert_eq!(sql(&name, count), before);
    sql(&name, "UPDATE t SET m = 'changed on 17'; CHECKPOINT");
    docker(&["stop", &name]);

    let r = pgup(&["rollback", "--volume", &data, "--yes"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        hashes(),
        was,
        "PGDATA, WAL volume and tablespace directory as before"
    );
    server_on("pgup/postgres:15");
    assert_eq!(sql(&name, count), before);
    docker(&["rm", "-f", &name]);
    let _ = Command::new("rm").arg("-rf").arg(&ts).status();
}

/// Layouts pgup cannot keep are refused in one line before anything is stopped: a
/// tablespace in the container's own filesystem (lost with the container), and a tablespace
/// already holding a directory of the new major (pg_upgrade would refuse it).
#[tokio::test]
async fn locations_pgup_cannot_keep_are_refused() {
    let sp = Spread::start("pgup/postgres:15").await;
    let name = sp.s.name.clone();
    let leftover = sp.ts_dir().join("PG_17_202406281");
    std::fs::create_dir(&leftover).unwrap();
    let refused = |want: &str| {
        pgup(&upgrade_on(&name, "17", "pgup/postgres:17")).assert_refused(want);
        assert_eq!(
            docker(&["inspect", "--format", "{{.State.Running}}", &name]),
            "true",
            "nothing was stopped"
        );
        for dir in [sp.s.mount_root(), sp.wal_dir(), sp.ts_dir()] {
            let pgup_made: Vec<String> = names_in(&dir)
                .into_iter()
                .filter(|n| n.starts_with("upgrade_backup_") || n == ".pgup")
                .collect();
            assert!(pgup_made.is_empty(), "{pgup_made:?} in {}", dir.display());
        }
    };
    refused("already holds PG_17_202406281, a PostgreSQL 17 directory");
    std::fs::remove_dir(&leftover).unwrap();

    docker(&[
        "exec",
        &name,
        "sh",
        "-c",
        "mkdir /inside && chown postgres: /inside",
    ]);
    sql(&name, "CREATE TABLESPACE inside LOCATION '/inside'");
    refused("points to /inside, in container");
}

/// pgup killed at the steps that touch the locations: the rollback gives back PGDATA, the
/// WAL directory and the tablespace byte for byte, and a re-run after a second kill there
/// finishes the upgrade.
async fn killed_at(point: &str) {
    let mut sp = Spread::start("pgup/postgres:13").await;
    let before = sp.s.content().await;
    sp.s.stop();
    let hashes = sp.hashes();
    let upgrade = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgup"));
        cmd.args(upgrade_on(&sp.s.name, "17", "pgup/postgres:17"));
        cmd
    };
    let killed = run(upgrade().env("PGUP_KILL_AT", point));
    assert_eq!(killed.code, -1, "killed at {point}: {}", killed.stderr);
    let r = pgup(&["rollback", "--container", &sp.s.name, "--yes"]);
    assert_eq!(r.code, 0, "rollback after a kill at {point}: {}", r.stderr);
    assert_eq!(
        sp.hashes(),
        hashes,
        "PGDATA, WAL directory and tablespace after a kill at {point} and a rollback"
    );

    let killed = run(upgrade().env("PGUP_KILL_AT", point));
    assert_eq!(killed.code, -1, "killed again at {point}");
    let finished = run(&mut upgrade());
    assert_eq!(
        finished.code, 0,
        "re-run after a kill at {point}: {}",
        finished.stderr
    );
    sp.s.refresh_port();
    assert_eq!(&sp.s.setting("server_version_num").await[..2], "17");
    assert_eq!(sp.s.content().await, before, "after a kill at {point}");
}

macro_rules! kills {
    ($($name:ident => $point:literal),* $(,)?) => {
        $(#[tokio::test] async fn $name() { killed_at($point).await; })*
    };
}

kills! {
    kill_while_backing_up_the_locations => "backup-midway",
    kill_after_pg_upgrade_made_the_new_tablespace => "pg_upgrade-done",
    kill_while_setting_the_old_locations_aside => "move-midway",
    kill_before_the_new_wal_is_in_place => "SwappingIn",
}
