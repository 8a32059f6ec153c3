//! What a CA directory has issued: a copy of each certificate it signs (public material),
//! `issued/<serial>.pem`, so that `silo certs list` can say who holds one, until when, and
//! whether it is revoked. Certificates issued before the record existed are not in it.

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;

use crate::crl::{current_list, hex};
use crate::files::{CERT_MODE, create_private_dir, read_pem_file, write_new};
use crate::renew::end_of;
use crate::{CertPaths, Role, TlsError, peer_identity};

/// One certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Its common name: the client's name, or "silo server".
    pub common_name: String,
    /// The client's role; none for the server's certificate.
    pub role: Option<Role>,
    /// Its serial number, as `silo certs revoke --serial` takes it.
    pub serial: String,
    /// When it ends.
    pub valid_until: OffsetDateTime,
    /// Whether the CA's list revokes it.
    pub revoked: bool,
    /// Its copy in the record.
    pub path: PathBuf,
}

/// The record's directory in the CA directory `ca_dir`.
fn record_dir(ca_dir: &Path) -> PathBuf {
    ca_dir.join("issued")
}

/// Records the certificate in the PEM text `cert_pem`, issued by the CA in `ca_dir`.
pub(crate) fn record(ca_dir: &Path, cert_pem: &str) -> Result<(), TlsError> {
    let serial = crate::certificate_serial(cert_pem.as_bytes())?;
    let dir = record_dir(ca_dir);
    create_private_dir(&dir)?;
    let path = dir.join(format!("{}.pem", hex(&serial)));
    match write_new(&path, cert_pem.as_bytes(), CERT_MODE) {
        // Serials are 127 random bits: the same one again is the same certificate.
        Err(TlsError::AlreadyExists { .. }) => Ok(()),
        other => other,
    }
}

/// Every certificate recorded in the CA directory `ca_dir`, by name, then newest first.
pub fn list_issued(ca_dir: &Path) -> Result<Vec<Issued>, TlsError> {
    let (_, revoked) = current_list(&CertPaths::new(ca_dir))?;
    let dir = record_dir(ca_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TlsError::read(&dir, e)),
    };
    let mut issued = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| TlsError::read(&dir, e))?.path();
        if path.extension().is_none_or(|ext| ext != "pem") {
            continue;
        }
        let invalid = |reason: String| TlsError::InvalidFile {
            what: "issued certificate",
            path: path.clone(),
            reason,
        };
        let der = CertificateDer::from_pem_slice(&read_pem_file(&path)?)
            .map_err(|e| invalid(e.to_string()))?;
        let identity = peer_identity(&der).map_err(|e| invalid(e.to_string()))?;
        issued.push(Issued {
            common_name: identity.common_name,
            role: identity.role,
            serial: hex(&identity.serial),
            valid_until: end_of(&der).map_err(invalid)?,
            revoked: revoked.contains(&identity.serial),
            path,
        });
    }
    issued.sort_by(|a, b| {
        (a.common_name.as_str(), b.valid_until).cmp(&(b.common_name.as_str(), a.valid_until))
    });
    Ok(issued)
}
