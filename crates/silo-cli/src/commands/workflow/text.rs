//! Small text forms of workflow facts shared by the live view, the event lines, the
//! tables and the messages: states, symbols, durations, one line per job.

use std::time::{Duration, SystemTime};

use silo_proto::v1::{Workflow, WorkflowJob, WorkflowJobState, WorkflowState};

use crate::format::{format_elapsed, short_id, single_line, system_time, truncate};

/// How many characters of a workflow id tables and messages show.
pub const WORKFLOW_ID_LEN: usize = 12;

/// The most characters of a reason a job's line shows.
const REASON_WIDTH: usize = 60;

/// The first [`WORKFLOW_ID_LEN`] characters of a workflow id.
pub fn short_workflow_id(id: &str) -> &str {
    match id.char_indices().nth(WORKFLOW_ID_LEN) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

/// The workflow's state; a value this client does not know reads as unspecified.
pub fn workflow_state(workflow: &Workflow) -> WorkflowState {
    WorkflowState::try_from(workflow.state).unwrap_or(WorkflowState::Unspecified)
}

/// The job's state; a value this client does not know reads as unspecified.
pub fn job_state(job: &WorkflowJob) -> WorkflowJobState {
    WorkflowJobState::try_from(job.state).unwrap_or(WorkflowJobState::Unspecified)
}

/// Whether the workflow has ended: completed, failed or canceled.
pub fn workflow_is_final(state: WorkflowState) -> bool {
    matches!(
        state,
        WorkflowState::Completed | WorkflowState::Failed | WorkflowState::Canceled
    )
}

/// A workflow state as people read it: `running`, `completed`, `failed`, `canceled`.
pub fn workflow_state_name(state: WorkflowState) -> &'static str {
    match state {
        WorkflowState::Unspecified => "unknown",
        WorkflowState::Running => "running",
        WorkflowState::Completed => "completed",
        WorkflowState::Failed => "failed",
        WorkflowState::Canceled => "canceled",
    }
}

/// A job state as people read it: `waiting`, `running`, `backoff`, `completed`, ….
pub fn job_state_name(state: WorkflowJobState) -> &'static str {
    match state {
        WorkflowJobState::Unspecified => "unknown",
        WorkflowJobState::Waiting => "waiting",
        WorkflowJobState::Running => "running",
        WorkflowJobState::Backoff => "backoff",
        WorkflowJobState::Completed => "completed",
        WorkflowJobState::Failed => "failed",
        WorkflowJobState::Stopped => "stopped",
        WorkflowJobState::Skipped => "skipped",
    }
}

/// The one-character mark of a job's state in the live view.
pub fn job_symbol(state: WorkflowJobState) -> char {
    match state {
        WorkflowJobState::Completed => '✓',
        WorkflowJobState::Failed => '✗',
        WorkflowJobState::Stopped => '■',
        WorkflowJobState::Skipped => '⊘',
        WorkflowJobState::Running => '●',
        WorkflowJobState::Backoff => '↻',
        WorkflowJobState::Waiting => '◌',
        WorkflowJobState::Unspecified => '?',
    }
}

/// How long the job's last attempt ran: start to end, or start to `now` while it runs;
/// `None` before its first start.
pub fn job_duration(job: &WorkflowJob, now: SystemTime) -> Option<Duration> {
    let started = system_time(job.started_at.as_ref())?;
    let ended = match system_time(job.ended_at.as_ref()) {
        Some(ended) => ended,
        None if job_state(job) == WorkflowJobState::Running => now,
        None => return None,
    };
    Some(ended.duration_since(started).unwrap_or_default())
}

/// How long the workflow ran: created to ended, or to `now` while it runs.
pub fn workflow_duration(workflow: &Workflow, now: SystemTime) -> Option<Duration> {
    let created = system_time(workflow.created_at.as_ref())?;
    let ended = system_time(workflow.ended_at.as_ref()).unwrap_or(now);
    Some(ended.duration_since(created).unwrap_or_default())
}

/// The job's last attempt's exit code as `exit 3`; empty when it has not exited.
fn exit_phrase(job: &WorkflowJob) -> String {
    job.exit_code
        .map(|code| format!("exit {code}"))
        .unwrap_or_default()
}

/// `retry in 5s` for a job in backoff (`retry now` once the time has come).
fn retry_phrase(job: &WorkflowJob, now: SystemTime) -> Option<String> {
    let at = system_time(job.retry_at.as_ref())?;
    Some(match at.duration_since(now) {
        Ok(wait) if wait >= Duration::from_secs(1) => {
            format!(
                "retry in {}",
                format_elapsed(Duration::from_secs(wait.as_secs()))
            )
        }
        _ => "retry now".to_owned(),
    })
}

