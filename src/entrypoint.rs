//! `pgup entrypoint`: the first program of an upgrade-capable image, run in front of the server
//! image's own entrypoint (given after `--`), so the image is a drop-in for the server image:
//! same variables, same PGDATA rules. When PGDATA holds an older major than the target, it
//! upgrades it only when told to (`PGUP_UPGRADE`, `PGUP_AUTO_UPGRADE`), by running `pgup
//! upgrade` on the data as a child process: the very upgrade the host CLI runs, with the
//! programs of this image (no Docker engine here). This process stays the container's first
//! one meanwhile, reaping what the servers leave and passing stop signals on; then it execs
//! the server. A killed or restarted container finishes the upgrade from its journal; one that
//! failed (and put the old cluster back) is not tried again by a restart of the same container.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::error::{Kind, Refusal, Status};
use crate::journal::Journal;
use crate::layout::Layout;
use crate::plan::{Operation, Step};

/// What the environment asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `PGUP_TO`: the major to upgrade to (default: the newest this image holds).
    pub to: Option<u32>,
    /// `PGUP_UPGRADE`: upgrade older data, then ask for the setting to be removed.
    pub upgrade: bool,
    /// `PGUP_AUTO_UPGRADE`: upgrade older data whenever it is found.
    pub auto: bool,
    /// `PGUP_ONESHOT`: exit 0 after the upgrade instead of starting the server.
    pub oneshot: bool,
    /// `PGUP_SERVER_STOPPED`: no server runs on the data, though its postmaster.pid is there.
    pub server_stopped: bool,
    /// `PGUP_REINDEX`: `pgup upgrade --reindex` (auto, always, never).
    pub reindex: Option<String>,
    /// `PGUP_VERIFY`: `pgup upgrade --verify` (files, counts).
    pub verify: Option<String>,
    /// `PGDATA` as the image or the operator set it.
    pub pgdata: Option<PathBuf>,
}

impl Settings {
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let flag = |name: &str| -> Result<bool, String> {
            match var(name).as_deref().map(str::trim) {
                None | Some("" | "0" | "no" | "false" | "off") => Ok(false),
                Some("1" | "yes" | "true" | "on") => Ok(true),
                Some(other) => Err(format!(
                    "{name}={other} is neither yes nor no; set it to yes, or remove it"
                )),
            }
        };
        // A setting passed on as a pgup option's value; unset or empty: the option's default.
        let choice = |name: &str, values: &[&str]| -> Result<Option<String>, String> {
            match var(name).map(|v| v.trim().to_owned()) {
                None => Ok(None),
                Some(v) if v.is_empty() => Ok(None),
                Some(v) if values.contains(&v.as_str()) => Ok(Some(v)),
                Some(v) => Err(format!(
                    "{name}={v} is none of {}; set it to one, or remove it",
                    values.join(", ")
                )),
            }
        };
        let to = match var("PGUP_TO").filter(|v| !v.trim().is_empty()) {
            None => None,
            Some(v) => Some(v.trim().parse().map_err(|_| {
                format!("PGUP_TO={v} is not a PostgreSQL major; set it to one, such as 17")
            })?),
        };
        Ok(Self {
            to,
            upgrade: flag("PGUP_UPGRADE")?,
            auto: flag("PGUP_AUTO_UPGRADE")?,
            oneshot: flag("PGUP_ONESHOT")?,
            server_stopped: flag("PGUP_SERVER_STOPPED")?,
            reindex: choice("PGUP_REINDEX", &["auto", "always", "never"])?,
            verify: choice("PGUP_VERIFY", &["files", "counts"])?,
            pgdata: var("PGDATA").filter(|v| !v.is_empty()).map(PathBuf::from),
        })
    }
}

/// What to do with the data found, decided from facts only.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start the server (nothing to upgrade, or no data yet).
    Serve,
    /// Run `pgup upgrade` to `to` (a new run, or one that resumes the journal's).
    Upgrade { from: u32, to: u32 },
    /// Refuse in one line, changing nothing.
    Refuse(String),
}

