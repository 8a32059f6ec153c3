//! `silo job status ID`: one job in detail, as `key: value` lines or JSON.

use std::time::SystemTime;

use silo_proto::v1::Job;

use crate::cli::{GlobalOptions, StatusArgs};
use crate::format::{
    command_line, exit_text, format_elapsed, job_duration, job_state, rfc3339_seconds, state_name,
    system_time,
};
use crate::output::{print, print_json};
use crate::session::Session;
use crate::view::JobView;

/// Prints the job `ID` (or unique prefix).
pub async fn status(global: &GlobalOptions, args: StatusArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    let job = session.get_job(&args.id).await?;
    if args.json {
        return print_json(&JobView::from(&job));
    }
    print(&render_status(&job, SystemTime::now()))
}

/// The job as aligned `key: value` lines, in a fixed order: id, name, state, reason,
/// exit, owner, created, due, schedule, started, ended (RFC 3339, UTC), duration, command,
/// runtime, workdir, env (names only), limits, timeout, grace, uploads. Unset values read
/// `-`.
pub fn render_status(job: &Job, now: SystemTime) -> String {
    let spec = job.spec.clone().unwrap_or_default();
    let limits = spec.limits.clone().unwrap_or_default();
    let time = |ts: Option<&prost_types::Timestamp>| {
        system_time(ts).map_or_else(|| "-".to_owned(), rfc3339_seconds)
    };
    let millis = |ms: u64| {
        if ms == 0 {
            "-".to_owned()
        } else {
            format_elapsed(std::time::Duration::from_millis(ms))
        }
    };
    let list = |items: Vec<String>| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(", ")
        }
    };
    let text = |value: &str| {
        if value.is_empty() {
            "-".to_owned()
        } else {
            value.to_owned()
        }
    };
    let lines = [
        ("id", job.id.clone()),
        ("name", text(&spec.name)),
        ("state", state_name(job_state(job)).to_owned()),
        ("reason", text(&job.reason)),
        (
            "cause",
            crate::format::end_cause_text(job).unwrap_or_else(|| "-".to_owned()),
        ),
        ("exit", exit_text(job)),
        ("owner", text(&job.owner)),
        ("created", time(job.created_at.as_ref())),
        // The instant a scheduled job was due (--at, --in, a schedule's firing).
        ("due", time(job.scheduled_at.as_ref())),
        ("schedule", text(&job.schedule_id)),
        ("started", time(job.started_at.as_ref())),
        ("ended", time(job.ended_at.as_ref())),
        (
            "duration",
            job_duration(job, now).map_or_else(|| "-".to_owned(), format_elapsed),
        ),
        ("command", command_line(&spec.command)),
        ("runtime", text(&spec.runtime)),
        ("workdir", text(&spec.workdir)),
        (
            "env",
            list(spec.env.iter().map(|var| var.name.clone()).collect()),
        ),
        (
            "secrets",
            list(
                spec.secret_env_names
                    .iter()
                    .map(|name| format!("{name}=<hidden>"))
                    .collect(),
            ),
        ),
        ("limits", crate::format::limits_text(&limits)),
        ("timeout", millis(spec.timeout_ms)),
        ("grace", millis(spec.stop_grace_ms)),
        ("uploads", list(job.uploads.clone())),
        (
            "usage",
            job.usage
                .as_ref()
                .map_or_else(|| "-".to_owned(), crate::format::usage_text),
        ),
    ];
    let width = lines.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in lines {
        let value = value.replace('\n', "\\n");
        out.push_str(&format!("{:<width$} {value}\n", format!("{key}:")));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prost_types::Timestamp;
    use silo_proto::v1::{EnvVar, JobSpec, JobState, Limits};

    use super::*;

    #[test]
    fn status_lists_every_fact_with_unset_values_as_dashes() {
        let job = Job {
            id: "3f2a1b2c-dead-beef".into(),
            state: JobState::Failed as i32,
            reason: "timed out after 5s".into(),
            signal: Some(15),
            owner: "admin".into(),
            created_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            started_at: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            spec: Some(JobSpec {
                command: vec!["sleep".into(), "60".into()],
                env: vec![
                    EnvVar {
                        name: "A".into(),
                        value: "secret".into(),
                    },
                    EnvVar {
                        name: "B".into(),
                        value: String::new(),
                    },
                ],
                secret_env_names: vec!["TOKEN".into(), "KEY".into()],
                timeout_ms: 5000,
                runtime: "python-3.11@1.0.0".into(),
                limits: Some(Limits {
                    cpu_percent: Some(50),
                    memory_bytes: Some(64 << 20),
                    ..Limits::default()
                }),
                ..JobSpec::default()
            }),
            uploads: vec!["data".into(), "data/x".into()],
            ..Job::default()
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_005);
        let expected = "\
id:       3f2a1b2c-dead-beef
name:     -
state:    failed
reason:   timed out after 5s
cause:    -
exit:     SIGTERM
owner:    admin
created:  2023-11-14T22:13:20Z
due:      -
schedule: -
started:  2023-11-14T22:13:20Z
ended:    -
duration: 5.0s
command:  sleep 60
runtime:  python-3.11@1.0.0
workdir:  -
env:      A, B
secrets:  TOKEN=<hidden>, KEY=<hidden>
limits:   cpu=50% memory=64M
timeout:  5.0s
grace:    -
uploads:  data, data/x
usage:    -
";
        assert_eq!(render_status(&job, now), expected);
    }
}
