//! Fixtures for the integration tests: real server containers from the project's images, on
//! fresh volumes or bind-mounted directories, removed on drop even when a test fails.
//! Docker is driven through its CLI, independently of the code under test. A test that needs
//! Docker fails loudly when it is missing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

pub const PASSWORD: &str = "pgup-test-secret";

/// Runs docker with `args`, panicking with its stderr when it fails.
pub fn docker(args: &[&str]) -> String {
    let out = docker_output(args);
    assert!(
        out.status.success(),
        "docker {} failed (is Docker running? these tests need it): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn docker_output(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .env("POSTGRES_PASSWORD", PASSWORD)
        .output()
        .expect("the docker CLI must be installed for these tests")
}

/// Starts a test server container: labelled for cleanup, the password from the environment
/// (never on a command line), `mount` as `-v`, and `options` before the image.
pub fn run_db(name: &str, mount: &str, image: &str, options: &[&str]) {
    run_db_with(name, mount, image, options, &[]);
}

/// [`run_db`] with a command after the image.
pub fn run_db_with(name: &str, mount: &str, image: &str, options: &[&str], command: &[&str]) {
    let mut args = vec![
        "run",
        "-d",
        "--name",
        name,
        "--label",
        "org.pgup.test=1",
        "-e",
        "POSTGRES_PASSWORD",
    ];
    args.extend_from_slice(options);
    args.extend(["-v", mount, image]);
    args.extend_from_slice(command);
    docker(&args);
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "pgup-test-{prefix}-{}-{}-{nanos:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where a server keeps its data.
pub enum Storage {
    /// A fresh named volume mounted at the image's volume path.
    Volume,
    /// A fresh host directory, bind-mounted.
    Bind,
    /// A fresh host directory on its own loop-mounted XFS with reflinks, bind-mounted.
    Xfs,
}

pub struct ServerSpec {
    pub image: &'static str,
    pub storage: Storage,
    pub user: &'static str,
    /// The container's command (default: the image's).
    pub command: &'static [&'static str],
    /// More `docker run` options (more volumes, environment).
    pub options: Vec<String>,
}

impl ServerSpec {
    pub fn new(image: &'static str) -> Self {
        Self {
            image,
            storage: Storage::Volume,
            user: "postgres",
            command: &[],
            options: Vec::new(),
        }
    }
    pub fn bind(mut self) -> Self {
        self.storage = Storage::Bind;
        self
    }
}

pub struct Server {
    pub name: String,
    /// The volume path inside the container.
    pub mount: String,
    /// Whether dropping this server removes its storage (false for a second container on it).
    owns_storage: bool,
    pub volume: Option<String>,
    /// The bind-mounted host directory (removed on drop).
    pub bind_dir: Option<PathBuf>,
    pub user: String,
    pub port: u16,
    /// Unmounted after the container and the directory are gone (fields drop after `drop`).
    _xfs: Option<Xfs>,
}

/// The volume path the image declares (PGDATA up to 17; its parent from 18 on).
fn mount_path(image: &str) -> String {
    docker(&[
        "image",
        "inspect",
        "--format",
        "{{range $k, $v := .Config.Volumes}}{{$k}}{{end}}",
        image,
    ])
}

impl Server {
    /// Starts a server and waits until it accepts password logins over TCP.
    pub async fn start(spec: ServerSpec) -> Self {
        let name = unique("db");
        let mount = mount_path(spec.image);
        let xfs = matches!(spec.storage, Storage::Xfs).then(Xfs::mount);
        let (volume, bind_dir, source) = match spec.storage {
            Storage::Volume => {
                let v = unique("vol");
                docker(&["volume", "create", "--label", "org.pgup.test=1", &v]);
                (Some(v.clone()), None, v)
            }
            Storage::Bind | Storage::Xfs => {
                let parent = xfs
                    .as_ref()
                    .map_or_else(std::env::temp_dir, |x| x.dir.clone());
                let dir = parent.join(unique("bind"));
                std::fs::create_dir_all(&dir).unwrap();
                (None, Some(dir.clone()), dir.display().to_string())
            }
        };
        let mut server = Self {
            name,
            mount: mount.clone(),
            owns_storage: true,
            volume,
            bind_dir,
            user: spec.user.to_owned(),
            port: 0,
            _xfs: xfs,
        };
        let user_env = format!("POSTGRES_USER={}", spec.user);
        let mut options = vec!["-e", &user_env, "-p", "127.0.0.1::5432"];
        options.extend(spec.options.iter().map(String::as_str));
        run_db_with(
            &server.name,
            &format!("{source}:{mount}"),
            spec.image,
            &options,
            spec.command,
        );
        server.refresh_port();
        server.client("postgres").await;
        server
    }

    /// Reads the published port again (a re-created container gets a new ephemeral one).
    pub fn refresh_port(&mut self) {
        let port = docker(&["port", &self.name, "5432/tcp"]);
        let first = port.lines().next().unwrap_or_default();
        self.port = first
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .expect("a published port");
    }

    /// Starts another container of `image` on this server's storage, mounted at `mount`
    /// (removed on drop; the storage stays with this server).
    pub async fn attach(&self, image: &str, mount: &str, extra_env: &[&str]) -> Server {
        let name = unique("db2");
        let source = match (&self.volume, &self.bind_dir) {
            (Some(v), _) => v.clone(),
            (None, Some(d)) => d.display().to_string(),
            _ => unreachable!(),
        };
        let mut options = vec!["-p", "127.0.0.1::5432"];
        for e in extra_env {
            options.extend(["-e", e]);
        }
        run_db(&name, &format!("{source}:{mount}"), image, &options);
        let mut s = Server {
            name,
            mount: mount.to_owned(),
            owns_storage: false,
            volume: self.volume.clone(),
            bind_dir: self.bind_dir.clone(),
            user: self.user.clone(),
            port: 0,
            _xfs: None,
        };
        s.refresh_port();
        s.client("postgres").await;
        s
    }

    /// Per database and table: row count and an md5 of all rows in a fixed order.
    pub async fn content(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let c = self.client("postgres").await;
        let dbs = column(
            &c,
            "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate",
        )
        .await;
        for db in dbs {
            let c = self.client(&db).await;
            let tables = column(
                &c,
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables \
                 WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1",
            )
            .await;
            for t in tables {
                let sql = format!(
                    "SELECT count(*)::text || ' ' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') FROM {t} x"
                );
                let row = c.query_one(&sql, &[]).await.unwrap();
                out.insert(format!("{db}.{t}"), row.get(0));
            }
        }
        out
    }

    pub async fn setting(&self, name: &str) -> String {
        let c = self.client("postgres").await;
        c.query_one("SELECT current_setting($1)", &[&name])
            .await
            .unwrap()
            .get(0)
    }

    /// Whether the planner has statistics on `table` of database `db`.
    pub async fn has_statistics(&self, db: &str, table: &str) -> bool {
        let c = self.client(db).await;
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stats WHERE tablename = $1",
                &[&table],
            )
            .await
            .unwrap()
            .get(0);
        n > 0
    }

    /// A connection as the bootstrap superuser, retried while the server starts up.
    pub async fn client(&self, db: &str) -> Client {
        let conn = format!(
            "host=127.0.0.1 port={} user={} password={PASSWORD} dbname={db} connect_timeout=5",
            self.port, self.user
        );
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match tokio_postgres::connect(&conn, NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    return client;
                }
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => panic!(
                    "{} did not accept connections: {e}; logs:\n{}",
                    self.name,
                    self.logs()
                ),
            }
        }
    }

    pub fn logs(&self) -> String {
        let out = docker_output(&["logs", "--tail", "40", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    pub fn stop(&self) {
        docker(&["stop", "-t", "60", &self.name]);
    }

    /// The host directory of the mount holding the data.
    pub fn mount_root(&self) -> PathBuf {
        match (&self.volume, &self.bind_dir) {
            (Some(v), _) => docker(&["volume", "inspect", "--format", "{{.Mountpoint}}", v]).into(),
            (None, Some(d)) => d.clone(),
            _ => unreachable!(),
        }
    }

    /// Creates tables with a few thousand rows, a sequence and an index in `db`.
    pub async fn seed(&self, db: &str) {
        let c = self.client(db).await;
        c.batch_execute(
            "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price numeric(10,2), tags text[], created timestamptz DEFAULT '2026-01-01');
             INSERT INTO items (name, price, tags) SELECT 'item ' || g, g * 1.5, ARRAY['t' || (g % 7)] FROM generate_series(1, 5000) g;
             CREATE INDEX items_name ON items (name);
             CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY, payload jsonb);
             INSERT INTO events (payload) SELECT jsonb_build_object('n', g, 'even', g % 2 = 0) FROM generate_series(1, 2000) g;",
        )
        .await
        .expect("seeding");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = docker_output(&["rm", "-f", "-v", &self.name]);
        // Containers pgup kept or made for this server.
        let kept = docker_output(&[
            "ps",
            "-aq",
            "--filter",
            &format!("name={}-pgup-", self.name),
        ]);
        for id in String::from_utf8_lossy(&kept.stdout).split_whitespace() {
            let _ = docker_output(&["rm", "-f", "-v", id]);
        }
        if !self.owns_storage {
            return;
        }
        if let Some(v) = &self.volume {
            let _ = docker_output(&["volume", "rm", "-f", v]);
        }
        if let Some(d) = &self.bind_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The first column of every row `sql` returns, as text.
pub async fn column(c: &Client, sql: &str) -> Vec<String> {
    c.query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// `du -sb` of a path, as an operator would measure it.
pub fn du_bytes(path: &Path) -> u64 {
    let out = Command::new("du").arg("-sb").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Available bytes as `df -B1` shows them.
pub fn df_avail(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

pub fn within(actual: u64, expected: u64, fraction: f64) -> bool {
    (actual as f64 - expected as f64).abs() <= expected as f64 * fraction
}

/// What a run of the pgup binary printed, and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The server images of an upgrade from 15 to 17, for targets that have no container.
pub const IMAGES_15_TO_17: [&str; 4] = [
    "--old-image",
    "pgup/postgres:15",
    "--new-image",
    "pgup/postgres:17",
];

/// `pgup image assemble --old OLD --new NEW`, with `more` arguments.
pub fn assemble(old: &str, new: &str, more: &[&str]) -> Run {
    pgup(&[&["image", "assemble", "--old", old, "--new", new], more].concat())
}

/// The arguments of an unattended upgrade of `container` to `to` on `new_image`.
pub fn upgrade_on<'a>(container: &'a str, to: &'a str, new_image: &'a str) -> [&'a str; 8] {
    [
        "upgrade",
        "--container",
        container,
        "--to",
        to,
        "--new-image",
        new_image,
        "--yes",
    ]
}

pub fn pgup(args: &[&str]) -> Run {
    run(Command::new(env!("CARGO_BIN_EXE_pgup")).args(args))
}

pub fn run(cmd: &mut Command) -> Run {
    let out = cmd.output().expect("pgup runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs pgup with --json, asserting success, and parses its document.
pub fn pgup_json(args: &[&str]) -> serde_json::Value {
    let r = pgup(&[args, &["--json"]].concat());
    assert_eq!(r.code, 0, "pgup {args:?} failed: {}{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout))
}

impl Run {
    /// A user error: exit 1 and one line on stderr that contains `text`; no panic, no trace.
    pub fn assert_user_error(&self, text: &str) {
        self.assert_one_line(1, text);
    }

    /// A wrong command line: exit 2 and one line, as for a user error.
    pub fn assert_usage_error(&self, text: &str) {
        self.assert_one_line(2, text);
    }

    /// Refused by a check, nothing changed: exit 3 and one line, as for a user error.
    pub fn assert_refused(&self, text: &str) {
        self.assert_one_line(3, text);
    }

    /// Progress lines ("==> assembling …") may come first: the error is one line.
    fn assert_one_line(&self, code: i32, text: &str) {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.starts_with("==> "))
            .collect();
        assert_eq!(self.code, code, "exit code; stderr: {}", self.stderr);
        assert_eq!(lines.len(), 1, "one line expected: {}", self.stderr);
        assert!(lines[0].starts_with("error: "), "{}", self.stderr);
        assert!(lines[0].contains(text), "{:?} not in {}", text, self.stderr);
        assert!(!self.stderr.contains("panicked") && !self.stderr.contains("backtrace"));
    }
}

impl Run {
    /// A failure after steps were reported: exit 1, the last line of stderr is the one error
    /// line and contains `text`; no panic, no trace.
    pub fn assert_failed_with(&self, text: &str) {
        self.assert_ended_with(1, text);
    }

    /// Refused by a check after steps were reported (and undone): exit 3, as for a failure.
    pub fn assert_refused_after_steps(&self, text: &str) {
        self.assert_ended_with(3, text);
    }

    fn assert_ended_with(&self, code: i32, text: &str) {
        let last = self.stderr.lines().last().unwrap_or_default();
        assert_eq!(self.code, code, "exit code; stderr: {}", self.stderr);
        assert!(last.starts_with("error: "), "{}", self.stderr);
        assert!(last.contains(text), "{:?} not in {}", text, self.stderr);
        let errors = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("error"))
            .count();
        assert_eq!(errors, 1, "one error line: {}", self.stderr);
        assert!(!self.stderr.contains("panicked") && !self.stderr.contains("backtrace"));
    }
}

/// The text of every check item of `kind` with `outcome`.
pub fn items(check: &serde_json::Value, kind: &str, outcome: &str) -> Vec<String> {
    check["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["check"] == kind && i["outcome"] == outcome)
        .map(|i| i["detail"].as_str().unwrap().to_owned())
        .collect()
}

/// One of `lines` contains `text`.
pub fn assert_mentioned(lines: &[String], text: &str) {
    assert!(
        lines.iter().any(|l| l.contains(text)),
        "{text:?} not in {lines:?}"
    );
}

/// The names in a directory, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A hash of a file tree: every entry's path, type, mode, owner, size, mtime and link target,
/// and every file's content, as `find` and `sha256sum` see them.
pub fn tree_hash(root: &Path) -> String {
    let script = r#"cd "$1" && { find . -printf '%P %y %m %U:%G %s %T@ %l\n' | sort; find . -type f -print0 | sort -z | xargs -0r sha256sum; } | sha256sum"#;
    let out = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(root)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The cluster's own entries (not pgup's, and not the directory itself, whose times pgup's
/// entries beside the cluster move), hashed like `tree_hash`, but for the sizes of
/// directories: they tell how the filesystem laid the entries out (a copy of a directory that
/// once held more entries is smaller), not what the cluster holds.
pub fn cluster_hash(dir: &Path) -> String {
    let script = r#"cd "$1" && { find . -mindepth 1 \( -path './.pgup' -o -path './upgrade_backup_*' \) -prune -o -type d -printf '%P %y %m %U:%G %T@\n' -o -printf '%P %y %m %U:%G %s %T@ %l\n' | grep -v '^\.pgup \|^upgrade_backup_' | sort; find . \( -path './.pgup' -o -path './upgrade_backup_*' \) -prune -o -type f -print0 | sort -z | xargs -0r sha256sum; } | sha256sum"#;
    let out = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes containers (with what pgup kept of them, `<name>-pgup-*`) and a volume on drop.
pub struct Cleanup(pub Vec<String>, pub Option<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.0 {
            let ids = docker_output(&["ps", "-aq", "--filter", &format!("name={c}")]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = docker_output(&["rm", "-f", "-v", id]);
            }
        }
        if let Some(v) = &self.1 {
            let _ = docker_output(&["volume", "rm", "-f", v]);
        }
    }
}

/// Waits until the server in container `name` accepts TCP connections.
pub fn wait_ready(name: &str) {
    for _ in 0..240 {
        if docker_output(&["exec", name, "pg_isready", "-q", "-h", "127.0.0.1"])
            .status
            .success()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{name} did not become ready");
}

/// A loop-mounted XFS of 1 GiB with reflinks (what `--mode clone` needs), unmounted and
/// deleted on drop.
pub struct Xfs {
    pub dir: PathBuf,
    image: PathBuf,
}

impl Xfs {
    pub fn mount() -> Self {
        let name = unique("xfs");
        let tmp = std::env::temp_dir();
        let xfs = Self {
            dir: tmp.join(&name),
            image: tmp.join(format!("{name}.img")),
        };
        std::fs::create_dir_all(&xfs.dir).unwrap();
        std::fs::File::create(&xfs.image)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let ok = |cmd: &mut Command| cmd.status().is_ok_and(|s| s.success());
        assert!(
            ok(Command::new("mkfs.xfs")
                .args(["-q", "-m", "reflink=1"])
                .arg(&xfs.image)),
            "mkfs.xfs (xfsprogs, which scripts/setup.sh installs) makes the test's filesystem"
        );
        assert!(
            ok(Command::new("mount")
                .args(["-o", "loop"])
                .arg(&xfs.image)
                .arg(&xfs.dir)),
            "these tests run as root and loop-mount an XFS"
        );
        xfs
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
        let _ = std::fs::remove_file(&self.image);
    }
}

/// A server whose PGDATA is a tmpfs of `size` (e.g. "120m") on the host, bind-mounted: for
/// tests that need a small filesystem. The container goes and the tmpfs is unmounted on drop.
pub struct TmpfsServer {
    pub name: String,
    pub dir: PathBuf,
    _cleanup: Cleanup,
}

impl TmpfsServer {
    pub fn start(image: &str, size: &str) -> Self {
        let dir = std::env::temp_dir().join(unique("tmpfs"));
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(
            mounted.success(),
            "these tests run as root and mount a tmpfs"
        );
        let name = unique("tmpfs");
        let server = Self {
            name: name.clone(),
            dir: dir.clone(),
            _cleanup: Cleanup(vec![name.clone()], None),
        };
        run_db(
            &name,
            &format!("{}:/var/lib/postgresql/data", dir.display()),
            image,
            &[],
        );
        wait_ready(&name);
        server
    }
}

impl Drop for TmpfsServer {
    fn drop(&mut self) {
        let _ = docker_output(&["rm", "-f", "-v", &self.name]);
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}
