//! From the file's shape to a [`WorkflowSpec`]: `defaults` applied, every value checked
//! where it was given, requirements resolved to indices.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use super::dag::{self, RawRequirement};
use super::file::{Entries, JobFile, RequirementFile, Spanned, WorkflowFile, location};
use super::values::{
    check_cpu_list, check_job_name, check_workflow_name, format_duration, parse_duration,
    parse_size,
};
use super::{Condition, JobSpec, Resources, Retry, SpecError, WorkflowSpec};

/// The most jobs one workflow may have.
pub const MAX_JOBS: usize = 100_000;
/// The highest `max_parallel`.
pub const MAX_PARALLEL: u32 = MAX_JOBS as u32;
/// The highest `max_cpu`: 8192 cores, in percent of one core.
pub const MAX_CPU_PERCENT: u32 = 8192 * 100;
/// The highest memory limit: 16 TiB.
pub const MAX_MEMORY_BYTES: u64 = 16 << 40;
/// The highest `pids`: the kernel's `PID_MAX_LIMIT`.
pub const MAX_PIDS: u32 = 4 * 1024 * 1024;
/// The largest `disk`: 1 PiB.
pub const MAX_DISK_BYTES: u64 = 1 << 50;
/// The highest `retry.limit`.
pub const MAX_RETRY_LIMIT: u32 = 100;

/// The wait after a first failed attempt when `retry.backoff` is not given.
pub(crate) const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between attempts when `retry.max_backoff` is not given (unless
/// `backoff` is longer).
pub(crate) const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);

pub(crate) fn build(file: WorkflowFile) -> Result<WorkflowSpec, SpecError> {
    check_workflow_name(&file.name.value).map_err(|reason| SpecError::WorkflowName {
        at: location(&file.name),
        name: file.name.value.clone(),
        reason,
    })?;
    let max_parallel = file
        .max_parallel
        .as_ref()
        .map(|n| in_range(n, Key::Top("max_parallel"), 1, MAX_PARALLEL))
        .transpose()?;
    let timeout = file
        .timeout
        .as_ref()
        .map(|t| positive_duration(t, Key::Top("timeout")))
        .transpose()?;

    let no_defaults = JobFile::default();
    let defaults = match &file.defaults {
        Some(defaults) => {
            if let Some(requires) = &defaults.value.requires {
                return Err(SpecError::NotInDefaults {
                    at: location(requires),
                    key: "requires",
                });
            }
            if let Some(needs) = &defaults.value.needs {
                return Err(SpecError::NotInDefaults {
                    at: location(needs),
                    key: "needs",
                });
            }
            &defaults.value
        }
        None => &no_defaults,
    };

    let entries = match &file.jobs {
        Some(jobs) if !jobs.value.0.is_empty() => &jobs.value.0,
        jobs => {
            return Err(SpecError::NoJobs {
                at: jobs.as_ref().and_then(location),
            });
        }
    };
    if entries.len() > MAX_JOBS {
        return Err(SpecError::TooManyJobs {
            at: file.jobs.as_ref().and_then(location),
            count: entries.len(),
            limit: MAX_JOBS,
        });
    }

    let mut index: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    for (i, (name, _)) in entries.iter().enumerate() {
        check_job_name(&name.value).map_err(|reason| SpecError::JobName {
            at: location(name),
            name: name.value.clone(),
            reason,
        })?;
        if let Some(&first) = index.get(name.value.as_str()) {
            return Err(SpecError::DuplicateJob {
                at: location(name),
                name: name.value.clone(),
                first: location(&entries[first].0),
            });
        }
        index.insert(&name.value, i);
    }

    let mut jobs = Vec::with_capacity(entries.len());
    let mut requirements = Vec::with_capacity(entries.len());
    for (name, job) in entries {
        let source = Source {
            name,
            job: job.as_ref().unwrap_or(&no_defaults),
            defaults,
        };
        jobs.push(source.job_spec()?);
        requirements.push(source.requirements()?);
    }
    dag::resolve(&mut jobs, &requirements, &index)?;
    dag::check_acyclic(&jobs, &requirements)?;

    Ok(WorkflowSpec {
        name: file.name.value,
        jobs,
        max_parallel,
        timeout,
        fail_fast: file.fail_fast.unwrap_or(false),
    })
}

/// One job's keys and the `defaults` it inherits: each key's value comes from the job when
/// it gives one, else from `defaults`, and is checked (and named in errors) where it was
/// given.
struct Source<'a> {
    name: &'a Spanned<String>,
    job: &'a JobFile,
    defaults: &'a JobFile,
}

