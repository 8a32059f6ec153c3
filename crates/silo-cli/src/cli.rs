//! The client's command line: `silo job …`, `silo workflow …`, `silo runtime …` and
//! `silo certs …`, with the options every client command shares. Values are checked here,
//! while parsing, so a bad flag is refused before anything is sent.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use silo_proto::v1::JobState;

use crate::parse::{self, EnvSetting, RuntimeRef};

mod node;
mod runtime;
mod schedule;
mod workflow;

pub use node::{NodeArgs, TopArgs, TopSort};
pub use runtime::{
    BuildArgs, ExportArgs, InstallArgs, RemoveArgs, RuntimeArgs, RuntimeCommand, RuntimeInfoArgs,
    RuntimeListArgs, VerifyArgs,
};
pub use schedule::{
    MissedArg, OverlapArg, ScheduleArgs, ScheduleCommand, ScheduleIdArgs, ScheduleListArgs,
    ScheduleStatusArgs,
};
pub use workflow::{
    GraphArgs, GraphFormat, ValidateArgs, WorkflowArgs, WorkflowCommand, WorkflowIdArgs,
    WorkflowListArgs, WorkflowLogsArgs, WorkflowRunArgs, WorkflowStatusArgs,
};

/// Options every client command takes.
#[derive(Debug, Clone, Default, Args)]
pub struct GlobalOptions {
    /// Client configuration file. Default: $SILO_CONFIG, else ~/.config/silo/config.toml,
    /// else /var/lib/silo/client-admin.toml (the first that exists)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The server to use, by its name in the configuration. Default: the configuration's
    /// `current` server, or its only one
    #[arg(long, global = true, value_name = "NAME")]
    pub server: Option<String>,
}

/// The client commands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Run jobs and look at them
    Job(JobArgs),
    /// Run workflows (DAGs of jobs written in YAML) and look at them
    Workflow(WorkflowArgs),
    /// Build, install and inspect runtimes: root filesystems that jobs run in
    Runtime(RuntimeArgs),
    /// Look at and control cron schedules (made by `silo job run --cron`)
    Schedule(ScheduleArgs),
    /// Create certificates for silo's mutual TLS
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Show the server's host: version, uptime, kernel, cgroups, cores, memory, disk,
    /// jobs, runtimes, load and pressure
    Node(NodeArgs),
    /// Show the running jobs' cpu, memory, io and processes live, refreshed every second
    Top(TopArgs),
}

/// The client command in `args` (the whole command line, program name first), parsed by
/// its branch of the command tree alone (`silo job …` by the job commands); `None` when
/// the branch does not take it as it is (help, version, a mistake) or it is not a
/// client branch with arguments of its own: the caller then parses the whole command line,
/// whose messages are the CLI's own.
pub fn parse_branch(args: &[std::ffi::OsString]) -> Option<ClientCommand> {
    fn one<A: clap::Args + clap::FromArgMatches>(
        args: &[std::ffi::OsString],
        name: &'static str,
    ) -> Option<A> {
        let branch = A::augment_args(clap::Command::new(name));
        // The whole command line's version flags, so that `silo job run --version` is
        // the version (from the whole command line) and not a command named --version.
        let mut matches = clap::Command::new("silo")
            .version(env!("CARGO_PKG_VERSION"))
            .propagate_version(true)
            .subcommand(branch)
            .try_get_matches_from(args)
            .ok()?;
        let (_, mut sub) = matches.remove_subcommand()?;
        A::from_arg_matches_mut(&mut sub).ok()
    }
    match args.get(1)?.to_str()? {
        "job" => one(args, "job").map(ClientCommand::Job),
        "workflow" => one(args, "workflow").map(ClientCommand::Workflow),
        "runtime" => one(args, "runtime").map(ClientCommand::Runtime),
        "schedule" => one(args, "schedule").map(ClientCommand::Schedule),
        "node" => one(args, "node").map(ClientCommand::Node),
        "top" => one(args, "top").map(ClientCommand::Top),
        _ => None,
    }
}

/// `silo server …` commands that are clients of a running server.
#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Ask the server what it is and allows: version, your role, limits, cgroups, features
    Info(ServerInfoArgs),
}

