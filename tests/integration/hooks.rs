//! The site's hooks (`--hooks DIR`): each phase runs where it belongs with the run in its
//! environment, a hook that fails before the hand-over leaves the old cluster as it was, a
//! failing post-upgrade smoke test puts it back (unless told to keep the new one), and a hook
//! killed midway runs again when the upgrade resumes.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

const OLD_IMAGE: &str = "pgup/postgres:13";
const NEW_IMAGE: &str = "pgup/postgres:17";

/// Every phase, in the order an upgrade and then a rollback run them.
const PHASES: [&str; 8] = [
    "pre-check",
    "pre-backup",
    "post-backup",
    "pre-upgrade",
    "post-upgrade",
    "pre-rollback",
    "post-rollback",
    "end",
];

/// A hook directory whose every phase writes a line to the record file: the phase, the majors,
/// the result and whether the backup it is told of exists. `fail` names phases that then
/// exit 1; the post-upgrade hook first asks the served database, as a smoke test would.
struct Site {
    dir: tempfile::TempDir,
    record: PathBuf,
}

impl Site {
    fn new(fail: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("record.txt");
        let hooks = dir.path().join("hooks");
        std::fs::create_dir(&hooks).unwrap();
        for phase in PHASES {
            let smoke = if phase == "post-upgrade" {
                r#"served=$(docker exec "$PGUP_CONTAINER" psql -U postgres -tAc "SELECT current_setting('server_version_num')::int / 10000 || ' ' || count(*) FROM items")
echo "served $served" >> "$HOOK_RECORD""#
            } else {
                ""
            };
            let exit = if fail.contains(&phase) {
                "echo 'the site says no'; exit 1"
            } else {
                "exit 0"
            };
            let script = format!(
                r#"#!/bin/sh
backup=absent
[ -n "$PGUP_BACKUP_DIR" ] && [ -d "$PGUP_BACKUP_DIR" ] && backup=present
echo "$PGUP_PHASE $PGUP_FROM>$PGUP_TO result=$PGUP_RESULT backup=$backup" >> "$HOOK_RECORD"
{smoke}
echo "output of $PGUP_PHASE"
{exit}
"#
            );
            let path = hooks.join(phase);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Self { dir, record }
    }

    fn hooks(&self) -> PathBuf {
        self.dir.path().join("hooks")
    }

    /// pgup with this site's hooks and record file.
    fn pgup(&self, args: &[&str]) -> Run {
        let hooks = self.hooks();
        run(Command::new(env!("CARGO_BIN_EXE_pgup"))
            .args(args)
            .arg("--hooks")
            .arg(&hooks)
            .env("HOOK_RECORD", &self.record))
    }

    /// The lines written since the last call.
    fn taken(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.record).unwrap_or_default();
        let _ = std::fs::remove_file(&self.record);
        text.lines().map(str::to_owned).collect()
    }
}

fn upgrade(container: &str) -> [&str; 8] {
    upgrade_on(container, "17", NEW_IMAGE)
}

/// The server serves `major` with the data it had before, as the image `image`.
async fn serves(s: &mut Server, major: &str, image: &str, before: &BTreeMap<String, String>) {
    if docker(&["inspect", "--format", "{{.State.Running}}", &s.name]) != "true" {
        panic!("container {} is not running", s.name);
    }
    assert_eq!(
        docker(&["inspect", "--format", "{{.Config.Image}}", &s.name]),
        image
    );
    s.refresh_port();
    assert_eq!(&s.setting("server_version_num").await[..2], major);
    assert_eq!(&s.content().await, before);
}

fn backups(root: &Path) -> Vec<String> {
    names_in(root)
        .into_iter()
        .filter(|n| n.starts_with("upgrade_backup_") && !n.contains('.'))
        .collect()
}

/// `field` of each object in the array `list`.
fn field_of_each<'a>(list: &'a serde_json::Value, field: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|o| o[field].as_str().unwrap())
        .collect()
}