/// What a job's line says after its state, duration and exit code: what it waits for,
/// which attempt it is on (of how many, when known), when it retries, or why it was
/// skipped.
fn detail(job: &WorkflowJob, max_attempts: Option<u32>, now: SystemTime) -> String {
    let reason = || truncate(&single_line(&job.reason), REASON_WIDTH);
    let attempt = match max_attempts {
        Some(max) if max > 1 => format!("attempt {}/{max}", job.attempts),
        _ => format!("attempt {}", job.attempts),
    };
    match job_state(job) {
        WorkflowJobState::Waiting if job.requires.is_empty() => String::new(),
        WorkflowJobState::Waiting => format!("waits for {}", single_line(&job.requires.join(", "))),
        WorkflowJobState::Skipped => reason(),
        WorkflowJobState::Backoff => match retry_phrase(job, now) {
            Some(retry) => format!("{attempt} failed, {retry}"),
            None => format!("{attempt} failed"),
        },
        WorkflowJobState::Failed | WorkflowJobState::Stopped
            if job.exit_code.is_none() && !job.reason.is_empty() =>
        {
            format!("{attempt}: {}", reason())
        }
        _ if job.attempts == 0 => String::new(),
        _ => attempt,
    }
}

/// One line for a job in the live view, without its symbol: name (padded to
/// `name_width`), state, duration, exit code and detail, in aligned columns and without
/// trailing blanks: `train    failed      3m4s  exit 1  attempt 2/3`. `max_attempts` is
/// how many attempts the job may have, when known (the server does not say); it is shown
/// only when the job may be retried.
pub fn job_line(
    job: &WorkflowJob,
    name_width: usize,
    max_attempts: Option<u32>,
    now: SystemTime,
) -> String {
    let duration = job_duration(job, now)
        .map(format_elapsed)
        .unwrap_or_default();
    let line = format!(
        "{name:<name_width$}  {state:<9}  {duration:>6}  {exit:<8}  {detail}",
        name = single_line(&job.name),
        state = job_state_name(job_state(job)),
        exit = exit_phrase(job),
        detail = detail(job, max_attempts, now),
    );
    line.trim_end().to_owned()
}

/// The width of the widest job name, for aligning lines.
pub fn name_width<'a>(names: impl IntoIterator<Item = &'a str>) -> usize {
    names
        .into_iter()
        .map(|name| single_line(name).chars().count())
        .max()
        .unwrap_or(0)
}

/// `7/12 done`.
pub fn done_text(workflow: &Workflow) -> String {
    format!("{}/{} done", workflow.done, workflow.total)
}

/// The workflow as people name it: `nightly (3f2a1b2c4d5e)`, or the id alone when it has
/// no name.
pub fn workflow_title(workflow: &Workflow) -> String {
    let id = short_workflow_id(&workflow.id);
    if workflow.name.is_empty() {
        id.to_owned()
    } else {
        format!("{} ({id})", single_line(&workflow.name))
    }
}

/// How many jobs are in each state, in the order of the states' lifecycle, leaving out
/// states no job is in: `3 completed, 1 stopped, 8 skipped`.
pub fn state_counts(workflow: &Workflow) -> String {
    use WorkflowJobState::*;
    [
        Waiting,
        Running,
        Backoff,
        Completed,
        Failed,
        Stopped,
        Skipped,
        Unspecified,
    ]
    .into_iter()
    .filter_map(|state| {
        let count = workflow
            .jobs
            .iter()
            .filter(|job| job_state(job) == state)
            .count();
        (count > 0).then(|| format!("{count} {}", job_state_name(state)))
    })
    .collect::<Vec<_>>()
    .join(", ")
}

