//! The workflow YAML: what a workflow is, how it is read, and every rule it must pass
//! before anything runs.
//!
//! The format is another system's (keys exactly so) plus silo's own keys; see
//! [`WorkflowSpec::parse`]. Every refusal is one sentence that starts with
//! "line L, column C: " when the place is known, because a workflow is written by hand and
//! read from untrusted places.

mod build;
mod dag;
mod file;
mod values;
mod yaml;

use std::fmt;
use std::time::Duration;

pub use build::{
    MAX_CPU_PERCENT, MAX_DISK_BYTES, MAX_JOBS, MAX_MEMORY_BYTES, MAX_PARALLEL, MAX_PIDS,
    MAX_RETRY_LIMIT,
};

/// A workflow: jobs and the requirements between them, checked against every rule.
///
/// A value returned by [`WorkflowSpec::parse`] has 1 to [`MAX_JOBS`] jobs with distinct
/// names, every [`Requirement::job`] indexes `jobs`, no job requires itself and the
/// requirements form no cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowSpec {
    /// The workflow's name: 1 to 128 bytes without control characters.
    pub name: String,
    /// The jobs, in the file's order.
    pub jobs: Vec<JobSpec>,
    /// How many jobs may run at once; `None` means no limit.
    pub max_parallel: Option<u32>,
    /// How long the whole workflow may run; `None` means no limit.
    pub timeout: Option<Duration>,
    /// Whether the first job that fails (without `continue_on_failure`) stops the start of
    /// every job not yet started.
    pub fail_fast: bool,
}

/// One job of a workflow, with `defaults` already applied.
///
/// [`fmt::Debug`] shows the names of secret variables, never their values.
#[derive(Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// The job's name: 1 to 64 characters of `A-Z a-z 0-9 _ . -`, unique in its workflow.
    pub name: String,
    /// The program to run; never empty or blank.
    pub command: String,
    /// The program's arguments.
    pub args: Vec<String>,
    /// The runtime the job runs in (`name` or `name@version`), if any; one token without
    /// whitespace.
    pub runtime: Option<String>,
    /// Files to upload before the job starts, relative to the workflow file's directory.
    pub uploads: Vec<String>,
    /// Environment variables, in the file's order (`defaults` first, the job's own after,
    /// a job's value replacing an inherited one in place).
    pub env: Vec<(String, String)>,
    /// Secret environment variables, kept apart from `env` and never shown by `Debug`.
    pub secret_env: Vec<(String, String)>,
    /// Resource limits.
    pub resources: Resources,
    /// The jobs that must end a certain way before this one starts.
    pub requires: Vec<Requirement>,
    /// How often and how soon a failed or stopped job is started again.
    pub retry: Retry,
    /// How long one attempt of the job may run; `None` means no limit.
    pub timeout: Option<Duration>,
    /// Whether the job's failure leaves the workflow's result alone.
    pub continue_on_failure: bool,
    /// The working directory inside the sandbox, if not the default.
    pub workdir: Option<String>,
    /// Whether the job shares the host's network (`network: host`) rather than having none.
    pub network_host: bool,
}

/// A job's resource limits; `None` leaves a resource unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU time in percent of one core (`max_cpu`), 1 to [`MAX_CPU_PERCENT`].
    pub cpu_percent: Option<u32>,
    /// Memory in bytes (`max_memory`, given in MiB), 1 MiB to [`MAX_MEMORY_BYTES`].
    pub memory_bytes: Option<u64>,
    /// Disk I/O in bytes per second (`max_io_bps`; 0 there means `None`).
    pub io_bps: Option<u64>,
    /// The CPUs the job may run on, a kernel CPU list like `0-3,5` (`cpu_cores`).
    pub cpus: Option<String>,
    /// The most processes and threads at once (`pids`), 1 to [`MAX_PIDS`].
    pub pids: Option<u32>,
    /// The size of the job's writable disk in bytes (`disk`), 1 to [`MAX_DISK_BYTES`].
    pub disk_bytes: Option<u64>,
}

/// "Start only once job `job` has ended as `condition` says."
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Requirement {
    /// The upstream job, an index into [`WorkflowSpec::jobs`].
    pub job: usize,
    /// How the upstream job must have ended.
    pub condition: Condition,
}

/// How an upstream job must have ended for a requirement to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    /// It completed successfully (`COMPLETED`; what `needs` means).
    Completed,
    /// It failed (`FAILED`).
    Failed,
    /// It was stopped (`STOPPED`).
    Stopped,
    /// It was skipped (`SKIPPED`).
    Skipped,
    /// It ended in any way: completed, failed, stopped or skipped (`FINISHED`).
    Finished,
}

impl Condition {
    /// Every condition, in the order the file format lists them.
    pub const ALL: [Condition; 5] = [
        Condition::Completed,
        Condition::Failed,
        Condition::Stopped,
        Condition::Skipped,
        Condition::Finished,
    ];

