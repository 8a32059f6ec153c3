//! The server's TLS configuration, read again from its certs directory when a file
//! changes: a renewed server certificate is presented, and a revocation list is applied,
//! without a restart and without dropping a connection.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;

use crate::crl::current_list;
use crate::files::read_pem_file;
use crate::renew::end_of;
use crate::{CertPaths, TlsError, server_config};

/// The server's TLS configuration and the serial numbers its CA has revoked.
pub struct ServerTls {
    paths: CertPaths,
    loaded: RwLock<Loaded>,
}

/// What was read, and from which versions of the files.
struct Loaded {
    config: Arc<ServerConfig>,
    revoked: Arc<HashSet<Vec<u8>>>,
    server_ends: OffsetDateTime,
    stamps: Vec<Option<Stamp>>,
}

/// A version of a file: inode, modification time (ns) and size; none when it is absent.
type Stamp = (u64, i64, u64);

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("dir", &self.paths.dir)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the CA, the server's certificate and key, and the revocation list (when there
    /// is one) from `paths`.
    pub fn load(paths: CertPaths) -> Result<ServerTls, TlsError> {
        let loaded = read(&paths)?;
        Ok(ServerTls {
            paths,
            loaded: RwLock::new(loaded),
        })
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        match self.loaded.read() {
            Ok(loaded) => loaded.config.clone(),
            Err(poisoned) => poisoned.into_inner().config.clone(),
        }
    }

    /// Whether the CA has revoked the certificate with serial number `serial` (as in
    /// [`crate::PeerIdentity::serial`]).
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        let revoked = match self.loaded.read() {
            Ok(loaded) => loaded.revoked.clone(),
            Err(poisoned) => poisoned.into_inner().revoked.clone(),
        };
        revoked.contains(serial)
    }

    /// When the server certificate in use ends.
    pub fn server_certificate_ends(&self) -> OffsetDateTime {
        match self.loaded.read() {
            Ok(loaded) => loaded.server_ends,
            Err(poisoned) => poisoned.into_inner().server_ends,
        }
    }

    /// Reads the files again if one of them changed since they were read; returns whether
    /// they had. On an error (a file half replaced, say) the configuration in use stays,
    /// and the next call tries again.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let stamps = stamps(&self.paths)?;
        let unchanged = match self.loaded.read() {
            Ok(loaded) => loaded.stamps == stamps,
            Err(poisoned) => poisoned.into_inner().stamps == stamps,
        };
        if unchanged {
            return Ok(false);
        }
        let loaded = read(&self.paths)?;
        match self.loaded.write() {
            Ok(mut slot) => *slot = loaded,
            Err(poisoned) => *poisoned.into_inner() = loaded,
        }
        Ok(true)
    }
}

/// The files a configuration is read from, in a fixed order.
fn watched(paths: &CertPaths) -> [PathBuf; 4] {
    [paths.ca(), paths.server(), paths.server_key(), paths.crl()]
}

fn stamps(paths: &CertPaths) -> Result<Vec<Option<Stamp>>, TlsError> {
    watched(paths)
        .iter()
        .map(|path| match std::fs::metadata(path) {
            Ok(meta) => Ok(Some((
                meta.ino(),
                meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                meta.size(),
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TlsError::read(path, e)),
        })
        .collect()
}

fn read(paths: &CertPaths) -> Result<Loaded, TlsError> {
    // Stamped first: a file replaced while it is read is read again at the next check.
    let stamps = stamps(paths)?;
    let cert_pem = read_pem_file(&paths.server())?;
    let server_ends = CertificateDer::from_pem_slice(&cert_pem)
        .map_err(|err| err.to_string())
        .and_then(|der| end_of(&der))
        .map_err(|reason| TlsError::InvalidFile {
            what: "server certificate",
            path: paths.server(),
            reason,
        })?;
    let (crl, revoked) = current_list(paths)?;
    let config = server_config(
        &read_pem_file(&paths.ca())?,
        &cert_pem,
        &read_pem_file(&paths.server_key())?,
        crl,
    )?;
    Ok(Loaded {
        config,
        revoked: Arc::new(revoked),
        server_ends,
        stamps,
    })
}