/// The job id of the job's last attempt, short; `-` before its first.
pub fn last_job_id(job: &WorkflowJob) -> &str {
    job.job_ids.last().map_or("-", |id| short_id(id))
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn at(secs: u64) -> Option<Timestamp> {
        Some(Timestamp {
            seconds: secs as i64,
            nanos: 0,
        })
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
    }

    fn job(name: &str, state: WorkflowJobState) -> WorkflowJob {
        WorkflowJob {
            name: name.into(),
            state: state as i32,
            ..WorkflowJob::default()
        }
    }

    #[test]
    fn a_jobs_line_aligns_state_duration_exit_and_attempt() {
        use WorkflowJobState::*;
        let done = WorkflowJob {
            attempts: 1,
            exit_code: Some(0),
            started_at: at(NOW - 75),
            ended_at: at(NOW - 71),
            ..job("fetch", Completed)
        };
        let running = WorkflowJob {
            attempts: 2,
            started_at: at(NOW - 184),
            job_ids: vec!["a".into(), "3f2a1b2c-dead".into()],
            ..job("train", Running)
        };
        let failed = WorkflowJob {
            attempts: 3,
            exit_code: Some(1),
            reason: "exited with code 1".into(),
            started_at: at(NOW - 10),
            ended_at: at(NOW - 9),
            ..job("train", Failed)
        };
        let width = name_width(["fetch", "train", "report"]);
        assert_eq!(
            job_line(&done, width, Some(1), now()),
            "fetch   completed    4.0s  exit 0    attempt 1"
        );
        assert_eq!(
            job_line(&running, width, Some(3), now()),
            "train   running      3m4s            attempt 2/3"
        );
        assert_eq!(
            job_line(&failed, width, Some(3), now()),
            "train   failed       1.0s  exit 1    attempt 3/3"
        );
    }

    #[test]
    fn waiting_backoff_and_skipped_jobs_say_what_they_wait_for() {
        use WorkflowJobState::*;
        let waiting = WorkflowJob {
            requires: vec!["fetch: COMPLETED".into(), "prep: FINISHED".into()],
            ..job("report", Waiting)
        };
        assert_eq!(
            job_line(&waiting, 6, None, now()),
            "report  waiting                      waits for fetch: COMPLETED, prep: FINISHED"
        );
        assert_eq!(
            job_line(&job("lone", Waiting), 4, None, now()),
            "lone  waiting"
        );
        let backoff = WorkflowJob {
            attempts: 1,
            exit_code: Some(2),
            started_at: at(NOW - 30),
            ended_at: at(NOW - 28),
            retry_at: at(NOW + 5),
            ..job("train", Backoff)
        };
        assert_eq!(
            job_line(&backoff, 5, Some(2), now()),
            "train  backoff      2.0s  exit 2    attempt 1/2 failed, retry in 5.0s"
        );
        let skipped = WorkflowJob {
            reason: "train FAILED".into(),
            ..job("report", Skipped)
        };
        assert_eq!(
            job_line(&skipped, 6, None, now()),
            "report  skipped                      train FAILED"
        );
        let timed_out = WorkflowJob {
            attempts: 1,
            reason: "timed out\nafter 5s".into(),
            ..job("t", Stopped)
        };
        assert_eq!(
            job_line(&timed_out, 1, None, now()),
            r"t  stopped                      attempt 1: timed out\nafter 5s"
        );
    }

    #[test]
    fn every_job_state_has_its_own_symbol_and_name() {
        use WorkflowJobState::*;
        let states = [
            Unspecified,
            Waiting,
            Running,
            Backoff,
            Completed,
            Failed,
            Stopped,
            Skipped,
        ];
        let symbols: std::collections::BTreeSet<char> =
            states.iter().map(|s| job_symbol(*s)).collect();
        assert_eq!(symbols.len(), states.len());
        assert_eq!(job_symbol(Completed), '✓');
        assert_eq!(job_symbol(Failed), '✗');
        assert_eq!(job_state_name(Backoff), "backoff");
    }

    #[test]
    fn durations_run_to_now_only_while_the_job_runs() {
        use WorkflowJobState::*;
        let started = |state| WorkflowJob {
            started_at: at(NOW - 3),
            ..job("j", state)
        };
        assert_eq!(
            job_duration(&started(Running), now()),
            Some(Duration::from_secs(3))
        );
        assert_eq!(job_duration(&started(Stopped), now()), None);
        assert_eq!(job_duration(&job("j", Waiting), now()), None);
        let workflow = Workflow {
            created_at: at(NOW - 60),
            ..Workflow::default()
        };
        assert_eq!(
            workflow_duration(&workflow, now()),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn state_counts_name_only_the_states_jobs_are_in() {
        use WorkflowJobState::*;
        let workflow = Workflow {
            jobs: vec![
                job("a", Skipped),
                job("b", Completed),
                job("c", Skipped),
                job("d", Stopped),
            ],
            ..Workflow::default()
        };
        assert_eq!(state_counts(&workflow), "1 completed, 1 stopped, 2 skipped");
        assert_eq!(state_counts(&Workflow::default()), "");
    }

    #[test]
    fn workflows_are_named_by_name_and_short_id() {
        let workflow = Workflow {
            id: "0123456789abcdef0123456789abcdef".into(),
            name: "nightly".into(),
            done: 7,
            total: 12,
            ..Workflow::default()
        };
        assert_eq!(workflow_title(&workflow), "nightly (0123456789ab)");
        assert_eq!(done_text(&workflow), "7/12 done");
        let unnamed = Workflow {
            name: String::new(),
            ..workflow
        };
        assert_eq!(workflow_title(&unnamed), "0123456789ab");
        assert_eq!(short_workflow_id("abc"), "abc");
    }
}