    /// Reads a condition as the file writes it, in any letter case; `None` for any other
    /// text.
    pub fn from_name(text: &str) -> Option<Condition> {
        Condition::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(text))
    }

    /// The condition as the file writes it: `COMPLETED`, `FAILED`, `STOPPED`, `SKIPPED` or
    /// `FINISHED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Completed => "COMPLETED",
            Condition::Failed => "FAILED",
            Condition::Stopped => "STOPPED",
            Condition::Skipped => "SKIPPED",
            Condition::Finished => "FINISHED",
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How often and how soon a job that failed or was stopped is started again.
///
/// Attempt `n` (1-based) that fails waits `backoff * 2^(n-1)`, at most `max_backoff`,
/// before attempt `n + 1`; there are at most `limit + 1` attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// How many times the job is started again after the first attempt; 0 means never.
    pub limit: u32,
    /// The wait after the first failed attempt (default 1s).
    pub backoff: Duration,
    /// The longest wait between attempts (default 1m, or `backoff` when that is longer);
    /// never shorter than `backoff`.
    pub max_backoff: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            limit: 0,
            backoff: build::DEFAULT_BACKOFF,
            max_backoff: build::DEFAULT_MAX_BACKOFF,
        }
    }
}

impl fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Redacted<'a>(&'a [(String, String)]);
        impl fmt::Debug for Redacted<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(self.0.iter().map(|(name, _)| (name, "<redacted>")))
                    .finish()
            }
        }
        f.debug_struct("JobSpec")
            .field("name", &self.name)
            .field("command", &self.command)
            .field("args", &self.args)
            .field("runtime", &self.runtime)
            .field("uploads", &self.uploads)
            .field("env", &self.env)
            .field("secret_env", &Redacted(&self.secret_env))
            .field("resources", &self.resources)
            .field("requires", &self.requires)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .field("continue_on_failure", &self.continue_on_failure)
            .field("workdir", &self.workdir)
            .field("network_host", &self.network_host)
            .finish()
    }
}

impl WorkflowSpec {
    /// Reads a workflow from YAML and checks every rule: unknown keys, duplicate jobs,
    /// requirements naming unknown jobs or the job itself, cycles, limits that are zero or
    /// absurd, empty commands, bad names, no jobs or more than [`MAX_JOBS`]. The error
    /// names the line and column where the parser knows them.
    pub fn parse(yaml: &str) -> Result<WorkflowSpec, SpecError> {
        build::build(file::read(yaml)?)
    }

    /// The index of the job called `name`, if there is one.
    pub fn job(&self, name: &str) -> Option<usize> {
        self.jobs.iter().position(|job| job.name == name)
    }
}

/// A place in the workflow file, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    /// The line.
    pub line: u64,
    /// The column, in characters.
    pub column: u64,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a workflow was refused. Each variant's `at` is where in the file, when known; the
