//! `pgup check`: every precondition of an upgrade (see `preflight`), reported without
//! changing anything; exits 3 when one fails.

use std::fmt;

use anyhow::Result;
use serde::Serialize;

use crate::docker::Docker;
use crate::error::Status;
use crate::preflight::{self, Item, Outcome};
use crate::settings::{Intent, TargetSpec};
use crate::target::Target;
use crate::ui::Printer;

#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub target: String,
    pub from: Option<u32>,
    pub to: u32,
    pub ok: bool,
    pub items: Vec<Item>,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for item in &self.items {
            let outcome = match item.outcome {
                Outcome::Ok => "ok",
                Outcome::Warn => "warn",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "skip",
            };
            writeln!(f, "{outcome:<5} {:<12} {}", item.check, item.detail)?;
        }
        if self.ok {
            writeln!(
                f,
                "{} can be upgraded to PostgreSQL {}.",
                self.target, self.to
            )
        } else {
            writeln!(
                f,
                "{} cannot be upgraded as it is: fix what failed above.",
                self.target
            )
        }
    }
}

pub async fn run(spec: TargetSpec, intent: Intent, printer: &Printer) -> Result<Status> {
    let docker = Docker::connect_for(spec.is_data_dir()).await?;
    let target = Target::resolve(&spec, &docker).await?;
    let mut pre = preflight::static_checks(&docker, target, &intent, printer).await?;
    if !pre.blocked() {
        match preflight::live_server(&pre) {
            // No throwaway view without an engine: the server-side checks would start the
            // cluster in place.
            None if !docker.has_engine() => pre.push(
                "pg_upgrade",
                Outcome::Skip,
                "no Docker engine here, so no throwaway view of the cluster: `pgup upgrade` runs pg_upgrade's checks once its backup holds the cluster, and puts the backup back if they refuse",
            ),
            None => {
                preflight::cluster_checks(&docker, &mut pre, false, true).await?;
            }
            Some(server) => {
                preflight::live_checks(&docker, &mut pre, &server, true).await?;
            }
        }
    }
    let report = CheckReport {
        target: pre.target.label.clone(),
        from: Some(pre.old_major),
        to: pre.new_major,
        ok: !pre.failed(),
        items: pre.items,
    };
    printer.report(&report)?;
    Ok(if report.ok {
        Status::Done
    } else {
        Status::Refused
    })
}