/// What was found: the data's major, an operation under way, a failure remembered.
pub struct Found<'a> {
    pub data: &'a Path,
    pub major: Option<u32>,
    /// The journal's operation, old and new major, and how it explains itself, when one is
    /// under way.
    pub journal: Option<(Operation, u32, u32, String)>,
    /// A failed upgrade of this container, remembered: (from, to, when).
    pub failed: Option<&'a Failure>,
    pub container: &'a str,
}

pub fn decide(settings: &Settings, held: &BTreeSet<u32>, found: &Found<'_>) -> Decision {
    let majors = held
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let Some(&newest) = held.last() else {
        return Decision::Refuse(
            "this image holds no PostgreSQL programs under /usr/lib/postgresql; run pgup's upgrade image".into(),
        );
    };
    let to = settings.to.unwrap_or(newest);
    if !held.contains(&to) {
        return Decision::Refuse(format!(
            "PGUP_TO={to}, but this image holds PostgreSQL {majors}; set PGUP_TO to one of them, or use an image holding {to}"
        ));
    }
    let asked = settings.upgrade || settings.auto;
    let data = found.data.display();
    // A failure of this container is not tried again, whatever it left.
    if let Some(f) = found
        .failed
        .filter(|f| asked && f.container == found.container)
    {
        return Decision::Refuse(format!(
            "the upgrade of {data} from PostgreSQL {} to {} failed in this container at {}; its log is in the container's log and in .pgup/logs. Fix the cause and re-create the container to try again, or remove PGUP_UPGRADE and run a PostgreSQL {} image",
            f.from,
            f.to,
            f.at.format("%Y-%m-%d %H:%M:%S UTC"),
            f.from
        ));
    }
    if let Some((operation, old, new, explained)) = &found.journal {
        return match operation {
            Operation::Upgrade if asked => Decision::Upgrade {
                from: *old,
                to: *new,
            },
            Operation::Upgrade => Decision::Refuse(format!(
                "an upgrade of {data} to PostgreSQL {new} is under way ({explained}); set PGUP_UPGRADE=yes to finish it, or undo it with `pgup rollback --data-dir …` in this image"
            )),
            _ => Decision::Refuse(format!(
                "a rollback of {data} is under way ({explained}); finish it with `pgup rollback --data-dir …` in this image"
            )),
        };
    }
    let Some(major) = found.major else {
        return Decision::Serve;
    };
    if major == to {
        return Decision::Serve;
    }
    if major > to {
        return Decision::Refuse(format!(
            "the data in {data} is PostgreSQL {major}, newer than PostgreSQL {to} that this image would run; pgup does not downgrade: run a PostgreSQL {major} image"
        ));
    }
    if !held.contains(&major) {
        return Decision::Refuse(format!(
            "the data in {data} is PostgreSQL {major}, and this image holds PostgreSQL {majors}, so it cannot upgrade it; use an upgrade image holding {major} and {to}"
        ));
    }
    if !asked {
        return Decision::Refuse(format!(
            "the data in {data} is PostgreSQL {major} and this image runs PostgreSQL {to}: set PGUP_UPGRADE=yes to upgrade it (the old cluster is kept), or run a PostgreSQL {major} image; nothing was changed"
        ));
    }
    Decision::Upgrade { from: major, to }
}

