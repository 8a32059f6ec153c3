//! The gRPC NodeService: GetNode (the host and the server now) and WatchTop (every running
//! job's usage, one snapshot per interval). Both are open to admins and viewers.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::Stream;
use silo_proto::v1::node_service_server::NodeService;
use silo_proto::v1::{GetNodeRequest, Node, TopSnapshot, WatchTopRequest};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::host::read_host;
use super::top::{TopSampler, interval};
use crate::auth::{Access, authorize};
use crate::jobs::JobManager;
use crate::runtimes::Catalog;

/// The NodeService implementation.
pub struct NodeApi {
    jobs: JobManager,
    runtimes: Catalog,
    state_dir: PathBuf,
    /// The cgroup layout and controllers, as the server detected them at start-up.
    cgroup_layout: String,
    controllers: Vec<String>,
    started_at: SystemTime,
    /// Turns true when the server begins to shut down: open WatchTop streams end then, so
    /// that they do not hold the shutdown up.
    stopping: watch::Receiver<bool>,
    /// WatchTop streams open at once: each samples every running job's cgroup files on a
    /// blocking thread at its own interval.
    watchers: Arc<tokio::sync::Semaphore>,
}

/// WatchTop streams open at once, on all connections together.
const WATCHERS_AT_ONCE: usize = 64;

impl NodeApi {
    /// The service over `jobs` and `runtimes`, for a server whose state directory is
    /// `state_dir`, describing cgroups as `info` (GetServerInfo's answer) does.
    pub fn new(
        jobs: JobManager,
        runtimes: Catalog,
        state_dir: PathBuf,
        info: &silo_proto::v1::ServerInfo,
        stopping: watch::Receiver<bool>,
    ) -> NodeApi {
        NodeApi {
            jobs,
            runtimes,
            state_dir,
            cgroup_layout: info.cgroup_layout.clone(),
            controllers: info.controllers.clone(),
            started_at: SystemTime::now(),
            stopping,
            watchers: Arc::new(tokio::sync::Semaphore::new(WATCHERS_AT_ONCE)),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl NodeService for NodeApi {
    async fn get_node(&self, request: Request<GetNodeRequest>) -> Result<Response<Node>, Status> {
        authorize(&request, Access::Read, "GetNode")?;
        let state_dir = self.state_dir.clone();
        let host = tokio::task::spawn_blocking(move || read_host(&state_dir))
            .await
            .map_err(|e| Status::internal(format!("reading the host's facts failed: {e}")))?
            .map_err(|e| Status::internal(e.to_string()))?;
        let total_jobs = self.jobs.total_jobs().await?;
        Ok(Response::new(Node {
            hostname: host.hostname,
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_ms: u64::try_from(host.uptime.as_millis()).unwrap_or(u64::MAX),
            server_started_at: Some(self.started_at.into()),
            kernel: host.kernel,
            architecture: std::env::consts::ARCH.into(),
            cgroup_layout: self.cgroup_layout.clone(),
            controllers: self.controllers.clone(),
            cpus: host.cpus,
            memory_total_bytes: host.memory.total_bytes,
            memory_available_bytes: host.memory.available_bytes,
            state_dir: self.state_dir.display().to_string(),
            disk_total_bytes: host.disk_total_bytes,
            disk_free_bytes: host.disk_free_bytes,
            running_jobs: u32::try_from(self.jobs.running()).unwrap_or(u32::MAX),
            total_jobs,
            runtimes: self.runtimes.list().iter().map(|r| r.label()).collect(),
            load: host.load,
            cpu_pressure: host.cpu_pressure,
            memory_pressure: host.memory_pressure,
            io_pressure: host.io_pressure,
        }))
    }

    type WatchTopStream = BoxStream<TopSnapshot>;

    async fn watch_top(
        &self,
        request: Request<WatchTopRequest>,
    ) -> Result<Response<Self::WatchTopStream>, Status> {
        authorize(&request, Access::Read, "WatchTop")?;
        let every = interval(request.get_ref().interval_ms).map_err(Status::invalid_argument)?;
        let Ok(watching) = self.watchers.clone().try_acquire_owned() else {
            return Err(Status::resource_exhausted(format!(
                "{WATCHERS_AT_ONCE} WatchTop streams are open on this server; close one first"
            )));
        };
        let (tx, rx) = mpsc::channel(2);
        let jobs = self.jobs.clone();
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            let _watching = watching;
            let mut sampler = TopSampler::default();
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = tx.closed() => return,
                    _ = stopping.wait_for(|stopping| *stopping) => return,
                }
                // Reading every job's cgroup files blocks: off the async threads.
                let manager = jobs.clone();
                let sample = match tokio::task::spawn_blocking(move || {
                    let sample = manager.running_usage();
                    (sample, Instant::now(), SystemTime::now())
                })
                .await
                {
                    Ok(sample) => sample,
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!(
                                "sampling the running jobs failed: {e}"
                            ))))
                            .await;
                        return;
                    }
                };
                let (jobs_now, at, time) = sample;
                if tx
                    .send(Ok(sampler.snapshot(jobs_now, at, time)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
