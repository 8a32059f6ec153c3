//! The gRPC JobService: authorization, then the job manager, then status codes.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use silo_proto::v1::job_service_server::JobService;
use silo_proto::v1::{
    DeleteJobRequest, DeleteJobResponse, GetJobRequest, GetServerInfoRequest, Job, JobState,
    ListJobsRequest, ListJobsResponse, LogChunk, Role, RunJobEvent, RunJobRequest, ServerInfo,
    StopJobRequest, StreamLogsRequest, StreamStatsRequest, Usage, WatchJobRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::{Access, authorize, authorize_identity};
use crate::jobs::live::LiveJob;
use crate::jobs::{JobError, JobManager};
use crate::store::{JobRow, StoreError};

/// How often StreamStats sends usage while a job runs.
const STATS_INTERVAL: Duration = Duration::from_secs(1);

/// Default number of jobs ListJobs returns.
const DEFAULT_LIST_LIMIT: u32 = 100;

/// StreamStats streams that follow a job, open at once on all connections together: each
/// sends a message a second, so their number is the server's work (a viewer may call).
const STATS_STREAMS_AT_ONCE: usize = 1024;

/// The JobService implementation.
pub struct JobApi {
    jobs: JobManager,
    /// Where a job's `spec.runtime` is looked up.
    runtimes: crate::runtimes::Catalog,
    /// What GetServerInfo says of this server (the caller's part is filled per call).
    info: ServerInfo,
    /// Where jobs with a start time go; without it, RunJob refuses start_at.
    scheduler: Option<crate::schedules::Scheduler>,
    /// One permit per StreamStats stream that follows a job.
    stats_streams: Arc<tokio::sync::Semaphore>,
}

impl JobApi {
    /// The service over `jobs`, describing itself with `info`.
    pub fn new(jobs: JobManager, runtimes: crate::runtimes::Catalog, info: ServerInfo) -> JobApi {
        JobApi {
            jobs,
            runtimes,
            info,
            scheduler: None,
            stats_streams: Arc::new(tokio::sync::Semaphore::new(STATS_STREAMS_AT_ONCE)),
        }
    }

    /// The service, handing jobs with a start time to `scheduler`.
    pub fn with_scheduler(self, scheduler: crate::schedules::Scheduler) -> JobApi {
        JobApi {
            scheduler: Some(scheduler),
            ..self
        }
    }

    /// Starts a job now (RunJob without a start time, RunJobAttached): resolves its
    /// runtime, then starts it on a task of its own. Answers once its command runs or has
    /// failed to start, with the live job.
    async fn start_now(
        &self,
        mut spec: silo_proto::v1::JobSpec,
        uploads: Vec<silo_proto::v1::Upload>,
        owner: String,
    ) -> Result<(JobRow, Arc<LiveJob>), Status> {
        // The runtime is picked (and held installed) here; the job records the exact
        // version, and counts as its user once live.
        let runtime = match spec.runtime.as_str() {
            "" => None,
            wanted => {
                let (installed, hold) = self.runtimes.resolve(wanted).await.map_err(|e| {
                    match e {
                        crate::runtimes::RuntimeError::Host(_) => Status::from(e),
                        // A runtime the job names that is not there is a bad job spec.
                        _ => Status::invalid_argument(e.to_string()),
                    }
                })?;
                spec.runtime = installed.label();
                Some((installed.job_root(), hold))
            }
        };
        // On a task of its own: a client that goes away mid-start must not cancel the
        // start half-way (a job in the live table with its slot and host id held, STARTING
        // for ever). The job starts or fails whole, whoever is still listening.
        let jobs = self.jobs.clone();
        let started = tokio::spawn(async move {
            let (root, hold) = runtime.unzip();
            let options = crate::jobs::JobOptions {
                root,
                ..Default::default()
            };
            let started = jobs.run_live(spec, uploads, owner, options).await;
            drop(hold);
            started
        })
        .await
        .map_err(|e| Status::internal(format!("the job's start failed: {e}")))??;
        Ok(started)
    }

    /// RunJob with a start time: validated and stored SCHEDULED, answered at once.
    async fn schedule_job(
        &self,
        spec: silo_proto::v1::JobSpec,
        uploads: &[silo_proto::v1::Upload],
        owner: String,
        start_at: prost_types::Timestamp,
    ) -> Result<Job, Status> {
        let Some(scheduler) = self.scheduler.clone() else {
            return Err(Status::failed_precondition(
                "this server does not schedule jobs",
            ));
        };
        if !uploads.is_empty() {
            return Err(Status::invalid_argument(
                "uploads cannot be combined with start_at: a scheduled job takes no uploads",
            ));
        }
        if !(0..1_000_000_000).contains(&start_at.nanos) {
            return Err(Status::invalid_argument(
                "start_at.nanos must be 0-999999999",
            ));
        }
        let at = start_at
            .seconds
            .checked_mul(1_000_000)
            .and_then(|s| s.checked_add(i64::from(start_at.nanos / 1000)))
            .ok_or_else(|| Status::invalid_argument("start_at is out of range"))?;
        let row = tokio::spawn(async move { scheduler.schedule_job(spec, owner, at).await })
            .await
            .map_err(|e| Status::internal(format!("the job's scheduling failed: {e}")))??;
        Ok(to_proto(row))
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

/// A time in microseconds since the epoch, as the API's Timestamp.
pub(crate) fn timestamp(micros: Option<i64>) -> Option<prost_types::Timestamp> {
    micros.map(|m| prost_types::Timestamp {
        seconds: m.div_euclid(1_000_000),
        nanos: (m.rem_euclid(1_000_000) * 1000) as i32,
    })
}

/// The wire form of a stored job.
pub fn to_proto(row: JobRow) -> Job {
    Job {
        id: row.id,
        // Secret values never leave the server; a row never holds them (see
        // `secrets::Secrets::take`), and this keeps it so for rows made elsewhere.
        spec: Some(silo_proto::v1::JobSpec {
            secret_env: Vec::new(),
            ..row.spec
        }),
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
        end_cause: row.end_cause as i32,
        start_failure: row.start_failure as i32,
        failed_step: row.failed_step.unwrap_or_default(),
        errno: row.errno,
        scheduled_at: timestamp(row.scheduled_at),
        schedule_id: row.schedule_id.unwrap_or_default(),
    }
}

/// `job` as ListJobs's summary view sends it (`JOB_VIEW_SUMMARY` in job.proto): without
/// its uploads and its spec's env and workdir, with its reason and command cut, so that
/// one job takes at most about 10 KiB whatever it was started with.
pub fn summary(job: Job) -> Job {
    const MAX_ARGS: usize = 32;
    const MAX_ARG_BYTES: usize = 256;
    const MAX_REASON_BYTES: usize = 1024;
    // Listed field by field: whatever the spec gains later stays out of the summary
    // until someone decides it belongs there.
    let spec = job.spec.map(|spec| silo_proto::v1::JobSpec {
        command: spec
            .command
            .into_iter()
            .take(MAX_ARGS)
            .map(|arg| cut(arg, MAX_ARG_BYTES))
            .collect(),
        name: spec.name,
        timeout_ms: spec.timeout_ms,
        limits: spec.limits,
        stop_grace_ms: spec.stop_grace_ms,
        uid: spec.uid,
        gid: spec.gid,
        network: spec.network,
        ..Default::default()
    });
    Job {
        spec,
        reason: cut(job.reason, MAX_REASON_BYTES),
        uploads: Vec::new(),
        ..job
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let end = (0..=max).rev().find(|&i| text.is_char_boundary(i));
        text.truncate(end.unwrap_or(0));
    }
    text
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// RunJobAttached's stream after the start: `first` (the job as RunJob answers it), then
/// the job's output and its state changes as they come, and its final state last, once
/// every record of its output is sent. Ends early when the client goes away.
async fn follow_attached(
    first: JobRow,
    live: Arc<LiveJob>,
    log: std::path::PathBuf,
    tx: mpsc::Sender<Result<RunJobEvent, Status>>,
) {
    use silo_proto::v1::run_job_event::Event;
    let job_event = |row: JobRow| {
        Ok(RunJobEvent {
            event: Some(Event::Job(to_proto(row))),
        })
    };
    let mut updates = live.row.subscribe();
    // A job that failed to start has no output to wait for: its final state is all.
    if first.state.is_final() && first.started_at.is_none() {
        let _ = tx.send(job_event(first)).await;
        return;
    }
    // A short command may have run to its end before its start was answered (a busy
    // host): the stream still opens with the job as it was while it ran, and its end
    // comes last, after its output. Opening with the end would tell the client there is
    // nothing more, and it would print none of the output.
    let first = match first.state.is_final() {
        true => as_running(first),
        false => first,
    };
    let mut last = first.state;
    if tx.send(job_event(first)).await.is_err() {
        return;
    }
    let (log_tx, mut output) = mpsc::channel(4);
    tokio::spawn(crate::logs::stream_log(
        log,
        0,
        true,
        Some(live.clone()),
        log_tx,
    ));
    // The final state waits here until the output has all been sent.
    let mut end: Option<JobRow> = None;
    let mut output_done = false;
    // The row as it is now: it may have moved on (or ended) since the start's answer.
    let mut pending = Some(updates.borrow_and_update().clone());
    loop {
        if let Some(row) = pending.take() {
            if row.state.is_final() {
                end = Some(row);
            } else if row.state != last {
                last = row.state;
                if tx.send(job_event(row)).await.is_err() {
                    return;
                }
            }
        }
        if output_done && let Some(row) = end.take() {
            let _ = tx.send(job_event(row)).await;
            return;
        }
        tokio::select! {
            chunk = output.recv(), if !output_done => match chunk {
                Some(Ok(chunk)) => {
                    let event = RunJobEvent { event: Some(Event::Output(chunk)) };
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                Some(Err(status)) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                None => output_done = true,
            },
            changed = updates.changed(), if end.is_none() => match changed {
                Ok(()) => pending = Some(updates.borrow_and_update().clone()),
                // Cannot happen while `live` is held (it owns the sender); were it to,
                // the client hears so instead of waiting for ever.
                Err(_) => {
                    let _ = tx
                        .send(Err(Status::unavailable(
                            "the server stopped following the job; see silo job status",
                        )))
                        .await;
                    return;
                }
            },
        }
    }
}

/// `row` (a job that ran and has ended) as it was while its command ran: RUNNING, with
/// nothing of its end.
fn as_running(row: JobRow) -> JobRow {
    JobRow {
        state: JobState::Running,
        reason: String::new(),
        exit_code: None,
        signal: None,
        ended_at: None,
        usage: None,
        end_cause: Default::default(),
        ..row
    }
}

#[tonic::async_trait]
impl JobService for JobApi {
    async fn run_job(&self, request: Request<RunJobRequest>) -> Result<Response<Job>, Status> {
        let owner = authorize(&request, Access::Write, "RunJob")?;
        let req = request.into_inner();
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("the request has no job spec"))?;
        if let Some(start_at) = req.start_at {
            let job = self
                .schedule_job(spec, &req.uploads, owner, start_at)
                .await?;
            return Ok(Response::new(job));
        }
        let (row, _) = self.start_now(spec, req.uploads, owner).await?;
        Ok(Response::new(to_proto(row)))
    }

    type RunJobAttachedStream = BoxStream<RunJobEvent>;

    async fn run_job_attached(
        &self,
        request: Request<RunJobRequest>,
    ) -> Result<Response<Self::RunJobAttachedStream>, Status> {
        let owner = authorize(&request, Access::Write, "RunJobAttached")?;
        let req = request.into_inner();
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("the request has no job spec"))?;
        if req.start_at.is_some() {
            return Err(Status::invalid_argument(
                "RunJobAttached runs a job now; schedule one with RunJob and start_at",
            ));
        }
        let (row, live) = self.start_now(spec, req.uploads, owner).await?;
        let path = self.jobs.log_path(&row.id);
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(follow_attached(row, live, path, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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
        /// The most jobs one page holds; a larger page_size is taken as this.
        const MAX_PAGE_SIZE: u32 = 1000;
        /// The most bytes of jobs a page holds, unless its first job alone is larger: under
        /// the 4 MiB gRPC clients accept by default, with room to spare.
        const MAX_PAGE_BYTES: usize = 3 << 20;
        use crate::store::PageCursor;
        use silo_proto::v1::JobView;
        // `limit` is the page size of clients older than `page_size`.
        let size = match (req.page_size, req.limit) {
            (0, 0) => DEFAULT_LIST_LIMIT,
            (0, limit) => limit,
            (size, _) => size,
        }
        .min(MAX_PAGE_SIZE);
        let after = match req.page_token.as_str() {
            "" => None,
            token => Some(
                PageCursor::from_token(token)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            ),
        };
        let view = JobView::try_from(req.view)
            .map_err(|_| Status::invalid_argument(format!("unknown job view {}", req.view)))?;
        let page = match req.schedule_id.as_str() {
            "" => self.jobs.list(&states, after.as_ref(), size).await?,
            schedule => {
                self.jobs
                    .list_of_schedule(&states, schedule, after.as_ref(), size)
                    .await?
            }
        };
        let mut jobs = Vec::with_capacity(page.rows.len());
        let mut bytes = 0;
        let mut next = page.next;
        let mut last = None;
        for row in page.rows {
            let cursor = PageCursor::after(&row);
            let job = match view {
                JobView::Full => to_proto(row),
                JobView::Summary | JobView::Unspecified => summary(to_proto(row)),
            };
            let len = prost::Message::encoded_len(&job);
            // The job's field tag and length prefix in the response.
            let len = len + 1 + prost::length_delimiter_len(len);
            if bytes + len > MAX_PAGE_BYTES && last.is_some() {
                // The page ends early; the next one starts with this job.
                next = last;
                break;
            }
            bytes += len;
            jobs.push(job);
            last = Some(cursor);
        }
        Ok(Response::new(ListJobsResponse {
            jobs,
            next_page_token: next.map(|c| c.to_token()).unwrap_or_default(),
        }))
    }

    async fn stop_job(&self, request: Request<StopJobRequest>) -> Result<Response<Job>, Status> {
        authorize(&request, Access::Write, "StopJob")?;
        let req = request.into_inner();
        if req.grace_ms > silo_proto::values::MAX_STOP_GRACE_MS {
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
        // The server routes StreamLogs to log_codec's service (large records by reference);
        // this one serves the same messages from memory.
        let rx = crate::logs::LogRequest::check(&self.jobs, request)
            .await?
            .spawn_chunks();
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
                        let ended = row.state.is_final();
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
        let following = match req.follow {
            true => match self.stats_streams.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    return Err(Status::resource_exhausted(format!(
                        "{STATS_STREAMS_AT_ONCE} StreamStats streams follow jobs on this \
                         server; close one first"
                    )));
                }
            },
            false => None,
        };
        let id = self.jobs.resolve(&req.id).await?;
        let (tx, rx) = mpsc::channel(4);
        let jobs = self.jobs.clone();
        tokio::spawn(async move {
            let _following = following;
            if let Some(live) = jobs.live(&id) {
                let mut updates = live.row.subscribe();
                loop {
                    let usage = live.usage_shared().unwrap_or_default();
                    if tx.send(Ok(usage)).await.is_err() || !req.follow {
                        return;
                    }
                    let ended = tokio::time::timeout(
                        STATS_INTERVAL,
                        updates.wait_for(|r| r.state.is_final()),
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

    async fn get_server_info(
        &self,
        request: Request<GetServerInfoRequest>,
    ) -> Result<Response<ServerInfo>, Status> {
        let (caller, role) = authorize_identity(&request, Access::Read, "GetServerInfo")?;
        let connection = request.extensions().get::<crate::auth::Caller>();
        let timestamp = |at: time::OffsetDateTime| prost_types::Timestamp {
            seconds: at.unix_timestamp(),
            nanos: 0,
        };
        Ok(Response::new(ServerInfo {
            caller,
            caller_role: match role {
                silo_tls::Role::Admin => Role::Admin,
                silo_tls::Role::Viewer => Role::Viewer,
            } as i32,
            server_certificate_ends: connection
                .and_then(|c| c.tls.as_ref())
                .map(|tls| timestamp(tls.server_certificate_ends())),
            caller_certificate_ends: connection
                .and_then(|c| c.identity.as_ref())
                .map(|id| timestamp(id.valid_until)),
            ..self.info.clone()
        }))
    }
}

#[cfg(test)]
mod tests {
    use silo_proto::v1::{EnvVar, JobSpec, Limits};

    use super::*;

    #[test]
    fn a_summary_is_small_whatever_the_job_was_started_with() {
        let huge = "x".repeat(1 << 20);
        let job = Job {
            id: "abc".into(),
            spec: Some(JobSpec {
                command: vec![huge.clone(); 64],
                env: vec![EnvVar {
                    name: "SECRET".into(),
                    value: huge.clone(),
                }],
                workdir: huge.clone(),
                name: "build".into(),
                limits: Some(Limits {
                    memory_bytes: Some(64 << 20),
                    ..Limits::default()
                }),
                timeout_ms: 5000,
                ..JobSpec::default()
            }),
            reason: huge.clone(),
            uploads: vec![huge.clone(); 8],
            owner: "admin".into(),
            exit_code: Some(3),
            ..Job::default()
        };
        let s = summary(job.clone());
        assert!(prost::Message::encoded_len(&s) < 10 << 10);
        let spec = s.spec.clone().unwrap();
        assert_eq!(spec.command.len(), 32);
        assert!(spec.command.iter().all(|a| a.len() == 256));
        assert!(spec.env.is_empty() && spec.workdir.is_empty() && s.uploads.is_empty());
        assert_eq!(s.reason.len(), 1024);
        // What a list shows stays whole.
        assert_eq!(
            (
                s.id.as_str(),
                s.owner.as_str(),
                s.exit_code,
                spec.name.as_str()
            ),
            ("abc", "admin", Some(3), "build")
        );
        assert_eq!(spec.limits, job.spec.as_ref().unwrap().limits);
        assert_eq!(spec.timeout_ms, 5000);
    }

    /// A job that ended before RunJobAttached answered its start (a short command on a busy
    /// host): the stream opens with it RUNNING, then its output, then its end. It opened
    /// with the end before, and `silo job run` printed nothing (seen in CI under load).
    #[tokio::test]
    async fn an_attached_job_that_ended_before_its_answer_still_streams_its_output() {
        use silo_proto::v1::run_job_event::Event;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let file = std::fs::File::create(&path).unwrap();
        let mut log = silo_log::LogWriter::create(file, &path, 1 << 20).unwrap();
        log.append(silo_log::Stream::Stdout, b"out\n").unwrap();
        log.append(silo_log::Stream::Stderr, b"err\n").unwrap();
        let ended = JobRow {
            id: "a".repeat(32),
            state: JobState::Failed,
            exit_code: Some(3),
            started_at: Some(1),
            ended_at: Some(2),
            end_cause: silo_proto::v1::EndCause::Exited,
            ..JobRow::default()
        };
        let live = Arc::new(LiveJob::new(ended.clone()));
        let (tx, mut rx) = mpsc::channel(8);
        follow_attached(ended, live, path, tx).await;
        let mut events = Vec::new();
        while let Some(event) = rx.recv().await {
            events.push(event.unwrap().event.unwrap());
        }
        let states: Vec<JobState> = events
            .iter()
            .filter_map(|e| match e {
                Event::Job(job) => Some(job.state()),
                _ => None,
            })
            .collect();
        assert_eq!(states, [JobState::Running, JobState::Failed], "{events:?}");
        let output: Vec<u8> = events
            .iter()
            .filter_map(|e| match e {
                Event::Output(chunk) => Some(chunk.records.iter().flat_map(|r| r.data.to_vec())),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(output, b"out\nerr\n");
        assert!(matches!(events.last(), Some(Event::Job(job)) if job.exit_code == Some(3)));
        assert!(matches!(events.first(), Some(Event::Job(job)) if job.exit_code.is_none()));
    }

    /// A job that failed to start is its final state alone.
    #[tokio::test]
    async fn an_attached_job_that_failed_to_start_is_one_event() {
        let failed = JobRow {
            id: "b".repeat(32),
            state: JobState::Failed,
            reason: "command not found: x".into(),
            ..JobRow::default()
        };
        let live = Arc::new(LiveJob::new(failed.clone()));
        let (tx, mut rx) = mpsc::channel(8);
        let dir = tempfile::tempdir().unwrap();
        follow_attached(failed, live, dir.path().join("log"), tx).await;
        let mut events = Vec::new();
        while let Some(event) = rx.recv().await {
            events.push(event.unwrap());
        }
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn summaries_cut_text_at_character_boundaries() {
        assert_eq!(cut("é".repeat(200), 255), "é".repeat(127));
        assert_eq!(cut("short".into(), 256), "short");
    }
}
