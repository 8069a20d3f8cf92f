//! The site's hooks: executables in the directory `--hooks` names, each named after a phase of
//! an upgrade or a rollback, run at that phase with what pgup is doing in its environment.
//! This module owns the phases, what makes a hook directory acceptable, and running one hook
//! (its environment, its output, its timeout); the operations decide when each phase comes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::layout::Layout;
use crate::plan::{HookPlan, Step};
use crate::ui::Printer;

/// A point in an upgrade or a rollback where the site's hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Before pgup checks anything, the server still serving.
    PreCheck,
    /// Before the backup's copy begins.
    PreBackup,
    /// Once the backup is whole.
    PostBackup,
    /// Before pg_upgrade, the server stopped.
    PreUpgrade,
    /// After the hand-over, against the database as its clients see it.
    PostUpgrade,
    /// Before the old cluster is put back.
    PreRollback,
    /// Once the old cluster is back.
    PostRollback,
    /// Last, whatever the result (`PGUP_RESULT`).
    End,
}

impl Phase {
    pub const ALL: [Phase; 8] = [
        Phase::PreCheck,
        Phase::PreBackup,
        Phase::PostBackup,
        Phase::PreUpgrade,
        Phase::PostUpgrade,
        Phase::PreRollback,
        Phase::PostRollback,
        Phase::End,
    ];

    /// Its name, which is its hook's file name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::PreCheck => "pre-check",
            Phase::PreBackup => "pre-backup",
            Phase::PostBackup => "post-backup",
            Phase::PreUpgrade => "pre-upgrade",
            Phase::PostUpgrade => "post-upgrade",
            Phase::PreRollback => "pre-rollback",
            Phase::PostRollback => "post-rollback",
            Phase::End => "end",
        }
    }

    fn named(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// How a run ended, as `end` finds it in `PGUP_RESULT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Upgraded,
    RolledBack,
    /// A check (or the pre-check hook) refused: nothing was changed.
    Refused,
    /// The run failed; the message says where the old cluster is.
    Failed,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Upgraded => "upgraded",
            Outcome::RolledBack => "rolled-back",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

/// The hooks of a run, as the operator gave them; kept in the journal, so that a resumed run
/// runs the same ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    pub dir: PathBuf,
    /// The phases that have a hook, in the order they come.
    pub phases: Vec<Phase>,
    pub timeout_s: u64,
    /// --keep-on-hook-failure: a failing post-upgrade hook leaves the new cluster in place.
    pub keep_on_failure: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("cannot read the hook directory {}: {source}; give --hooks a directory of executables named after phases", .dir.display())]
    Unreadable {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not an executable regular file; make it one (chmod 0755) or remove it from the hook directory", .0.display())]
    NotExecutable(PathBuf),
    #[error("{} is writable by others than its owner, and pgup runs hooks as {} from it; chmod go-w it", .0.display(), if rustix::process::geteuid().is_root() { "root" } else { "you" })]
    Writable(PathBuf),
    #[error("{} is owned by uid {}, neither root nor the user running pgup; chown it", .0.display(), .1)]
    Owner(PathBuf, u32),
    #[error("{} is not a phase's name (phases: {}); rename it, or make it not executable if other hooks use it", .0.display(), phase_names())]
    Unknown(PathBuf),
    #[error("cannot run hook {phase}: {source}")]
    Spawn {
        phase: &'static str,
        source: std::io::Error,
    },
    #[error("hook {phase} failed ({status}){}", last_line(.output))]
    Failed {
        phase: &'static str,
        status: String,
        output: String,
    },
    #[error("hook {phase} did not end within {seconds} s (--hook-timeout) and was killed{}", last_line(.output))]
    TimedOut {
        phase: &'static str,
        seconds: u64,
        output: String,
    },
}

impl HookError {
    /// What the hook wrote before it failed, for the run's log.
    pub fn output(&self) -> Option<&str> {
        match self {
            HookError::Failed { output, .. } | HookError::TimedOut { output, .. } => Some(output),
            _ => None,
        }
    }
}

fn phase_names() -> String {
    Phase::ALL.map(Phase::name).join(", ")
}

/// ": <the output's last line>", or nothing when it wrote nothing.
fn last_line(output: &str) -> String {
    output
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| format!(": {l}"))
        .unwrap_or_default()
}

/// What a run tells its hooks about itself.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub target: String,
    pub container: Option<String>,
    pub data_dir: PathBuf,
    pub backup_dir: Option<PathBuf>,
    pub from: u32,
    pub to: u32,
    pub result: Option<Outcome>,
}

