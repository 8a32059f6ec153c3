//! The `--json` shapes. They are part of silo's interface for scripts: fields are only
//! ever added, never renamed or removed.
//!
//! A job:
//!
//! ```json
//! {
//!   "id": "3f2a1b2c-…", "name": "build", "state": "completed",
//!   "reason": "", "end_cause": "exited", "start_failure": null, "failed_step": null,
//!   "errno": null, "exit_code": 0, "signal": null, "owner": "admin",
//!   "created_at": "2025-01-31T12:00:00.000Z", "started_at": "…", "ended_at": "…",
//!   "duration_ms": 1234,
//!   "command": ["make", "-j4"], "workdir": "", "env": ["CC"], "secret_env": ["TOKEN"],
//!   "timeout_ms": null, "stop_grace_ms": null, "runtime": "python-3.11@1.0.0",
//!   "limits": {"cpu_percent": null, "cpus": null, "memory_bytes": 67108864,
//!              "io_bps": null, "pids": null, "disk_bytes": null},
//!   "uploads": ["src", "src/main.c"]
//! }
//! ```
//!
//! States are lower case (`pending`, `starting`, `running`, `completed`, `failed`,
//! `stopped`). Times are RFC 3339 in UTC with milliseconds, or null when the event has not
//! happened. Settings that were not given are null. `env` lists variable names only: values
//! may be secrets and are not printed; `secret_env` lists the names of the job's secret
//! variables (`--secret-env`), whose values no client ever receives. `duration_ms` is null until the job has ended.
//!
//! A log record (one JSON object per line):
//!
//! ```json
//! {"sequence": 0, "timestamp": "2025-01-31T12:00:00.123456789Z", "stream": "stdout",
//!  "data": "hello\n"}
//! ```
//!
//! `stream` is `stdout`, `stderr` or `system` (a message from silo itself). `data` is the
//! record's bytes as UTF-8 text, with invalid sequences replaced by U+FFFD; when the bytes
//! are not valid UTF-8, `data_base64` is added holding the exact bytes (standard base64).
//!
//! A runtime (`silo runtime info --json`; `silo runtime list --json` prints an array):
//!
//! ```json
//! {
//!   "name": "python-3.11", "version": "1.0.0", "description": "CPython 3.11",
//!   "size_bytes": 149212365, "shared_bytes": 0, "entries": 5123,
//!   "manifest_digest": "sha256:…", "signer": "…", "signed_here": true,
//!   "installed_at": "2025-01-31T12:00:00.000Z", "used_by_jobs": 0,
//!   "spec_yaml": "name: python-3.11\n…", "packages": ["dpkg:python3=3.11.2-1"],
//!   "env": [{"name": "PATH", "value": "/usr/local/bin:/usr/bin:/bin"}]
//! }
//! ```
//!
//! A runtime's `env` is printed with its values: they come from its spec, which anyone
//! who may read the runtime can read whole.

use std::time::{Duration, SystemTime};

use base64::Engine;
use serde::Serialize;
use silo_proto::v1::{Job, LogRecord, LogStream, Runtime, Usage};

use crate::format::{job_state, state_name, system_time};

/// A job as printed by `--json`.
#[derive(Debug, Serialize)]
pub struct JobView {
    id: String,
    name: String,
    state: &'static str,
    reason: String,
    /// Why it ended, as the API's EndCause without its prefix ("start_failed"); null
    /// while it runs.
    end_cause: Option<String>,
    /// With a start failure: its kind ("command_not_found"), the step and the errno.
    start_failure: Option<String>,
    failed_step: Option<String>,
    errno: Option<i32>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    owner: String,
    created_at: Option<String>,
    started_at: Option<String>,
    ended_at: Option<String>,
    duration_ms: Option<u64>,
    command: Vec<String>,
    workdir: String,
    env: Vec<String>,
    /// The names of the job's secret variables (their values never reach a client).
    secret_env: Vec<String>,
    timeout_ms: Option<u64>,
    stop_grace_ms: Option<u64>,
    /// The runtime the job runs in (`NAME@VERSION` once the server picked it); null for
    /// the host's tree.
    runtime: Option<String>,
    limits: LimitsView,
    uploads: Vec<String>,
    usage: Option<UsageView>,
    /// The instant it was scheduled to start at (`--at`, `--in`, a schedule's firing);
    /// null for a job started at once.
    scheduled_at: Option<String>,
    /// The schedule whose firing created it; null if none.
    schedule_id: Option<String>,
}