/// message then starts with "line L, column C: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The YAML is malformed, a key is unknown or repeated, or a value has the wrong type.
    #[error("{}{message}", Place(at))]
    Yaml {
        /// Where, when known.
        at: Option<Location>,
        /// The parser's sentence, in the file's words.
        message: String,
    },
    /// The file is larger than silo reads.
    #[error("the workflow file is {bytes} bytes, more than the {limit} bytes allowed")]
    TooLarge {
        /// The file's size.
        bytes: usize,
        /// The largest size read.
        limit: usize,
    },
    /// The workflow has no jobs.
    #[error(
        "{}the workflow has no jobs (give at least one under `jobs`)",
        Place(at)
    )]
    NoJobs {
        /// Where `jobs` is, when given.
        at: Option<Location>,
    },
    /// The workflow has more jobs than silo runs in one workflow.
    #[error(
        "{}the workflow has {count} jobs, more than the {limit} allowed",
        Place(at)
    )]
    TooManyJobs {
        /// Where `jobs` is.
        at: Option<Location>,
        /// How many jobs the file gives.
        count: usize,
        /// The most jobs allowed ([`MAX_JOBS`]).
        limit: usize,
    },
    /// The workflow's name breaks the rule.
    #[error("{}invalid workflow name `{name}`: {reason}", Place(at))]
    WorkflowName {
        /// Where.
        at: Option<Location>,
        /// The refused name.
        name: String,
        /// Which part of the rule it breaks.
        reason: &'static str,
    },
    /// A job's name breaks the rule.
    #[error("{}invalid job name `{name}`: {reason}", Place(at))]
    JobName {
        /// Where.
        at: Option<Location>,
        /// The refused name.
        name: String,
        /// Which part of the rule it breaks.
        reason: &'static str,
    },
    /// Two jobs have the same name.
    #[error("{}job `{name}` appears twice{}", Place(at), Earlier(first))]
    DuplicateJob {
        /// Where the second one is.
        at: Option<Location>,
        /// The name.
        name: String,
        /// Where the first one is.
        first: Option<Location>,
    },
    /// A mapping other than `jobs` gives a key twice.
    #[error("{}`{key}` appears twice in {mapping}{}", Place(at), Earlier(first))]
    DuplicateKey {
        /// Where the second one is.
        at: Option<Location>,
        /// The mapping, e.g. `jobs.fetch.environment`.
        mapping: String,
        /// The repeated key.
        key: String,
        /// Where the first one is.
        first: Option<Location>,
    },
    /// A job has no `command`, neither its own nor from `defaults`.
    #[error(
        "{}job `{job}` has no command (give `command`, or one in `defaults`)",
        Place(at)
    )]
    MissingCommand {
        /// Where the job is.
        at: Option<Location>,
        /// The job.
        job: String,
    },
    /// A job's command is empty or blank.
    #[error("{}job `{job}` has an empty command", Place(at))]
    EmptyCommand {
        /// Where the command is.
        at: Option<Location>,
        /// The job.
        job: String,
    },
    /// A value breaks its rule: zero or absurd limits, bad durations, sizes or CPU lists.
    #[error("{}invalid {key} `{value}`: {reason}", Place(at))]
    Value {
        /// Where.
        at: Option<Location>,
        /// The key's path, e.g. `jobs.fetch.resources.max_memory` or `defaults.timeout`.
        key: String,
        /// The refused value, as given.
        value: String,
        /// Which part of the rule it breaks.
        reason: String,
    },
    /// `defaults` holds a key only a job may have.
    #[error(
        "{}`defaults` cannot hold `{key}`: each job names its own requirements",
        Place(at)
    )]
    NotInDefaults {
        /// Where.
        at: Option<Location>,
        /// The key (`requires` or `needs`).
        key: &'static str,
    },
    /// An entry of `requires` is not one `job: CONDITION` pair.
    #[error(
        "{}job `{job}`: each entry of `requires` names one job and its condition, like `- fetch: COMPLETED`",
        Place(at)
    )]
    RequirementShape {
        /// Where the entry is.
        at: Option<Location>,
        /// The job whose `requires` it is.
        job: String,
    },
    /// A condition is not one of the five.
    #[error(
        "{}job `{job}`: unknown condition `{text}` (expected COMPLETED, FAILED, STOPPED, SKIPPED or FINISHED)",
        Place(at)
    )]
    Condition {
        /// Where.
        at: Option<Location>,
        /// The job whose requirement it is.
        job: String,
        /// The refused text.
        text: String,
    },
    /// A requirement names a job the workflow does not have.
    #[error(
        "{}job `{job}` requires `{name}`, which is not a job in this workflow",
        Place(at)
    )]
    UnknownJob {
        /// Where the name is.
        at: Option<Location>,
        /// The requiring job.
        job: String,
        /// The unknown name.
        name: String,
    },
    /// A job requires itself.
    #[error("{}job `{job}` requires itself", Place(at))]
    SelfRequirement {
        /// Where.
        at: Option<Location>,
        /// The job.
        job: String,
    },
    /// A job names the same upstream job twice in `requires` and `needs`.
    #[error(
        "{}job `{job}` names `{name}` more than once in `requires` and `needs`",
        Place(at)
    )]
    RepeatedRequirement {
        /// Where the second mention is.
        at: Option<Location>,
        /// The requiring job.
        job: String,
        /// The upstream job named twice.
        name: String,
    },
    /// The requirements form a cycle, so none of its jobs could ever start.
    #[error(
        "{}the jobs' requirements form a cycle: {} (each job requires the one before it)",
        Place(at),
        CyclePath(cycle)
    )]
    Cycle {
        /// Where the second job of the cycle requires the first.
        at: Option<Location>,
        /// The jobs of one cycle, starting from the smallest name; each requires the one
        /// before it, and the first requires the last.
        cycle: Vec<String>,
    },
}

impl SpecError {
    /// Where in the file the error is, when known.
    pub fn location(&self) -> Option<Location> {
        match self {
            SpecError::TooLarge { .. } => None,
            SpecError::Yaml { at, .. }
            | SpecError::NoJobs { at }
            | SpecError::TooManyJobs { at, .. }
            | SpecError::WorkflowName { at, .. }
            | SpecError::JobName { at, .. }
            | SpecError::DuplicateJob { at, .. }
            | SpecError::DuplicateKey { at, .. }
            | SpecError::MissingCommand { at, .. }
            | SpecError::EmptyCommand { at, .. }
            | SpecError::Value { at, .. }
            | SpecError::NotInDefaults { at, .. }
            | SpecError::RequirementShape { at, .. }
            | SpecError::Condition { at, .. }
            | SpecError::UnknownJob { at, .. }
            | SpecError::SelfRequirement { at, .. }
            | SpecError::RepeatedRequirement { at, .. }
            | SpecError::Cycle { at, .. } => *at,
        }
    }
}

/// "line L, column C: " when the place is known, else nothing.
struct Place<'a>(&'a Option<Location>);

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(at) => write!(f, "{at}: "),
            None => Ok(()),
        }
    }
}

/// " (first at line L, column C)" when the place is known, else nothing.
struct Earlier<'a>(&'a Option<Location>);

impl fmt::Display for Earlier<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(at) => write!(f, " (first at {at})"),
            None => Ok(()),
        }
    }
}

/// `a → b → c → a`.
struct CyclePath<'a>(&'a [String]);

impl fmt::Display for CyclePath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for name in self.0 {
            write!(f, "{name} → ")?;
        }
        f.write_str(self.0.first().map_or("", String::as_str))
    }
}