/// A hook that ran to its end with exit status 0.
#[derive(Debug, Clone, Serialize)]
pub struct Ran {
    pub phase: Phase,
    pub seconds: f64,
    /// What it wrote (standard output and error as they came), for the run's log.
    #[serde(skip)]
    pub output: String,
}

/// At most this much of a hook's output is kept (its end).
const KEPT_OUTPUT: usize = 1 << 20;
/// A hook killed at its timeout gets this long after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

impl Hooks {
    /// The hooks the operator named (--hooks), checked before anything is done.
    pub fn given(
        spec: Option<&crate::settings::HookSpec>,
    ) -> Result<Option<Self>, crate::error::UsageError> {
        spec.map(|h| Hooks::open(&h.dir, h.timeout, h.keep_on_failure))
            .transpose()
            .map_err(|e| crate::error::UsageError(format!("{e}; nothing was changed")))
    }

    /// The hooks in `dir`, refused unless each is an executable regular file named after a
    /// phase, owned by root or this user and writable by its owner only (pgup runs them with
    /// its own rights, often root's). Other files are ignored unless executable: a typo in a
    /// phase's name would otherwise never run.
    pub fn open(dir: &Path, timeout: Duration, keep_on_failure: bool) -> Result<Self, HookError> {
        let unreadable = |source| HookError::Unreadable {
            dir: dir.to_owned(),
            source,
        };
        let dir = std::fs::canonicalize(dir).map_err(unreadable)?;
        let mut phases = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let meta = std::fs::metadata(&path).map_err(unreadable)?;
            let executable = meta.is_file() && meta.permissions().mode() & 0o111 != 0;
            match Phase::named(&name) {
                Some(phase) if executable => {
                    trusted(&path)?;
                    phases.push(phase);
                }
                Some(_) => return Err(HookError::NotExecutable(path)),
                None if executable => return Err(HookError::Unknown(path)),
                None => {}
            }
        }
        trusted(&dir)?;
        phases.sort();
        Ok(Self {
            dir,
            phases,
            timeout_s: timeout.as_secs(),
            keep_on_failure,
        })
    }

    pub fn has(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }

    /// What the plan says of them.
    pub fn plan(&self) -> HookPlan {
        HookPlan {
            dir: self.dir.clone(),
            phases: self.phases.iter().map(|p| p.name()).collect(),
            keep_on_failure: self.keep_on_failure,
        }
    }

    /// Runs `phase`'s hook, if there is one, and keeps its output in `log` (once the run has
    /// one; else the output of a hook that failed is shown).
    pub async fn run(
        &self,
        phase: Phase,
        env: &Env,
        printer: &Printer,
        log: Option<&RunLog>,
    ) -> Result<Option<Ran>, HookError> {
        if !self.has(phase) {
            return Ok(None);
        }
        printer.step(format!("running hook {}", phase.name()));
        let result = self.execute(phase, env).await;
        let (output, ended) = match &result {
            Ok(ran) => (
                ran.output.as_str(),
                format!("exit 0 in {:.1} s", ran.seconds),
            ),
            Err(e) => (e.output().unwrap_or_default(), e.to_string()),
        };
        match log {
            Some(log) => log.append(&log_entry(phase, output, &ended), printer),
            None if result.is_err() => {
                for line in output.lines() {
                    printer.step(format!("hook {}: {line}", phase.name()));
                }
            }
            None => {}
        }
        result.map(Some)
    }

    /// Runs `phase`'s hook in the hook directory with standard input from /dev/null, in a
    /// process group of its own (killed whole at the timeout, or when pgup is interrupted),
    /// sent SIGKILL if pgup dies.
    async fn execute(&self, phase: Phase, env: &Env) -> Result<Ran, HookError> {
        // Checked again as it runs: a resumed run finds the directory as it is now.
        let path = trusted(&self.dir.join(phase.name()))?;
        let spawn = |source| HookError::Spawn {
            phase: phase.name(),
            source,
        };
        let began = Instant::now();
        let (reader, writer) = std::io::pipe().map_err(spawn)?;
        let mut command = tokio::process::Command::new(&path);
        command
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(writer.try_clone().map_err(spawn)?)
            .stderr(writer)
            .envs(variables(phase, env))
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: the closure only makes one system call, which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ))
                .map_err(std::io::Error::from)
            });
        }
        let mut child = command.spawn().map_err(spawn)?;
        // The pipe's write ends are the hook's only: the read ends when it (and what it
        // started) closes them.
        drop(command);
        let mut group = Group(child.id());
        let mut pipe =
            tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into()).map_err(spawn)?;
        let mut output = Vec::new();
        let limit = Duration::from_secs(self.timeout_s);
        let ran = tokio::time::timeout(limit, async {
            let read = read_kept(&mut pipe, &mut output);
            tokio::pin!(read);
            let mut read_all = false;
            let status = tokio::select! {
                status = child.wait() => status,
                () = &mut read => {
                    read_all = true;
                    child.wait().await
                }
            };
            // Something the hook left running may hold the pipe: its output is not waited for.
            if !read_all {
                let _ = tokio::time::timeout(Duration::from_secs(1), read).await;
            }
            status
        })
        .await;
        let text = |output: &[u8]| String::from_utf8_lossy(output).into_owned();
        let status = match ran {
            Ok(status) => status.map_err(spawn)?,
            Err(_) => {
                group.signal(rustix::process::Signal::TERM);
                if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
                    group.signal(rustix::process::Signal::KILL);
                }
                return Err(HookError::TimedOut {
                    phase: phase.name(),
                    seconds: self.timeout_s,
                    output: text(&output),
                });
            }
        };
        group.0 = None;
        if !status.success() {
            return Err(HookError::Failed {
                phase: phase.name(),
                status: match status.code() {
                    Some(code) => format!("exit code {code}"),
                    None => format!("killed by signal {}", status_signal(&status)),
                },
                output: text(&output),
            });
        }
        Ok(Ran {
            phase,
            seconds: began.elapsed().as_secs_f64(),
            output: text(&output),
        })
    }
}

