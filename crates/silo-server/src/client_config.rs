//! The ready-to-use client configurations the server writes next to its state:
//! `client-admin.toml` and `client-viewer.toml`, in the format the client reads
//! ([`silo_tls::ClientFile`]).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use silo_tls::{CertPaths, ClientFile, Role, ServerEntry};

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
        let path = state.join(format!("client-{role}.toml"));
        let file = ClientFile::single("local", ServerEntry::for_role(&connect, certs, role));
        let toml = file
            .to_toml()
            .map_err(|e| ServerError::Host(format!("cannot write {}: {e}", path.display())))?;
        let text = format!(
            "# Written by `silo server`: connects as the {role} client to this server.\n{toml}"
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(path: &Path) -> ClientFile {
        ClientFile::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn what_the_server_writes_the_client_reads_back_for_each_role() {
        let state = tempfile::tempdir().unwrap();
        let certs = CertPaths::new(state.path().join("certs"));
        let addr: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let written = write_client_configs(state.path(), &certs, addr).unwrap();
        assert_eq!(written.len(), Role::ALL.len());
        for role in Role::ALL {
            let path = state.path().join(format!("client-{role}.toml"));
            let expected = ServerEntry::for_role("127.0.0.1:50051", &certs, role);
            assert_eq!(read_back(&path), ClientFile::single("local", expected));
        }
        // Unchanged files are left alone; a new address rewrites them.
        assert!(
            write_client_configs(state.path(), &certs, addr)
                .unwrap()
                .is_empty()
        );
        let v6: SocketAddr = "[::]:7".parse().unwrap();
        assert_eq!(
            write_client_configs(state.path(), &certs, v6)
                .unwrap()
                .len(),
            2
        );
        let admin = read_back(&state.path().join("client-admin.toml"));
        assert_eq!(admin.servers["local"].address, "[::1]:7");
    }
}
