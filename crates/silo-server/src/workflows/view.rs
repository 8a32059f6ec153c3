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
            let mut shown = WorkflowJob {
                name: job.name.clone(),
                requires: job
                    .requires
                    .iter()
                    .map(|r| {
                        let upstream = spec.jobs.get(r.job).map_or("?", |j| j.name.as_str());
                        format!("{upstream}: {}", condition_name(&r.condition))
                    })
                    .collect(),
                ..WorkflowJob::default()
            };
            refresh_job(&mut shown, nodes.get(i), job_ids.get(i), last_jobs.get(i));
            shown
        })
        .collect()
}

/// Brings what changes of one job's view (its state, attempts, job ids, last job's times
/// and exit) up to date; returns whether anything changed. Allocates only for what did.
fn refresh_job(
    shown: &mut WorkflowJob,
    node: Option<&Node>,
    job_ids: Option<&Vec<String>>,
    last: Option<&Option<JobRow>>,
) -> bool {
    let last = last.and_then(Option::as_ref);
    let mut changed = false;
    let state = node.map_or(WorkflowJobState::Waiting, |n| node_state(&n.state)) as i32;
    set(&mut shown.state, state, &mut changed);
    set(
        &mut shown.attempts,
        node.map_or(0, |n| n.attempts),
        &mut changed,
    );
    set(
        &mut shown.exit_code,
        last.and_then(|r| r.exit_code),
        &mut changed,
    );
    let started_at = timestamp(last.and_then(|r| r.started_at));
    set(&mut shown.started_at, started_at, &mut changed);
    set(
        &mut shown.ended_at,
        timestamp(last.and_then(|r| r.ended_at)),
        &mut changed,
    );
    let retry_at = match node.map(|n| &n.state) {
        Some(NodeState::Backoff { until_ms }) => {
            timestamp(i64::try_from(*until_ms).ok().map(|ms| ms * 1000))
        }
        _ => None,
    };
    set(&mut shown.retry_at, retry_at, &mut changed);
    let reason = node.map_or("", |n| n.reason.as_str());
    if shown.reason != reason {
        shown.reason = reason.to_owned();
        changed = true;
    }
    let ids: &[String] = job_ids.map_or(&[], Vec::as_slice);
    if shown.job_ids != ids {
        shown.job_ids = ids.to_vec();
        changed = true;
    }
    changed
}

/// Brings `shown` (a view made by [`workflow`] for the same workflow) up to date in
/// place, allocating only for what changed; returns whether anything did. A view of
/// another shape is rebuilt.
pub fn refresh(
    shown: &mut Workflow,
    row: &WorkflowRow,
    spec: &WorkflowSpec,
    nodes: &[Node],
    job_ids: &[Vec<String>],
    last_jobs: &[Option<JobRow>],
) -> bool {
    if shown.jobs.len() != spec.jobs.len() || shown.id != row.id {
        *shown = workflow(row, spec, nodes, job_ids, last_jobs);
        return true;
    }
    let mut changed = false;
    for (i, job) in shown.jobs.iter_mut().enumerate() {
        changed |= refresh_job(job, nodes.get(i), job_ids.get(i), last_jobs.get(i));
    }
    set(&mut shown.done, done_count(nodes), &mut changed);
    set(&mut shown.state, row.state, &mut changed);
    if shown.reason != row.reason {
        shown.reason.clone_from(&row.reason);
        changed = true;
    }
    set(&mut shown.ended_at, timestamp(row.ended_at), &mut changed);
    changed
}

/// Sets `field` to `value` when they differ, noting the change.
fn set<T: PartialEq>(field: &mut T, value: T, changed: &mut bool) {
    if *field != value {
        *field = value;
        *changed = true;
    }
}

/// How many nodes are final.
fn done_count(nodes: &[Node]) -> u32 {
    nodes
        .iter()
        .filter(|n| {
            matches!(
                n.state,
                NodeState::Completed | NodeState::Failed | NodeState::Stopped | NodeState::Skipped
            )
        })
        .count() as u32
}

/// A workflow without its jobs (`done` and `total` still count them), from its row and
/// nodes alone: what ListWorkflows' summary view sends.
pub fn summary(row: &WorkflowRow, nodes: &[Node]) -> Workflow {
    Workflow {
        id: row.id.clone(),
        name: row.name.clone(),
        state: row.state,
        reason: row.reason.clone(),
        jobs: Vec::new(),
        owner: row.owner.clone(),
        created_at: timestamp(Some(row.created_at)),
        ended_at: timestamp(row.ended_at),
        done: done_count(nodes),
        total: nodes.len() as u32,
    }
}

