//! pgup: upgrade the PostgreSQL major version of a database running in Docker, and go back.
//! This file parses the command line, dispatches, and turns how the command ended into the
//! exit status (see `error`); each command lives in its own module.

mod assemble;
mod backup;
mod check;
mod cleanup;
mod cli;
mod cluster;
mod collation;
mod compose;
mod config;
mod docker;
mod entrypoint;
mod error;
mod extension;
mod failpoint;
mod hooks;
mod image;
mod interrupt;
mod journal;
mod layout;
mod location;
mod options;
mod pagedigests;
mod pg_upgrade_output;
mod pgclient;
mod pgcmd;
mod plan;
mod preflight;
mod recreate;
mod relay;
mod removals;
mod restore;
mod rollback;
mod rules;
mod settings;
mod space;
mod statistics;
mod status;
mod target;
mod toolbox;
mod tree;
mod ui;
mod upgrade;
mod verify;
mod walchanges;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, ImageCommand};
use crate::error::{Kind, Status};
use crate::ui::Printer;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return cli::reject(e),
    };
    let printer = Printer::new(cli.json);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a single-threaded runtime always builds");
    // The entrypoint passes stop signals on to the upgrade it runs, rather than being stopped.
    let signals_stop = !matches!(cli.command, Command::Entrypoint(_));
    let work = dispatch(cli.command, &printer);
    let result = runtime.block_on(async {
        if signals_stop {
            interrupt::run(work).await
        } else {
            work.await
        }
    });
    match result {
        Ok(status) => ExitCode::from(status.exit_code()),
        Err(err) => {
            let kind = Kind::of(&err, interrupt::interrupted());
            printer.error(&err, kind);
            ExitCode::from(kind.exit_code())
        }
    }
}

async fn dispatch(command: Command, printer: &Printer) -> anyhow::Result<Status> {
    match command {
        Command::Status(args) => status::run(args.target.resolve()?, printer).await,
        Command::Check(args) => {
            let (target, intent) = args.resolve()?;
            check::run(target, intent, printer).await
        }
        Command::Upgrade(args) => upgrade::run(args.resolve()?, printer).await,
        Command::Rollback(args) => rollback::run(args.resolve()?, printer).await,
        Command::Cleanup(args) => cleanup::run(args.resolve()?, printer).await,
        Command::Image(ImageCommand::Save {
            images,
            output,
            include,
        }) => image::save(&images, &include, &output, printer).await,
        Command::Image(ImageCommand::Verify { verify, extract }) => {
            image::check(&verify.into(), extract.as_deref(), printer)
        }
        Command::Image(ImageCommand::Load {
            verify,
            allow_unverified,
        }) => image::load(&verify.into(), allow_unverified, printer).await,
        Command::Image(ImageCommand::List) => image::list(printer).await,
        Command::Image(ImageCommand::Assemble { old, new, tag }) => {
            image::assemble(&old, &new, tag.as_deref(), printer).await
        }
        Command::Entrypoint(args) => entrypoint::run(args.server).await,
    }
}
