//! `silo workflow cancel`, `retry` and `delete`: one call each, answered in one line.

use silo_proto::v1::{
    CancelWorkflowRequest, DeleteWorkflowRequest, RetryWorkflowRequest, Workflow, WorkflowJobState,
};

use super::text::{job_state, state_counts, workflow_title};
use crate::cli::{GlobalOptions, WorkflowIdArgs};
use crate::output::print;
use crate::session::Session;

/// Cancels the workflow (its running jobs are stopped, the rest skipped) once it has
/// ended, and prints `canceled workflow nightly (0123456789ab): 3 completed, 1 stopped, 8
/// skipped`.
pub async fn cancel(global: &GlobalOptions, args: WorkflowIdArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    let request = CancelWorkflowRequest { id: args.id };
    let workflow = match session.workflows.cancel_workflow(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(session.workflow_error(&status).into()),
    };
    print(&canceled(&workflow))
}

/// Runs the failed, stopped and skipped jobs of a finished workflow again and prints
/// `retrying workflow nightly (0123456789ab): 2 of 12 jobs run again`.
pub async fn retry(global: &GlobalOptions, args: WorkflowIdArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    let request = RetryWorkflowRequest { id: args.id };
    let workflow = match session.workflows.retry_workflow(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(session.workflow_error(&status).into()),
    };
    print(&retrying(&workflow))
}

/// Deletes a finished workflow and prints `deleted workflow <id>`, naming the full id the
/// prefix resolved to.
pub async fn delete(global: &GlobalOptions, args: WorkflowIdArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    let request = DeleteWorkflowRequest { id: args.id };
    let deleted = match session.workflows.delete_workflow(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(session.workflow_error(&status).into()),
    };
    print(&format!("deleted workflow {}\n", deleted.id))
}

fn canceled(workflow: &Workflow) -> String {
    format!(
        "canceled workflow {}: {}\n",
        workflow_title(workflow),
        state_counts(workflow)
    )
}

/// The jobs that run again are all but the completed ones.
fn retrying(workflow: &Workflow) -> String {
    let again = workflow
        .jobs
        .iter()
        .filter(|job| job_state(job) != WorkflowJobState::Completed)
        .count();
    format!(
        "retrying workflow {}: {again} of {} jobs run again\n",
        workflow_title(workflow),
        workflow.jobs.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_and_retry_answer_in_one_line_with_the_counts() {
        use silo_proto::v1::WorkflowJob;
        let job = |state: WorkflowJobState| WorkflowJob {
            state: state as i32,
            ..WorkflowJob::default()
        };
        let ended = Workflow {
            id: "0123456789abcdef".into(),
            name: "nightly".into(),
            jobs: vec![
                job(WorkflowJobState::Completed),
                job(WorkflowJobState::Stopped),
                job(WorkflowJobState::Skipped),
            ],
            ..Workflow::default()
        };
        assert_eq!(
            canceled(&ended),
            "canceled workflow nightly (0123456789ab): 1 completed, 1 stopped, 1 skipped\n"
        );
        let again = Workflow {
            jobs: vec![
                job(WorkflowJobState::Completed),
                job(WorkflowJobState::Waiting),
                job(WorkflowJobState::Running),
            ],
            ..ended
        };
        assert_eq!(
            retrying(&again),
            "retrying workflow nightly (0123456789ab): 2 of 3 jobs run again\n"
        );
    }
}