/// Resource usage as printed by `--json`; counters this host cannot measure are null.
#[derive(Debug, Serialize)]
pub struct UsageView {
    cpu_usec: Option<u64>,
    cpu_user_usec: Option<u64>,
    cpu_system_usec: Option<u64>,
    cpu_throttled_usec: Option<u64>,
    memory_current_bytes: Option<u64>,
    memory_peak_bytes: Option<u64>,
    oom_kills: Option<u64>,
    io_read_bytes: Option<u64>,
    io_write_bytes: Option<u64>,
    pids_current: Option<u64>,
    pids_refused: Option<u64>,
}

impl From<&Usage> for UsageView {
    fn from(u: &Usage) -> Self {
        UsageView {
            cpu_usec: u.cpu_usec,
            cpu_user_usec: u.cpu_user_usec,
            cpu_system_usec: u.cpu_system_usec,
            cpu_throttled_usec: u.cpu_throttled_usec,
            memory_current_bytes: u.memory_current_bytes,
            memory_peak_bytes: u.memory_peak_bytes,
            oom_kills: u.oom_kills,
            io_read_bytes: u.io_read_bytes,
            io_write_bytes: u.io_write_bytes,
            pids_current: u.pids_current,
            pids_refused: u.pids_refused,
        }
    }
}

/// Resource limits as printed by `--json`; unset limits are null.
#[derive(Debug, Serialize)]
struct LimitsView {
    cpu_percent: Option<u32>,
    cpus: Option<String>,
    memory_bytes: Option<u64>,
    io_bps: Option<u64>,
    pids: Option<u32>,
    disk_bytes: Option<u64>,
}

/// "start_failed" for "END_CAUSE_START_FAILED"; `None` for the unspecified value.
fn enum_name(name: &str, prefix: &str) -> Option<String> {
    let name = name.strip_prefix(prefix).unwrap_or(name);
    (name != "UNSPECIFIED").then(|| name.to_ascii_lowercase())
}

fn set<T: PartialEq + Default>(value: T) -> Option<T> {
    (value != T::default()).then_some(value)
}

fn rfc3339_millis(time: Option<SystemTime>) -> Option<String> {
    time.map(|time| humantime::format_rfc3339_millis(time).to_string())
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> Self {
        let spec = job.spec.clone().unwrap_or_default();
        let limits = spec.limits.clone().unwrap_or_default();
        let started = system_time(job.started_at.as_ref());
        let ended = system_time(job.ended_at.as_ref());
        let duration_ms = match (started, ended) {
            (Some(started), Some(ended)) => Some(
                u64::try_from(
                    ended
                        .duration_since(started)
                        .unwrap_or(Duration::ZERO)
                        .as_millis(),
                )
                .unwrap_or(u64::MAX),
            ),
            _ => None,
        };
        JobView {
            id: job.id.clone(),
            name: spec.name.clone(),
            state: state_name(job_state(job)),
            reason: job.reason.clone(),
            end_cause: enum_name(job.end_cause().as_str_name(), "END_CAUSE_"),
            start_failure: enum_name(job.start_failure().as_str_name(), "START_FAILURE_"),
            failed_step: set(job.failed_step.clone()),
            errno: job.errno,
            exit_code: job.exit_code,
            signal: job.signal,
            owner: job.owner.clone(),
            created_at: rfc3339_millis(system_time(job.created_at.as_ref())),
            started_at: rfc3339_millis(started),
            ended_at: rfc3339_millis(ended),
            duration_ms,
            command: spec.command.clone(),
            workdir: spec.workdir.clone(),
            env: spec.env.iter().map(|var| var.name.clone()).collect(),
            secret_env: spec.secret_env_names.clone(),
            timeout_ms: set(spec.timeout_ms),
            stop_grace_ms: set(spec.stop_grace_ms),
            runtime: set(spec.runtime.clone()),
            limits: LimitsView {
                cpu_percent: limits.cpu_percent,
                cpus: limits.cpus,
                memory_bytes: limits.memory_bytes,
                io_bps: limits.io_bps,
                pids: limits.pids,
                disk_bytes: limits.disk_bytes,
            },
            uploads: job.uploads.clone(),
            usage: job.usage.as_ref().map(UsageView::from),
            scheduled_at: rfc3339_millis(system_time(job.scheduled_at.as_ref())),
            schedule_id: (!job.schedule_id.is_empty()).then(|| job.schedule_id.clone()),
        }
    }
}