/// `silo server info`.
#[derive(Debug, Args)]
pub struct ServerInfoArgs {
    /// Which server, and how to reach it.
    #[command(flatten)]
    pub global: GlobalOptions,

    /// Print the server's information as JSON
    #[arg(long)]
    pub json: bool,
}

/// `silo job [--config FILE] [--server NAME] …`: the options that pick the server apply to
/// every job command (and may stand before or after it).
#[derive(Debug, Args)]
pub struct JobArgs {
    /// Which server, and how to reach it.
    #[command(flatten)]
    pub global: GlobalOptions,
    /// The job command.
    #[command(subcommand)]
    pub command: JobCommand,
}

/// `silo job …`.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Run a command as a job, stream its output, and exit with its exit code
    #[command(after_long_help = RUN_AFTER_HELP)]
    Run(Box<RunArgs>),
    /// List jobs, newest first
    #[command(alias = "ls")]
    List(ListArgs),
    /// Show one job in detail
    Status(StatusArgs),
    /// Print a job's output
    Logs(LogsArgs),
    /// Show a job's resource usage (cpu, memory, io, processes); -f updates every second
    Stats(StatsArgs),
    /// Stop a job: SIGTERM, a grace period, then SIGKILL to everything it started
    Stop(StopArgs),
    /// Delete a finished job, its output and its files
    #[command(alias = "rm")]
    Delete(DeleteArgs),
}

const RUN_AFTER_HELP: &str = "\
Output: the job's stdout goes to stdout and its stderr to stderr, live; messages from silo
itself go to stderr, prefixed with \"silo: \".

Ctrl-C: the first Ctrl-C stops the job (as `silo job stop` does) and keeps printing its
output until it has ended; a second Ctrl-C stops waiting at once (exit status 130) and
may leave the job running. With --detach, silo does not wait at all.

Exit status: the job's exit code; 128+N when it was killed by signal N (143 after a stop's
SIGTERM, 137 after SIGKILL); 127 when the command was not found, 126 when it could not be
executed, 125 when the job failed to start for another reason or silo could not get an
exit status. When the job failed to start, was stopped or timed out, the reason is printed.

Examples:
  silo job run -- make -j4
  silo job run --memory 512M --timeout 10m --upload ./src -- ./src/build.sh
  silo job run --runtime python-3.11 --upload ./app -- python3 app/main.py
  silo job run -d --name nightly --secret-env TOKEN -- ./backup.sh
  silo job run --secret-env-file prod.env -- ./deploy.sh
  silo job run --at 2026-12-05T09:00:00+01:00 -- ./report.sh
  silo job run --in 10m -- ./cleanup.sh
  silo job run --cron '0 2 * * *' --tz Europe/Berlin -- ./backup.sh";