async fn seeded() -> (Server, BTreeMap<String, String>) {
    let s = Server::start(ServerSpec::new(OLD_IMAGE)).await;
    s.seed("postgres").await;
    let before = s.content().await;
    (s, before)
}

#[tokio::test]
async fn each_phase_runs_in_its_place_with_the_run_in_its_environment() {
    let (mut s, before) = seeded().await;
    let site = Site::new(&[]);
    let r = site.pgup(&[&upgrade(&s.name)[..], &["--json"]].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        site.taken(),
        [
            "pre-check 13>17 result= backup=absent",
            "pre-backup 13>17 result= backup=absent",
            "post-backup 13>17 result= backup=present",
            "pre-upgrade 13>17 result= backup=present",
            "post-upgrade 13>17 result= backup=present",
            // The smoke test saw PostgreSQL 17 serve the old rows.
            "served 17 5000",
            "end 13>17 result=upgraded backup=present",
        ]
    );
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        field_of_each(&report["hooks"], "phase"),
        [
            "pre-check",
            "pre-backup",
            "post-backup",
            "pre-upgrade",
            "post-upgrade",
            "end"
        ]
    );
    let steps = field_of_each(&report["steps"], "step");
    assert_eq!(steps.last(), Some(&"post-upgrade"), "its own step, last");
    serves(&mut s, "17", NEW_IMAGE, &before).await;
    // Their output is in the run's log, beside the backup, readable by its owner only.
    let root = s.mount_root();
    let backup = &backups(&root)[0];
    let log = root.join(format!("{backup}.log"));
    let text = std::fs::read_to_string(&log).unwrap();
    for phase in ["pre-check", "pre-upgrade", "post-upgrade", "end"] {
        assert!(
            text.contains(&format!("output of {phase}\nhook {phase}: exit 0 in")),
            "{phase} in the log: {text}"
        );
    }
    assert_eq!(
        std::fs::metadata(&log).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let r = site.pgup(&["rollback", "--container", &s.name, "--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        site.taken(),
        [
            "pre-rollback 13>17 result= backup=present",
            "post-rollback 13>17 result= backup=absent",
            "end 13>17 result=rolled-back backup=absent",
        ]
    );
    serves(&mut s, "13", OLD_IMAGE, &before).await;
    // A re-run with nothing to do runs no hook.
    let r = site.pgup(&["rollback", "--container", &s.name, "--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(site.taken(), Vec::<String>::new());
}

#[tokio::test]
async fn a_hook_that_fails_before_the_hand_over_leaves_the_old_cluster_as_it_was() {
    let (mut s, before) = seeded().await;
    let root = s.mount_root();
    // pre-check refuses before anything is checked; the others fail once the server stopped.
    let r = Site::new(&["pre-check"]).pgup(&upgrade(&s.name));
    r.assert_refused_after_steps("hook pre-check failed (exit code 1): the site says no");
    for phase in ["pre-backup", "post-backup", "pre-upgrade"] {
        let site = Site::new(&[phase]);
        let r = site.pgup(&upgrade(&s.name));
        r.assert_failed_with(&format!(
            "nothing was changed: the old cluster is as it was: hook {phase} failed (exit code 1): the site says no"
        ));
        let record = site.taken();
        assert_eq!(
            record.last().map(String::as_str),
            Some("end 13>17 result=failed backup=absent"),
            "{phase}: {record:?}"
        );
        assert!(!record.iter().any(|l| l.starts_with("post-upgrade")));
        serves(&mut s, "13", OLD_IMAGE, &before).await;
        assert_eq!(backups(&root), Vec::<String>::new(), "after {phase}");
        // The failed run's log keeps what the hook said.
        let logs = root.join(".pgup/logs");
        let said = names_in(&logs).iter().any(|n| {
            std::fs::read_to_string(logs.join(n)).is_ok_and(|t| t.contains("the site says no"))
        });
        assert!(
            said,
            "{phase}: the log of the failed run has the hook's output"
        );
    }
    // A hook that does not end in time is killed, and counts as failed.
    let site = Site::new(&[]);
    let slow = site.hooks().join("pre-upgrade");
    std::fs::write(&slow, "#!/bin/sh\nsleep 600\n").unwrap();
    let r = site.pgup(&[&upgrade(&s.name)[..], &["--hook-timeout", "2s"]].concat());
    r.assert_failed_with("hook pre-upgrade did not end within 2 s (--hook-timeout) and was killed");
    serves(&mut s, "13", OLD_IMAGE, &before).await;
    let sleeping = Command::new("pgrep")
        .args(["-f", "sleep 600"])
        .output()
        .unwrap();
    assert!(
        sleeping.stdout.is_empty(),
        "the hook's process group was killed"
    );
}

#[tokio::test]
async fn a_failing_smoke_test_after_the_hand_over_puts_the_old_cluster_back() {
    let (mut s, before) = seeded().await;
    let site = Site::new(&["post-upgrade"]);
    let r = site.pgup(&upgrade(&s.name));
    r.assert_failed_with("the old cluster was put back from the backup; what was written to PostgreSQL 17 since the hand-over is lost");
    assert!(
        r.stderr.contains("hook post-upgrade failed (exit code 1)"),
        "{}",
        r.stderr
    );
    let record = site.taken();
    assert_eq!(
        record[record.len() - 5..],
        [
            "post-upgrade 13>17 result= backup=present",
            "served 17 5000",
            "pre-rollback 13>17 result= backup=present",
            "post-rollback 13>17 result= backup=absent",
            "end 13>17 result=rolled-back backup=absent",
        ]
    );
    serves(&mut s, "13", OLD_IMAGE, &before).await;

    // Told to keep the new cluster: it stays, and the operator can still go back. The
    // directory comes from PGUP_HOOKS_DIR this time.
    let kept = run(Command::new(env!("CARGO_BIN_EXE_pgup"))
        .args(upgrade(&s.name))
        .arg("--keep-on-hook-failure")
        .env("PGUP_HOOKS_DIR", site.hooks())
        .env("HOOK_RECORD", &site.record));
    kept.assert_failed_with(
        "the new cluster stays, as --keep-on-hook-failure asks (`pgup rollback` goes back)",
    );
    assert_eq!(
        site.taken().last().map(String::as_str),
        Some("end 13>17 result=failed backup=present")
    );
    serves(&mut s, "17", NEW_IMAGE, &before).await;
    let status = pgup_json(&["status", "--container", &s.name]);
    assert_eq!(status["interrupted"], serde_json::Value::Null, "{status}");
    let r = pgup(&["rollback", "--container", &s.name, "--yes"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    serves(&mut s, "13", OLD_IMAGE, &before).await;
}

#[tokio::test]
async fn a_hook_killed_midway_runs_again_when_the_upgrade_resumes() {
    let (mut s, before) = seeded().await;
    let site = Site::new(&[]);
    // The first time each runs, pre-upgrade and post-upgrade kill pgup (their parent) as a
    // crash would, then wait to be killed with it.
    for phase in ["pre-upgrade", "post-upgrade"] {
        let marker = site.dir.path().join(format!("{phase}-killed-once"));
        std::fs::write(
            site.hooks().join(phase),
            format!(
                "#!/bin/sh\necho \"$PGUP_PHASE ran\" >> \"$HOOK_RECORD\"\nif [ ! -e {m} ]; then touch {m}; kill -9 $PPID; sleep 30; echo survived >> \"$HOOK_RECORD\"; fi\n",
                m = marker.display()
            ),
        )
        .unwrap();
    }
    let killed_while = |doing: &str| {
        let status = pgup_json(&["status", "--container", &s.name]);
        let line = status["interrupted"].as_str().expect("interrupted");
        assert!(
            line.contains(&format!("interrupted while {doing}")),
            "{line}"
        );
    };
    let r = site.pgup(&upgrade(&s.name));
    assert_eq!(r.code, -1, "pgup was killed: {}", r.stderr);
    killed_while("running pg_upgrade");
    assert_eq!(
        site.taken().last().map(String::as_str),
        Some("pre-upgrade ran")
    );
    std::thread::sleep(std::time::Duration::from_secs(1));

    // Resumed: the hooks that had ended do not run again, the one killed does; then the
    // post-upgrade hook kills it, once the new server serves.
    let r = site.pgup(&upgrade(&s.name));
    assert_eq!(r.code, -1, "pgup was killed: {}", r.stderr);
    assert!(r.stderr.contains("resuming"), "{}", r.stderr);
    assert_eq!(site.taken(), ["pre-upgrade ran", "post-upgrade ran"]);
    killed_while("running the post-upgrade hook");
    std::thread::sleep(std::time::Duration::from_secs(1));

    // Resumed again: the smoke test runs again, and the report is the served container's.
    let r = site.pgup(&[&upgrade(&s.name)[..], &["--json"]].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        site.taken(),
        [
            "post-upgrade ran",
            "end 13>17 result=upgraded backup=present"
        ],
        "killed with pgup, the hooks did not go on"
    );
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["image"], NEW_IMAGE, "{report}");
    assert_eq!(report["server_version_num"].as_i64().unwrap() / 10000, 17);
    assert_eq!(report["next"], serde_json::Value::Null, "{report}");
    serves(&mut s, "17", NEW_IMAGE, &before).await;
}

#[test]
fn a_hook_directory_that_would_not_run_as_meant_is_refused_before_anything() {
    let site = Site::new(&[]);
    std::fs::rename(site.hooks().join("end"), site.hooks().join("post_upgrade")).unwrap();
    let r = site.pgup(&upgrade("no-such-container"));
    r.assert_usage_error("is not a phase's name (phases: pre-check, pre-backup, post-backup, pre-upgrade, post-upgrade, pre-rollback, post-rollback, end); rename it");
    assert_eq!(site.taken(), Vec::<String>::new(), "no hook ran");
    let r = pgup(&[&upgrade("db")[..], &["--hooks", "/nonexistent/hooks"]].concat());
    r.assert_usage_error("cannot read the hook directory /nonexistent/hooks");
    let r = pgup(&[&upgrade("db")[..], &["--keep-on-hook-failure"]].concat());
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[tokio::test]
async fn a_rollbacks_hooks_may_refuse_it_and_later_failures_are_said() {
    let (mut s, before) = seeded().await;
    // A failing end hook is said; the upgrade's exit status stays its own.
    let site = Site::new(&["end"]);
    let r = site.pgup(&upgrade(&s.name));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("warning: hook end failed (exit code 1): the site says no"),
        "{}",
        r.stderr
    );
    serves(&mut s, "17", NEW_IMAGE, &before).await;

    // pre-rollback refuses: nothing changes.
    let site = Site::new(&["pre-rollback"]);
    let r = site.pgup(&["rollback", "--container", &s.name, "--yes"]);
    r.assert_refused_after_steps(
        "hook pre-rollback failed (exit code 1): the site says no; nothing was changed",
    );
    assert_eq!(
        site.taken(),
        [
            "pre-rollback 13>17 result= backup=present",
            "end 13>17 result=refused backup=present",
        ]
    );
    serves(&mut s, "17", NEW_IMAGE, &before).await;

    // post-rollback fails once the old cluster is back: said, with exit status 1.
    let site = Site::new(&["post-rollback"]);
    let r = site.pgup(&["rollback", "--container", &s.name, "--yes"]);
    r.assert_failed_with("the old cluster is back, but the post-rollback hook failed: hook post-rollback failed (exit code 1): the site says no");
    assert_eq!(
        site.taken().last().map(String::as_str),
        Some("end 13>17 result=rolled-back backup=absent")
    );
    serves(&mut s, "13", OLD_IMAGE, &before).await;
}
