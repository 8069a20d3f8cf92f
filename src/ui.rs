//! The one printer: everything pgup shows goes through here, as text or as one JSON document.

use std::fmt::Display;
use std::io::Write;

use anyhow::Result;
use serde::Serialize;

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

    /// The one line of a failure on stderr (the whole cause chain); with --json also
    /// `{"error": ...}` on stdout, so scripts always get a document.
    pub fn error(&self, err: &anyhow::Error) {
        let line = format!("{err:#}");
        eprintln!("error: {line}");
        if self.json {
            println!("{}", serde_json::json!({ "error": line }));
        }
    }
}