/// `silo job run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Print only the job's full id and return at once (exit status 0); the job keeps
    /// running. A job that failed to start also prints its reason and exits 125-127
    #[arg(short, long)]
    pub detach: bool,

    /// Delete the job, its log and its files once it has ended and its output is written
    /// (as `silo job delete` would). Not with --detach or a later start: the server's
    /// --keep-ended deletes those
    #[arg(long, conflicts_with_all = ["detach", "when"])]
    pub rm: bool,

    /// Start the command at this time instead of now: 2026-12-05T09:00:00+01:00, or a
    /// time without a zone (2026-12-05T09:00) in this machine's zone. Prints the job's id;
    /// the job is SCHEDULED until then (`silo job stop` cancels it)
    #[arg(long, value_name = "TIME", value_parser = at_arg, group = "when")]
    pub at: Option<jiff::Timestamp>,

    /// Start the command after this long instead of now (90s, 10m, 2h30m)
    #[arg(long = "in", value_name = "DURATION", value_parser = in_arg, group = "when")]
    pub in_: Option<u64>,

    /// Run the command on this cron schedule instead of now ("*/5 * * * *"; a sixth,
    /// leading field is seconds). Prints the schedule's id (see `silo schedule`)
    #[arg(long, value_name = "EXPR", group = "when")]
    pub cron: Option<String>,

    /// The IANA time zone the --cron expression is read in (default UTC)
    #[arg(long, value_name = "ZONE", requires = "cron")]
    pub tz: Option<String>,

    /// With --cron: what firings missed while the server was down do
    #[arg(long, value_enum, value_name = "POLICY", requires = "cron")]
    pub missed: Option<MissedArg>,

    /// With --cron: whether a firing starts while the previous one's job still runs
    #[arg(long, value_enum, value_name = "POLICY", requires = "cron")]
    pub overlap: Option<OverlapArg>,

    /// A name for the job (need not be unique)
    #[arg(long, value_name = "NAME", value_parser = no_nul("--name"))]
    pub name: Option<String>,

    /// Set an environment variable: NAME=VALUE, or NAME alone to pass this shell's value
    /// (skipped when it is not set here). Repeatable
    #[arg(short, long = "env", value_name = "NAME=VALUE", value_parser = env_arg)]
    pub env: Vec<EnvArg>,

    /// Set a secret environment variable: NAME=VALUE, or NAME alone to pass this shell's
    /// value (which must be set). Only the job's command sees the value: the server stores
    /// it encrypted and never shows it, not even to admins (`silo job status` lists
    /// NAME=<hidden>). Repeatable; replaces the same name from --secret-env-file
    #[arg(long = "secret-env", value_name = "NAME[=VALUE]", value_parser = secret_arg)]
    pub secret_env: Vec<SecretArg>,

    /// Read secret environment variables from a dotenv file: NAME=VALUE lines, `export `
    /// allowed, `#` comments, values optionally in single or double quotes. Repeatable
    #[arg(long = "secret-env-file", value_name = "FILE")]
    pub secret_env_file: Vec<PathBuf>,

    /// Working directory of the command; relative paths start in the job's work directory
    #[arg(short, long, value_name = "DIR", value_parser = no_nul("--workdir"))]
    pub workdir: Option<String>,

    /// Stop the job when it runs longer than this (e.g. 500ms, 30s, 10m, 2h)
    #[arg(long, value_name = "DURATION", value_parser = timeout_arg, allow_hyphen_values = true)]
    pub timeout: Option<u64>,

    /// Time between SIGTERM and SIGKILL when the job is stopped (default: 100ms)
    #[arg(long, value_name = "DURATION", value_parser = grace_arg, allow_hyphen_values = true)]
    pub grace: Option<u64>,

    /// Run the command as UID (and GID; default: the same number). Default: the server's
    /// job user. Even uid 0 runs without capabilities
    #[arg(long, value_name = "UID[:GID]", value_parser = user_arg)]
    pub user: Option<(u32, Option<u32>)>,

    /// The job's network: `none` (only loopback, the default) or `host` (the host's network)
    #[arg(long, value_name = "MODE", value_parser = ["none", "host"])]
    pub network: Option<String>,

    /// Run in this runtime's tree (read-only) as the root: NAME for its highest installed
    /// version, or NAME@VERSION. Default: a read-only view of the host's /usr, /bin, /lib
    #[arg(long, value_name = "NAME[@VERSION]", value_parser = runtime_arg)]
    pub runtime: Option<RuntimeRef>,

    /// Copy a file or directory into the job's work directory under its base name.
    /// Symbolic links inside a directory must be relative and stay inside it. Repeatable.
    /// Not with --at, --in or --cron
    #[arg(short, long, value_name = "PATH", conflicts_with = "when")]
    pub upload: Vec<PathBuf>,

    /// CPU limit in percent of one core (50 = half a core, 250 = two and a half)
    #[arg(long, value_name = "PERCENT", value_parser = cpu_arg, allow_hyphen_values = true)]
    pub cpu: Option<u32>,

    /// CPUs the job may run on, in cpuset syntax (0-3, 1,3)
    #[arg(long, value_name = "LIST", value_parser = cpus_arg, allow_hyphen_values = true)]
    pub cpus: Option<String>,

    /// Memory limit: bytes, or a number with K, M, G or T (binary: 512M, 1G, 64MiB)
    #[arg(long, value_name = "SIZE", value_parser = size_arg, allow_hyphen_values = true)]
    pub memory: Option<u64>,

    /// Disk read and write bandwidth limit per second, as a size (10M)
    #[arg(long, value_name = "SIZE", value_parser = size_arg, allow_hyphen_values = true)]
    pub io_bps: Option<u64>,

    /// Maximum number of processes and threads
    #[arg(long, value_name = "N", value_parser = pids_arg, allow_hyphen_values = true)]
    pub pids: Option<u32>,

    /// Size of the job's /work, a filesystem of its own (10G); full, it answers ENOSPC
    #[arg(long, value_name = "SIZE", value_parser = size_arg, allow_hyphen_values = true)]
    pub disk: Option<u64>,

    /// The command and its arguments (put them after `--`)
    #[arg(
        value_name = "CMD",
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_parser = no_nul("the command")
    )]
    pub command: Vec<String>,
}

