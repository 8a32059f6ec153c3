//! `silo workflow …`: one file per command, plus what they share: the workflow file, the
//! watch of a workflow, its live view and event lines, its jobs' output as labelled lines,
//! and the text forms of its states.

mod control;
mod events;
mod failure;
mod file;
mod graph;
mod json;
mod lines;
mod list;
mod live;
mod logs;
mod run;
mod status;
mod text;
mod validate;
mod watch;

use silo_proto::v1::{GetWorkflowRequest, Workflow};

use crate::cli::{GlobalOptions, WorkflowCommand};
use crate::session::{CallError, Session};

/// Runs a `silo workflow` command and returns its exit status.
pub async fn workflow(global: &GlobalOptions, command: WorkflowCommand) -> anyhow::Result<i32> {
    match command {
        WorkflowCommand::Run(args) => run::run(global, args).await,
        WorkflowCommand::List(args) => list::list(global, args).await,
        WorkflowCommand::Status(args) => status::status(global, args).await,
        WorkflowCommand::Logs(args) => logs::logs(global, args).await,
        WorkflowCommand::Graph(args) => graph::graph(global, args).await,
        WorkflowCommand::Validate(args) => validate::validate(global, args).await,
        WorkflowCommand::Cancel(args) => control::cancel(global, args).await,
        WorkflowCommand::Retry(args) => control::retry(global, args).await,
        WorkflowCommand::Delete(args) => control::delete(global, args).await,
    }
}

/// The workflow `id` (or unique prefix) now.
async fn get_workflow(session: &mut Session, id: &str) -> Result<Workflow, CallError> {
    let request = GetWorkflowRequest { id: id.to_owned() };
    match session.workflows.get_workflow(request).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => Err(session.workflow_error(&status)),
    }
}
