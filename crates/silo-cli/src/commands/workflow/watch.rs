//! Following a workflow: the server's WatchWorkflow stream, reopened when the connection
//! drops, until the workflow has ended.

use std::time::Duration;

use silo_proto::v1::{WatchWorkflowRequest, Workflow};
use tokio::sync::mpsc;
use tonic::Streaming;

use super::text::{short_workflow_id, workflow_is_final, workflow_state};
use crate::session::{CallError, Session};

/// How often a dropped stream is reopened in a row before giving up.
const MAX_RESUMES: u32 = 5;

/// The workflow as it changes. Every state the server sends is returned, and the last one
/// returned is final (completed, failed or canceled).
pub struct WorkflowWatch {
    session: Session,
    /// The id asked for; the full id once the server has answered.
    id: String,
    stream: Option<Streaming<Workflow>>,
    resumes: u32,
    ended: bool,
}

impl WorkflowWatch {
    /// A watch of workflow `id` (or unique prefix); nothing is sent until the first
    /// [`WorkflowWatch::next`].
    pub fn new(session: Session, id: &str) -> Self {
        WorkflowWatch {
            session,
            id: id.to_owned(),
            stream: None,
            resumes: 0,
            ended: false,
        }
    }

    /// The workflow now (first) or after its next change; `None` after its final state.
    pub async fn next(&mut self) -> Result<Option<Workflow>, CallError> {
        if self.ended {
            return Ok(None);
        }
        loop {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    let request = WatchWorkflowRequest {
                        id: self.id.clone(),
                    };
                    match self.session.workflows.watch_workflow(request).await {
                        Ok(response) => self.stream.insert(response.into_inner()),
                        Err(status) => {
                            self.retry_or_fail(&status).await?;
                            continue;
                        }
                    }
                }
            };
            match stream.message().await {
                Ok(Some(workflow)) => {
                    self.id.clone_from(&workflow.id);
                    self.resumes = 0;
                    self.ended = workflow_is_final(workflow_state(&workflow));
                    return Ok(Some(workflow));
                }
                // The server ends the stream after the final state only; reopen it.
                Ok(None) => {
                    self.stream = None;
                    self.retry_or_fail(&tonic::Status::unavailable(format!(
                        "the server stopped sending the changes of workflow {} before it ended",
                        short_workflow_id(&self.id)
                    )))
                    .await?;
                }
                Err(status) => {
                    self.stream = None;
                    self.retry_or_fail(&status).await?;
                }
            }
        }
    }

    /// Follows the workflow in a task of its own, sending each state (or the error that
    /// ended the watch) on the returned channel, which closes after the final state. A
    /// receiver may stop waiting at any time without losing its place.
    pub fn spawn(mut self) -> mpsc::Receiver<Result<Workflow, CallError>> {
        let (sender, receiver) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let message = match self.next().await {
                    Ok(Some(workflow)) => Ok(workflow),
                    Ok(None) => return,
                    Err(err) => Err(err),
                };
                let failed = message.is_err();
                if sender.send(message).await.is_err() || failed {
                    return;
                }
            }
        });
        receiver
    }

    /// Waits before reopening a dropped stream; fails for any other error, or when the
    /// stream keeps dropping.
    async fn retry_or_fail(&mut self, status: &tonic::Status) -> Result<(), CallError> {
        if status.code() != tonic::Code::Unavailable || self.resumes >= MAX_RESUMES {
            return Err(self.session.workflow_error(status));
        }
        self.resumes += 1;
        tokio::time::sleep(Duration::from_millis(200) * self.resumes).await;
        Ok(())
    }
}
