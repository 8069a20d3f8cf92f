//! The one printer: everything pgup shows goes through here. Results go to stdout as text or
//! as one JSON document; steps, progress and questions go to stderr, progress bars only when
//! stderr is a terminal and the output is not JSON.

use std::fmt::Display;
use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::error::{Kind, UsageError};

/// The result of a command that found nothing to do (a re-run of one that finished).
#[derive(Debug, Serialize)]
pub struct Unchanged {
    pub target: String,
    pub changed: bool,
    pub reason: String,
}

impl Unchanged {
    pub fn new(target: &str, reason: String) -> Self {
        Self {
            target: target.to_owned(),
            changed: false,
            reason,
        }
    }
}

impl Display for Unchanged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "Nothing to do: {}.", self.reason)
    }
}

pub struct Printer {
    json: bool,
}

impl Printer {
    pub fn new(json: bool) -> Self {
        Self { json }
    }

    /// A command's result: JSON on stdout with --json, else its text.
    pub fn report<T: Serialize + Display>(&self, value: &T) -> Result<()> {
        let mut out = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer_pretty(&mut out, value)?;
            writeln!(out)?;
        } else {
            write!(out, "{value}")?;
        }
        Ok(())
    }

    /// One line about what is happening now (stderr, also with --json: stdout stays a document).
    pub fn step(&self, message: impl Display) {
        eprintln!("==> {message}");
    }

    /// A bytes/ETA bar for a long transfer; hidden unless a person watches stderr.
    pub fn bytes_bar(&self, total: u64) -> ProgressBar {
        self.bar(
            total,
            "    {bar:40} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
    }

    /// A done/total bar for a count of `what`; hidden unless a person watches stderr.
    pub fn count_bar(&self, total: u64, what: &str) -> ProgressBar {
        self.bar(
            total,
            &format!("    {{bar:40}} {{pos}}/{{len}} {what} ETA {{eta}}"),
        )
    }

    fn bar(&self, total: u64, template: &str) -> ProgressBar {
        if self.json || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template(template).expect("a valid template"));
        bar
    }

    /// Shows `what` and asks whether to go on; refuses, showing nothing, when there is no
    /// terminal to ask on.
    pub fn confirm(&self, what: &dyn Display, question: &str) -> Result<bool> {
        if !std::io::stdin().is_terminal() {
            return Err(UsageError(
                "nothing was changed: there is no terminal to confirm on; pass --yes to proceed without asking".into(),
            )
            .into());
        }
        eprint!("{what}{question} [y/N] ");
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
    }

    /// The one line of a failure on stderr (the whole cause chain); with --json also
    /// `{"error": ..., "kind": ...}` on stdout, so scripts always get a document.
    pub fn error(&self, err: &anyhow::Error, kind: Kind) {
        let line = format!("{err:#}");
        eprintln!("error: {line}");
        if self.json {
            println!("{}", serde_json::json!({ "error": line, "kind": kind }));
        }
    }
}
