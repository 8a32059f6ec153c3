//! The ready-to-use client configurations the server writes next to its state:
//! `client-admin.toml` and `client-viewer.toml` (the format `silo` reads, see silo-cli).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use silo_tls::{CertPaths, Role};

use crate::ServerError;

/// Writes (or refreshes, when the address changed) one client configuration per role.
pub fn write_client_configs(
    state: &Path,
    certs: &CertPaths,
    addr: SocketAddr,
) -> Result<Vec<PathBuf>, ServerError> {
    let connect = match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        SocketAddr::V6(a) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        other => other.to_string(),
    };
    let mut written = Vec::new();
    for role in Role::ALL {
        let (cert, key) = certs.client(role);
        let text = format!(
            "# Written by `silo server`: connects as the {role} client to this server.\n\
             current = \"local\"\n\n\
             [servers.local]\n\
             address = \"{connect}\"\n\
             ca = {ca:?}\n\
             cert = {cert:?}\n\
             key = {key:?}\n",
            ca = certs.ca().display().to_string(),
            cert = cert.display().to_string(),
            key = key.display().to_string(),
        );
        let path = state.join(format!("client-{role}.toml"));
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        let tmp = state.join(format!(".client-{role}.toml.tmp"));
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| crate::host("write", &path, e))?;
        written.push(path);
    }
    Ok(written)
}
