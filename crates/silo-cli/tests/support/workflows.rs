//! A fake workflow service: two canned workflows, one that completes and one whose `train`
//! job fails, chosen by the YAML the tests send (a YAML holding `exit 1` fails).

use std::sync::{Arc, Mutex};

use silo_proto::v1::workflow_service_server::WorkflowService;
use silo_proto::v1::{
    CancelWorkflowRequest, DeleteWorkflowRequest, DeleteWorkflowResponse, GetWorkflowRequest,
    GraphWorkflowRequest, GraphWorkflowResponse, ListWorkflowsRequest, ListWorkflowsResponse,
    RetryWorkflowRequest, RunWorkflowRequest, ValidateWorkflowRequest, ValidateWorkflowResponse,
    WatchWorkflowRequest, Workflow, WorkflowJob, WorkflowJobState, WorkflowState,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Calls, JOB_ID};

/// The workflow that completes.
pub const COMPLETES_ID: &str = "c0ffee00000000000000000000000001";
/// The workflow whose `train` job fails (its attempt's job is [`JOB_ID`]).
pub const FAILS_ID: &str = "fa11ed00000000000000000000000002";
/// A workflow this client may only read: changing it is refused.
pub const READ_ONLY_ID: &str = "0b5e7e00000000000000000000000003";

pub struct FakeWorkflows {
    pub calls: Arc<Mutex<Calls>>,
}

fn job(name: &str, state: WorkflowJobState, attempts: u32) -> WorkflowJob {
    WorkflowJob {
        name: name.into(),
        state: state as i32,
        attempts,
        job_ids: (0..attempts).map(|_| JOB_ID.to_owned()).collect(),
        ..WorkflowJob::default()
    }
}

fn workflow(id: &str, state: WorkflowState, jobs: Vec<WorkflowJob>) -> Workflow {
    let done = jobs
        .iter()
        .filter(|job| {
            !matches!(
                WorkflowJobState::try_from(job.state),
                Ok(WorkflowJobState::Waiting
                    | WorkflowJobState::Running
                    | WorkflowJobState::Backoff)
            )
        })
        .count() as u32;
    Workflow {
        id: id.into(),
        name: "pipeline".into(),
        state: state as i32,
        total: jobs.len() as u32,
        done,
        jobs,
        owner: "admin".into(),
        ..Workflow::default()
    }
}

/// The states a workflow goes through, first to final.
fn history(id: &str) -> Vec<Workflow> {
    use WorkflowJobState::*;
    let running = workflow(
        id,
        WorkflowState::Running,
        vec![job("fetch", Running, 1), job("train", Waiting, 0)],
    );
    let training = workflow(
        id,
        WorkflowState::Running,
        vec![job("fetch", Completed, 1), job("train", Running, 1)],
    );
    let last = if id == FAILS_ID {
        Workflow {
            reason: "job train failed".into(),
            ..workflow(
                id,
                WorkflowState::Failed,
                vec![
                    job("fetch", Completed, 1),
                    WorkflowJob {
                        exit_code: Some(1),
                        reason: "exited with code 1".into(),
                        ..job("train", Failed, 1)
                    },
                ],
            )
        }
    } else {
        workflow(
            id,
            WorkflowState::Completed,
            vec![job("fetch", Completed, 1), job("train", Completed, 1)],
        )
    };
    vec![running, training, last]
}

/// The full id `id` is a prefix of, or NotFound.
fn find(id: &str) -> Result<&'static str, Status> {
    [COMPLETES_ID, FAILS_ID, READ_ONLY_ID]
        .into_iter()
        .find(|full| !id.is_empty() && full.starts_with(id))
        .ok_or_else(|| Status::not_found(format!("workflow {id} not found")))
}

fn refuse_read_only(id: &str) -> Result<&'static str, Status> {
    match find(id)? {
        READ_ONLY_ID => Err(Status::permission_denied(
            "permission denied: this client's role (viewer) may only read workflows",
        )),
        full => Ok(full),
    }
}

