//! The upgrade inside the container, as an operator who only edits a Compose file runs it:
//! the service switched to pgup/upgrade:latest with PGUP_UPGRADE, then to the standard image;
//! without the setting nothing changes; a failure is undone and not retried by restarts; a
//! container killed at any step ends upgraded after `up -d`; rollback from inside the image.
//! No Docker socket inside: pgup runs PostgreSQL's programs as the container's processes.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::compose::{Project, entries, inspect, psql, rows, seeded_project};

const IMAGE: &str = "pgup/upgrade:latest";

/// pgup/upgrade:latest carrying this very pgup, as images/build.sh assembles it (reused when
/// it already does).
fn upgrade_image() -> &'static str {
    static MADE: OnceLock<()> = OnceLock::new();
    MADE.get_or_init(|| {
        let r = run(std::process::Command::new("bash")
            .args(["images/build.sh", "--upgrade-image"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("PGUP_BIN", env!("CARGO_BIN_EXE_pgup")));
        assert_eq!(r.code, 0, "images/build.sh --upgrade-image: {}", r.stderr);
    });
    IMAGE
}

/// The table's rows and content.
fn content(db: &str) -> String {
    psql(
        db,
        "SELECT count(*) || ' ' || md5(string_agg(g::text, ',' ORDER BY g)) FROM t",
    )
}

/// Where volume `name` keeps its files on this host.
fn mountpoint(name: &str) -> PathBuf {
    PathBuf::from(docker(&[
        "volume",
        "inspect",
        "--format",
        "{{.Mountpoint}}",
        name,
    ]))
}

/// The `db` service on `image` with `env`, brought up.
fn up_on(project: &Project, image: &str, env: &[&str], restart: &str) {
    project.write_with(image, env, restart);
    project.run(&["up", "-d"]);
}

/// Waits until `db` is healthy, then checks it serves the table as `before`, on `major`.
fn serves(project: &Project, db: &str, major: u32, before: &str) {
    wait_healthy(project, db);
    assert_eq!(rows(db), format!("1234 {major}"));
    assert_eq!(content(db), before);
}

fn logs(project: &Project) -> String {
    let out = project.output(&["logs", "--no-color", "db"]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Waits until `check` holds, at most `secs`; panics with the project's log.
fn wait_for(project: &Project, secs: u64, what: &str, check: impl Fn() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("{what} did not happen in {secs} s:\n{}", logs(project));
}

fn wait_healthy(project: &Project, db: &str) {
    wait_for(project, 300, "healthy", || {
        inspect(db, "{{.State.Health.Status}}") == "healthy"
    });
}

#[tokio::test]
async fn compose_switches_to_the_upgrade_image_and_back() {
    let image = upgrade_image();
    let (project, db, _gone) = seeded_project();
    // An index on text (the database's en_US.utf8, bullseye's glibc) and one on ICU.
    psql(
        &db,
        "CREATE TABLE words AS SELECT g AS id, md5(g::text) AS w FROM generate_series(1, 500) g; \
         CREATE INDEX words_w ON words (w); CREATE INDEX words_icu ON words ((w COLLATE \"und-x-icu\"))",
    );
    let before = content(&db);
    project.run(&["stop"]);
    let root = mountpoint(&project.volume());
    let (tree, cluster_13) = (tree_hash(&root), cluster_hash(&root));

    // Without the setting: one line, a non-zero exit, the data tree as it was.
    up_on(&project, image, &[], "no");
    wait_for(&project, 60, "the exit", || {
        inspect(&db, "{{.State.Status}}") == "exited"
    });
    assert_eq!(inspect(&db, "{{.State.ExitCode}}"), "3");
    let log = logs(&project);
    assert!(
        log.contains("is PostgreSQL 13 and this image runs PostgreSQL 17: set PGUP_UPGRADE=yes"),
        "{log}"
    );
    assert_eq!(tree_hash(&root), tree, "nothing changed");

    // With it: upgraded, healthy, and the done line in the log.
    up_on(&project, image, &["PGUP_UPGRADE=yes", "PGUP_TO=17"], "no");
    serves(&project, &db, 17, &before);
    let log = logs(&project);
    assert!(
        log.contains("PostgreSQL upgraded from 13 to 17; the old cluster is kept in /var/lib/postgresql/data/upgrade_backup_")
            && log.contains("remove PGUP_UPGRADE and run the standard 17 image"),
        "{log}"
    );
    // Without Docker in the container, the image's record says 13 came from bullseye.
    assert!(
        log.contains("index(es) on text rebuilt (glibc 2.31 → glibc 2.41, ICU 67.1 → ICU 76.1)"),
        "{log}"
    );

    // The standard image serves the same data.
    up_on(&project, "pgup/postgres:17", &[], "no");
    serves(&project, &db, 17, &before);

    // Back from inside the image, with no host CLI: the 13 cluster byte for byte.
    project.run(&["stop"]);
    let mount = format!("{}:/var/lib/postgresql/data", project.volume());
    let inside = |args: &[&str]| {
        let data = ["--data-dir", "/var/lib/postgresql/data", "--json"];
        let out = docker_output(
            &[
                &[
                    "run",
                    "--rm",
                    "--network",
                    "none",
                    "--label",
                    "org.pgup.test=1",
                ],
                &["-v", &mount, image, "pgup"][..],
                args,
                &data,
            ]
            .concat(),
        );
        assert!(
            out.status.success(),
            "pgup {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let status = inside(&["status"]);
    assert_eq!(status["pg_version"], "17", "{status}");
    inside(&["rollback", "--yes"]);
    assert_eq!(cluster_hash(&root), cluster_13);
    let status = inside(&["status"]);
    assert_eq!(status["pg_version"], "13", "{status}");
    inside(&["cleanup", "--yes"]);
    assert_eq!(cluster_hash(&root), cluster_13);
    assert!(
        entries(&root.join(".pgup"), "upgraded-").is_empty(),
        "cleanup removed the upgraded cluster set aside"
    );
    up_on(&project, "pgup/postgres:13", &[], "no");
    serves(&project, &db, 13, &before);
}

/// An upgrade pg_upgrade refuses (a reg* type in a table) under `restart: unless-stopped`:
/// tried once, undone, and the restarts that follow refuse in one line without touching the
/// data.
#[tokio::test]
async fn a_failed_upgrade_is_undone_and_not_retried_by_restarts() {
    let image = upgrade_image();
    let (project, db, _gone) = seeded_project();
    psql(&db, "CREATE TABLE bad AS SELECT 'now'::regproc AS r");
    project.run(&["stop"]);
    let root = mountpoint(&project.volume());
    let cluster_13 = cluster_hash(&root);

    up_on(
        &project,
        image,
        &["PGUP_UPGRADE=yes", "PGUP_TO=17"],
        "unless-stopped",
    );
    wait_for(&project, 300, "two restarts", || {
        inspect(&db, "{{.RestartCount}}")
            .parse::<u32>()
            .is_ok_and(|n| n >= 2)
    });
    project.run(&["stop"]);
    let log = logs(&project);
    assert_eq!(
        log.matches("pgup: upgrading").count(),
        1,
        "one attempt only:\n{log}"
    );
    assert!(log.contains("this container will not try again"), "{log}");
    assert!(log.contains("failed in this container at"), "{log}");
    assert_eq!(cluster_hash(&root), cluster_13, "the old cluster as it was");
}

/// The container killed (`docker kill`) while pgup is stopped at a step of the upgrade, then
/// `up -d` with the setting still on: it ends upgraded, with the data.
#[tokio::test]
async fn killed_at_each_step_then_up_finishes_the_upgrade() {
    let image = upgrade_image();
    for point in ["backup-midway", "SwappingIn", "verifying"] {
        let (project, db, _gone) = seeded_project();
        let before = content(&db);
        project.run(&["stop"]);
        let stop_at = format!("PGUP_STOP_AT={point}");
        up_on(
            &project,
            image,
            &["PGUP_UPGRADE=yes", "PGUP_TO=17", &stop_at],
            "no",
        );
        wait_for(&project, 300, &format!("the stop at {point}"), || {
            docker(&["top", &db, "-o", "pid,stat,args"])
                .lines()
                .any(|l| {
                    let fields: Vec<&str> = l.split_whitespace().collect();
                    fields.len() > 2
                        && fields[1].starts_with('T')
                        && l.contains("pgup --json upgrade")
                })
        });
        docker(&["kill", &db]);
        up_on(&project, image, &["PGUP_UPGRADE=yes", "PGUP_TO=17"], "no");
        wait_healthy(&project, &db);
        assert_eq!(rows(&db), "1234 17", "killed at {point}");
        assert_eq!(content(&db), before, "killed at {point}");
        assert!(logs(&project).contains("resuming"), "killed at {point}");
    }
}

/// Any toolbox pgup assembles upgrades in the container: 17 to 18 with the 18 image's own
/// PGDATA rules (the data in the layout before 18's), PGUP_AUTO_UPGRADE and PGUP_ONESHOT in a
/// plain `docker run`; the standard 18 image then serves the data where it is. The 17 server
/// was killed: pgup, which cannot see other containers, refuses until told none runs.
#[tokio::test]
async fn an_assembled_toolbox_upgrades_17_to_18_in_a_one_shot_container() {
    one_shot(
        17,
        18,
        "/var/lib/postgresql/data",
        "/var/lib/postgresql/data",
    )
    .await;
}

/// 18 to 19 in 18's layout: the 19 toolbox finds `18/docker` beside its own empty PGDATA.
#[tokio::test]
async fn an_assembled_toolbox_upgrades_18_to_19_in_a_one_shot_container() {
    one_shot(
        18,
        19,
        "/var/lib/postgresql",
        "/var/lib/postgresql/18/docker",
    )
    .await;
}

/// A server of `old` on a volume at `mount`, killed, then upgraded to `new` by a toolbox
/// assembled from the two images in a one-shot container; `new`'s image then serves the
/// data where it is, at `pgdata`.
async fn one_shot(old: u32, new: u32, mount: &str, pgdata: &str) {
    let (old_image, new_image) = (
        format!("pgup/postgres:{old}"),
        format!("pgup/postgres:{new}"),
    );
    let made = assemble(&old_image, &new_image, &["--json"]);
    assert_eq!(made.code, 0, "{}", made.stderr);
    let toolbox: serde_json::Value = serde_json::from_str(&made.stdout).unwrap();
    let toolbox = toolbox["image"].as_str().unwrap().to_owned();
    let (name, volume) = (unique("ic"), unique("ic-data"));
    let _gone = Cleanup(vec![name.clone()], Some(volume.clone()));
    let mount = format!("{volume}:{mount}");
    run_db(&name, &mount, &old_image, &[]);
    wait_ready(&name);
    psql(
        &name,
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1234) g",
    );
    let before = content(&name);
    docker(&["rm", "-f", &name]);

    let root = mountpoint(&volume);
    let tree = tree_hash(&root);
    let upgrade = |more: &[&str]| {
        let fixed = ["run", "--rm", "--label", "org.pgup.test=1"];
        let last = [
            "-e",
            "PGUP_AUTO_UPGRADE=yes",
            "-e",
            "PGUP_ONESHOT=yes",
            "-v",
            &mount,
            &toolbox,
        ];
        docker_output(&[&fixed[..], more, &last].concat())
    };
    let refused = upgrade(&[]);
    let line = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{line}");
    assert!(line.contains("PGUP_SERVER_STOPPED=yes"), "{line}");
    assert_eq!(tree_hash(&root), tree, "nothing changed");
    let out = upgrade(&["-e", "PGUP_SERVER_STOPPED=yes"]);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{log}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let volume_root = mount.split_once(':').unwrap().1;
    assert!(
        log.contains(&format!("PostgreSQL upgraded from {old} to {new}; the old cluster is kept in {volume_root}/upgrade_backup_"))
            && !log.contains("remove PGUP_UPGRADE"),
        "{log}"
    );

    run_db(
        &name,
        &mount,
        &new_image,
        &["-e", &format!("PGDATA={pgdata}")],
    );
    wait_ready(&name);
    assert_eq!(rows(&name), format!("1234 {new}"));
    assert_eq!(content(&name), before);
}
