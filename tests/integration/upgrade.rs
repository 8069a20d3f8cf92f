//! `pgup check` and `pgup upgrade` on real containers with real pg_upgrade: every path we can
//! build, data compared before and after by per-table content hashes.

use std::process::Command;

use crate::common::*;

/// Data with an extension, an index using it, sequences and a second database.
async fn seed_rich(s: &Server) {
    s.seed(&s.user.clone()).await;
    let c = s.client(&s.user).await;
    c.batch_execute(
        "CREATE EXTENSION pg_trgm;
         CREATE INDEX items_name_trgm ON items USING gin (name gin_trgm_ops);
         CREATE SEQUENCE counter START 40; SELECT nextval('counter'), nextval('counter');",
    )
    .await
    .unwrap();
    c.batch_execute("CREATE DATABASE second").await.unwrap();
    let c2 = s.client("second").await;
    c2.batch_execute("CREATE TABLE notes (id int PRIMARY KEY, body text); INSERT INTO notes SELECT g, repeat('x', g % 50) FROM generate_series(1, 300) g;")
        .await
        .unwrap();
}

/// The column options `pg_attver=<n>` that Debian's 17.12 writes on every column it makes
/// (18 does not know them), in every database.
async fn pg_attver_options(s: &Server) -> i64 {
    let c = s.client("postgres").await;
    let mut n = 0;
    for db in column(
        &c,
        "SELECT datname::text FROM pg_database WHERE datallowconn",
    )
    .await
    {
        let c = s.client(&db).await;
        let row = c
            .query_one(
                "SELECT count(*) FROM pg_attribute, unnest(attoptions) o WHERE o LIKE 'pg_attver=%'",
                &[],
            )
            .await
            .unwrap();
        n += row.get::<_, i64>(0);
    }
    n
}

fn upgrade(args: &[&str]) -> serde_json::Value {
    pgup_json(&[&["upgrade"], args, &["--yes"]].concat())
}

/// How a path test upgrades: what an operator picks on the command line.
#[derive(Clone, Copy, PartialEq)]
enum How {
    /// The default: a full-copy backup, its first pass while the server serves.
    Safe,
    /// `--mode link --no-backup`: nothing copied, nothing to go back to.
    LinkWithoutBackup,
    /// `--mode clone` on an XFS with reflinks: a backup that copies no data block.
    CloneOnXfs,
}

impl How {
    fn args(self) -> &'static [&'static str] {
        match self {
            How::Safe => &[],
            How::LinkWithoutBackup => &["--mode", "link", "--no-backup"],
            How::CloneOnXfs => &["--mode", "clone"],
        }
    }

    /// The steps the report lists.
    fn steps(self) -> Vec<&'static str> {
        let mut steps = vec!["preparing"];
        if self == How::Safe {
            steps.push("pre-copying");
        }
        steps.extend(["stopping", "checking"]);
        if self != How::LinkWithoutBackup {
            steps.push("backing-up");
        }
        steps.extend([
            "upgrading",
            "swapping-out",
            "swapping-in",
            "verifying",
            "recreating",
        ]);
        steps
    }
}

/// Upgrades a container of `from` to `to` with --new-image, and checks the data, the
/// version, the settings kept and a password login over TCP.
async fn path_with_new_image(from: &'static str, to: u32, user: &'static str) {
    path_with(from, to, user, How::Safe).await;
}

