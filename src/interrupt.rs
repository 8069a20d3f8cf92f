//! Ctrl-C and SIGTERM. The running command is dropped at its next await (a long copy stops
//! at its next file, see [`interrupted`]), the temporary containers and volumes this process
//! made are removed, and the journal stays on disk: the one line printed says how to finish
//! or undo what was under way.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;
use tokio::signal::unix::{SignalKind, signal};

use crate::docker::Docker;
use crate::journal::Journal;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
/// The mount root whose journal explains an interruption, and the target flags for the hint.
static JOURNALED: Mutex<Option<(PathBuf, String)>> = Mutex::new(None);

/// Whether Ctrl-C or SIGTERM arrived: long blocking work asks this between units of work.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// Tells where the journal of the operation under way is, for the line printed if it is
/// interrupted.
pub fn journal_at(root: PathBuf, target_flags: String) {
    *JOURNALED.lock().expect("never poisoned") = Some((root, target_flags));
}

/// Runs `work` until it ends or a signal arrives.
pub async fn run<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    let (mut int, mut term) = (
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
    );
    tokio::select! {
        result = work => result,
        _ = int.recv() => stopped().await,
        _ = term.recv() => stopped().await,
    }
}

async fn stopped<T>() -> Result<T> {
    INTERRUPTED.store(true, Ordering::Relaxed);
    if let Ok(docker) = Docker::connect().await {
        docker.remove_mine().await;
    }
    let journaled = JOURNALED.lock().expect("never poisoned").clone();
    let explained = journaled.and_then(|(root, flags)| {
        Journal::read(&root)
            .ok()
            .flatten()
            .map(|j| j.explain(&flags))
    });
    match explained {
        Some(line) => anyhow::bail!("interrupted: {line}"),
        None => anyhow::bail!("interrupted; nothing was changed"),
    }
}
