//! A workflow's progress as plain lines, for a log or a pipe: one line per change of a
//! job's state (`[train] RUNNING (attempt 1, job 3f2a1b2c)`), and one when it has ended.

use std::collections::HashMap;
use std::time::SystemTime;

use silo_proto::v1::{Workflow, WorkflowJob, WorkflowJobState, WorkflowState};

use super::text::{
    done_text, job_duration, job_state, job_state_name, last_job_id, workflow_duration,
    workflow_state, workflow_state_name, workflow_title,
};
use crate::format::{format_elapsed, single_line};

/// The jobs' states as last shown, to print each change once.
#[derive(Debug, Default)]
pub struct EventLines {
    /// Per job name: its state and attempts when last seen. A job not seen yet counts as
    /// waiting before its first attempt, which is where every job starts.
    seen: HashMap<String, (WorkflowJobState, u32)>,
}

impl EventLines {
    /// The lines for what changed since the last call, in the workflow's job order: a
    /// job's state, or its attempt (a retry seen only after it started again). A running
    /// attempt whose job id the server has not sent yet is shown once it has.
    pub fn changes(&mut self, workflow: &Workflow, now: SystemTime) -> Vec<String> {
        let mut lines = Vec::new();
        for job in &workflow.jobs {
            let state = job_state(job);
            if state == WorkflowJobState::Running && job.job_ids.len() < job.attempts as usize {
                continue;
            }
            let now_seen = (state, job.attempts);
            let before = self
                .seen
                .insert(job.name.clone(), now_seen)
                .unwrap_or((WorkflowJobState::Waiting, 0));
            if before != now_seen {
                lines.push(event_line(job, now));
            }
        }
        lines
    }
}

/// `[train] RUNNING (attempt 1, job 3f2a1b2c)`, `[train] FAILED: exit code 1`, ….
pub fn event_line(job: &WorkflowJob, now: SystemTime) -> String {
    let state = job_state(job);
    let head = format!(
        "[{}] {}",
        single_line(&job.name),
        job_state_name(state).to_ascii_uppercase()
    );
    let reason = single_line(&job.reason);
    let exit = job.exit_code.map(|code| format!("exit code {code}"));
    match state {
        WorkflowJobState::Running => format!(
            "{head} (attempt {}, job {})",
            job.attempts,
            last_job_id(job)
        ),
        WorkflowJobState::Completed => match job_duration(job, now) {
            Some(took) => format!("{head} in {}", format_elapsed(took)),
            None => head,
        },
        WorkflowJobState::Backoff => {
            let why = exit.unwrap_or(reason);
            let mut line = format!("{head}: attempt {} failed", job.attempts);
            if !why.is_empty() {
                line.push_str(&format!(" ({why})"));
            }
            if let Some(wait) = crate::format::system_time(job.retry_at.as_ref())
                .and_then(|at| at.duration_since(now).ok())
            {
                line.push_str(&format!(", retry in {}", format_elapsed(wait)));
            }
            line
        }
        WorkflowJobState::Failed | WorkflowJobState::Stopped | WorkflowJobState::Skipped => {
            match exit.filter(|_| state == WorkflowJobState::Failed) {
                Some(exit) => format!("{head}: {exit}"),
                None if reason.is_empty() => head,
                None => format!("{head}: {reason}"),
            }
        }
        WorkflowJobState::Waiting | WorkflowJobState::Unspecified => head,
    }
}