async fn path_with(from: &'static str, to: u32, user: &'static str, how: How) {
    let mut spec = ServerSpec::new(from);
    spec.user = user;
    if how == How::CloneOnXfs {
        spec.storage = Storage::Xfs;
    }
    let mut s = Server::start(spec).await;
    seed_rich(&s).await;
    let before = s.content().await;
    let checksums = s.setting("data_checksums").await;
    let attver = pg_attver_options(&s).await;
    let new_image = format!("pgup/postgres:{to}");
    let to_text = to.to_string();
    let report = upgrade(
        &[
            [
                "--container",
                &s.name,
                "--to",
                &to_text,
                "--new-image",
                &new_image,
            ]
            .as_slice(),
            how.args(),
        ]
        .concat(),
    );
    assert_eq!(report["to"], to);
    // The downtime from the stop to the re-created container's answer, and each step's time.
    let downtime = report["downtime_s"].as_f64().unwrap_or_default();
    let steps: Vec<(&str, f64)> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["step"].as_str().unwrap(), t["seconds"].as_f64().unwrap()))
        .collect();
    let names: Vec<&str> = steps.iter().map(|(s, _)| *s).collect();
    assert_eq!(names, how.steps(), "{report}");
    // The new cluster was made (and the backup's first pass ran) while the server served.
    let stop = names.iter().position(|n| *n == "stopping").unwrap();
    let while_down: f64 = steps[stop..].iter().map(|(_, t)| t).sum();
    assert!(
        downtime > 0.0 && while_down <= downtime + 0.1,
        "the steps from the stop on fit in the downtime: {report}"
    );
    let transfer = match (how, to) {
        (How::LinkWithoutBackup, _) | (_, ..=17) => "link",
        _ => "swap",
    };
    assert_eq!(report["transfer"], transfer, "{report}");
    let copy = &report["backup_copy"];
    if how == How::Safe {
        // The pass after the stop only compared what changed and kept the rest.
        let bytes = |pass: &str, what: &str| copy[pass][what].as_u64().unwrap();
        assert!(bytes("while_serving", "written") > 1 << 20, "{report}");
        // (Nothing here is old enough to be kept unread: the cluster is seconds old.)
        assert!(
            bytes("while_stopped", "compared") > 0
                && bytes("while_stopped", "written") < bytes("while_serving", "written") / 4,
            "{report}"
        );
    }
    assert_eq!(
        report["options_removed"], attver,
        "the pg_attver options Debian's 17 writes are all removed, and only they: {report}"
    );
    assert!(
        report["server_version_num"].as_i64().unwrap() / 10000 == to as i64,
        "{report}"
    );
    let backups = match how {
        How::LinkWithoutBackup => {
            assert!(report["backup"].is_null() && copy.is_null(), "{report}");
            0
        }
        How::Safe | How::CloneOnXfs => {
            assert!(
                report["backup"]
                    .as_str()
                    .unwrap()
                    .contains("upgrade_backup_"),
                "{report}"
            );
            1
        }
    };

    s.refresh_port();
    assert_eq!(
        s.content().await,
        before,
        "the data is the same after the upgrade"
    );
    let version: i32 = s.setting("server_version_num").await.parse().unwrap();
    assert_eq!(version / 10000, to as i32);
    assert_eq!(
        s.setting("data_checksums").await,
        checksums,
        "checksums as before"
    );
    let c = s.client(user).await;
    let next: i64 = c
        .query_one("SELECT nextval('counter')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 42, "sequences continue where they were");
    // Proven without scanning a table while down: the catalogs compared, and every relation
    // file (tables, indexes, TOAST, forks) the old cluster's.
    let verified = &report["verified"];
    assert_eq!(verified["proof"], "files", "{report}");
    assert!(
        verified["files"].as_u64().unwrap() >= 8 && verified["tables"] == 0,
        "{report}"
    );
    // Statistics once the new major served: the planner knows the tables.
    let statistics = &report["statistics"];
    assert!(
        statistics["after_hand_over"] == true && statistics["complete"] == true,
        "{report}"
    );
    let rule = if to >= 18 {
        "kept what pg_upgrade carried; vacuumdb --all --analyze-in-stages --missing-stats-only, then --analyze-only"
    } else {
        "vacuumdb --all --analyze-in-stages"
    };
    assert_eq!(statistics["rule"], rule, "{report}");
    assert!(s.has_statistics(user, "items").await);
    let trgm: i64 = c
        .query_one("SELECT count(*) FROM items WHERE name % 'item 4242'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(trgm > 0, "the pg_trgm index answers");
    let (installed, default): (String, String) = {
        let r = c
            .query_one(
                "SELECT e.extversion, a.default_version FROM pg_extension e JOIN pg_available_extensions a ON a.name = e.extname WHERE e.extname = 'pg_trgm'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(
        installed, default,
        "the extension was updated to the new major's version"
    );
    let status = pgup_json(&["status", "--container", &s.name]);
    assert_eq!(status["pg_version"], to.to_string());
    assert_eq!(status["image"], new_image.as_str());
    assert_eq!(status["backups"].as_array().unwrap().len(), backups);

    // The backup and the old container kept beside go with cleanup; the new major serves on.
    let cleaned = pgup_json(&["cleanup", "--container", &s.name, "--yes"]);
    let status = pgup_json(&["status", "--container", &s.name]);
    assert_eq!(status["backups"], serde_json::json!([]), "{cleaned}");
    assert_eq!(s.content().await, before, "the data after cleanup");
}

#[tokio::test]
async fn upgrade_13_to_17_custom_superuser() {
    path_with_new_image("pgup/postgres:13", 17, "app").await;
}

#[tokio::test]
async fn upgrade_15_to_18_without_checksums() {
    path_with_new_image("pgup/postgres:15", 18, "postgres").await;
}

#[tokio::test]
async fn upgrade_17_to_18_keeps_the_17_layout() {
    path_with_new_image("pgup/postgres:17", 18, "owner").await;
}

#[tokio::test]
async fn upgrade_13_to_18() {
    path_with_new_image("pgup/postgres:13", 18, "postgres").await;
}

/// 19 is a release candidate from Debian experimental, on sid like 18.
#[tokio::test]
async fn upgrade_13_to_19() {
    path_with_new_image("pgup/postgres:13", 19, "postgres").await;
}

#[tokio::test]
async fn upgrade_15_to_19_link_without_backup() {
    path_with("pgup/postgres:15", 19, "postgres", How::LinkWithoutBackup).await;
}

/// Debian's 17 writes the pg_attver column options that 19 rejects too.
#[tokio::test]
async fn upgrade_17_to_19_clone_on_xfs() {
    path_with("pgup/postgres:17", 19, "owner", How::CloneOnXfs).await;
}

#[tokio::test]
async fn upgrade_18_to_19() {
    path_with_new_image("pgup/postgres:18", 19, "app").await;
}

/// Without --new-image: the container stays stopped, and a server of the new major started
/// on the volume by hand finds the same data.
#[tokio::test]
async fn upgrade_13_to_15_leaves_the_container_stopped() {
    let s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    seed_rich(&s).await;
    let before = s.content().await;
    let report = upgrade(&["--container", &s.name, "--to", "15", "--verify", "counts"]);
    assert!(
        report["next"].as_str().unwrap().contains("stays stopped"),
        "{report}"
    );
    // Rows counted as asked; with no server to hand over to, statistics before the end.
    assert_eq!(report["verified"]["proof"], "counts", "{report}");
    assert_eq!(report["verified"]["rows"], 5000 + 2000 + 300, "{report}");
    assert_eq!(report["statistics"]["after_hand_over"], false, "{report}");
    // No server started: down since the stop, and still.
    assert!(report["serving_at"].is_null(), "{report}");
    assert!(
        report["downtime_s"].as_f64().is_some_and(|d| d > 0.0),
        "{report}"
    );
    assert_eq!(
        docker(&["inspect", "--format", "{{.State.Running}}", &s.name]),
        "false"
    );
    let on_15 = s.attach("pgup/postgres:15", &s.mount, &[]).await;
    assert_eq!(
        on_15.setting("server_version_num").await[..2].to_owned(),
        "15"
    );
    assert_eq!(on_15.content().await, before);
}

#[tokio::test]
async fn upgrade_15_to_17_bind_mount() {
    let s = Server::start(ServerSpec::new("pgup/postgres:15").bind()).await;
    seed_rich(&s).await;
    let before = s.content().await;
    let dir = s.bind_dir.clone().unwrap();
    s.stop();
    upgrade(
        &[
            &["--data-dir", dir.to_str().unwrap(), "--to", "17"],
            &IMAGES_15_TO_17[..],
        ]
        .concat(),
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("PG_VERSION"))
            .unwrap()
            .trim(),
        "17"
    );
    let on_17 = s.attach("pgup/postgres:17", &s.mount, &[]).await;
    assert_eq!(on_17.content().await, before);
}

/// A setting on the container's command line that 17 removed: `check` reports it, the
/// re-created container's command drops it, and the container runs.
#[tokio::test]
async fn a_removed_setting_on_the_command_line_is_dropped() {
    let mut spec = ServerSpec::new("pgup/postgres:13");
    spec.command = &[
        "postgres",
        "-c",
        "stats_temp_directory=/tmp/st",
        "-c",
        "work_mem=8MB",
    ];
    let mut s = Server::start(spec).await;
    s.seed("postgres").await;
    let before = s.content().await;
    // `upgrade_on`'s arguments but the command and --yes.
    let on_17 = &upgrade_on(&s.name, "17", "pgup/postgres:17")[1..7];
    let check = pgup_json(&[&["check"], on_17].concat());
    assert_mentioned(
        &items(&check, "settings", "warn"),
        "the container's command: -c stats_temp_directory=/tmp/st → dropped (not accepted by PostgreSQL 17; removed in PostgreSQL 15) (upgrade adjusts it)",
    );
    let report = upgrade(on_17);
    assert_mentioned(
        &report["settings_changed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect::<Vec<_>>(),
        "-c stats_temp_directory=/tmp/st → dropped",
    );
    assert_eq!(
        docker(&["inspect", "--format", "{{json .Config.Cmd}}", &s.name]),
        r#"["postgres","-c","work_mem=8MB"]"#
    );
    s.refresh_port();
    assert_eq!(s.setting("work_mem").await, "8MB");
    assert_eq!(s.content().await, before);
}

/// The uid-70 variant: pg_upgrade runs as uid 70, and the new cluster belongs to it.
#[tokio::test]
async fn upgrade_uid70_keeps_the_owner() {
    let s = Server::start(ServerSpec::new("pgup/postgres:15-uid70")).await;
    seed_rich(&s).await;
    let before = s.content().await;
    s.stop();
    upgrade(&[
        "--volume",
        s.volume.as_deref().unwrap(),
        "--to",
        "17",
        "--old-image",
        "pgup/postgres:15-uid70",
        "--new-image",
        "pgup/postgres:17",
    ]);
    let root = s.mount_root();
    let status = pgup_json(&["status", "--volume", s.volume.as_deref().unwrap()]);
    assert_eq!(status["owner"], "70:70");
    assert_eq!(status["pg_version"], "17");
    let out = Command::new("find")
        .arg(&root)
        .args(["!", "-uid", "70"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "every file belongs to uid 70"
    );
    // The 17 image's entrypoint takes the data over for its own uid, as the official one does.
    let on_17 = s.attach("pgup/postgres:17", &s.mount, &[]).await;
    assert_eq!(on_17.content().await, before);
}

/// A setting 17 no longer accepts: check reports it, upgrade comments it out, and the new
/// server starts. check leaves the data directory byte-identical.
#[tokio::test]
async fn removed_settings_and_a_check_that_changes_nothing() {
    let s = Server::start(ServerSpec::new("pgup/postgres:13")).await;
    s.seed("postgres").await;
    let c = s.client("postgres").await;
    c.batch_execute("ALTER SYSTEM SET vacuum_defer_cleanup_age = 10")
        .await
        .unwrap();
    s.stop();
    let root = s.mount_root();
    let conf = root.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("stats_temp_directory = 'pg_stat_tmp'\n");
    std::fs::write(&conf, text).unwrap();

    let hash = tree_hash(&root);
    let check = pgup_json(&["check", "--container", &s.name, "--to", "17"]);
    assert_eq!(tree_hash(&root), hash, "check changed the data directory");
    assert_eq!(check["ok"], true, "{check}");
    let warned = items(&check, "settings", "warn");
    assert_mentioned(&warned, "stats_temp_directory");
    assert_mentioned(&warned, "vacuum_defer_cleanup_age");
    for item in check["items"].as_array().unwrap() {
        assert_ne!(item["outcome"], "fail", "{item}");
    }

    let report = upgrade(&[
        "--container",
        &s.name,
        "--to",
        "17",
        "--new-image",
        "pgup/postgres:17",
    ]);
    assert_eq!(
        report["settings_changed"].as_array().unwrap().len(),
        2,
        "{report}"
    );
    let conf = std::fs::read_to_string(root.join("postgresql.conf")).unwrap();
    assert!(
        conf.contains("#stats_temp_directory = 'pg_stat_tmp'"),
        "commented out"
    );
    let mut s = s;
    s.refresh_port();
    assert_eq!(&s.setting("server_version_num").await[..2], "17");
}

/// The re-created container keeps name, environment, published port, restart policy and
/// labels; the old one is kept stopped with no restart policy.
#[tokio::test]
async fn new_image_keeps_the_container_configuration() {
    let name = unique("keep");
    let volume = unique("keepvol");
    let options = [
        "--label",
        "team=db",
        "--label",
        "com.docker.compose.project=app",
        "--label",
        "com.docker.compose.service=db",
        "--label",
        "com.docker.compose.project.config_files=/srv/app/compose.yml",
        "-e",
        "APP_SETTING=kept",
        "--restart",
        "unless-stopped",
        "-p",
        "127.0.0.1::5432",
    ];
    run_db(
        &name,
        &format!("{volume}:/var/lib/postgresql/data"),
        "pgup/postgres:15",
        &options,
    );
    let guard = Cleanup(vec![name.clone()], Some(volume.clone()));
    let port_before = docker(&["port", &name, "5432/tcp"]);
    wait_ready(&name);
    let report = upgrade(&[
        "--container",
        &name,
        "--to",
        "17",
        "--new-image",
        "pgup/postgres:17",
    ]);
    assert_eq!(report["image"], "pgup/postgres:17");
    let hint = report["next"].as_str().unwrap();
    assert!(
        hint.contains("/srv/app/compose.yml") && hint.contains("image: pgup/postgres:17"),
        "{hint}"
    );
    let f = |fmt: &str| docker(&["inspect", "--format", fmt, &name]);
    assert_eq!(f("{{.Config.Image}}"), "pgup/postgres:17");
    let env = f("{{json .Config.Env}}");
    assert!(
        env.contains("APP_SETTING=kept") && env.contains("PGDATA=/var/lib/postgresql/data"),
        "{env}"
    );
    assert!(
        env.contains("/usr/lib/postgresql/17/bin"),
        "PATH comes from the new image: {env}"
    );
    assert_eq!(f("{{.HostConfig.RestartPolicy.Name}}"), "unless-stopped");
    assert_eq!(f("{{index .Config.Labels \"team\"}}"), "db");
    assert_eq!(
        f("{{index .Config.Labels \"org.pgup.pg-major\"}}"),
        "17",
        "image labels from the new image"
    );
    let port_after = docker(&["port", &name, "5432/tcp"]);
    assert_eq!(
        port_before.split(':').next(),
        port_after.split(':').next(),
        "published on the same address"
    );
    let kept = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("name={name}-pgup-"),
        "--format",
        "{{.Names}} {{.State}}",
    ]);
    // Stopped; for a Compose container a stopped copy, its Compose labels hidden.
    assert!(
        kept.ends_with("exited") || kept.ends_with("created"),
        "{kept}"
    );
    let kept_name = kept.split_whitespace().next().unwrap();
    assert_eq!(
        docker(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"com.docker.compose.project\"}}",
            kept_name
        ]),
        ""
    );
    assert_eq!(
        docker(&[
            "inspect",
            "--format",
            "{{.HostConfig.RestartPolicy.Name}}",
            kept_name
        ]),
        "no"
    );
    drop(guard);
}

