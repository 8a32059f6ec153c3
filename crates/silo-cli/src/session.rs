//! A connection to the configured server, with every failed call turned into one sentence.

use silo_proto::v1::job_service_client::JobServiceClient;
use silo_proto::v1::node_service_client::NodeServiceClient;
use silo_proto::v1::runtime_service_client::RuntimeServiceClient;
use silo_proto::v1::schedule_service_client::ScheduleServiceClient;
use silo_proto::v1::workflow_service_client::WorkflowServiceClient;
use silo_proto::v1::{GetJobRequest, Job, WatchJobRequest};
use tonic::transport::Channel;

use crate::cli::GlobalOptions;
use crate::config::{ConfigSources, resolve_server};
use crate::connect::{
    connect_channel, describe_status, job_client, node_client, runtime_client, workflow_client,
};
use crate::format::job_state;

/// A failed call: the server's own message, or what went wrong on the way.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    /// The sentence shown to the user.
    pub message: String,
    /// The gRPC status code.
    pub code: tonic::Code,
}

/// The job, runtime and workflow services of the server chosen by the global options.
#[derive(Debug, Clone)]
pub struct Session {
    /// The job service's gRPC client; cheap to clone (one shared HTTP/2 connection).
    pub client: JobServiceClient<Channel>,
    /// The runtime service's gRPC client, on the same connection.
    pub runtimes: RuntimeServiceClient<Channel>,
    /// The workflow service's gRPC client, on the same connection.
    pub workflows: WorkflowServiceClient<Channel>,
    /// The node service's gRPC client, on the same connection.
    pub nodes: NodeServiceClient<Channel>,
    /// The schedule service's gRPC client, on the same connection.
    pub schedules: ScheduleServiceClient<Channel>,
    /// `host:port`, for messages.
    pub address: String,
}

impl Session {
    /// Reads the configuration, picks the server and connects (TCP and TLS).
    pub async fn open(global: &GlobalOptions) -> anyhow::Result<Self> {
        let sources = ConfigSources::from_process(global.config.clone());
        let target = resolve_server(&sources, global.server.as_deref())?;
        let channel = connect_channel(&target).await?;
        Ok(Session {
            client: job_client(channel.clone()),
            runtimes: runtime_client(channel.clone()),
            workflows: workflow_client(channel.clone()),
            nodes: node_client(channel.clone()),
            schedules: ScheduleServiceClient::new(channel),
            address: target.entry.address,
        })
    }

    /// `status` as a [`CallError`].
    pub fn error(&self, status: &tonic::Status) -> CallError {
        CallError {
            message: describe_status(status, &self.address),
            code: status.code(),
        }
    }

    /// `status` from the runtime service as a [`CallError`]: as [`Session::error`], but a
    /// server without the service (older than this client) is named as such.
    pub fn runtime_error(&self, status: &tonic::Status) -> CallError {
        self.service_error(status, "runtimes", "runtime")
    }

    /// `status` from the workflow service as a [`CallError`]: as [`Session::error`], but
    /// a server without the service (older than this client) is named as such.
    pub fn workflow_error(&self, status: &tonic::Status) -> CallError {
        self.service_error(status, "workflows", "workflow")
    }

    /// `status` from the node service as a [`CallError`]: as [`Session::error`], but a
    /// server without the service (older than this client) is named as such.
    pub fn node_error(&self, status: &tonic::Status) -> CallError {
        self.service_error(status, "node status", "node")
    }

    /// `status` from the schedule service as a [`CallError`]: as [`Session::error`], but
    /// a server without the service (older than this client) is named as such.
    pub fn schedule_error(&self, status: &tonic::Status) -> CallError {
        self.service_error(status, "schedules", "schedule")
    }

    /// As [`Session::error`], but an Unimplemented answer from the server itself (not the
    /// transport) says that the server does not offer `what` (the `api` API).
    fn service_error(&self, status: &tonic::Status, what: &str, api: &str) -> CallError {
        if status.code() == tonic::Code::Unimplemented
            && std::error::Error::source(status).is_none()
        {
            return CallError {
                message: format!(
                    "the server at {} does not offer {what} (it does not implement the {api} API; is it older than this client?)",
                    self.address
                ),
                code: status.code(),
            };
        }
        self.error(status)
    }

    /// Whether the server builds and runs jobs in runtimes (its features name
    /// "runtimes"); a server too old to describe itself does not.
    pub async fn offers_runtimes(&mut self) -> Result<bool, CallError> {
        match self.server_info().await {
            Ok(info) => Ok(info.features.iter().any(|feature| feature == "runtimes")),
            Err(err) if err.code == tonic::Code::Unimplemented => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// What the server is and allows, and who this client is to it.
    pub async fn server_info(&mut self) -> Result<silo_proto::v1::ServerInfo, CallError> {
        match self
            .client
            .get_server_info(silo_proto::v1::GetServerInfoRequest {})
            .await
        {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.error(&status)),
        }
    }

    /// The job `id` (or unique prefix) now.
    pub async fn get_job(&mut self, id: &str) -> Result<Job, CallError> {
        let request = GetJobRequest { id: id.to_owned() };
        match self.client.get_job(request).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.error(&status)),
        }
    }

    /// The job `id` once it has reached its final state (completed, failed or stopped).
    pub async fn wait_for_end(&mut self, id: &str) -> Result<Job, CallError> {
        let request = WatchJobRequest { id: id.to_owned() };
        if let Ok(response) = self.client.watch_job(request).await {
            let mut stream = response.into_inner();
            // A broken watch is not fatal: the job is read again below.
            while let Ok(Some(job)) = stream.message().await {
                if job_state(&job).is_final() {
                    return Ok(job);
                }
            }
        }
        let mut delay = std::time::Duration::from_millis(50);
        loop {
            let job = self.get_job(id).await?;
            if job_state(&job).is_final() {
                return Ok(job);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(1));
        }
    }
}
