//! One tonic client over mutual TLS, configured from the `client-admin.toml` that
//! `silo server` writes into its state directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use silo_proto::v1::job_service_client::JobServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// What the benchmark needs from a client configuration file.
pub struct Config {
    pub address: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Config {
    /// Reads the first server of `path`: its `address`, `ca`, `cert` and `key` lines, with
    /// relative paths taken from the file's directory. This is the shape `silo server`
    /// writes; the full format (several servers, `current`) is the CLI's business.
    pub fn read(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let field = |key: &str| -> Result<String> {
            text.lines()
                .find_map(|line| {
                    let (k, v) = line.split_once('=')?;
                    (k.trim() == key).then(|| v.trim().trim_matches('"').to_string())
                })
                .with_context(|| format!("{} has no `{key}`", path.display()))
        };
        let file = |key: &str| field(key).map(|v| base.join(v));
        Ok(Config {
            address: field("address")?,
            ca: file("ca")?,
            cert: file("cert")?,
            key: file("key")?,
        })
    }
}

/// Connects once; every request of a benchmark then shares this one HTTP/2 connection.
pub async fn connect(config_path: &Path) -> Result<JobServiceClient<Channel>> {
    let c = Config::read(config_path)?;
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let tls = silo_tls::client_config(&read(&c.ca)?, &read(&c.cert)?, &read(&c.key)?)?;
    let channel = channel(&c.address, tls)
        .await
        .with_context(|| format!("connecting to {}", c.address))?;
    Ok(JobServiceClient::new(channel).max_decoding_message_size(64 << 20))
}

async fn channel(addr: &str, config: Arc<rustls::ClientConfig>) -> Result<Channel> {
    if addr.is_empty() {
        bail!("empty server address");
    }
    let addr = addr.to_string();
    let connector = tokio_rustls::TlsConnector::from(config);
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
        .initial_stream_window_size(Some(16 << 20))
        .initial_connection_window_size(Some(32 << 20))
        .tcp_nodelay(true);
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let addr = addr.clone();
            let connector = connector.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(&addr).await?;
                tcp.set_nodelay(true)?;
                let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(&addr);
                let name = rustls_pki_types::ServerName::try_from(
                    host.trim_matches(['[', ']']).to_string(),
                )
                .map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await?;
    Ok(channel)
}
