//! Connections over mutual TLS, configured from the `client-admin.toml` that `silo server`
//! writes into its state directory, exactly as the `silo` CLI connects.

use std::path::Path;

use anyhow::{Context, Result};
use silo_cli::config::{ConfigSources, resolve_server};
use silo_proto::v1::job_service_client::JobServiceClient;
use silo_proto::v1::runtime_service_client::RuntimeServiceClient;
use silo_proto::v1::workflow_service_client::WorkflowServiceClient;
use tonic::transport::Channel;

/// Connects once; every client built on the channel shares its one HTTP/2 connection.
pub async fn channel(config_path: &Path) -> Result<Channel> {
    let sources = ConfigSources::from_process(Some(config_path.to_path_buf()));
    let target = resolve_server(&sources, None)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let address = target.entry.address.clone();
    silo_cli::connect::connect_channel(&target)
        .await
        .with_context(|| format!("connecting to {address}"))
}

/// The job service on a connection of its own; every request of a benchmark then shares it.
pub async fn connect(config_path: &Path) -> Result<JobServiceClient<Channel>> {
    Ok(silo_cli::connect::job_client(channel(config_path).await?))
}

/// The runtime service on a connection of its own.
pub async fn runtime_client(config_path: &Path) -> Result<RuntimeServiceClient<Channel>> {
    Ok(silo_cli::connect::runtime_client(
        channel(config_path).await?,
    ))
}

/// The job and workflow services, sharing one connection.
pub async fn workflow_clients(
    config_path: &Path,
) -> Result<(WorkflowServiceClient<Channel>, JobServiceClient<Channel>)> {
    let channel = channel(config_path).await?;
    // As the CLI's clients: a 10,000-node workflow is a message of megabytes.
    let limit = silo_cli::connect::MAX_MESSAGE_BYTES;
    let workflows = WorkflowServiceClient::new(channel.clone())
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    Ok((workflows, silo_cli::connect::job_client(channel)))
}