/// `workflow` without its jobs, copying nothing of them.
pub fn without_jobs(workflow: &Workflow) -> Workflow {
    Workflow {
        id: workflow.id.clone(),
        name: workflow.name.clone(),
        state: workflow.state,
        reason: workflow.reason.clone(),
        jobs: Vec::new(),
        owner: workflow.owner.clone(),
        created_at: workflow.created_at,
        ended_at: workflow.ended_at,
        done: workflow.done,
        total: workflow.total,
    }
}

/// The whole workflow.
pub fn workflow(
    row: &WorkflowRow,
    spec: &WorkflowSpec,
    nodes: &[Node],
    job_ids: &[Vec<String>],
    last_jobs: &[Option<JobRow>],
) -> Workflow {
    let done = done_count(nodes);
    Workflow {
        id: row.id.clone(),
        name: row.name.clone(),
        state: row.state,
        reason: row.reason.clone(),
        jobs: jobs(spec, nodes, job_ids, last_jobs),
        owner: row.owner.clone(),
        created_at: timestamp(Some(row.created_at)),
        ended_at: timestamp(row.ended_at),
        done,
        total: spec.jobs.len() as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: WorkflowState, reason: &str, ended_at: Option<i64>) -> WorkflowRow {
        WorkflowRow {
            id: "0123".into(),
            name: "t".into(),
            owner: "admin".into(),
            yaml: String::new(),
            state: state as i32,
            reason: reason.into(),
            canceled: None,
            created_at: 1_000_000,
            ended_at,
        }
    }

    fn node(state: NodeState, attempts: u32, reason: &str) -> Node {
        Node {
            state,
            attempts,
            reason: reason.into(),
        }
    }

    fn ended_job(id: &str, exit_code: i32) -> Option<JobRow> {
        Some(JobRow {
            id: id.into(),
            exit_code: Some(exit_code),
            started_at: Some(2_000_000),
            ended_at: Some(3_000_000),
            ..JobRow::default()
        })
    }

    #[test]
    fn a_view_refreshed_in_place_equals_one_built_anew_and_says_when_nothing_changed() {
        let spec = WorkflowSpec::parse(
            "name: t\ndefaults: {command: x}\njobs:\n  a:\n  b: {needs: [a]}\n  \
             c: {requires: [{a: FINISHED}], retry: {limit: 2, backoff: 1s}}\n",
        )
        .unwrap();
        let running = row(WorkflowState::Running, "", None);
        let waiting = vec![node(NodeState::Waiting, 0, ""); 3];
        let none: Vec<Vec<String>> = vec![Vec::new(); 3];
        let mut shown = workflow(&running, &spec, &waiting, &none, &[None, None, None]);
        assert!(!refresh(
            &mut shown,
            &running,
            &spec,
            &waiting,
            &none,
            &[None, None, None]
        ));

        let nodes = vec![
            node(NodeState::Completed, 1, ""),
            node(NodeState::Running, 1, ""),
            node(
                NodeState::Backoff { until_ms: 9_000 },
                1,
                "attempt 1 failed: exit code 3",
            ),
        ];
        let ids = vec![
            vec!["ja".to_string()],
            vec!["jb".to_string()],
            vec!["jc".into()],
        ];
        let last = vec![ended_job("ja", 0), None, ended_job("jc", 3)];
        assert!(refresh(&mut shown, &running, &spec, &nodes, &ids, &last));
        assert_eq!(shown, workflow(&running, &spec, &nodes, &ids, &last));
        assert!(!refresh(&mut shown, &running, &spec, &nodes, &ids, &last));

        let failed = row(
            WorkflowState::Failed,
            "c failed: exit code 3",
            Some(5_000_000),
        );
        let nodes = vec![
            node(NodeState::Completed, 1, ""),
            node(NodeState::Completed, 1, ""),
            node(NodeState::Failed, 3, "exit code 3"),
        ];
        let ids = vec![
            vec!["ja".to_string()],
            vec!["jb".to_string()],
            vec!["jc".into(), "jc2".into(), "jc3".into()],
        ];
        let last = vec![ended_job("ja", 0), ended_job("jb", 0), ended_job("jc3", 3)];
        assert!(refresh(&mut shown, &failed, &spec, &nodes, &ids, &last));
        assert_eq!(shown, workflow(&failed, &spec, &nodes, &ids, &last));
    }

    #[test]
    fn a_view_of_another_workflow_is_rebuilt() {
        let spec = WorkflowSpec::parse("name: t\njobs:\n  a: {command: x}\n").unwrap();
        let nodes = vec![node(NodeState::Waiting, 0, "")];
        let running = row(WorkflowState::Running, "", None);
        let mut shown = Workflow::default();
        assert!(refresh(
            &mut shown,
            &running,
            &spec,
            &nodes,
            &[vec![]],
            &[None]
        ));
        assert_eq!(shown, workflow(&running, &spec, &nodes, &[vec![]], &[None]));
    }
}