/// A failed upgrade, remembered in the volume so that a restart does not try it again.
#[derive(Debug, Serialize, Deserialize)]
pub struct Failure {
    pub container: String,
    pub from: u32,
    pub to: u32,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Runs the entrypoint; `server` is the server image's entrypoint and command.
pub async fn run(server: Vec<String>) -> Result<Status> {
    // Like the server image's entrypoint: another command (`pgup rollback`, a shell) just runs.
    if !starts_server(&server) {
        return Err(serve(server, None, None, &BTreeSet::new()));
    }
    let settings = Settings::from_env(|n| std::env::var(n).ok()).map_err(Refusal)?;
    let held = majors_here(Path::new("/usr/lib/postgresql"));
    // Read once: where the volume is, and which container this is.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let data = find_data(settings.pgdata.as_deref()).map_err(Refusal)?;
    let (root, subdir) = match &data {
        Some(d) => mount_root(d, &mounts(&mountinfo)),
        None => (PathBuf::new(), None),
    };
    let major = data.as_deref().and_then(|d| {
        std::fs::read_to_string(d.join("PG_VERSION"))
            .ok()
            .and_then(|v| v.trim().parse().ok())
    });
    let flags = target_flags(&root, subdir.as_deref());
    let journal = match &data {
        Some(_) => Journal::read(&root)?,
        None => None,
    };
    let layout = Layout::new(&root);
    let marker = layout.logs().join("entrypoint-failed.json");
    let failed: Option<Failure> = std::fs::read(&marker)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let container = container_id(&mountinfo);
    let shown = data.clone().unwrap_or_default();
    let found = Found {
        data: &shown,
        major,
        // A host pgup preparing while the server serves stops nothing yet: a restarted
        // container serves as it did.
        journal: journal
            .as_ref()
            .filter(|j| j.step >= Step::Stopping)
            .map(|j| (j.operation, j.old_major, j.new_major, j.explain(&flags))),
        failed: failed.as_ref(),
        container: &container,
    };
    match decide(&settings, &held, &found) {
        Decision::Refuse(line) => Err(Refusal(line).into()),
        Decision::Serve => Err(serve(server, data.as_deref(), settings.to, &held)),
        Decision::Upgrade { from, to } => {
            println!(
                "pgup: upgrading {} from PostgreSQL {from} to {to}",
                shown.display()
            );
            let mut argv: Vec<String> = vec!["--json".into(), "upgrade".into()];
            argv.extend(flags.split(' ').map(str::to_owned));
            argv.extend(["--to".into(), to.to_string(), "--yes".into()]);
            if settings.server_stopped {
                argv.push("--server-stopped".into());
            }
            for (option, value) in [
                ("--reindex", &settings.reindex),
                ("--verify", &settings.verify),
            ] {
                if let Some(value) = value {
                    argv.extend([option.into(), value.clone()]);
                }
            }
            let traces = || std::fs::read_dir(layout.logs()).map_or(0, Iterator::count);
            let before = traces();
            let (code, report) = child(&argv).await?;
            if code != 0 {
                if code > 128 {
                    bail!(
                        "the upgrade was interrupted; the next start of this container finishes it"
                    );
                }
                // Refused before it began, it left no trace and changed nothing: trying again
                // changes nothing either, so nothing is remembered (nor written).
                let begun = Journal::read(&root).ok().flatten().is_some();
                if code == i32::from(Kind::Refused.exit_code()) && !begun && traces() == before {
                    return Err(Refusal(format!(
                        "the upgrade from PostgreSQL {from} to {to} was refused (see above); nothing was changed"
                    ))
                    .into());
                }
                let failure = Failure {
                    container,
                    from,
                    to,
                    at: chrono::Utc::now(),
                };
                remember(&layout, &marker, &failure);
                // An upgrade that could not undo itself leaves its journal.
                if begun {
                    bail!(
                        "the upgrade from PostgreSQL {from} to {to} failed (see above) and could not be undone; this container will not try again: run `pgup rollback {flags} --yes` in this image to restore PostgreSQL {from}"
                    );
                }
                bail!(
                    "the upgrade from PostgreSQL {from} to {to} failed (see above) and the old cluster is as it was; this container will not try again: fix the cause and re-create it, or remove PGUP_UPGRADE and run a PostgreSQL {from} image"
                );
            }
            let _ = std::fs::remove_file(&marker);
            println!("{}", done_line(&settings, from, to, &report, &shown, &root));
            if settings.oneshot {
                return Ok(Status::Done);
            }
            Err(serve(server, data.as_deref(), Some(to), &held))
        }
    }
}

/// The line that says the upgrade is done and what to do next.
fn done_line(
    settings: &Settings,
    from: u32,
    to: u32,
    report: &serde_json::Value,
    data: &Path,
    root: &Path,
) -> String {
    let mut kept = match report.get("backup").and_then(|b| b.as_str()) {
        Some(b) => format!("the old cluster is kept in {b}"),
        None => format!("the old cluster is kept in {}", root.display()),
    };
    let change = report["libraries"].as_str().unwrap_or("--reindex always");
    match report["verified"]["indexes_rebuilt"].as_u64() {
        Some(n) if n > 0 => kept.push_str(&format!("; {n} index(es) on text rebuilt ({change})")),
        _ => {}
    }
    match report["reindex_pending"].as_u64() {
        Some(n) if n > 0 => kept.push_str(&format!(
            "; {n} index(es) on text NOT rebuilt ({change}, PGUP_REINDEX=never): `pgup status` lists them"
        )),
        _ => {}
    }
    let pgdata = match &settings.pgdata {
        Some(p) if p == data => String::new(),
        _ => format!(" with PGDATA={}", data.display()),
    };
    if settings.auto {
        format!("PostgreSQL upgraded from {from} to {to}; {kept}")
    } else {
        format!(
            "PostgreSQL upgraded from {from} to {to}; {kept}; remove PGUP_UPGRADE and run the standard {to} image{pgdata}"
        )
    }
}

fn remember(layout: &Layout, marker: &Path, failure: &Failure) {
    let json = serde_json::to_vec_pretty(failure).expect("a failure serializes");
    let owner = crate::target::owner(layout.root()).unwrap_or((0, 0));
    let _ = crate::backup::logs_dir(layout, owner.0, owner.1)
        .and_then(|_| crate::backup::private_file(marker, &json, owner.0, owner.1));
}

/// The flags naming the data for `pgup upgrade`: the mount root and PGDATA below it.
fn target_flags(root: &Path, subdir: Option<&Path>) -> String {
    match subdir {
        Some(sub) => format!(
            "--data-dir {} --pgdata-subdir {}",
            root.display(),
            sub.display()
        ),
        None => format!("--data-dir {}", root.display()),
    }
}

/// Runs this pgup with `argv` as a child, passing stop signals on and reaping every child
/// process meanwhile (this one may be the container's first process, which orphans are given
/// to); returns its exit code and the JSON it printed.
async fn child(argv: &[String]) -> Result<(i32, serde_json::Value)> {
    use std::io::Read;
    use tokio::signal::unix::{SignalKind, signal};
    // Before the child exists: a stop signal then is passed on, never lost.
    let (mut int, mut term) = (
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
    );
    let exe = std::env::current_exe().context("cannot find pgup's own executable")?;
    let mut spawned = std::process::Command::new(exe)
        .args(argv)
        .env(crate::docker::NO_ENGINE, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start pgup upgrade")?;
    let pid = rustix::process::Pid::from_child(&spawned);
    let mut out = spawned.stdout.take().expect("piped");
    let read = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let reaped = tokio::task::spawn_blocking(move || reap_until(pid));
    tokio::pin!(reaped);
    let code = loop {
        tokio::select! {
            code = &mut reaped => break code??,
            _ = int.recv() => { let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT); }
            _ = term.recv() => { let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM); }
        }
    };
    let text = read.await?;
    let report = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Ok((code, report))
}

