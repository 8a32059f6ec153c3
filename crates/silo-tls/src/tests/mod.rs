//! Behaviour of the crate as its users see it. Helpers shared by the test files.

mod handshake;
mod identity;
mod lifecycle;
mod pki;

use std::path::Path;

use tempfile::TempDir;

use crate::{CertPaths, ensure_server_pki};

/// A complete certs directory made by `ensure_server_pki`, inside a fresh temp dir.
fn fresh_pki() -> (TempDir, CertPaths) {
    let temp = tempfile::tempdir().expect("temp dir");
    let paths = CertPaths::new(temp.path().join("certs"));
    ensure_server_pki(&paths.dir, &[]).expect("ensure_server_pki");
    (temp, paths)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

fn first_cert(path: &Path) -> rustls_pki_types::CertificateDer<'static> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(&read(path)).expect("PEM certificate")
}
