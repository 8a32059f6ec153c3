//! One tonic client over mutual TLS, configured from the `client-admin.toml` that
//! `silo server` writes into its state directory, exactly as the `silo` CLI connects.

use std::path::Path;

use anyhow::{Context, Result};
use silo_cli::config::{ConfigSources, resolve_server};
use silo_proto::v1::job_service_client::JobServiceClient;
use tonic::transport::Channel;

/// Connects once; every request of a benchmark then shares this one HTTP/2 connection.
pub async fn connect(config_path: &Path) -> Result<JobServiceClient<Channel>> {
    let sources = ConfigSources::from_process(Some(config_path.to_path_buf()));
    let target = resolve_server(&sources, None)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let address = target.entry.address.clone();
    let client = silo_cli::connect::connect(&target)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    Ok(client.max_decoding_message_size(64 << 20))
}
