//! Named points where the crash tests stop pgup: when `PGUP_KILL_AT` names the point, pgup
//! SIGKILLs itself there, exactly as a crash or `kill -9` would stop it; `PGUP_STOP_AT`
//! freezes it there with SIGSTOP, so that a test can change the world (fill the disk, say) at
//! an exact moment and then send SIGCONT. Points are the journal's steps (right after each is
//! recorded) and a few places inside long steps, each reached once. Read from the environment
//! only; documented in docs/design.md as testing aids.

use rustix::process::{Signal, getpid, kill_process};

pub fn hit(name: &str) {
    for (var, signal) in [
        ("PGUP_KILL_AT", Signal::KILL),
        ("PGUP_STOP_AT", Signal::STOP),
    ] {
        if std::env::var(var).is_ok_and(|at| at == name) {
            let _ = kill_process(getpid(), signal);
        }
    }
}
