//! A real Compose project (whichever Compose the machine has: v2 `docker compose`, else v1
//! `docker-compose`): upgrade with --new-image, `up -d` before and after editing the file,
//! a re-run that has nothing to do, a rollback refused while a sidecar runs and done with
//! --stop-others after Compose re-created the service, `up -d` after editing back, cleanup.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;

/// The Compose command here: v2's plugin if it answers, else v1.
fn compose_program() -> Vec<&'static str> {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if v2 {
        vec!["docker", "compose"]
    } else {
        vec!["docker-compose"]
    }
}

pub struct Project {
    pub name: String,
    pub file: PathBuf,
    dir: PathBuf,
}

impl Project {
    fn new(image: &str) -> Self {
        let name = unique("compose").replace('-', "");
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let p = Self {
            file: dir.join("docker-compose.yml"),
            name,
            dir,
        };
        p.write(image);
        p
    }

    pub fn write(&self, image: &str) {
        self.write_with(image, &[], "no");
    }

    /// The `db` service on `image` with environment entries `env` (NAME=value) and restart
    /// policy `restart`.
    pub fn write_with(&self, image: &str, env: &[&str], restart: &str) {
        let env: String = env.iter().map(|e| format!("      - {e}\n")).collect();
        std::fs::write(
            &self.file,
            format!(
                "version: \"3.8\"
services:
  db:
    image: {image}
    restart: \"{restart}\"
    environment:
      - POSTGRES_PASSWORD
{env}    healthcheck:
      test: [\"CMD\", \"pg_isready\", \"-q\", \"-h\", \"127.0.0.1\"]
      interval: 1s
      retries: 600
    volumes:
      - data:/var/lib/postgresql/data
    labels:
      org.pgup.test: \"1\"
volumes:
  data:
    labels:
      org.pgup.test: \"1\"
"
            ),
        )
        .unwrap();
    }

    /// Runs Compose on the project (relative to its directory, as an operator would).
    pub fn run(&self, args: &[&str]) {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs Compose on the project; what it printed, whatever its exit.
    pub fn output(&self, args: &[&str]) -> std::process::Output {
        let program = compose_program();
        Command::new(program[0])
            .args(&program[1..])
            .args(["-p", &self.name, "-f", "docker-compose.yml"])
            .args(args)
            .current_dir(&self.dir)
            .env("POSTGRES_PASSWORD", PASSWORD)
            .output()
            .expect("Compose is installed (scripts/setup.sh installs it)")
    }

    /// The containers of the project, running or not, by name.
    pub fn containers(&self) -> Vec<String> {
        let label = format!("label=com.docker.compose.project={}", self.name);
        let mut names: Vec<String> =
            docker(&["ps", "-a", "--filter", &label, "--format", "{{.Names}}"])
                .lines()
                .map(str::to_owned)
                .collect();
        names.sort();
        names
    }

    pub fn volume(&self) -> String {
        format!("{}_data", self.name)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let program = compose_program();
        let _ = Command::new(program[0])
            .args(&program[1..])
            .args(["-p", &self.name, "-f", "docker-compose.yml", "down", "-v"])
            .current_dir(&self.dir)
            .output();
        let _ = docker_output(&["volume", "rm", "-f", &self.volume()]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn inspect(container: &str, format: &str) -> String {
    docker(&["inspect", "--format", format, container])
}

/// Runs `sql` with psql as postgres in container `db`; its unaligned output.
pub fn psql(db: &str, sql: &str) -> String {
    docker(&[
        "exec", "-u", "postgres", db, "psql", "-X", "-qAt", "-c", sql,
    ])
}

pub fn rows(container: &str) -> String {
    psql(
        container,
        "SELECT count(*) || ' ' || current_setting('server_version_num')::int / 10000 FROM t",
    )
}

/// A project whose one `db` container runs the 13 image with a table `t` of 1234 rows; its
/// container's name; what removes the containers pgup keeps of it.
pub fn seeded_project() -> (Project, String, Cleanup) {
    let project = Project::new("pgup/postgres:13");
    project.run(&["up", "-d"]);
    let containers = project.containers();
    assert_eq!(containers.len(), 1, "{containers:?}");
    let db = containers[0].clone();
    let gone = Cleanup(vec![db.clone()], None);
    wait_ready(&db);
    psql(
        &db,
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1234) g",
    );
    (project, db, gone)
}

pub fn entries(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

#[tokio::test]
async fn compose_upgrade_edit_and_rollback() {
    let (project, db, _gone) = seeded_project();
    assert_eq!(rows(&db), "1234 13");
    let file = project.file.display().to_string();

    let status = pgup_json(&["status", "--container", &db]);
    assert!(
        status["compose"]
            .as_str()
            .unwrap_or_default()
            .contains(&file),
        "{status}"
    );
    let check = pgup_json(&[
        "check",
        "--container",
        &db,
        "--to",
        "17",
        "--new-image",
        "pgup/postgres:17",
    ]);
    let warned = items(&check, "compose", "warn");
    assert_mentioned(&warned, &file);

    let up = pgup_json(&upgrade_on(&db, "17", "pgup/postgres:17"));
    let next = up["next"].as_str().unwrap_or_default();
    assert!(
        next.contains(&file) && next.contains("`image: pgup/postgres:17`"),
        "{up}"
    );
    let kept = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("name={db}-pgup-"),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(
        inspect(
            &kept,
            "{{index .Config.Labels \"com.docker.compose.project\"}}"
        ),
        "",
        "the kept container is out of Compose's sight"
    );

    // `up -d` with the file not yet edited leaves the upgraded container alone.
    project.run(&["up", "-d"]);
    assert_eq!(project.containers(), std::slice::from_ref(&db));
    assert_eq!(inspect(&db, "{{.Config.Image}}"), "pgup/postgres:17");
    assert_eq!(inspect(&kept, "{{.State.Running}}"), "false");
    wait_ready(&db);
    assert_eq!(rows(&db), "1234 17");

    // Edited as the report says: Compose re-creates the service on 17, with the data.
    let id = inspect(&db, "{{.Id}}");
    project.write("pgup/postgres:17");
    project.run(&["up", "-d"]);
    assert_ne!(
        inspect(&db, "{{.Id}}"),
        id,
        "Compose re-created the service"
    );
    wait_ready(&db);
    assert_eq!(rows(&db), "1234 17");

    // Run again, the upgrade has nothing to do.
    let again = pgup_json(&upgrade_on(&db, "17", "pgup/postgres:17"));
    assert_eq!(again["changed"], false, "{again}");

    // A sidecar on the same volume: rollback refuses, or stops and restarts it.
    let sidecar = unique("sidecar");
    let _sidecar = Cleanup(vec![sidecar.clone()], None);
    let backup_mount = format!("{}:/backup:ro", project.volume());
    docker(&[
        "run",
        "-d",
        "--name",
        &sidecar,
        "--label",
        "org.pgup.test=1",
        "-v",
        &backup_mount,
        "--entrypoint",
        "sleep",
        "pgup/postgres:13",
        "infinity",
    ]);
    pgup(&["rollback", "--container", &db, "--yes"])
        .assert_refused(&format!("container {sidecar} is running on it"));
    assert_eq!(
        inspect(&db, "{{.Config.Image}}"),
        "pgup/postgres:17",
        "nothing changed"
    );
    let back = pgup_json(&["rollback", "--container", &db, "--yes", "--stop-others"]);
    assert!(
        back["note"]
            .as_str()
            .unwrap_or_default()
            .contains("`image: pgup/postgres:13` again"),
        "{back}"
    );
    assert_eq!(
        inspect(&sidecar, "{{.State.Running}}"),
        "true",
        "the sidecar runs again"
    );
    assert_eq!(inspect(&db, "{{.Config.Image}}"), "pgup/postgres:13");
    assert_eq!(
        inspect(
            &db,
            "{{index .Config.Labels \"com.docker.compose.project\"}}"
        ),
        project.name,
        "the old container is Compose's again"
    );
    wait_ready(&db);
    assert_eq!(rows(&db), "1234 13");

    // Edited back: `up -d` serves 13 with the data.
    project.write("pgup/postgres:13");
    project.run(&["up", "-d"]);
    assert_eq!(project.containers(), std::slice::from_ref(&db));
    wait_ready(&db);
    assert_eq!(rows(&db), "1234 13");

    // Cleanup leaves nothing of pgup's beside the cluster.
    pgup_json(&["cleanup", "--container", &db, "--yes"]);
    let root = PathBuf::from(docker(&[
        "volume",
        "inspect",
        "--format",
        "{{.Mountpoint}}",
        &project.volume(),
    ]));
    assert_eq!(entries(&root, "upgrade_backup_"), Vec::<String>::new());
    assert_eq!(entries(&root.join(".pgup/logs"), ""), Vec::<String>::new());
    assert_eq!(rows(&db), "1234 13");
}

/// pgup killed while it moves a container's Compose labels (the copy made, the original not
/// yet replaced): in the upgrade (hiding the kept container's) the re-run finishes it, and in
/// the rollback (giving them back) the re-run finishes that; Compose sees one container
/// throughout, on the right image, with the data.
#[tokio::test]
async fn killed_while_moving_compose_labels() {
    let (project, db, _gone) = seeded_project();
    let killed_at = |args: &[&str]| {
        let r = run(Command::new(env!("CARGO_BIN_EXE_pgup"))
            .args(args)
            .env("PGUP_KILL_AT", "relabel-copied"));
        assert_eq!(r.code, -1, "killed: {}{}", r.stdout, r.stderr);
    };
    let upgrade = upgrade_on(&db, "17", "pgup/postgres:17");
    killed_at(&upgrade);
    let finished = pgup(&upgrade);
    assert_eq!(finished.code, 0, "{}", finished.stderr);
    assert!(finished.stderr.contains("resuming"), "{}", finished.stderr);
    assert_eq!(project.containers(), std::slice::from_ref(&db));
    wait_ready(&db);
    assert_eq!(rows(&db), "1234 17");

    let rollback = ["rollback", "--container", &db, "--yes"];
    killed_at(&rollback);
    let finished = pgup(&rollback);
    assert_eq!(finished.code, 0, "{}", finished.stderr);
    assert_eq!(project.containers(), std::slice::from_ref(&db));
    assert_eq!(inspect(&db, "{{.Config.Image}}"), "pgup/postgres:13");
    wait_ready(&db);
    assert_eq!(rows(&db), "1234 13");
    project.run(&["up", "-d"]);
    assert_eq!(project.containers(), std::slice::from_ref(&db));
    assert_eq!(rows(&db), "1234 13");
}
