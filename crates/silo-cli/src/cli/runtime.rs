//! `silo runtime …`: build, install, inspect, verify, export and remove runtimes (root
//! filesystems that jobs run in).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{GlobalOptions, exact_runtime_arg, runtime_arg};
use crate::parse::RuntimeRef;

/// `silo runtime [--config FILE] [--server NAME] …`.
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// Which server, and how to reach it.
    #[command(flatten)]
    pub global: GlobalOptions,
    /// The runtime command.
    #[command(subcommand)]
    pub command: RuntimeCommand,
}

/// `silo runtime …`.
#[derive(Debug, Subcommand)]
pub enum RuntimeCommand {
    /// Build a runtime on the server from a spec file and install it, showing the progress
    Build(BuildArgs),
    /// List the installed runtimes, by name then newest version first
    #[command(alias = "ls")]
    List(RuntimeListArgs),
    /// Show one runtime in detail: spec, packages, environment, manifest and signer
    Info(RuntimeInfoArgs),
    /// Re-hash every file of a runtime against its signed manifest; exit 1 on a difference
    Verify(VerifyArgs),
    /// Write a runtime as one archive (its tree and signed manifest), to install elsewhere
    Export(ExportArgs),
    /// Install a runtime from an archive written by `silo runtime export`
    Install(InstallArgs),
    /// Remove one runtime version (refused while a job uses it)
    #[command(alias = "rm")]
    Remove(RemoveArgs),
}

/// `silo runtime build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The runtime's spec, a YAML file (see runtimes/*.yml in silo's repository)
    #[arg(value_name = "FILE.yml")]
    pub spec: PathBuf,

    /// Replace an installed runtime of the same name and version
    #[arg(long)]
    pub replace: bool,
}

/// `silo runtime list`.
#[derive(Debug, Args)]
pub struct RuntimeListArgs {
    /// Print a JSON array of runtimes instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `silo runtime info`.
#[derive(Debug, Args)]
pub struct RuntimeInfoArgs {
    /// The runtime: NAME (its highest installed version) or NAME@VERSION
    #[arg(value_name = "NAME[@VERSION]", value_parser = runtime_arg)]
    pub runtime: RuntimeRef,

    /// Print the runtime as JSON
    #[arg(long)]
    pub json: bool,
}

/// `silo runtime verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The runtime: NAME (its highest installed version) or NAME@VERSION
    #[arg(value_name = "NAME[@VERSION]", value_parser = runtime_arg)]
    pub runtime: RuntimeRef,
}

/// `silo runtime export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The runtime: NAME (its highest installed version) or NAME@VERSION
    #[arg(value_name = "NAME[@VERSION]", value_parser = runtime_arg)]
    pub runtime: RuntimeRef,

    /// The archive file to write (replaced only once the archive is complete), or `-` for
    /// standard output
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

/// `silo runtime install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The archive, as written by `silo runtime export`, or `-` for standard input
    #[arg(value_name = "FILE")]
    pub archive: PathBuf,

    /// Replace an installed runtime of the same name and version
    #[arg(long)]
    pub replace: bool,
}

/// `silo runtime remove`.
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The runtime version to remove: NAME@VERSION
    #[arg(value_name = "NAME@VERSION", value_parser = exact_runtime_arg)]
    pub runtime: RuntimeRef,
}