/// One `--env` value: a setting, or nothing when `NAME` alone is not set here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvArg(pub Option<EnvSetting>);

/// One `--secret-env` argument as typed, checked when the request is built (so that no
/// error, clap's included, repeats a value). Its `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretArg(pub String);

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretArg(<hidden>)")
    }
}

/// A job state for `--state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Waiting for its start time (--at, --in)
    Scheduled,
    /// Being set up
    Starting,
    /// Its command runs
    Running,
    /// Exited with code 0
    Completed,
    /// Exited non-zero, was killed, or failed to start
    Failed,
    /// Stopped on request
    Stopped,
}

impl From<StateArg> for JobState {
    fn from(state: StateArg) -> Self {
        match state {
            StateArg::Scheduled => JobState::Scheduled,
            StateArg::Starting => JobState::Starting,
            StateArg::Running => JobState::Running,
            StateArg::Completed => JobState::Completed,
            StateArg::Failed => JobState::Failed,
            StateArg::Stopped => JobState::Stopped,
        }
    }
}

/// `silo job list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs in these states (repeatable, or comma-separated)
    #[arg(long, value_name = "STATE", value_delimiter = ',')]
    pub state: Vec<StateArg>,

    /// At most this many jobs, the newest (default: 100)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limit: Option<u32>,

    /// Every job, however many
    #[arg(long, conflicts_with = "limit")]
    pub all: bool,

    /// Only the jobs of this schedule (its id or a unique prefix)
    #[arg(long, value_name = "ID", value_parser = job_id)]
    pub schedule: Option<String>,

    /// Print a JSON array of jobs instead of a table
    #[arg(long)]
    pub json: bool,
}

/// `silo job status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job's id or any unique prefix of it
    #[arg(value_name = "ID", value_parser = job_id)]
    pub id: String,

    /// Print the job as JSON
    #[arg(long)]
    pub json: bool,
}

/// `silo job stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The job's id or any unique prefix of it
    #[arg(value_name = "ID", value_parser = job_id)]
    pub id: String,

    /// Keep printing the usage once a second until the job ends
    #[arg(short, long)]
    pub follow: bool,

    /// Print each sample as a JSON object on its own line
    #[arg(long)]
    pub json: bool,
}

/// `silo job logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The job's id or any unique prefix of it
    #[arg(value_name = "ID", value_parser = job_id)]
    pub id: String,

    /// Keep printing new output until the job has ended
    #[arg(short, long)]
    pub follow: bool,

    /// Start at this record sequence number (records are numbered from 0), e.g. to resume
    #[arg(long, value_name = "SEQ", default_value_t = 0)]
    pub from: u64,

    /// Print one JSON object per record: sequence, timestamp, stream, data (UTF-8 text;
    /// plus data_base64 with the exact bytes when they are not valid UTF-8)
    #[arg(long)]
    pub json: bool,
}

/// `silo job stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// The job's id or any unique prefix of it
    #[arg(value_name = "ID", value_parser = job_id)]
    pub id: String,

    /// Time between SIGTERM and SIGKILL, overriding the job's own (e.g. 2s)
    #[arg(long, value_name = "DURATION", value_parser = grace_arg, allow_hyphen_values = true)]
    pub grace: Option<u64>,

    /// Print the stopped job as JSON
    #[arg(long)]
    pub json: bool,
}

/// `silo job delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The job's id or any unique prefix of it
    #[arg(value_name = "ID", value_parser = job_id)]
    pub id: String,

    /// Print {"id": …} of the deleted job as JSON
    #[arg(long)]
    pub json: bool,
}

