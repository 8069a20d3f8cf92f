//! pgup: upgrade the PostgreSQL major version of a database running in Docker, and go back.
//! This file parses the command line and dispatches; each command lives in its own module.

mod backup;
mod check;
mod cleanup;
mod cli;
mod cluster;
mod config;
mod docker;
mod image;
mod interrupt;
mod journal;
mod options;
mod pg_upgrade_output;
mod pgclient;
mod pgcmd;
mod plan;
mod recreate;
mod rollback;
mod space;
mod status;
mod target;
mod toolbox;
mod tree;
mod ui;
mod upgrade;
mod verify;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::ui::Printer;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let printer = Printer::new(cli.json);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a single-threaded runtime always builds");
    let result = runtime.block_on(interrupt::run(async {
        match cli.command {
            Command::Status(args) => status::run(args, &printer).await.map(|()| true),
            Command::Check(args) => check::run(args, &printer).await,
            Command::Upgrade(args) => upgrade::run(args, &printer).await,
            Command::Rollback(args) => rollback::run(args, &printer).await,
            Command::Cleanup(args) => cleanup::run(args, &printer).await,
            Command::Image(command) => image::run(command, &printer).await,
        }
    }));
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            printer.error(&err);
            ExitCode::FAILURE
        }
    }
}