/// The hooks that run as `step` of an upgrade whose steps are `steps` begins: their place
/// in the journal, so that a step resumed runs those that had not ended.
pub fn at_start(step: Step, steps: &[Step]) -> &'static [Phase] {
    let backup = steps.contains(&Step::BackingUp);
    match step {
        Step::PreCopying => &[Phase::PreBackup],
        Step::Checking if backup && !steps.contains(&Step::PreCopying) => &[Phase::PreBackup],
        Step::Upgrading if backup => &[Phase::PostBackup, Phase::PreUpgrade],
        Step::Upgrading => &[Phase::PreUpgrade],
        Step::PostUpgrade => &[Phase::PostUpgrade],
        _ => &[],
    }
}

/// The log of a run, private to the data owner.
#[derive(Debug, Clone)]
pub struct RunLog {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
}

impl RunLog {
    /// The log of the run at `stamp` with backup `backup`, wherever the run's end has moved
    /// it ([`Layout::run_log_now`]), its directory made when it is the failed runs'.
    pub fn of(layout: &Layout, backup: Option<&str>, stamp: &str, uid: u32, gid: u32) -> Self {
        let path = layout.run_log_now(backup, stamp);
        if !path.parent().is_some_and(Path::exists) {
            let _ = crate::backup::logs_dir(layout, uid, gid);
        }
        Self { path, uid, gid }
    }

    /// Appends `text`; a log that cannot be written is said, not fatal.
    pub fn append(&self, text: &str, printer: &Printer) {
        let mut all = std::fs::read(&self.path).unwrap_or_default();
        all.extend_from_slice(text.as_bytes());
        if let Err(e) = crate::backup::private_file(&self.path, &all, self.uid, self.gid) {
            printer.step(format!("cannot write the log {}: {e}", self.path.display()));
        }
    }
}

/// The hook's process group, sent SIGKILL when dropped before the hook ended (pgup
/// interrupted: its work is dropped at the next await).
struct Group(Option<u32>);

impl Group {
    fn signal(&self, signal: rustix::process::Signal) {
        if let Some(pid) = self
            .0
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(rustix::process::Signal::KILL);
    }
}

fn status_signal(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.signal().unwrap_or(0)
}

/// Reads the pipe to its end, keeping the last [`KEPT_OUTPUT`] bytes.
async fn read_kept(pipe: &mut tokio::net::unix::pipe::Receiver, kept: &mut Vec<u8>) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * KEPT_OUTPUT {
            kept.drain(..kept.len() - KEPT_OUTPUT);
        }
    }
}

/// `path` with its links resolved, once it and every directory above it are owned by root or
/// this user and writable by their owner only (as sshd's StrictModes asks), except a
/// directory with the sticky bit such as /tmp, where others cannot move what is not theirs:
/// no one else can change what pgup will run.
fn trusted(path: &Path) -> Result<PathBuf, HookError> {
    let unreadable = |source| HookError::Unreadable {
        dir: path.to_owned(),
        source,
    };
    let real = std::fs::canonicalize(path).map_err(unreadable)?;
    let me = rustix::process::geteuid().as_raw();
    for (i, p) in real.ancestors().enumerate() {
        let meta = std::fs::metadata(p).map_err(unreadable)?;
        if meta.uid() != 0 && meta.uid() != me {
            return Err(HookError::Owner(p.to_owned(), meta.uid()));
        }
        let sticky = i > 0 && meta.permissions().mode() & 0o1000 != 0;
        if meta.permissions().mode() & 0o022 != 0 && !sticky {
            return Err(HookError::Writable(p.to_owned()));
        }
    }
    Ok(real)
}

