//! `silo workflow run FILE`: check the file here, send it with its jobs' uploads, and
//! follow the workflow to its end.

use std::time::{Duration, SystemTime};

use silo_proto::v1::{RunWorkflowRequest, Workflow};
use tokio::signal::unix::{SignalKind, signal};

use super::failure::{self, exit_status};
use super::file::WorkflowFile;
use super::live::{self, ShowWorkflow};
use super::text::{short_workflow_id, workflow_is_final, workflow_state, workflow_title};
use super::watch::WorkflowWatch;
use crate::cli::{GlobalOptions, WorkflowRunArgs};
use crate::exit::EXIT_INTERRUPTED;
use crate::output::{print, say};
use crate::session::Session;

/// Runs the workflow. Detached: prints its full id and returns 0. Attached: shows its
/// progress until it ends and returns 0 when it completed, else 1 after saying why; Ctrl-C
/// stops following (130) and leaves the workflow running.
pub async fn run(global: &GlobalOptions, args: WorkflowRunArgs) -> anyhow::Result<i32> {
    let file = WorkflowFile::read(&args.file)?;
    let request = RunWorkflowRequest {
        yaml: file.yaml.clone(),
        name: args.name.clone().unwrap_or_default(),
        files: file.files()?,
    };
    let mut session = Session::open(global).await?;
    let workflow = match session.workflows.run_workflow(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(session.workflow_error(&status).into()),
    };
    if args.detach {
        return print(&format!("{}\n", workflow.id));
    }
    say(format_args!(
        "workflow {} started: {} jobs",
        workflow_title(&workflow),
        workflow.total
    ));
    follow(session, workflow, live::for_stderr(file.attempt_limits())).await
}

/// Shows the workflow on `view` from `first` until it ends, then says why it did not
/// complete when it did not; returns its exit status.
async fn follow(
    session: Session,
    first: Workflow,
    mut view: Box<dyn ShowWorkflow>,
) -> anyhow::Result<i32> {
    let mut interrupts = signal(SignalKind::interrupt())?;
    let mut changes = WorkflowWatch::new(session.clone(), &first.id).spawn();
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let id = first.id.clone();
    let mut last = first;
    view.show(&last, SystemTime::now());
    while !workflow_is_final(workflow_state(&last)) {
        tokio::select! {
            change = changes.recv() => match change {
                Some(Ok(workflow)) => {
                    last = workflow;
                    if !workflow_is_final(workflow_state(&last)) {
                        view.show(&last, SystemTime::now());
                    }
                }
                Some(Err(err)) => {
                    view.abandon();
                    return Err(err.into());
                }
                None => {
                    view.abandon();
                    anyhow::bail!(
                        "the server stopped sending the changes of workflow {} before it ended",
                        short_workflow_id(&id)
                    );
                }
            },
            _ = ticks.tick() => view.tick(SystemTime::now()),
            _ = interrupts.recv() => {
                view.abandon();
                say(format_args!(
                    "stopped following workflow {}; it keeps running (silo workflow cancel {} stops it)",
                    workflow_title(&last),
                    short_workflow_id(&id)
                ));
                return Ok(EXIT_INTERRUPTED);
            }
        }
    }
    view.finish(&last, SystemTime::now());
    let status = exit_status(&last);
    if status != 0 {
        failure::report(&session, &last).await;
    }
    Ok(status)
}