/// A runtime as printed by `silo runtime info --json` and `silo runtime list --json`.
#[derive(Debug, Serialize)]
pub struct RuntimeView {
    name: String,
    version: String,
    description: String,
    size_bytes: u64,
    shared_bytes: u64,
    entries: u64,
    manifest_digest: String,
    signer: String,
    signed_here: bool,
    installed_at: Option<String>,
    used_by_jobs: u32,
    spec_yaml: String,
    packages: Vec<String>,
    env: Vec<EnvView>,
}

/// One environment variable, name and value.
#[derive(Debug, Serialize)]
struct EnvView {
    name: String,
    value: String,
}

impl From<&Runtime> for RuntimeView {
    fn from(runtime: &Runtime) -> Self {
        RuntimeView {
            name: runtime.name.clone(),
            version: runtime.version.clone(),
            description: runtime.description.clone(),
            size_bytes: runtime.size_bytes,
            shared_bytes: runtime.shared_bytes,
            entries: runtime.entries,
            manifest_digest: runtime.manifest_digest.clone(),
            signer: runtime.signer.clone(),
            signed_here: runtime.signed_here,
            installed_at: rfc3339_millis(system_time(runtime.installed_at.as_ref())),
            used_by_jobs: runtime.used_by_jobs,
            spec_yaml: runtime.spec_yaml.clone(),
            packages: runtime.packages.clone(),
            env: runtime
                .env
                .iter()
                .map(|var| EnvView {
                    name: var.name.clone(),
                    value: var.value.clone(),
                })
                .collect(),
        }
    }
}

/// A log record as printed by `silo job logs --json`.
#[derive(Debug, Serialize)]
pub struct LogRecordView {
    sequence: u64,
    timestamp: String,
    stream: &'static str,
    data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_base64: Option<String>,
}

/// The name of a log stream: `stdout`, `stderr`, `system` (`unknown` otherwise).
pub fn stream_name(stream: i32) -> &'static str {
    match LogStream::try_from(stream) {
        Ok(LogStream::Stdout) => "stdout",
        Ok(LogStream::Stderr) => "stderr",
        Ok(LogStream::System) => "system",
        _ => "unknown",
    }
}

