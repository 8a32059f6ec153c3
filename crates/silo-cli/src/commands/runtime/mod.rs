//! `silo runtime …`: one file per command, plus the progress display that build and
//! install share.

mod build;
mod export;
mod info;
mod install;
mod list;
mod progress;
mod remove;
mod verify;

use silo_proto::v1::Runtime;

use crate::cli::{GlobalOptions, RuntimeCommand};

/// Runs a `silo runtime` command and returns its exit status.
pub async fn runtime(global: &GlobalOptions, command: RuntimeCommand) -> anyhow::Result<i32> {
    match command {
        RuntimeCommand::Build(args) => build::build(global, args).await,
        RuntimeCommand::List(args) => list::list(global, args).await,
        RuntimeCommand::Info(args) => info::info(global, args).await,
        RuntimeCommand::Verify(args) => verify::verify(global, args).await,
        RuntimeCommand::Export(args) => export::export(global, args).await,
        RuntimeCommand::Install(args) => install::install(global, args).await,
        RuntimeCommand::Remove(args) => remove::remove(global, args).await,
    }
}

/// A runtime as people name it: `python-3.11@1.0.0`.
fn title(runtime: &Runtime) -> String {
    format!("{}@{}", runtime.name, runtime.version)
}
