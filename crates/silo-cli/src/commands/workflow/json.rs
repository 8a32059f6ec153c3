//! The `--json` shape of a workflow (`silo workflow status --json`; `list --json` prints an
//! array). Part of silo's interface for scripts: fields are only ever added.
//!
//! ```json
//! {
//!   "id": "0123…", "name": "nightly", "state": "failed", "reason": "job train failed",
//!   "owner": "admin", "created_at": "2025-01-31T12:00:00.000Z", "ended_at": "…",
//!   "done": 3, "total": 3,
//!   "jobs": [
//!     {"name": "train", "state": "failed", "reason": "exited with code 1",
//!      "attempts": 2, "job_ids": ["3f2a…", "9c1d…"], "requires": ["fetch: COMPLETED"],
//!      "exit_code": 1, "started_at": "…", "ended_at": "…", "retry_at": null}
//!   ]
//! }
//! ```
//!
//! States are lower case: a workflow's `running`, `completed`, `failed`, `canceled`; a
//! job's `waiting`, `running`, `backoff`, `completed`, `failed`, `stopped`, `skipped`.
//! Times are RFC 3339 in UTC with milliseconds, or null.

use serde::Serialize;
use silo_proto::v1::{Workflow, WorkflowJob};

use super::text::{job_state, job_state_name, workflow_state, workflow_state_name};
use crate::format::system_time;

/// A workflow as printed by `--json`.
#[derive(Debug, Serialize)]
pub struct WorkflowView {
    id: String,
    name: String,
    state: &'static str,
    reason: String,
    owner: String,
    created_at: Option<String>,
    ended_at: Option<String>,
    done: u32,
    total: u32,
    jobs: Vec<WorkflowJobView>,
}

/// One job of a workflow as printed by `--json`.
#[derive(Debug, Serialize)]
pub struct WorkflowJobView {
    name: String,
    state: &'static str,
    reason: String,
    attempts: u32,
    job_ids: Vec<String>,
    requires: Vec<String>,
    exit_code: Option<i32>,
    started_at: Option<String>,
    ended_at: Option<String>,
    retry_at: Option<String>,
}

fn rfc3339_millis(timestamp: Option<&prost_types::Timestamp>) -> Option<String> {
    system_time(timestamp).map(|time| humantime::format_rfc3339_millis(time).to_string())
}

impl From<&Workflow> for WorkflowView {
    fn from(workflow: &Workflow) -> Self {
        WorkflowView {
            id: workflow.id.clone(),
            name: workflow.name.clone(),
            state: workflow_state_name(workflow_state(workflow)),
            reason: workflow.reason.clone(),
            owner: workflow.owner.clone(),
            created_at: rfc3339_millis(workflow.created_at.as_ref()),
            ended_at: rfc3339_millis(workflow.ended_at.as_ref()),
            done: workflow.done,
            total: workflow.total,
            jobs: workflow.jobs.iter().map(WorkflowJobView::from).collect(),
        }
    }
}

impl From<&WorkflowJob> for WorkflowJobView {
    fn from(job: &WorkflowJob) -> Self {
        WorkflowJobView {
            name: job.name.clone(),
            state: job_state_name(job_state(job)),
            reason: job.reason.clone(),
            attempts: job.attempts,
            job_ids: job.job_ids.clone(),
            requires: job.requires.clone(),
            exit_code: job.exit_code,
            started_at: rfc3339_millis(job.started_at.as_ref()),
            ended_at: rfc3339_millis(job.ended_at.as_ref()),
            retry_at: rfc3339_millis(job.retry_at.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use silo_proto::v1::{WorkflowJobState, WorkflowState};

    use super::*;

    #[test]
    fn a_workflow_has_a_stable_json_shape() {
        let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        let workflow = Workflow {
            id: "0123".into(),
            name: "nightly".into(),
            state: WorkflowState::Failed as i32,
            reason: "job train failed".into(),
            owner: "admin".into(),
            created_at: at(1_700_000_000),
            done: 1,
            total: 1,
            jobs: vec![WorkflowJob {
                name: "train".into(),
                state: WorkflowJobState::Failed as i32,
                reason: "exited with code 1".into(),
                attempts: 1,
                job_ids: vec!["3f2a".into()],
                requires: vec!["fetch: COMPLETED".into()],
                exit_code: Some(1),
                ended_at: at(1_700_000_001),
                ..WorkflowJob::default()
            }],
            ..Workflow::default()
        };
        assert_eq!(
            serde_json::to_value(WorkflowView::from(&workflow)).unwrap(),
            json!({
                "id": "0123", "name": "nightly", "state": "failed",
                "reason": "job train failed", "owner": "admin",
                "created_at": "2023-11-14T22:13:20.000Z", "ended_at": null,
                "done": 1, "total": 1,
                "jobs": [{
                    "name": "train", "state": "failed", "reason": "exited with code 1",
                    "attempts": 1, "job_ids": ["3f2a"], "requires": ["fetch: COMPLETED"],
                    "exit_code": 1, "started_at": null,
                    "ended_at": "2023-11-14T22:13:21.000Z", "retry_at": null
                }]
            })
        );
    }
}