impl FakeWorkflows {
    fn record(&self, call: String) {
        self.calls.lock().unwrap().workflow_calls.push(call);
    }
}

#[tonic::async_trait]
impl WorkflowService for FakeWorkflows {
    async fn run_workflow(
        &self,
        request: Request<RunWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        let request = request.into_inner();
        let id = if request.yaml.contains("exit 1") {
            FAILS_ID
        } else {
            COMPLETES_ID
        };
        self.calls.lock().unwrap().workflow_runs.push(request);
        Ok(Response::new(history(id).remove(0)))
    }

    /// A YAML naming the runtime `nosuch` is refused as the server would.
    async fn validate_workflow(
        &self,
        request: Request<ValidateWorkflowRequest>,
    ) -> Result<Response<ValidateWorkflowResponse>, Status> {
        if request.get_ref().yaml.contains("runtime: nosuch") {
            return Err(Status::invalid_argument(
                "line 5, column 14: runtime nosuch is not installed",
            ));
        }
        Ok(Response::new(ValidateWorkflowResponse {
            name: "pipeline".into(),
            jobs: vec![
                job("fetch", WorkflowJobState::Waiting, 0),
                job("train", WorkflowJobState::Waiting, 0),
            ],
        }))
    }

    async fn get_workflow(
        &self,
        request: Request<GetWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        let id = find(&request.get_ref().id)?;
        Ok(Response::new(history(id).pop().unwrap()))
    }

    async fn list_workflows(
        &self,
        request: Request<ListWorkflowsRequest>,
    ) -> Result<Response<ListWorkflowsResponse>, Status> {
        let limit = request.get_ref().limit;
        self.record(format!("list {limit}"));
        let limit = if limit == 0 { 100 } else { limit as usize };
        Ok(Response::new(ListWorkflowsResponse {
            workflows: [COMPLETES_ID, FAILS_ID]
                .into_iter()
                .take(limit)
                .map(|id| history(id).pop().unwrap())
                .collect(),
        }))
    }

    type WatchWorkflowStream = ReceiverStream<Result<Workflow, Status>>;

    async fn watch_workflow(
        &self,
        request: Request<WatchWorkflowRequest>,
    ) -> Result<Response<Self::WatchWorkflowStream>, Status> {
        let id = find(&request.get_ref().id)?;
        self.record(format!("watch {id}"));
        let states = history(id);
        let (sender, receiver) = tokio::sync::mpsc::channel(states.len());
        for state in states {
            let _ = sender.try_send(Ok(state));
        }
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn cancel_workflow(
        &self,
        request: Request<CancelWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        let id = refuse_read_only(&request.get_ref().id)?;
        self.record(format!("cancel {id}"));
        Ok(Response::new(workflow(
            id,
            WorkflowState::Canceled,
            vec![
                job("fetch", WorkflowJobState::Completed, 1),
                job("train", WorkflowJobState::Stopped, 1),
            ],
        )))
    }

    async fn retry_workflow(
        &self,
        request: Request<RetryWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        let id = refuse_read_only(&request.get_ref().id)?;
        self.record(format!("retry {id}"));
        Ok(Response::new(history(id).remove(1)))
    }

    async fn delete_workflow(
        &self,
        request: Request<DeleteWorkflowRequest>,
    ) -> Result<Response<DeleteWorkflowResponse>, Status> {
        let id = refuse_read_only(&request.get_ref().id)?;
        self.record(format!("delete {id}"));
        Ok(Response::new(DeleteWorkflowResponse { id: id.into() }))
    }

    async fn graph_workflow(
        &self,
        request: Request<GraphWorkflowRequest>,
    ) -> Result<Response<GraphWorkflowResponse>, Status> {
        let request = request.into_inner();
        let id = find(&request.id)?;
        self.record(format!("graph {id} {}", request.format));
        Ok(Response::new(GraphWorkflowResponse {
            graph: "fetch → train".into(),
        }))
    }
}
