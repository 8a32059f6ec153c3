//! Where silo keeps its certificates inside a certs directory.

use std::path::PathBuf;

use crate::Role;

/// The fixed file names inside a certs directory:
/// `ca.pem ca-key.pem server.pem server-key.pem admin.pem admin-key.pem viewer.pem
/// viewer-key.pem`, and `crl.pem` once a certificate is revoked. Only computes paths; touches no file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// The certs directory (by default `<state-dir>/certs`).
    pub dir: PathBuf,
}

impl CertPaths {
    /// Paths inside `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The CA certificate, `ca.pem`.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The CA private key, `ca-key.pem`.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca-key.pem")
    }

    /// The server certificate, `server.pem`.
    pub fn server(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// The server private key, `server-key.pem`.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }

    /// The CA's certificate revocation list, `crl.pem` (absent until a certificate is
    /// revoked).
    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }

    /// The client certificate and private key for `role`: `(<role>.pem, <role>-key.pem)`.
    pub fn client(&self, role: Role) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{role}.pem")),
            self.dir.join(format!("{role}-key.pem")),
        )
    }

    /// Every (certificate, key) pair of the directory, CA first, then server, admin,
    /// viewer.
    pub fn pairs(&self) -> [(PathBuf, PathBuf); 4] {
        [
            (self.ca(), self.ca_key()),
            (self.server(), self.server_key()),
            self.client(Role::Admin),
            self.client(Role::Viewer),
        ]
    }
}
