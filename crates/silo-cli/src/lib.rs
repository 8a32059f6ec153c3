//! silo's client: `silo job …` (run, list, status, logs, stop, delete), `silo workflow …`
//! (run, list, status, logs, graph, validate, cancel, retry, delete), `silo runtime …`
//! (build, list, info, verify, export, install, remove), `silo node`, `silo top` and
//! `silo certs …`, speaking the job, workflow, runtime and node APIs over mutual TLS.
//!
//! The binary parses a [`ClientCommand`] with clap, calls [`run`],
//! and exits with the status it returns; on an error it prints it with [`report_error`]
//! (`silo: <message>`) and exits 1.

#![warn(missing_docs)]

mod cli;
mod coalesce;
mod commands;
pub mod config;
pub mod connect;
mod exit;
mod format;
mod logs;
mod output;
pub mod parse;
mod session;
pub mod uploads;
mod view;

pub use cli::{
    BuildArgs, CertsCommand, CertsListArgs, ClientCommand, DeleteArgs, EnvArg, ExportArgs,
    GlobalOptions, GraphArgs, GraphFormat, InitArgs, InstallArgs, IssueArgs, JobArgs, JobCommand,
    ListArgs, LogsArgs, NodeArgs, RemoveArgs, RevokeArgs, RoleArg, RunArgs, RuntimeArgs,
    RuntimeCommand, RuntimeInfoArgs, RuntimeListArgs, ServerCommand, ServerInfoArgs, StateArg,
    StatusArgs, StopArgs, TopArgs, TopSort, ValidateArgs, VerifyArgs, WorkflowArgs,
    WorkflowCommand, WorkflowIdArgs, WorkflowListArgs, WorkflowLogsArgs, WorkflowRunArgs,
    WorkflowStatusArgs, parse_branch,
};
pub use cli::{
    MissedArg, OverlapArg, ScheduleArgs, ScheduleCommand, ScheduleIdArgs, ScheduleListArgs,
    ScheduleStatusArgs,
};
pub use exit::{
    EXIT_BROKEN_PIPE, EXIT_CANNOT_EXECUTE, EXIT_INTERRUPTED, EXIT_NO_STATUS, EXIT_NOT_FOUND,
};
pub use output::{error_message, report_error};

/// The single-threaded runtime a client command runs on.
fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| anyhow::anyhow!("cannot start the client runtime: {err}"))
}

/// Has glibc's allocator keep memory the process frees for its next allocations; call it
/// before any thread starts (the server and the client both do). By default an allocation
/// of 128 KiB or more is a fresh mapping (the threshold moves with what was freed), and
/// freed memory at the top of a heap goes back to the kernel past 128 KiB: a log stream's
/// 1 MiB batches, encode and decode buffers were mapped, faulted in page by page, zeroed
/// by the kernel and unmapped again, message after message (about 9 % of the server's
/// streaming task). Allocations below 4 MiB now come from the heaps, which keep up to
/// 16 MiB of freed memory each.
pub fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

/// Runs a `silo server …` client command (`silo server` alone runs the server itself).
pub fn run_server_command(command: ServerCommand) -> anyhow::Result<i32> {
    let runtime = client_runtime()?;
    runtime.block_on(async {
        match command {
            ServerCommand::Info(args) => {
                let global = args.global.clone();
                commands::info::info(&global, args).await
            }
        }
    })
}

/// Runs one client command and returns the process exit status.
///
/// For `silo job run` that is the job's own status (see its `--help`); for `silo workflow
/// run` (attached) 0 when the workflow completed, else 1 (130 when Ctrl-C stopped
/// following it); for `silo runtime verify` 1 when the runtime differs from its manifest;
/// for every other command 0, or 141 when stdout was closed by its reader. Errors are
/// returned as one sentence each (print them with [`report_error`]): a server's message as
/// it sent it ("job 3f2a not found"), or what failed on the way ("cannot connect to
/// 127.0.0.1:50051: connection refused", "the server rejected this client's certificate
/// …").
///
/// Builds its own single-threaded tokio runtime; call it from outside any runtime.
pub fn run(command: ClientCommand) -> anyhow::Result<i32> {
    let JobArgs {
        global,
        command: job,
    } = match command {
        ClientCommand::Certs(certs) => return commands::certs::certs(certs),
        ClientCommand::Runtime(RuntimeArgs { global, command }) => {
            return client_runtime()?.block_on(commands::runtime::runtime(&global, command));
        }
        ClientCommand::Schedule(ScheduleArgs { global, command }) => {
            return client_runtime()?.block_on(commands::schedule::schedule(&global, command));
        }
        ClientCommand::Workflow(WorkflowArgs { global, command }) => {
            return client_runtime()?.block_on(commands::workflow::workflow(&global, command));
        }
        ClientCommand::Node(args) => {
            return client_runtime()?.block_on(commands::node::node(args));
        }
        ClientCommand::Top(args) => return client_runtime()?.block_on(commands::top::top(args)),
        ClientCommand::Job(job) => job,
    };
    let runtime = client_runtime()?;
    runtime.block_on(async {
        match job {
            JobCommand::Run(args) => commands::run::run(&global, *args).await,
            JobCommand::List(args) => commands::list::list(&global, args).await,
            JobCommand::Status(args) => commands::status::status(&global, args).await,
            JobCommand::Logs(args) => commands::logs::logs(&global, args).await,
            JobCommand::Stats(args) => commands::stats::stats(&global, args).await,
            JobCommand::Stop(args) => commands::stop::stop(&global, args).await,
            JobCommand::Delete(args) => commands::delete::delete(&global, args).await,
        }
    })
}