/// Refusals: each says what is wrong and leaves the data byte-identical.
#[tokio::test]
async fn bad_requests_change_nothing() {
    let s = Server::start(ServerSpec::new("pgup/postgres:15")).await;
    let vol = s.volume.clone().unwrap();
    // A server still holds the data, and pgup was not pointed at its container.
    let r = pgup(&["upgrade", "--volume", &vol, "--to", "17", "--yes"]);
    r.assert_refused("a server still holds the data");
    s.stop();
    let root = s.mount_root();
    let hash = tree_hash(&root);
    let cases: &[(&[&str], &str)] = &[
        (
            &["--to", "13"],
            "--to 13 is not newer than the cluster's PostgreSQL 15",
        ),
        (
            &["--to", "16"],
            "no local upgrade image holds PostgreSQL 15 and 16",
        ),
        (
            &["--to", "17", "--image", "pgup/postgres:17"],
            "has no /usr/lib/postgresql/15/bin",
        ),
        (
            &["--to", "17", "--image", "no/such:image"],
            "image no/such:image is not here",
        ),
        (
            &[
                "--to",
                "17",
                "--mode",
                "link",
                "--old-image",
                "pgup/postgres:15",
                "--new-image",
                "pgup/postgres:17",
            ],
            "--mode link shares the data files",
        ),
        (
            &[
                "--to",
                "17",
                "--mode",
                "clone",
                "--old-image",
                "pgup/postgres:15",
                "--new-image",
                "pgup/postgres:17",
            ],
            "does not support reflinks",
        ),
        (
            &[
                "--to",
                "17",
                "--old-image",
                "pgup/postgres:13",
                "--new-image",
                "pgup/postgres:17",
            ],
            "pgup/postgres:13 runs PostgreSQL 13, but the cluster is PostgreSQL 15",
        ),
        (
            &["--to", "17", "--new-image", "pgup/postgres:18"],
            "runs PostgreSQL 18, not 17",
        ),
    ];
    for (args, message) in cases {
        let r = pgup(&[&["upgrade", "--volume", &vol, "--yes"], *args].concat());
        r.assert_refused(message);
    }
    // Already at the major asked for: nothing to do, which is no failure.
    let same = pgup_json(&["upgrade", "--volume", &vol, "--to", "15", "--yes"]);
    assert_eq!(same["changed"], false, "{same}");
    pgup(&["upgrade", "--volume", &vol, "--to", "17", "--no-backup"])
        .assert_usage_error("add --yes to confirm");
    // Without --yes and without a terminal, nothing is asked and nothing changes.
    pgup(&["upgrade", "--volume", &vol, "--to", "17"]).assert_usage_error("pass --yes");
    let check = pgup(&["check", "--volume", &vol, "--to", "16", "--json"]);
    assert_eq!(check.code, 3);
    assert_eq!(
        tree_hash(&root),
        hash,
        "a refused request changed the data directory"
    );
}