/// The path of a key, for error messages; written out only when an error needs it.
#[derive(Clone, Copy)]
enum Key<'a> {
    /// A key of the workflow itself, e.g. `timeout`.
    Top(&'static str),
    /// A key under `defaults`, e.g. `defaults.retry.limit`.
    Defaults(&'static str),
    /// A key of one job, e.g. `jobs.fetch.resources.max_memory`.
    Job(&'a str, &'static str),
}

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Top(key) => f.write_str(key),
            Key::Defaults(key) => write!(f, "defaults.{key}"),
            Key::Job(job, key) => write!(f, "jobs.{job}.{key}"),
        }
    }
}

/// A value and the key that gave it.
struct Given<'a, T> {
    value: &'a T,
    key: Key<'a>,
}

impl<'a> Source<'a> {
    /// The key's value from the job, else from `defaults`.
    fn pick<T>(
        &self,
        key: &'static str,
        get: impl Fn(&'a JobFile) -> Option<&'a T>,
    ) -> Option<Given<'a, T>> {
        match get(self.job) {
            Some(value) => Some(Given {
                value,
                key: Key::Job(&self.name.value, key),
            }),
            None => get(self.defaults).map(|value| Given {
                value,
                key: Key::Defaults(key),
            }),
        }
    }

    fn job_spec(&self) -> Result<JobSpec, SpecError> {
        let name = self.name.value.clone();
        let command = match self.pick("command", |j| j.command.as_ref()) {
            Some(command) if command.value.value.trim().is_empty() => {
                return Err(SpecError::EmptyCommand {
                    at: location(command.value),
                    job: name,
                });
            }
            Some(command) => {
                no_nul(command.value, command.key)?;
                command.value.value.clone()
            }
            None => {
                return Err(SpecError::MissingCommand {
                    at: location(self.name),
                    job: name,
                });
            }
        };
        let args = match self.pick("args", |j| j.args.as_ref()) {
            Some(args) => args
                .value
                .iter()
                .map(|arg| no_nul(arg, args.key).map(|()| arg.value.clone()))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let runtime = match self.pick("runtime", |j| j.runtime.as_ref()) {
            Some(runtime) => Some(token(runtime.value, runtime.key)?),
            None => None,
        };
        let uploads = match self.pick("uploads.files", |j| j.uploads.as_ref()?.files.as_ref()) {
            Some(files) => files
                .value
                .iter()
                .map(|file| path(file, files.key))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let env = self.environment("environment", |j| j.environment.as_ref())?;
        let secret_env =
            self.environment("secret_environment", |j| j.secret_environment.as_ref())?;
        let plain: HashSet<&str> = env.iter().map(|(name, _)| name.as_str()).collect();
        if let Some((secret, _)) = secret_env.iter().find(|(s, _)| plain.contains(s.as_str())) {
            return Err(SpecError::Value {
                at: location(self.name),
                key: format!("jobs.{name}.secret_environment"),
                value: secret.clone(),
                reason: "the variable is also in `environment`".to_owned(),
            });
        }
        let timeout = self
            .pick("timeout", |j| j.timeout.as_ref())
            .map(|t| positive_duration(t.value, t.key))
            .transpose()?;
        let workdir = match self.pick("workdir", |j| j.workdir.as_ref()) {
            Some(workdir) => Some(path(workdir.value, workdir.key)?),
            None => None,
        };
        let network_host = match self.pick("network", |j| j.network.as_ref()) {
            Some(network) => match network.value.value.as_str() {
                "host" => true,
                "none" => false,
                _ => {
                    return Err(value_error(
                        network.value,
                        network.key,
                        "expected `none` or `host`",
                    ));
                }
            },
            None => false,
        };
        Ok(JobSpec {
            name,
            command,
            args,
            runtime,
            uploads,
            env,
            secret_env,
            resources: self.resources()?,
            requires: Vec::new(),
            retry: self.retry()?,
            timeout,
            continue_on_failure: self
                .pick("continue_on_failure", |j| j.continue_on_failure.as_ref())
                .is_some_and(|c| *c.value),
            workdir,
            network_host,
        })
    }

    /// An environment mapping: `defaults`' variables first, the job's after, a job's value
    /// replacing an inherited one in place.
    fn environment(
        &self,
        key: &'static str,
        get: impl Fn(&'a JobFile) -> Option<&'a Entries<Spanned<String>>>,
    ) -> Result<Vec<(String, String)>, SpecError> {
        let secret = key == "secret_environment";
        let mut env: Vec<(String, String)> = Vec::new();
        let mut slots: HashMap<&str, usize> = HashMap::new();
        let layers = [
            (get(self.defaults), Key::Defaults(key)),
            (get(self.job), Key::Job(&self.name.value, key)),
        ];
        for (entries, mapping) in layers {
            let Some(entries) = entries else { continue };
            let mut seen: HashMap<&str, &Spanned<String>> = HashMap::with_capacity(entries.0.len());
            for (name, value) in &entries.0 {
                if let Some(first) = seen.insert(&name.value, name) {
                    return Err(SpecError::DuplicateKey {
                        at: location(name),
                        mapping: mapping.to_string(),
                        key: name.value.clone(),
                        first: location(first),
                    });
                }
                check_env(name, value, mapping, secret)?;
                match slots.get(name.value.as_str()) {
                    Some(&slot) => env[slot].1 = value.value.clone(),
                    None => {
                        slots.insert(&name.value, env.len());
                        env.push((name.value.clone(), value.value.clone()));
                    }
                }
            }
        }
        Ok(env)
    }

    fn resources(&self) -> Result<Resources, SpecError> {
        let cpu_percent = self
            .pick("resources.max_cpu", |j| {
                j.resources.as_ref()?.max_cpu.as_ref()
            })
            .map(|c| in_range(c.value, c.key, 1, MAX_CPU_PERCENT))
            .transpose()?;
        let max_mib = u32::try_from(MAX_MEMORY_BYTES >> 20).unwrap_or(u32::MAX);
        let memory_bytes = self
            .pick("resources.max_memory", |j| {
                j.resources.as_ref()?.max_memory.as_ref()
            })
            .map(|m| in_range_of(m.value, m.key, 1, max_mib, " MiB (16 TiB)"))
            .transpose()?
            .map(|mib| u64::from(mib) << 20);
        let io_bps = self
            .pick("resources.max_io_bps", |j| {
                j.resources.as_ref()?.max_io_bps.as_ref()
            })
            .and_then(|io| (io.value.value > 0).then_some(io.value.value));
        let cpus = match self.pick("resources.cpu_cores", |j| {
            j.resources.as_ref()?.cpu_cores.as_ref()
        }) {
            Some(cpus) => {
                check_cpu_list(&cpus.value.value)
                    .map_err(|reason| value_error(cpus.value, cpus.key, reason))?;
                Some(cpus.value.value.clone())
            }
            None => None,
        };
        let pids = self
            .pick("pids", |j| j.pids.as_ref())
            .map(|p| in_range(p.value, p.key, 1, MAX_PIDS))
            .transpose()?;
        let disk_bytes = match self.pick("disk", |j| j.disk.as_ref()) {
            Some(disk) => {
                let bytes = parse_size(&disk.value.value)
                    .map_err(|reason| value_error(disk.value, disk.key, reason))?;
                if bytes == 0 || bytes > MAX_DISK_BYTES {
                    return Err(value_error(
                        disk.value,
                        disk.key,
                        "it must be between 1 byte and 1P",
                    ));
                }
                Some(bytes)
            }
            None => None,
        };
        Ok(Resources {
            cpu_percent,
            memory_bytes,
            io_bps,
            cpus,
            pids,
            disk_bytes,
        })
    }

    fn retry(&self) -> Result<Retry, SpecError> {
        let limit = self
            .pick("retry.limit", |j| j.retry.as_ref()?.limit.as_ref())
            .map(|l| in_range(l.value, l.key, 0, MAX_RETRY_LIMIT))
            .transpose()?
            .unwrap_or(0);
        let backoff = self
            .pick("retry.backoff", |j| j.retry.as_ref()?.backoff.as_ref())
            .map(|b| duration(b.value, b.key))
            .transpose()?
            .unwrap_or(DEFAULT_BACKOFF);
        let max_backoff = match self.pick("retry.max_backoff", |j| {
            j.retry.as_ref()?.max_backoff.as_ref()
        }) {
            Some(max) => {
                let value = duration(max.value, max.key)?;
                if value < backoff {
                    let reason = format!(
                        "it is shorter than retry.backoff ({})",
                        format_duration(backoff)
                    );
                    return Err(value_error(max.value, max.key, reason));
                }
                value
            }
            None => DEFAULT_MAX_BACKOFF.max(backoff),
        };
        Ok(Retry {
            limit,
            backoff,
            max_backoff,
        })
    }

    /// The job's `requires` then its `needs`, as names still to be resolved.
    fn requirements(&self) -> Result<Vec<RawRequirement>, SpecError> {
        let job = &self.name.value;
        let mut raw = Vec::new();
        for entry in self.job.requires.iter().flat_map(|r| &r.value) {
            let pairs = match &entry.value {
                RequirementFile::Pair(entries) => entries.0.as_slice(),
                RequirementFile::Other => &[],
            };
            let [(name, condition)] = pairs else {
                return Err(SpecError::RequirementShape {
                    at: location(entry),
                    job: job.clone(),
                });
            };
            let Some(parsed) = Condition::from_name(&condition.value) else {
                return Err(SpecError::Condition {
                    at: location(condition),
                    job: job.clone(),
                    text: condition.value.clone(),
                });
            };
            raw.push(RawRequirement {
                name: name.value.clone(),
                condition: parsed,
                at: location(name),
            });
        }
        for name in self.job.needs.iter().flat_map(|n| &n.value) {
            raw.push(RawRequirement {
                name: name.value.clone(),
                condition: Condition::Completed,
                at: location(name),
            });
        }
        Ok(raw)
    }
}

fn value_error<T: fmt::Display>(
    value: &Spanned<T>,
    key: Key<'_>,
    reason: impl Into<String>,
) -> SpecError {
    SpecError::Value {
        at: location(value),
        key: key.to_string(),
        value: value.value.to_string(),
        reason: reason.into(),
    }
}

/// A number within `min..=max`.
fn in_range(value: &Spanned<u64>, key: Key<'_>, min: u32, max: u32) -> Result<u32, SpecError> {
    in_range_of(value, key, min, max, "")
}

/// A number within `min..=max`, in `unit` (e.g. " MiB (16 TiB)") for the message.
fn in_range_of(
    value: &Spanned<u64>,
    key: Key<'_>,
    min: u32,
    max: u32,
    unit: &str,
) -> Result<u32, SpecError> {
    match u32::try_from(value.value) {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(value_error(
            value,
            key,
            format!("it must be between {min} and {max}{unit}"),
        )),
    }
}

fn duration(value: &Spanned<String>, key: Key<'_>) -> Result<Duration, SpecError> {
    parse_duration(&value.value).map_err(|reason| value_error(value, key, reason))
}

fn positive_duration(value: &Spanned<String>, key: Key<'_>) -> Result<Duration, SpecError> {
    let parsed = duration(value, key)?;
    if parsed.is_zero() {
        return Err(value_error(value, key, "it must be longer than zero"));
    }
    Ok(parsed)
}

fn no_nul(value: &Spanned<String>, key: Key<'_>) -> Result<(), SpecError> {
    if value.value.contains('\0') {
        return Err(value_error(value, key, "it must not hold NUL"));
    }
    Ok(())
}

/// A non-empty path without NUL.
fn path(value: &Spanned<String>, key: Key<'_>) -> Result<String, SpecError> {
    if value.value.is_empty() {
        return Err(value_error(value, key, "it is empty"));
    }
    no_nul(value, key)?;
    Ok(value.value.clone())
}

/// A non-empty text without whitespace or control characters.
fn token(value: &Spanned<String>, key: Key<'_>) -> Result<String, SpecError> {
    if value.value.is_empty() {
        return Err(value_error(value, key, "it is empty"));
    }
    if value
        .value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(value_error(
            value,
            key,
            "it must not hold whitespace or control characters",
        ));
    }
    Ok(value.value.clone())
}

/// A variable's name and value; a secret's value is never put into an error.
fn check_env(
    name: &Spanned<String>,
    value: &Spanned<String>,
    mapping: Key<'_>,
    secret: bool,
) -> Result<(), SpecError> {
    if name.value.is_empty() || name.value.contains(['=', '\0']) {
        return Err(SpecError::Value {
            at: location(name),
            key: format!("{mapping} variable name"),
            value: name.value.clone(),
            reason: "it must be non-empty, without '=' or NUL".to_owned(),
        });
    }
    if value.value.contains('\0') {
        return Err(SpecError::Value {
            at: location(value),
            key: format!("{mapping}.{}", name.value),
            value: if secret {
                "<redacted>".to_owned()
            } else {
                value.value.clone()
            },
            reason: "it must not hold NUL".to_owned(),
        });
    }
    Ok(())
}