/// The environment a hook finds, besides pgup's own.
fn variables(phase: Phase, env: &Env) -> Vec<(&'static str, String)> {
    let path = |p: &Path| p.display().to_string();
    vec![
        ("PGUP_PHASE", phase.name().to_owned()),
        ("PGUP_TARGET", env.target.clone()),
        ("PGUP_CONTAINER", env.container.clone().unwrap_or_default()),
        ("PGUP_DATA_DIR", path(&env.data_dir)),
        (
            "PGUP_BACKUP_DIR",
            env.backup_dir.as_deref().map(path).unwrap_or_default(),
        ),
        ("PGUP_FROM", env.from.to_string()),
        ("PGUP_TO", env.to.to_string()),
        (
            "PGUP_RESULT",
            env.result.map(Outcome::name).unwrap_or_default().to_owned(),
        ),
    ]
}

/// A hook's run as the run's log keeps it.
pub fn log_entry(phase: Phase, output: &str, ended: &str) -> String {
    let mut entry = format!("hook {}:\n", phase.name());
    entry.push_str(output);
    if !output.is_empty() && !output.ends_with('\n') {
        entry.push('\n');
    }
    entry.push_str(&format!("hook {}: {ended}\n", phase.name()));
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(dir: &Path, name: &str, script: &str, mode: u32) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn open(dir: &Path) -> Result<Hooks, HookError> {
        Hooks::open(dir, Duration::from_secs(5), false)
    }

    #[test]
    fn a_directory_of_phases_is_accepted_in_phase_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        hook(dir.path(), "end", "true", 0o755);
        hook(dir.path(), "pre-upgrade", "true", 0o700);
        // Not executable, not a phase: a file the hooks share.
        hook(dir.path(), "common.sh", "true", 0o644);
        hook(dir.path(), ".hidden", "true", 0o755);
        let hooks = open(dir.path()).unwrap();
        assert_eq!(hooks.phases, [Phase::PreUpgrade, Phase::End]);
        assert!(hooks.has(Phase::End) && !hooks.has(Phase::PreCheck));
    }

    #[test]
    fn what_would_not_run_as_meant_is_refused() {
        let cases: [(&str, u32, &str); 3] = [
            ("pre_upgrade", 0o755, "is not a phase's name"),
            ("post-upgrade", 0o644, "is not an executable regular file"),
            ("pre-check", 0o757, "is writable by others"),
        ];
        for (name, mode, says) in cases {
            let dir = tempfile::tempdir().unwrap();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            hook(dir.path(), name, "true", mode);
            let e = open(dir.path()).unwrap_err().to_string();
            assert!(e.contains(says), "{name}: {e}");
        }
        let e = open(Path::new("/nonexistent/hooks"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read the hook directory"), "{e}");
    }

    #[test]
    fn hooks_run_where_the_steps_begin() {
        use crate::plan::{BackupKind, WhileServing, upgrade_steps};
        let serving = WhileServing {
            prepare: true,
            precopy: true,
        };
        let at = |steps: &[Step]| -> Vec<Phase> {
            steps
                .iter()
                .flat_map(|s| at_start(*s, steps))
                .copied()
                .collect()
        };
        use Phase::*;
        // Every upgrade phase once, in its order, whichever the steps.
        let precopied = upgrade_steps(BackupKind::Copy, true, serving, true);
        assert_eq!(
            at(&precopied),
            [PreBackup, PostBackup, PreUpgrade, PostUpgrade]
        );
        assert_eq!(at_start(Step::PreCopying, &precopied), [PreBackup]);
        let stopped = upgrade_steps(BackupKind::Copy, false, WhileServing::default(), true);
        assert_eq!(at_start(Step::Checking, &stopped), [PreBackup]);
        assert_eq!(
            at(&stopped),
            [PreBackup, PostBackup, PreUpgrade, PostUpgrade]
        );
        let bare = upgrade_steps(BackupKind::None, false, WhileServing::default(), false);
        assert_eq!(at(&bare), [PreUpgrade], "no backup, no post-upgrade step");
    }

    #[test]
    fn the_log_names_each_hook_and_how_it_ended() {
        assert_eq!(
            log_entry(Phase::PreCheck, "ok", "exit 0 in 0.1 s"),
            "hook pre-check:\nok\nhook pre-check: exit 0 in 0.1 s\n"
        );
    }
}
