//! The gRPC WorkflowService.

use std::pin::Pin;

use futures::Stream;
use silo_proto::v1::workflow_service_server::WorkflowService;
use silo_proto::v1::{
    CancelWorkflowRequest, DeleteWorkflowRequest, DeleteWorkflowResponse, GetWorkflowRequest,
    GraphWorkflowRequest, GraphWorkflowResponse, ListWorkflowsRequest, ListWorkflowsResponse,
    RetryWorkflowRequest, RunWorkflowRequest, ValidateWorkflowRequest, ValidateWorkflowResponse,
    WatchWorkflowRequest, Workflow, WorkflowState,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Engine, view};
use crate::auth::{Access, authorize};

/// The shortest time between two views a WatchWorkflow stream sends while the workflow
/// runs (20 a second, more than a terminal redraws); its end is sent as soon as it comes.
const WATCH_PACE: std::time::Duration = std::time::Duration::from_millis(50);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The workflow service over an engine.
pub struct WorkflowApi {
    engine: Engine,
}

impl WorkflowApi {
    /// The service over `engine`.
    pub fn new(engine: Engine) -> WorkflowApi {
        WorkflowApi { engine }
    }
}

#[tonic::async_trait]
impl WorkflowService for WorkflowApi {
    async fn run_workflow(
        &self,
        request: Request<RunWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        let owner = authorize(&request, Access::Write, "RunWorkflow")?;
        let engine = self.engine.clone();
        let req = request.into_inner();
        // On a task of its own: a client that goes away mid-submit does not cut it in half.
        let workflow = tokio::spawn(async move { engine.submit(req, owner).await })
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(workflow))
    }

    async fn validate_workflow(
        &self,
        request: Request<ValidateWorkflowRequest>,
    ) -> Result<Response<ValidateWorkflowResponse>, Status> {
        authorize(&request, Access::Read, "ValidateWorkflow")?;
        let req = request.into_inner();
        let spec = self.engine.parse(&req.yaml).await?;
        // Uploads are not sent for a validation: their presence is not checked.
        self.engine.check_parsed(&spec, None)?;
        Ok(Response::new(ValidateWorkflowResponse {
            name: spec.name.clone(),
            jobs: view::jobs(&spec, &[], &[], &[]),
        }))
    }

    async fn get_workflow(
        &self,
        request: Request<GetWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        authorize(&request, Access::Read, "GetWorkflow")?;
        Ok(Response::new(self.engine.get(&request.get_ref().id).await?))
    }

    async fn list_workflows(
        &self,
        request: Request<ListWorkflowsRequest>,
    ) -> Result<Response<ListWorkflowsResponse>, Status> {
        authorize(&request, Access::Read, "ListWorkflows")?;
        let limit = match request.get_ref().limit {
            0 => 100,
            n => n.min(10_000),
        };
        let view =
            silo_proto::v1::WorkflowListView::try_from(request.get_ref().view).map_err(|_| {
                Status::invalid_argument(format!(
                    "unknown workflow list view {}",
                    request.get_ref().view
                ))
            })?;
        let summary = view == silo_proto::v1::WorkflowListView::Summary;
        Ok(Response::new(ListWorkflowsResponse {
            workflows: self.engine.list(limit, summary).await?,
        }))
    }

    type WatchWorkflowStream = BoxStream<Workflow>;

    async fn watch_workflow(
        &self,
        request: Request<WatchWorkflowRequest>,
    ) -> Result<Response<Self::WatchWorkflowStream>, Status> {
        authorize(&request, Access::Read, "WatchWorkflow")?;
        let (now, updates) = self.engine.watch(&request.get_ref().id).await?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            if tx.send(Ok(now.clone())).await.is_err() {
                return;
            }
            let Some(mut updates) = updates else { return };
            let mut last = now;
            loop {
                if last.state != WorkflowState::Running as i32 {
                    return;
                }
                if updates.changed().await.is_err() {
                    // The workflow's task ended: its last view is final.
                    let end = updates.borrow().clone();
                    if end != last {
                        let _ = tx.send(Ok(end)).await;
                    }
                    return;
                }
                let next = updates.borrow_and_update().clone();
                if next != last {
                    if tx.send(Ok(next.clone())).await.is_err() {
                        return;
                    }
                    last = next;
                }
                if last.state == WorkflowState::Running as i32 {
                    // Paced: the views in between are coalesced into the latest, so that
                    // a workflow of thousands of jobs, each step changing one, does not
                    // cost every watcher a whole view per step. Its end goes out at once.
                    let mut end = updates.clone();
                    let ended = end.wait_for(|w| w.state != WorkflowState::Running as i32);
                    let _ = tokio::time::timeout(WATCH_PACE, ended).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn cancel_workflow(
        &self,
        request: Request<CancelWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        let who = authorize(&request, Access::Write, "CancelWorkflow")?;
        let reason = format!("canceled by {who}");
        Ok(Response::new(
            self.engine.cancel(&request.get_ref().id, &reason).await?,
        ))
    }

    async fn retry_workflow(
        &self,
        request: Request<RetryWorkflowRequest>,
    ) -> Result<Response<Workflow>, Status> {
        authorize(&request, Access::Write, "RetryWorkflow")?;
        Ok(Response::new(
            self.engine.retry(&request.get_ref().id).await?,
        ))
    }

    async fn delete_workflow(
        &self,
        request: Request<DeleteWorkflowRequest>,
    ) -> Result<Response<DeleteWorkflowResponse>, Status> {
        authorize(&request, Access::Write, "DeleteWorkflow")?;
        let id = self.engine.delete(&request.get_ref().id).await?;
        Ok(Response::new(DeleteWorkflowResponse { id }))
    }

    async fn graph_workflow(
        &self,
        request: Request<GraphWorkflowRequest>,
    ) -> Result<Response<GraphWorkflowResponse>, Status> {
        authorize(&request, Access::Read, "GraphWorkflow")?;
        let req = request.into_inner();
        let format = match req.format.as_str() {
            "" | "text" => silo_workflow::graph::Format::Text,
            "mermaid" => silo_workflow::graph::Format::Mermaid,
            "dot" => silo_workflow::graph::Format::Dot,
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown graph format {other:?}: text, mermaid or dot"
                )));
            }
        };
        Ok(Response::new(GraphWorkflowResponse {
            graph: self.engine.graph(&req.id, format).await?,
        }))
    }
}