/// The line once the workflow has ended: `workflow nightly (3f2a1b2c4d5e) COMPLETED:
/// 12/12 done in 3m4s`, or with its reason when it did not complete.
pub fn final_line(workflow: &Workflow, now: SystemTime) -> String {
    let state = workflow_state(workflow);
    let head = format!(
        "workflow {} {}",
        workflow_title(workflow),
        workflow_state_name(state).to_ascii_uppercase()
    );
    let took = workflow_duration(workflow, now)
        .map(|took| format!(" in {}", format_elapsed(took)))
        .unwrap_or_default();
    if state == WorkflowState::Completed || workflow.reason.is_empty() {
        format!("{head}: {}{took}", done_text(workflow))
    } else {
        format!(
            "{head}: {} ({}{took})",
            single_line(&workflow.reason),
            done_text(workflow)
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prost_types::Timestamp;

    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn at(secs: i64) -> Option<Timestamp> {
        Some(Timestamp {
            seconds: secs,
            nanos: 0,
        })
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(NOW as u64)
    }

    fn job(name: &str, state: WorkflowJobState, attempts: u32) -> WorkflowJob {
        WorkflowJob {
            name: name.into(),
            state: state as i32,
            attempts,
            job_ids: (0..attempts)
                .map(|n| format!("{n}f2a1b2c-0000-4000-8000-00000000000{n}"))
                .collect(),
            ..WorkflowJob::default()
        }
    }

    fn workflow(jobs: Vec<WorkflowJob>) -> Workflow {
        Workflow {
            id: "0123456789abcdef0123456789abcdef".into(),
            name: "nightly".into(),
            jobs,
            ..Workflow::default()
        }
    }

    #[test]
    fn each_change_of_a_jobs_state_is_one_line_and_nothing_else_is() {
        use WorkflowJobState::*;
        let mut events = EventLines::default();
        let first = workflow(vec![job("fetch", Running, 1), job("train", Waiting, 0)]);
        assert_eq!(
            events.changes(&first, now()),
            ["[fetch] RUNNING (attempt 1, job 0f2a1b2c)"]
        );
        assert!(events.changes(&first, now()).is_empty());

        let failed = WorkflowJob {
            exit_code: Some(1),
            reason: "exited with code 1".into(),
            ..job("train", Failed, 1)
        };
        let fetched = WorkflowJob {
            started_at: at(NOW - 12),
            ended_at: at(NOW),
            ..job("fetch", Completed, 1)
        };
        assert_eq!(
            events.changes(&workflow(vec![fetched, failed]), now()),
            ["[fetch] COMPLETED in 12.0s", "[train] FAILED: exit code 1"]
        );
    }

    #[test]
    fn a_running_attempt_is_shown_once_its_job_id_is_known() {
        use WorkflowJobState::*;
        let mut events = EventLines::default();
        let without_id = WorkflowJob {
            job_ids: Vec::new(),
            ..job("fetch", Running, 1)
        };
        assert!(
            events
                .changes(&workflow(vec![without_id]), now())
                .is_empty()
        );
        assert_eq!(
            events.changes(&workflow(vec![job("fetch", Running, 1)]), now()),
            ["[fetch] RUNNING (attempt 1, job 0f2a1b2c)"]
        );
    }

    #[test]
    fn a_retry_seen_only_once_it_runs_again_is_a_change() {
        use WorkflowJobState::*;
        let mut events = EventLines::default();
        events.changes(&workflow(vec![job("train", Running, 1)]), now());
        assert_eq!(
            events.changes(&workflow(vec![job("train", Running, 2)]), now()),
            ["[train] RUNNING (attempt 2, job 1f2a1b2c)"]
        );
    }

    #[test]
    fn backoff_skip_and_stop_lines_say_why() {
        use WorkflowJobState::*;
        let backoff = WorkflowJob {
            exit_code: Some(3),
            retry_at: at(NOW + 5),
            ..job("train", Backoff, 1)
        };
        assert_eq!(
            event_line(&backoff, now()),
            "[train] BACKOFF: attempt 1 failed (exit code 3), retry in 5.0s"
        );
        let skipped = WorkflowJob {
            reason: "requires train: COMPLETED, but it FAILED".into(),
            ..job("report", Skipped, 0)
        };
        assert_eq!(
            event_line(&skipped, now()),
            "[report] SKIPPED: requires train: COMPLETED, but it FAILED"
        );
        let stopped = WorkflowJob {
            exit_code: Some(143),
            reason: "timed out after 5s".into(),
            ..job("slow", Stopped, 1)
        };
        assert_eq!(
            event_line(&stopped, now()),
            "[slow] STOPPED: timed out after 5s"
        );
        let not_started = WorkflowJob {
            reason: "command not found: trian".into(),
            ..job("train", Failed, 1)
        };
        assert_eq!(
            event_line(&not_started, now()),
            "[train] FAILED: command not found: trian"
        );
    }

    #[test]
    fn the_final_line_gives_the_count_and_the_reason_when_it_did_not_complete() {
        let ended = Workflow {
            state: WorkflowState::Completed as i32,
            done: 3,
            total: 3,
            created_at: at(NOW - 184),
            ended_at: at(NOW),
            ..workflow(vec![])
        };
        assert_eq!(
            final_line(&ended, now()),
            "workflow nightly (0123456789ab) COMPLETED: 3/3 done in 3m4s"
        );
        let failed = Workflow {
            state: WorkflowState::Failed as i32,
            reason: "job train failed".into(),
            done: 2,
            ..ended
        };
        assert_eq!(
            final_line(&failed, now()),
            "workflow nightly (0123456789ab) FAILED: job train failed (2/3 done in 3m4s)"
        );
    }
}