/// `silo certs …`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Issue a client certificate signed by the server's CA
    Issue(IssueArgs),
    /// Create a fresh CA with server, admin and viewer certificates
    Init(InitArgs),
    /// Revoke a client certificate: the server refuses it from then on (within 2 seconds,
    /// on new connections and on every call of open ones)
    Revoke(RevokeArgs),
    /// List the certificates the CA has issued: name, role, serial, end, and whether
    /// revoked
    List(CertsListArgs),
}

/// `silo certs list`.
#[derive(Debug, Args)]
pub struct CertsListArgs {
    /// Directory holding the CA (its record of issued certificates is issued/)
    #[arg(long, value_name = "DIR", default_value = "/var/lib/silo/certs")]
    pub ca_dir: PathBuf,

    /// Print a JSON array instead of the table
    #[arg(long)]
    pub json: bool,
}

/// A client role for `--role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// May do everything
    Admin,
    /// May only read: list, status, logs
    Viewer,
}

impl From<RoleArg> for silo_tls::Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Admin => silo_tls::Role::Admin,
            RoleArg::Viewer => silo_tls::Role::Viewer,
        }
    }
}

/// `silo certs issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// What the certificate may do
    #[arg(long, value_enum)]
    pub role: RoleArg,

    /// The client's name, recorded as the owner of the jobs it starts (letters, digits,
    /// '.', '_', '-')
    #[arg(long, value_name = "NAME")]
    pub name: String,

    /// Directory to write NAME.pem and NAME-key.pem into (created if needed)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Directory holding the CA (ca.pem, ca-key.pem)
    #[arg(long, value_name = "DIR", default_value = "/var/lib/silo/certs")]
    pub ca_dir: PathBuf,

    /// How long the certificate is valid (e.g. 30d, 12h; never past the CA's end)
    #[arg(long, value_name = "DURATION", default_value = "365d", value_parser = validity_arg)]
    pub valid_for: time::Duration,
}

/// `silo certs revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The client certificate to revoke (its PEM file)
    #[arg(
        value_name = "CERT",
        required_unless_present = "serial",
        conflicts_with = "serial"
    )]
    pub cert: Option<PathBuf>,

    /// The certificate's serial number instead, in hex (as `openssl x509 -noout -serial`
    /// prints it), when its file is gone
    #[arg(long, value_name = "HEX")]
    pub serial: Option<String>,

    /// Directory holding the CA (ca.pem, ca-key.pem); the list is its crl.pem
    #[arg(long, value_name = "DIR", default_value = "/var/lib/silo/certs")]
    pub ca_dir: PathBuf,
}

/// `silo certs init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to write the certificates into (created if needed; nothing is overwritten)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// An extra name or IP address for the server certificate (repeatable); localhost,
    /// 127.0.0.1, ::1 and this host's name are always included
    #[arg(long, value_name = "NAME")]
    pub san: Vec<String>,

    /// How long the server, admin and viewer certificates are valid (e.g. 90d; a server
    /// renews its own and these two when they are within 30 days of their end)
    #[arg(long, value_name = "DURATION", default_value = "365d", value_parser = validity_arg)]
    pub valid_for: time::Duration,
}

/// A certificate's validity for `--valid-for`: a duration of at least a minute and at most
/// ten years (the CA's own).
fn validity_arg(value: &str) -> Result<time::Duration, String> {
    let text = value.trim();
    let parsed = humantime::parse_duration(text)
        .map_err(|err| format!("{err} (expected e.g. 30d, 12h, 90m)"))?;
    if parsed < std::time::Duration::from_secs(60) {
        return Err("a certificate is valid for at least a minute".to_owned());
    }
    if parsed > std::time::Duration::from_secs(3650 * 86_400) {
        return Err("a certificate is valid for at most 3650 days (its CA's own)".to_owned());
    }
    time::Duration::try_from(parsed).map_err(|err| err.to_string())
}

fn secret_arg(value: &str) -> Result<SecretArg, String> {
    Ok(SecretArg(value.to_owned()))
}

fn env_arg(value: &str) -> Result<EnvArg, String> {
    parse::parse_env(value, |name| std::env::var_os(name))
        .map(EnvArg)
        .map_err(|err| err.reason().to_owned())
}

