//! The gRPC JobService: authorization, then the job manager, then status codes.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use silo_proto::v1::job_service_server::JobService;
use silo_proto::v1::{
    DeleteJobRequest, DeleteJobResponse, GetJobRequest, Job, JobState, ListJobsRequest,
    ListJobsResponse, LogChunk, RunJobRequest, StopJobRequest, StreamLogsRequest,
    StreamStatsRequest, Usage, WatchJobRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::{Access, authorize};
use crate::jobs::live::is_terminal;
use crate::jobs::{JobError, JobManager};
use crate::store::{JobRow, StoreError};

/// How often StreamStats sends usage while a job runs.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Default number of jobs ListJobs returns.
const DEFAULT_LIST_LIMIT: u32 = 100;

/// The JobService implementation.
pub struct JobApi {
    jobs: JobManager,
}

impl JobApi {
    /// The service over `jobs`.
    pub fn new(jobs: JobManager) -> JobApi {
        JobApi { jobs }
    }
}

impl From<JobError> for Status {
    fn from(e: JobError) -> Status {
        match e {
            JobError::Invalid(e) => Status::invalid_argument(e.0),
            JobError::Store(StoreError::NotFound(id)) => {
                Status::not_found(format!("job {id} not found"))
            }
            JobError::Store(e @ StoreError::Ambiguous { .. }) => {
                Status::invalid_argument(e.to_string())
            }
            JobError::Store(e) => Status::internal(e.to_string()),
            JobError::Busy(_) => Status::resource_exhausted(e.to_string()),
            JobError::StillRunning(_) => Status::failed_precondition(e.to_string()),
            JobError::Unsupported(m) => Status::failed_precondition(m),
            JobError::Host(m) => Status::internal(m),
        }
    }
}

fn timestamp(micros: Option<i64>) -> Option<prost_types::Timestamp> {
    micros.map(|m| prost_types::Timestamp {
        seconds: m.div_euclid(1_000_000),
        nanos: (m.rem_euclid(1_000_000) * 1000) as i32,
    })
}

/// The wire form of a stored job.
pub fn to_proto(row: JobRow) -> Job {
    Job {
        id: row.id,
        spec: Some(row.spec),
        state: row.state as i32,
        reason: row.reason,
        exit_code: row.exit_code,
        signal: row.signal,
        owner: row.owner,
        created_at: timestamp(Some(row.created_at)),
        started_at: timestamp(row.started_at),
        ended_at: timestamp(row.ended_at),
        uploads: row.uploads,
        usage: row.usage,
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl JobService for JobApi {
    async fn run_job(&self, request: Request<RunJobRequest>) -> Result<Response<Job>, Status> {
        let owner = authorize(&request, Access::Write, "RunJob")?;
        let req = request.into_inner();
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("the request has no job spec"))?;
        let row = self.jobs.run(spec, req.uploads, owner).await?;
        Ok(Response::new(to_proto(row)))
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        authorize(&request, Access::Read, "GetJob")?;
        let row = self.jobs.get(&request.get_ref().id).await?;
        Ok(Response::new(to_proto(row)))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        authorize(&request, Access::Read, "ListJobs")?;
        let req = request.into_inner();
        let mut states = Vec::with_capacity(req.states.len());
        for s in req.states {
            let state = JobState::try_from(s)
                .map_err(|_| Status::invalid_argument(format!("unknown job state {s}")))?;
            states.push(state);
        }
        let limit = if req.limit == 0 {
            DEFAULT_LIST_LIMIT
        } else {
            req.limit
        };
        let rows = self.jobs.list(&states, limit).await?;
        Ok(Response::new(ListJobsResponse {
            jobs: rows.into_iter().map(to_proto).collect(),
        }))
    }

    async fn stop_job(&self, request: Request<StopJobRequest>) -> Result<Response<Job>, Status> {
        authorize(&request, Access::Write, "StopJob")?;
        let req = request.into_inner();
        if req.grace_ms > 3_600_000 {
            return Err(Status::invalid_argument(
                "the grace period is longer than an hour",
            ));
        }
        let grace = (req.grace_ms > 0).then(|| Duration::from_millis(req.grace_ms));
        let row = self.jobs.stop(&req.id, grace).await?;
        Ok(Response::new(to_proto(row)))
    }

    async fn delete_job(
        &self,
        request: Request<DeleteJobRequest>,
    ) -> Result<Response<DeleteJobResponse>, Status> {
        authorize(&request, Access::Write, "DeleteJob")?;
        let id = self.jobs.delete(&request.get_ref().id).await?;
        Ok(Response::new(DeleteJobResponse { id }))
    }

    type StreamLogsStream = BoxStream<LogChunk>;

    async fn stream_logs(
        &self,
        request: Request<StreamLogsRequest>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        authorize(&request, Access::Read, "StreamLogs")?;
        let req = request.into_inner();
        let id = self.jobs.resolve(&req.id).await?;
        let live = self.jobs.live(&id);
        let path = self.jobs.log_path(&id);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(crate::logs::stream_log(
            path,
            req.from_sequence,
            req.follow,
            live,
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type WatchJobStream = BoxStream<Job>;

    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        authorize(&request, Access::Read, "WatchJob")?;
        let id = self.jobs.resolve(&request.get_ref().id).await?;
        let (tx, rx) = mpsc::channel(16);
        match self.jobs.live(&id) {
            Some(live) => {
                let mut updates = live.row.subscribe();
                tokio::spawn(async move {
                    loop {
                        let row = updates.borrow_and_update().clone();
                        let ended = is_terminal(row.state);
                        if tx.send(Ok(to_proto(row))).await.is_err() || ended {
                            return;
                        }
                        if updates.changed().await.is_err() {
                            return;
                        }
                    }
                });
            }
            None => {
                let row = self.jobs.get(&id).await?;
                let _ = tx.send(Ok(to_proto(row))).await;
            }
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type StreamStatsStream = BoxStream<Usage>;

    async fn stream_stats(
        &self,
        request: Request<StreamStatsRequest>,
    ) -> Result<Response<Self::StreamStatsStream>, Status> {
        authorize(&request, Access::Read, "StreamStats")?;
        let req = request.into_inner();
        let id = self.jobs.resolve(&req.id).await?;
        let (tx, rx) = mpsc::channel(4);
        let jobs = self.jobs.clone();
        tokio::spawn(async move {
            if let Some(live) = jobs.live(&id) {
                let mut updates = live.row.subscribe();
                loop {
                    let usage = live.usage().unwrap_or_default();
                    if tx.send(Ok(usage)).await.is_err() || !req.follow {
                        return;
                    }
                    let ended = tokio::time::timeout(
                        STATS_INTERVAL,
                        updates.wait_for(|r| is_terminal(r.state)),
                    )
                    .await
                    .is_ok();
                    if ended {
                        break;
                    }
                }
            }
            // The final usage, as stored when the job ended.
            match jobs.get(&id).await {
                Ok(row) => {
                    let _ = tx.send(Ok(row.usage.unwrap_or_default())).await;
                }
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