/// Not enough free space for the backup copy: refused with both numbers, nothing changed.
#[tokio::test]
async fn not_enough_space_is_refused() {
    let s = TmpfsServer::start("pgup/postgres:15", "120m");
    docker(&["stop", &s.name]);
    let hash = tree_hash(&s.dir);
    let r = pgup(&["upgrade", "--container", &s.name, "--to", "17", "--yes"]);
    r.assert_refused("needed (a full copy of the data as backup");
    assert!(r.stderr.contains("free on"), "{}", r.stderr);
    assert_eq!(tree_hash(&s.dir), hash);
}

/// `check` on a running server runs pg_upgrade's own checks through that server (here one
/// whose data is in an anonymous volume, the image's VOLUME, as a bare `docker run` makes
/// it): an aclitem column, then a postfix operator, are named while the server keeps
/// running; once they are gone, "ok" from `check` and the upgrade goes through.
#[tokio::test]
async fn check_on_a_running_server_runs_pg_upgrade_s_checks() {
    let name = unique("db");
    let _gone = Cleanup(vec![name.clone()], None);
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        "org.pgup.test=1",
        "-e",
        "POSTGRES_PASSWORD",
        "pgup/postgres:13",
    ]);
    wait_ready(&name);
    // Dropped first: the containers (the kept one made the anonymous volume), then the volume.
    let volume = docker(&["inspect", "--format", "{{(index .Mounts 0).Name}}", &name]);
    let _all = Cleanup(vec![name.clone()], Some(volume));
    let sql = |sql: &str| {
        docker(&[
            "exec", "-u", "postgres", &name, "psql", "-X", "-qAt", "-c", sql,
        ])
    };
    sql("CREATE TABLE acl (id int, a aclitem)");
    sql("CREATE FUNCTION pgup_fact(int8) RETURNS int8 LANGUAGE sql AS 'SELECT $1'");
    sql("CREATE OPERATOR !!! (LEFTARG = int8, FUNCTION = pgup_fact)");
    let check = || {
        let r = pgup(&["check", "--container", &name, "--to", "17", "--json"]);
        let report: serde_json::Value = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", r.stdout, r.stderr));
        assert_eq!(
            docker(&["inspect", "--format", "{{.State.Running}}", &name]),
            "true",
            "check leaves the server running"
        );
        assert_mentioned(&items(&report, "server", "warn"), "running");
        (r.code, report)
    };
    let (code, report) = check();
    assert_eq!(code, 3, "{report}");
    let failed = items(&report, "pg_upgrade", "fail");
    assert_mentioned(&failed, "\"aclitem\" data type");
    assert_mentioned(&failed, "public.acl.a");

    sql("DROP TABLE acl");
    let (code, report) = check();
    assert_eq!(code, 3, "{report}");
    let failed = items(&report, "pg_upgrade", "fail");
    assert_mentioned(&failed, "postfix operators");
    assert_mentioned(&failed, "public.!!!");

    sql("DROP OPERATOR !!! (int8, NONE)");
    sql("CREATE TABLE kept AS SELECT g FROM generate_series(1, 1000) g");
    let (code, report) = check();
    assert_eq!(code, 0, "{report}");
    assert_eq!(items(&report, "pg_upgrade", "ok").len(), 1, "{report}");
    pgup_json(&upgrade_on(&name, "17", "pgup/postgres:17"));
    wait_ready(&name);
    assert_eq!(sql("SELECT count(*) FROM kept"), "1000");
    assert_eq!(&sql("SHOW server_version_num")[..2], "17");
    // The kept old container made the anonymous volume: cleanup removes the container, never
    // the volume the upgraded one runs on.
    let cleaned = pgup_json(&["cleanup", "--container", &name, "--yes"]);
    assert!(
        cleaned["removed"].to_string().contains("kept container"),
        "{cleaned}"
    );
    docker(&["restart", &name]);
    wait_ready(&name);
    assert_eq!(sql("SELECT count(*) FROM kept"), "1000");
}