fn timeout_arg(value: &str) -> Result<u64, String> {
    parse::parse_duration_ms("--timeout", value, parse::MAX_TIMEOUT)
        .map_err(|err| err.reason().to_owned())
}

fn grace_arg(value: &str) -> Result<u64, String> {
    parse::parse_duration_ms("--grace", value, parse::MAX_GRACE)
        .map_err(|err| err.reason().to_owned())
}

fn at_arg(value: &str) -> Result<jiff::Timestamp, String> {
    parse::parse_at(value, jiff::Timestamp::now(), &jiff::tz::TimeZone::system())
        .map_err(|err| err.reason().to_owned())
}

fn in_arg(value: &str) -> Result<u64, String> {
    parse::parse_duration_ms("--in", value, parse::MAX_AHEAD).map_err(|err| err.reason().to_owned())
}

fn size_arg(value: &str) -> Result<u64, String> {
    parse::parse_size(value).map_err(|err| err.reason().to_owned())
}

fn cpu_arg(value: &str) -> Result<u32, String> {
    parse::parse_cpu_percent(value).map_err(|err| err.reason().to_owned())
}

fn cpus_arg(value: &str) -> Result<String, String> {
    parse::parse_cpu_list(value).map_err(|err| err.reason().to_owned())
}

fn pids_arg(value: &str) -> Result<u32, String> {
    parse::parse_pids(value).map_err(|err| err.reason().to_owned())
}

fn runtime_arg(value: &str) -> Result<RuntimeRef, String> {
    parse::parse_runtime_ref(value).map_err(|err| err.reason().to_owned())
}

fn exact_runtime_arg(value: &str) -> Result<RuntimeRef, String> {
    parse::parse_exact_runtime_ref(value).map_err(|err| err.reason().to_owned())
}

fn job_id(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("a job id (or a prefix of one) is required".to_owned());
    }
    if value.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("a job id contains no blanks or control characters".to_owned());
    }
    Ok(value.to_owned())
}

fn no_nul(what: &'static str) -> impl Fn(&str) -> Result<String, String> + Clone {
    move |value: &str| {
        if value.contains('\0') {
            Err(format!("{what} must not contain NUL bytes"))
        } else {
            Ok(value.to_owned())
        }
    }
}

