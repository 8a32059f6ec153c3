//! `silo schedule …`: look at and control cron schedules (made by `silo job run --cron`).

use clap::{Args, Subcommand, ValueEnum};

use super::GlobalOptions;

/// `silo schedule [--config FILE] [--server NAME] …`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Which server, and how to reach it.
    #[command(flatten)]
    pub global: GlobalOptions,
    /// The schedule command.
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

/// `silo schedule …`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// List schedules, newest first
    #[command(alias = "ls")]
    List(ScheduleListArgs),
    /// Show one schedule, its policies and its next three firings
    Status(ScheduleStatusArgs),
    /// Stop firing until resumed (a job already started runs on)
    Pause(ScheduleIdArgs),
    /// Fire again, from the next instant after now
    Resume(ScheduleIdArgs),
    /// Delete a schedule (its jobs stay)
    #[command(alias = "rm")]
    Delete(ScheduleIdArgs),
}

/// `silo schedule list`.
#[derive(Debug, Args)]
pub struct ScheduleListArgs {
    /// Print a JSON array of schedules instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `silo schedule status`.
#[derive(Debug, Args)]
pub struct ScheduleStatusArgs {
    /// The schedule's id or any unique prefix of it
    #[arg(value_name = "ID", value_parser = super::job_id)]
    pub id: String,

    /// Print the schedule as JSON
    #[arg(long)]
    pub json: bool,
}

/// `silo schedule pause|resume|delete`.
#[derive(Debug, Args)]
pub struct ScheduleIdArgs {
    /// The schedule's id or any unique prefix of it
    #[arg(value_name = "ID", value_parser = super::job_id)]
    pub id: String,
}

/// `--missed`: what a schedule does with firings missed while the server was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MissedArg {
    /// Drop them
    Skip,
    /// Run one job for the latest of them (the default)
    Once,
}

/// `--overlap`: whether a firing starts while the previous firing's job still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OverlapArg {
    /// Start another job anyway
    Allow,
    /// Skip the firing (the default)
    Skip,
}
