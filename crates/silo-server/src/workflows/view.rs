//! The wire form of a workflow, from its row, spec and scheduler state.

use silo_proto::v1::{Workflow, WorkflowJob, WorkflowJobState, WorkflowState};
use silo_workflow::schedule::{Node, NodeState, RunState};
use silo_workflow::spec::{Condition, WorkflowSpec};

use super::store::WorkflowRow;
use crate::service::timestamp;
use crate::store::JobRow;

/// The name a condition has in the YAML.
pub fn condition_name(condition: &Condition) -> &'static str {
    match condition {
        Condition::Completed => "COMPLETED",
        Condition::Failed => "FAILED",
        Condition::Stopped => "STOPPED",
        Condition::Skipped => "SKIPPED",
        Condition::Finished => "FINISHED",
    }
}

/// The wire state of a node.
pub fn node_state(state: &NodeState) -> WorkflowJobState {
    match state {
        NodeState::Waiting => WorkflowJobState::Waiting,
        NodeState::Running => WorkflowJobState::Running,
        NodeState::Backoff { .. } => WorkflowJobState::Backoff,
        NodeState::Completed => WorkflowJobState::Completed,
        NodeState::Failed => WorkflowJobState::Failed,
        NodeState::Stopped => WorkflowJobState::Stopped,
        NodeState::Skipped => WorkflowJobState::Skipped,
    }
}

/// The workflow's wire state and reason for the scheduler's state.
pub fn state_of(state: &RunState) -> (WorkflowState, String) {
    match state {
        RunState::Running => (WorkflowState::Running, String::new()),
        RunState::Completed => (WorkflowState::Completed, String::new()),
        RunState::Failed(reason) => (WorkflowState::Failed, reason.clone()),
        RunState::Canceled(reason) => (WorkflowState::Canceled, reason.clone()),
    }
}

/// The jobs of `spec` with what they require, all as `nodes` say.
pub fn jobs(
    spec: &WorkflowSpec,
    nodes: &[Node],
    job_ids: &[Vec<String>],
    last_jobs: &[Option<JobRow>],
) -> Vec<WorkflowJob> {
    spec.jobs
        .iter()
        .enumerate()
        .map(|(i, job)| {
            let node = nodes.get(i);
            let last = last_jobs.get(i).and_then(Option::as_ref);
            WorkflowJob {
                name: job.name.clone(),
                state: node.map_or(WorkflowJobState::Waiting, |n| node_state(&n.state)) as i32,
                reason: node.map(|n| n.reason.clone()).unwrap_or_default(),
                attempts: node.map_or(0, |n| n.attempts),
                job_ids: job_ids.get(i).cloned().unwrap_or_default(),
                requires: job
                    .requires
                    .iter()
                    .map(|r| {
                        let upstream = spec.jobs.get(r.job).map_or("?", |j| j.name.as_str());
                        format!("{upstream}: {}", condition_name(&r.condition))
                    })
                    .collect(),
                exit_code: last.and_then(|r| r.exit_code),
                started_at: timestamp(last.and_then(|r| r.started_at)),
                ended_at: timestamp(last.and_then(|r| r.ended_at)),
                retry_at: match node.map(|n| &n.state) {
                    Some(NodeState::Backoff { until_ms }) => {
                        timestamp(i64::try_from(*until_ms).ok().map(|ms| ms * 1000))
                    }
                    _ => None,
                },
            }
        })
        .collect()
}

/// The whole workflow.
pub fn workflow(
    row: &WorkflowRow,
    spec: &WorkflowSpec,
    nodes: &[Node],
    job_ids: &[Vec<String>],
    last_jobs: &[Option<JobRow>],
) -> Workflow {
    let done = nodes
        .iter()
        .filter(|n| {
            matches!(
                n.state,
                NodeState::Completed | NodeState::Failed | NodeState::Stopped | NodeState::Skipped
            )
        })
        .count();
    Workflow {
        id: row.id.clone(),
        name: row.name.clone(),
        state: row.state,
        reason: row.reason.clone(),
        jobs: jobs(spec, nodes, job_ids, last_jobs),
        owner: row.owner.clone(),
        created_at: timestamp(Some(row.created_at)),
        ended_at: timestamp(row.ended_at),
        done: done as u32,
        total: spec.jobs.len() as u32,
    }
}