/// Parses `UID` or `UID:GID` (numbers).
fn user_arg(value: &str) -> Result<(u32, Option<u32>), String> {
    let bad = || format!("{value:?} is not UID or UID:GID (numbers, below 4294967295)");
    let number = |s: &str| {
        s.parse::<u32>()
            .ok()
            .filter(|n| *n != u32::MAX)
            .ok_or_else(bad)
    };
    match value.split_once(':') {
        Some((uid, gid)) => Ok((number(uid)?, Some(number(gid)?))),
        None => Ok((number(value)?, None)),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(subcommand)]
        command: ClientCommand,
    }

    fn parse(args: &[&str]) -> Result<TestCli, clap::Error> {
        TestCli::try_parse_from(std::iter::once("silo").chain(args.iter().copied()))
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(args).unwrap().command {
            ClientCommand::Job(JobArgs {
                command: JobCommand::Run(run),
                ..
            }) => *run,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_branch_parses_a_command_line_as_the_whole_command_line_does() {
        let lines = [
            "job run -- echo hi",
            "job run --memory 64M --cpu 50 -e A=1 -d -- sh -c exit",
            "job --config /etc/c.toml run --name x -- true",
            "job run --config /etc/c.toml -- true",
            "job list --json",
            "job ls --state running,failed --limit 5",
            "job logs -f abc",
            "job status abc",
            "workflow run f.yaml --name n -d",
            "workflow graph f.yaml --format mermaid",
            "workflow --server prod list",
            "runtime list",
            "schedule list",
            "node",
            "top --sort mem",
        ];
        for line in lines {
            let args: Vec<std::ffi::OsString> = std::iter::once("silo")
                .chain(line.split(' '))
                .map(Into::into)
                .collect();
            let whole = TestCli::try_parse_from(&args).unwrap_or_else(|e| panic!("{line}: {e}"));
            let branch = parse_branch(&args).unwrap_or_else(|| panic!("{line}: no branch"));
            assert_eq!(
                format!("{:?}", whole.command),
                format!("{branch:?}"),
                "{line}"
            );
        }
        // What a branch alone would answer differently goes to the whole command line.
        for line in [
            "job",
            "job --help",
            "job run --help",
            "job -h",
            "job --version",
            "job run",
            "job run --version",
            "job list -V",
            "job rnu",
            "jobs list",
            "certs init",
            "server info",
            "workflow run",
            "--help",
        ] {
            let args: Vec<std::ffi::OsString> = std::iter::once("silo")
                .chain(line.split(' '))
                .map(Into::into)
                .collect();
            assert!(parse_branch(&args).is_none(), "{line}");
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        TestCli::command().debug_assert();
    }

    #[test]
    fn run_takes_flags_then_the_command_with_its_own_flags() {
        let run = run_args(&[
            "job",
            "run",
            "-d",
            "--env",
            "A=1",
            "--memory",
            "64M",
            "--timeout",
            "5s",
            "--upload",
            "x",
            "--upload",
            "y",
            "--server",
            "prod",
            "--",
            "ls",
            "-l",
            "--all",
        ]);
        assert!(run.detach);
        assert_eq!(run.memory, Some(64 << 20));
        assert_eq!(run.timeout, Some(5000));
        assert_eq!(run.upload.len(), 2);
        assert_eq!(run.command, ["ls", "-l", "--all"]);
        let without_dashes = run_args(&["job", "run", "echo", "-n", "hi"]);
        assert_eq!(without_dashes.command, ["echo", "-n", "hi"]);
    }

    #[test]
    fn cpu_lists_are_taken_in_any_order_and_sent_in_normal_form() {
        let run = run_args(&["job", "run", "--cpus", "2,0", "--", "true"]);
        assert_eq!(run.cpus.as_deref(), Some("0,2"));
        let err = parse(&["job", "run", "--cpus", "3-1", "--", "true"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("range 3-1 is backwards"), "{err}");
    }

    #[test]
    fn global_options_may_follow_the_subcommand() {
        let cli = parse(&["job", "list", "--server", "b", "--config", "/c.toml"]).unwrap();
        let ClientCommand::Job(JobArgs { global, .. }) = cli.command else {
            panic!("not a job command");
        };
        assert_eq!(global.server.as_deref(), Some("b"));
        assert_eq!(global.config, Some(PathBuf::from("/c.toml")));
    }

    #[test]
    fn bad_values_are_refused_while_parsing_with_the_reason() {
        for (args, reason) in [
            (
                &["job", "run", "--memory", "0", "--", "true"][..],
                "greater than zero",
            ),
            (&["job", "run", "--memory", "-1", "--", "true"], "negative"),
            (
                &["job", "run", "--memory=10X", "--", "true"],
                "unknown unit",
            ),
            (
                &["job", "run", "--pids", "0", "--", "true"],
                "greater than zero",
            ),
            (&["job", "run", "--cpu", "-5", "--", "true"], "negative"),
            (
                &["job", "run", "--timeout", "0s", "--", "true"],
                "greater than zero",
            ),
            (
                &["job", "run", "--env", "=V", "--", "true"],
                "name is missing",
            ),
            (
                &["job", "run", "--env", "1X=V", "--", "true"],
                "not a valid variable name",
            ),
            (&["job", "run", "--"], "required"),
            (&["job", "list", "--state", "bogus"], "invalid value"),
            (&["job", "list", "--limit", "0"], "0"),
            (
                &["job", "list", "--limit", "5", "--all"],
                "cannot be used with",
            ),
            (&["job", "status", ""], "id"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(reason), "{args:?}: {err}");
        }
    }

    #[test]
    fn states_may_be_repeated_or_comma_separated() {
        let cli = parse(&[
            "job",
            "list",
            "--state",
            "running,failed",
            "--state",
            "stopped",
        ])
        .unwrap();
        let ClientCommand::Job(JobArgs {
            command: JobCommand::List(list),
            ..
        }) = cli.command
        else {
            panic!("not list");
        };
        assert_eq!(
            list.state,
            [StateArg::Running, StateArg::Failed, StateArg::Stopped]
        );
    }

    fn runtime_command(args: &[&str]) -> (GlobalOptions, RuntimeCommand) {
        match parse(args).unwrap().command {
            ClientCommand::Runtime(RuntimeArgs { global, command }) => (global, command),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn runtime_help_lists_every_subcommand() {
        use clap::CommandFactory;
        let mut cli = TestCli::command();
        let help = cli
            .find_subcommand_mut("runtime")
            .expect("a runtime command")
            .render_long_help()
            .to_string();
        for command in [
            "build", "list", "info", "verify", "export", "install", "remove",
        ] {
            assert!(
                help.contains(&format!("\n  {command} ")),
                "{command}:\n{help}"
            );
        }
        let top = TestCli::command().render_help().to_string();
        assert!(top.contains("runtime"), "{top}");
    }

    #[test]
    fn runtime_commands_take_their_arguments_and_aliases() {
        let (global, command) = runtime_command(&[
            "runtime",
            "build",
            "python.yml",
            "--replace",
            "--server",
            "b",
        ]);
        assert_eq!(global.server.as_deref(), Some("b"));
        let RuntimeCommand::Build(build) = command else {
            panic!("{command:?}")
        };
        assert_eq!(
            (build.spec, build.replace),
            (PathBuf::from("python.yml"), true)
        );

        let (_, command) = runtime_command(&["runtime", "ls", "--json"]);
        assert!(matches!(
            command,
            RuntimeCommand::List(RuntimeListArgs { json: true })
        ));

        let (_, command) = runtime_command(&["runtime", "info", "python-3.11", "--json"]);
        let RuntimeCommand::Info(info) = command else {
            panic!("{command:?}")
        };
        assert_eq!(
            (info.runtime.to_string(), info.json),
            ("python-3.11".into(), true)
        );

        let (_, command) = runtime_command(&["runtime", "export", "node@1.2.3", "-o", "-"]);
        let RuntimeCommand::Export(export) = command else {
            panic!("{command:?}")
        };
        assert_eq!(export.runtime.to_string(), "node@1.2.3");
        assert_eq!(export.output, PathBuf::from("-"));

        let (_, command) = runtime_command(&["runtime", "install", "node.tar"]);
        let RuntimeCommand::Install(install) = command else {
            panic!("{command:?}")
        };
        assert_eq!(
            (install.archive, install.replace),
            (PathBuf::from("node.tar"), false)
        );

        let (_, command) = runtime_command(&["runtime", "rm", "node@1.2.3"]);
        let RuntimeCommand::Remove(remove) = command else {
            panic!("{command:?}")
        };
        assert_eq!(remove.runtime.version, Some(semver::Version::new(1, 2, 3)));

        let (_, command) = runtime_command(&["runtime", "verify", "node"]);
        assert!(matches!(command, RuntimeCommand::Verify(_)));
    }

    #[test]
    fn bad_runtime_arguments_are_refused_while_parsing_with_the_reason() {
        for (args, reason) in [
            (
                &["runtime", "info", "Python"][..],
                "'P' is not allowed in a name",
            ),
            (&["runtime", "verify", "python@1.0"], "not semver"),
            (&["runtime", "export", "python"], "--output"),
            (
                &["runtime", "remove", "python"],
                "name the version: python@VERSION",
            ),
            (
                &["runtime", "remove", "python@"],
                "version after '@' is missing",
            ),
            (&["runtime", "build"], "FILE.yml"),
            (&["runtime", "install"], "FILE"),
            (&["runtime", "frobnicate"], "unrecognized subcommand"),
            (
                &["job", "run", "--runtime", "-x", "--", "true"],
                "must start with a lower-case letter or a digit",
            ),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(reason), "{args:?}: {err}");
        }
    }

    #[test]
    fn run_takes_a_runtime_with_or_without_its_version() {
        let run = run_args(&["job", "run", "--runtime", "python-3.11", "--", "python3"]);
        assert_eq!(
            run.runtime.map(|r| r.to_string()).as_deref(),
            Some("python-3.11")
        );
        let run = run_args(&["job", "run", "--runtime=python-3.11@1.0.0", "--", "python3"]);
        assert_eq!(
            run.runtime.and_then(|r| r.version),
            Some(semver::Version::new(1, 0, 0))
        );
        assert!(run_args(&["job", "run", "--", "true"]).runtime.is_none());
    }
}