/// Waits for any child until `pid` ends; its exit code (128 + signal when killed).
fn reap_until(pid: rustix::process::Pid) -> std::io::Result<i32> {
    loop {
        match rustix::process::wait(rustix::process::WaitOptions::empty()) {
            Ok(Some((p, status))) if p == pid => {
                return Ok(status
                    .exit_status()
                    .or_else(|| status.terminating_signal().map(|s| 128 + s))
                    .unwrap_or(1));
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Execs the server image's entrypoint with PGDATA where the data is, and the target major's
/// programs first on PATH when it is not the image's own; returns only on failure.
fn serve(
    server: Vec<String>,
    data: Option<&Path>,
    to: Option<u32>,
    held: &BTreeSet<u32>,
) -> anyhow::Error {
    let Some((program, args)) = server.split_first() else {
        return Refusal(
            "no server command follows `pgup entrypoint --`; give the server image's entrypoint and command".into(),
        )
        .into();
    };
    let mut command = std::process::Command::new(program);
    command.args(args);
    if let Some(d) = data {
        command.env("PGDATA", d);
    }
    let own: Option<u32> = std::env::var("PG_MAJOR").ok().and_then(|m| m.parse().ok());
    if let Some(to) = to.or(held.last().copied()).filter(|t| Some(*t) != own) {
        let path = std::env::var("PATH").unwrap_or_default();
        command
            .env("PATH", format!("{}:{path}", crate::pgcmd::bindir(to)))
            .env("PG_MAJOR", to.to_string());
    }
    let err = command.exec();
    anyhow::Error::new(err).context(format!("cannot start the server ({program})"))
}

/// Whether `server` starts PostgreSQL's server, as the server images' entrypoints tell:
/// `postgres` as the command, or only its options.
fn starts_server(server: &[String]) -> bool {
    let command = server.iter().find(|a| !a.ends_with("entrypoint.sh"));
    command.is_some_and(|c| c == "postgres" || c.ends_with("/postgres") || c.starts_with('-'))
}

/// The majors whose programs this image holds.
fn majors_here(dir: &Path) -> BTreeSet<u32> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("bin/postgres").is_file())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// PGDATA when it holds a cluster, else the layout before 18's (a volume at
/// /var/lib/postgresql/data) when that does, else an older major's directory in 18's layout
/// ([`older_majors_beside`]); else PGDATA, where the server makes one. Several older majors
/// there: refused (the server would make an empty cluster beside them), naming them.
fn find_data(pgdata: Option<&Path>) -> Result<Option<PathBuf>, String> {
    let legacy = Path::new("/var/lib/postgresql/data");
    Ok(match pgdata {
        Some(p) if holds_cluster(p) => Some(p.to_owned()),
        _ if holds_cluster(legacy) => Some(legacy.to_owned()),
        Some(p) => match older_majors_beside(p).as_slice() {
            [] => Some(p.to_owned()),
            [one] => Some(one.clone()),
            several => {
                let names: Vec<String> = several.iter().map(|d| d.display().to_string()).collect();
                return Err(format!(
                    "PGDATA {} holds no cluster, and beside it are clusters of several older majors ({}): set PGDATA to the one to upgrade; nothing was changed",
                    p.display(),
                    names.join(", ")
                ));
            }
        },
        None => None,
    })
}

fn holds_cluster(dir: &Path) -> bool {
    dir.join("PG_VERSION").is_file()
}

/// From 18 on, the images keep PGDATA at `<volume>/<major>/docker`, so a 19 image on an 18
/// volume finds `18/docker` beside its own empty `19/docker`: the older majors' clusters
/// there, in order.
fn older_majors_beside(pgdata: &Path) -> Vec<PathBuf> {
    let found = || -> Option<Vec<PathBuf>> {
        let leaf = pgdata.file_name()?;
        let major_dir = pgdata.parent()?;
        let major: u32 = major_dir.file_name()?.to_str()?.parse().ok()?;
        let mut found: Vec<PathBuf> = std::fs::read_dir(major_dir.parent()?)
            .ok()?
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|m| m < major)
            })
            .map(|e| e.path().join(leaf))
            .filter(|d| holds_cluster(d))
            .collect();
        found.sort();
        Some(found)
    };
    found().unwrap_or_default()
}