impl From<&LogRecord> for LogRecordView {
    fn from(record: &LogRecord) -> Self {
        let nanos = record.timestamp_unix_nanos;
        let time = if nanos >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos.unsigned_abs())
        } else {
            SystemTime::UNIX_EPOCH
        };
        let exact = std::str::from_utf8(&record.data).is_ok();
        LogRecordView {
            sequence: record.sequence,
            timestamp: humantime::format_rfc3339_nanos(time).to_string(),
            stream: stream_name(record.stream),
            data: String::from_utf8_lossy(&record.data).into_owned(),
            data_base64: (!exact)
                .then(|| base64::engine::general_purpose::STANDARD.encode(&record.data)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use silo_proto::v1::{EnvVar, JobSpec, JobState, Limits};

    use super::*;

    fn at(secs: i64, nanos: i32) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp {
            seconds: secs,
            nanos,
        })
    }

    #[test]
    fn a_job_has_a_stable_json_shape() {
        let job = Job {
            id: "3f2a1b2c-0000".into(),
            spec: Some(JobSpec {
                command: vec!["make".into(), "-j4".into()],
                env: vec![EnvVar {
                    name: "TOKEN".into(),
                    value: "hunter2".into(),
                }],
                name: "build".into(),
                limits: Some(Limits {
                    memory_bytes: Some(64 << 20),
                    ..Limits::default()
                }),
                ..JobSpec::default()
            }),
            state: JobState::Completed as i32,
            end_cause: silo_proto::v1::EndCause::Exited as i32,
            exit_code: Some(0),
            owner: "admin".into(),
            created_at: at(1_700_000_000, 0),
            started_at: at(1_700_000_000, 500_000_000),
            ended_at: at(1_700_000_001, 734_000_000),
            uploads: vec!["src".into()],
            ..Job::default()
        };
        let value = serde_json::to_value(JobView::from(&job)).unwrap();
        assert_eq!(
            value,
            json!({
                "id": "3f2a1b2c-0000", "name": "build", "state": "completed", "reason": "",
                "end_cause": "exited", "start_failure": null, "failed_step": null,
                "errno": null, "exit_code": 0, "signal": null, "owner": "admin",
                "created_at": "2023-11-14T22:13:20.000Z",
                "started_at": "2023-11-14T22:13:20.500Z",
                "ended_at": "2023-11-14T22:13:21.734Z",
                "duration_ms": 1234,
                "command": ["make", "-j4"], "workdir": "", "env": ["TOKEN"],
                "secret_env": [],
                "timeout_ms": null, "stop_grace_ms": null, "runtime": null,
                "limits": {"cpu_percent": null, "cpus": null, "memory_bytes": 67108864,
                           "io_bps": null, "pids": null, "disk_bytes": null},
                "uploads": ["src"],
                "usage": null,
                "scheduled_at": null, "schedule_id": null
            })
        );
        assert!(!value.to_string().contains("hunter2"));
    }

    #[test]
    fn a_runtime_has_a_stable_json_shape_with_its_env_values() {
        let runtime = Runtime {
            name: "python-3.11".into(),
            version: "1.0.0".into(),
            description: "CPython 3.11".into(),
            size_bytes: 149_212_365,
            shared_bytes: 1024,
            entries: 5123,
            manifest_digest: "sha256:ab".into(),
            signer: "fp".into(),
            signed_here: true,
            installed_at: at(1_700_000_000, 0),
            used_by_jobs: 2,
            spec_yaml: "name: python-3.11\n".into(),
            packages: vec!["pip:numpy=1.26.4".into()],
            env: vec![EnvVar {
                name: "LANG".into(),
                value: "C.UTF-8".into(),
            }],
        };
        assert_eq!(
            serde_json::to_value(RuntimeView::from(&runtime)).unwrap(),
            json!({
                "name": "python-3.11", "version": "1.0.0", "description": "CPython 3.11",
                "size_bytes": 149_212_365, "shared_bytes": 1024, "entries": 5123,
                "manifest_digest": "sha256:ab", "signer": "fp", "signed_here": true,
                "installed_at": "2023-11-14T22:13:20.000Z", "used_by_jobs": 2,
                "spec_yaml": "name: python-3.11\n", "packages": ["pip:numpy=1.26.4"],
                "env": [{"name": "LANG", "value": "C.UTF-8"}]
            })
        );
        let unset = serde_json::to_value(RuntimeView::from(&Runtime::default())).unwrap();
        assert_eq!(unset["installed_at"], serde_json::Value::Null);
    }

    #[test]
    fn log_records_carry_text_and_exact_bytes_when_not_utf8() {
        let record = |data: &[u8]| LogRecord {
            sequence: 7,
            timestamp_unix_nanos: 1_700_000_000_123_456_789,
            stream: LogStream::Stderr as i32,
            data: data.to_vec().into(),
        };
        let text = serde_json::to_value(LogRecordView::from(&record(b"hi\n"))).unwrap();
        assert_eq!(
            text,
            json!({"sequence": 7, "timestamp": "2023-11-14T22:13:20.123456789Z",
                   "stream": "stderr", "data": "hi\n"})
        );
        let binary = serde_json::to_value(LogRecordView::from(&record(b"a\xffb"))).unwrap();
        assert_eq!(binary["data"], "a\u{fffd}b");
        assert_eq!(binary["data_base64"], "Yf9i");
    }
}