/// This container's mount points (`/proc/self/mountinfo`'s fifth field, unescaped).
fn mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .collect()
}

fn unescape(field: &str) -> String {
    let mut out = String::new();
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4);
        match code.and_then(|c| u8::from_str_radix(c, 8).ok()) {
            Some(b) => {
                out.push(b as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The mount (a volume, a bind mount) that holds `data`, and PGDATA's path below it: pgup's
/// backups and work directory go there, not into the container's own filesystem.
fn mount_root(data: &Path, mounts: &[PathBuf]) -> (PathBuf, Option<PathBuf>) {
    let root = mounts
        .iter()
        .filter(|m| m.as_path() != Path::new("/") && data.starts_with(m))
        .max_by_key(|m| m.components().count())
        .cloned()
        .unwrap_or_else(|| data.to_owned());
    let below = data
        .strip_prefix(&root)
        .ok()
        .filter(|b| !b.as_os_str().is_empty())
        .map(Path::to_owned);
    (root, below)
}

/// This container's id, from the files Docker mounts into it; else its host name.
fn container_id(mountinfo: &str) -> String {
    mountinfo
        .split('/')
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[0] == "containers" && w[1].len() == 64)
        .map(|w| w[1].to_owned())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_majors_cluster_beside_pgdata_in_18s_layout() {
        let volume = tempfile::tempdir().unwrap();
        let cluster = |major: &str| {
            let dir = volume.path().join(major).join("docker");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("PG_VERSION"), format!("{major}\n")).unwrap();
            dir
        };
        let pgdata = volume.path().join("19/docker");
        assert_eq!(
            find_data(Some(&pgdata)),
            Ok(Some(pgdata.clone())),
            "nothing there"
        );
        let old = cluster("18");
        std::fs::create_dir_all(volume.path().join("17/docker")).unwrap();
        assert_eq!(find_data(Some(&pgdata)), Ok(Some(old.clone())));
        assert!(
            older_majors_beside(&volume.path().join("18/docker")).is_empty(),
            "not a newer one"
        );
        cluster("17");
        let refused = find_data(Some(&pgdata)).unwrap_err();
        assert!(
            refused.contains("several older majors") && refused.contains("17/docker, "),
            "{refused}"
        );
        let own = cluster("19");
        assert_eq!(
            find_data(Some(&own)),
            Ok(Some(own.clone())),
            "PGDATA's own first"
        );
        assert!(older_majors_beside(&volume.path().join("data")).is_empty());
    }

    fn settings(upgrade: bool, to: Option<u32>) -> Settings {
        Settings {
            to,
            upgrade,
            auto: false,
            oneshot: false,
            server_stopped: false,
            reindex: None,
            verify: None,
            pgdata: Some("/var/lib/postgresql/data".into()),
        }
    }

    fn found<'a>(major: Option<u32>, failed: Option<&'a Failure>) -> Found<'a> {
        Found {
            data: Path::new("/var/lib/postgresql/data"),
            major,
            journal: None,
            failed,
            container: "abc",
        }
    }

    #[test]
    fn settings_read_yes_and_no() {
        let env = |pairs: &'static [(&str, &str)]| {
            move |n: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            }
        };
        let s = Settings::from_env(env(&[("PGUP_UPGRADE", "yes"), ("PGUP_TO", "17")])).unwrap();
        assert!(s.upgrade && !s.auto && s.to == Some(17));
        assert!(Settings::from_env(env(&[("PGUP_UPGRADE", "maybe")])).is_err());
        assert!(Settings::from_env(env(&[("PGUP_TO", "seventeen")])).is_err());
        assert!(Settings::from_env(env(&[("PGUP_REINDEX", "sometimes")])).is_err());
        assert_eq!(
            Settings::from_env(env(&[("PGUP_REINDEX", "never")]))
                .unwrap()
                .reindex
                .as_deref(),
            Some("never")
        );
        let err = Settings::from_env(env(&[("PGUP_VERIFY", "rows")])).unwrap_err();
        assert_eq!(
            err,
            "PGUP_VERIFY=rows is none of files, counts; set it to one, or remove it"
        );
        assert!(
            !Settings::from_env(env(&[("PGUP_UPGRADE", "")]))
                .unwrap()
                .upgrade
        );
    }

    #[test]
    fn older_data_is_upgraded_only_when_asked() {
        let held = BTreeSet::from([13, 15, 17]);
        assert_eq!(
            decide(&settings(true, Some(17)), &held, &found(Some(13), None)),
            Decision::Upgrade { from: 13, to: 17 }
        );
        match decide(&settings(false, None), &held, &found(Some(13), None)) {
            Decision::Refuse(line) => {
                assert!(
                    line.contains("PostgreSQL 13 and this image runs PostgreSQL 17"),
                    "{line}"
                );
                assert!(line.contains("PGUP_UPGRADE=yes"), "{line}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decide(&settings(false, None), &held, &found(Some(17), None)),
            Decision::Serve
        );
        assert_eq!(
            decide(&settings(true, None), &held, &found(None, None)),
            Decision::Serve
        );
    }

    #[test]
    fn the_done_line_tells_the_backup_and_the_indexes_rebuilt() {
        let report = serde_json::json!({
            "backup": "/var/lib/postgresql/data/upgrade_backup_x",
            "libraries": "glibc 2.31 → glibc 2.41",
            "verified": {"indexes_rebuilt": 3},
            "reindex_pending": 0,
        });
        let data = Path::new("/var/lib/postgresql/data");
        assert_eq!(
            done_line(&settings(true, None), 13, 17, &report, data, data),
            "PostgreSQL upgraded from 13 to 17; the old cluster is kept in /var/lib/postgresql/data/upgrade_backup_x; 3 index(es) on text rebuilt (glibc 2.31 → glibc 2.41); remove PGUP_UPGRADE and run the standard 17 image"
        );
        let left = serde_json::json!({"libraries": "ICU 72.1 → ICU 76.1", "reindex_pending": 2});
        assert!(
            done_line(&settings(true, None), 15, 17, &left, data, data).contains(
                "; 2 index(es) on text NOT rebuilt (ICU 72.1 → ICU 76.1, PGUP_REINDEX=never): `pgup status` lists them;"
            )
        );
    }

    #[test]
    fn what_cannot_be_done_is_refused() {
        let held = BTreeSet::from([13, 17]);
        for (s, major) in [
            (settings(true, Some(18)), 13),
            (settings(true, Some(17)), 18),
            (settings(true, Some(17)), 11),
        ] {
            assert!(
                matches!(
                    decide(&s, &held, &found(Some(major), None)),
                    Decision::Refuse(_)
                ),
                "{major} {:?}",
                s.to
            );
        }
    }

    #[test]
    fn a_failure_is_not_tried_again_by_the_same_container() {
        let held = BTreeSet::from([13, 17]);
        let failure = Failure {
            container: "abc".into(),
            from: 13,
            to: 17,
            at: chrono::Utc::now(),
        };
        assert!(matches!(
            decide(
                &settings(true, None),
                &held,
                &found(Some(13), Some(&failure))
            ),
            Decision::Refuse(_)
        ));
        let elsewhere = Failure {
            container: "other".into(),
            ..failure
        };
        assert_eq!(
            decide(
                &settings(true, None),
                &held,
                &found(Some(13), Some(&elsewhere))
            ),
            Decision::Upgrade { from: 13, to: 17 }
        );
    }

    #[test]
    fn an_upgrade_under_way_is_finished_when_asked() {
        let held = BTreeSet::from([13, 17]);
        let mut f = found(Some(13), None);
        f.journal = Some((Operation::Upgrade, 13, 17, "…".into()));
        assert_eq!(
            decide(&settings(true, None), &held, &f),
            Decision::Upgrade { from: 13, to: 17 }
        );
        assert!(matches!(
            decide(&settings(false, None), &held, &f),
            Decision::Refuse(_)
        ));
    }

    #[test]
    fn only_a_server_start_is_looked_at() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(starts_server(&argv(&["docker-entrypoint.sh", "postgres"])));
        assert!(starts_server(&argv(&[
            "docker-entrypoint.sh",
            "-c",
            "work_mem=8MB"
        ])));
        assert!(starts_server(&argv(&["postgres"])));
        assert!(!starts_server(&argv(&[
            "docker-entrypoint.sh",
            "pgup",
            "rollback"
        ])));
        assert!(!starts_server(&argv(&["docker-entrypoint.sh", "bash"])));
        assert!(!starts_server(&argv(&[
            "docker-entrypoint.sh",
            "pgup",
            "status",
            "--data-dir",
            "/srv/postgres"
        ])));
    }

    #[test]
    fn the_volume_holding_pgdata_is_the_root() {
        let mounts: Vec<PathBuf> = ["/", "/var/lib/postgresql", "/etc/hosts"]
            .map(PathBuf::from)
            .to_vec();
        assert_eq!(
            mount_root(Path::new("/var/lib/postgresql/18/docker"), &mounts),
            (
                PathBuf::from("/var/lib/postgresql"),
                Some(PathBuf::from("18/docker"))
            )
        );
        assert_eq!(
            mount_root(Path::new("/srv/data"), &mounts),
            (PathBuf::from("/srv/data"), None)
        );
        assert_eq!(unescape(r"/a\040b"), "/a b");
        let id = "a".repeat(64);
        let info = format!(
            "1 0 0:1 / / rw - overlay overlay rw\n2 1 8:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/vda rw\n"
        );
        assert_eq!(container_id(&info), id);
        assert_eq!(
            super::mounts(&info),
            [PathBuf::from("/"), PathBuf::from("/etc/hostname")]
        );
    }
}
