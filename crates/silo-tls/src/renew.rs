//! Keeping the server's own certificates valid.
//!
//! The server holds its CA's key, so once its certificate is within [`RENEW_BEFORE`] of
//! its end it issues itself a new one, with the same names (and any new `--san`) and a
//! new key: at start, and while it runs. So it does for the admin and viewer certificates
//! of its certs directory, which the client configurations written at first start name.
//! The CA stays, so clients keep trusting the same `ca.pem`. A client certificate kept
//! elsewhere is not renewed: `silo certs issue` makes a new one, and the client warns as
//! its end nears.
//!
//! A pair is replaced without ever leaving a certificate beside a key that is not its own:
//! both new files are written whole under `<name>.new`, then the key and the certificate
//! are renamed into place, in that order. A crash between the two renames leaves
//! `<cert>.new`, which [`finish_replacement`] (run first at every start) renames too.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::authority::{CertificateAuthority, IssuedPair, LEAF_VALIDITY};
use crate::crl::{current_list, normalize_serial};
use crate::files::{CERT_MODE, KEY_MODE, exists, read_pem_file, rename_over, replace};
use crate::pki::{certificate_sans, server_sans};
use crate::{CertPaths, Role, TlsError, peer_identity};

/// How long before its end a certificate the server keeps is issued anew (a year's
/// certificate, renewed after eleven months).
pub const RENEW_BEFORE: Duration = Duration::days(30);

/// A certificate issued anew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewed {
    /// Its file.
    pub cert: PathBuf,
    /// When the certificate it replaced ended.
    pub was_valid_until: OffsetDateTime,
    /// When the new one ends.
    pub valid_until: OffsetDateTime,
    /// Why it was issued anew.
    pub why: Why,
}

/// Why a certificate was issued anew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// It ends within [`RENEW_BEFORE`] (or has ended).
    Ending,
    /// The CA revoked it.
    Revoked,
    /// The server's certificate lacked these names.
    NamesMissing(Vec<String>),
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Ending => write!(f, "it ends within {} days", RENEW_BEFORE.whole_days()),
            Why::Revoked => f.write_str("it was revoked"),
            Why::NamesMissing(names) => write!(f, "it lacked {}", names.join(", ")),
        }
    }
}

/// What [`renew_due`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenewReport {
    /// The certificates issued anew.
    pub renewed: Vec<Renewed>,
    /// When a certificate was due but the CA itself ends within [`RENEW_BEFORE`]: the CA's
    /// end. Nothing was renewed (a certificate never outlives its CA); a new CA is needed.
    pub ca_ends: Option<OffsetDateTime>,
}

/// When the first certificate in the PEM file `path` ends.
pub fn certificate_end(path: &Path) -> Result<OffsetDateTime, TlsError> {
    end_of_file(path, &first_certificate(path)?)
}

/// When the certificate `der`, read from `path`, ends; the error names the file.
fn end_of_file(path: &Path, der: &[u8]) -> Result<OffsetDateTime, TlsError> {
    end_of(der).map_err(|reason| TlsError::InvalidFile {
        what: "certificate",
        path: path.to_path_buf(),
        reason,
    })
}

/// When a certificate in the DER bytes `der` ends.
pub fn end_of(der: &[u8]) -> Result<OffsetDateTime, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|err| err.to_string())?;
    Ok(cert.validity().not_after.to_datetime())
}

/// When the earliest of the server, admin and viewer certificates in `dir` (those that
/// exist) is due for renewal: its end less [`RENEW_BEFORE`], or at once for one the CA
/// has revoked.
pub fn next_renewal(dir: &Path) -> Result<Option<OffsetDateTime>, TlsError> {
    let paths = CertPaths::new(dir);
    let (_, revoked) = current_list(&paths)?;
    let mut next: Option<OffsetDateTime> = None;
    for (cert, _, _) in kept_pairs(&paths) {
        if exists(&cert)? {
            let der = first_certificate(&cert)?;
            let due = match is_revoked(&der, &revoked) {
                true => OffsetDateTime::UNIX_EPOCH,
                false => end_of_file(&cert, &der)? - RENEW_BEFORE,
            };
            next = Some(next.map_or(due, |n| n.min(due)));
        }
    }
    Ok(next)
}

/// Whether the certificate `der` is one of `revoked`.
fn is_revoked(der: &[u8], revoked: &HashSet<Vec<u8>>) -> bool {
    X509Certificate::from_der(der)
        .is_ok_and(|(_, cert)| revoked.contains(&normalize_serial(cert.raw_serial())))
}

/// Issues anew each of the server, admin and viewer certificates in `dir` that ends within
/// [`RENEW_BEFORE`] of `now` or that the CA has revoked (those that exist), and the
/// server's when it lacks one of the names `extra_sans` and the host give, signed by the
/// CA in `dir`: the server's with the names it had and those `extra_sans` and the host
/// add, a client's with its name and role. Each is valid for [`LEAF_VALIDITY`] from now,
/// with a new key. (A revoked admin certificate leaked; its copies stay refused, and the
/// client configuration the server wrote goes on working with the new one.)
pub fn renew_due(
    dir: &Path,
    extra_sans: &[String],
    now: OffsetDateTime,
) -> Result<RenewReport, TlsError> {
    let paths = CertPaths::new(dir);
    let (_, revoked) = current_list(&paths)?;
    let mut report = RenewReport::default();
    let mut ca: Option<CertificateAuthority> = None;
    for (cert, key, kind) in kept_pairs(&paths) {
        if !exists(&cert)? {
            continue;
        }
        let der = first_certificate(&cert)?;
        let invalid = |reason: String| TlsError::InvalidFile {
            what: "certificate",
            path: cert.clone(),
            reason,
        };
        let was_valid_until = end_of(&der).map_err(invalid)?;
        // A server certificate without a name the server should answer to (a new
        // `--san`, a new host name) is issued anew with it too.
        let missing: Vec<String> = match kind {
            Kind::Server => {
                let sans = certificate_sans(&der).map_err(|e| invalid(e.to_string()))?;
                server_sans(extra_sans)?
                    .into_iter()
                    .filter(|san| !sans.contains(san))
                    .collect()
            }
            Kind::Client => Vec::new(),
        };
        let why = if was_valid_until - now <= RENEW_BEFORE {
            Why::Ending
        } else if is_revoked(&der, &revoked) {
            Why::Revoked
        } else if !missing.is_empty() {
            Why::NamesMissing(missing)
        } else {
            continue;
        };
        let ca = match &mut ca {
            Some(ca) => ca,
            None => ca.insert(CertificateAuthority::load(&paths.ca(), &paths.ca_key())?),
        };
        if ca.not_after() - now <= RENEW_BEFORE {
            report.ca_ends = Some(ca.not_after());
            continue;
        }
        let pair = match kind {
            Kind::Server => {
                let mut sans = certificate_sans(&der).map_err(|e| invalid(e.to_string()))?;
                for san in server_sans(extra_sans)? {
                    if !sans.contains(&san) {
                        sans.push(san);
                    }
                }
                ca.issue_server(&sans, LEAF_VALIDITY)?
            }
            Kind::Client => {
                let identity = peer_identity(&der).map_err(|e| invalid(e.to_string()))?;
                // Not a certificate silo made (no role): left as it is.
                let Some(role) = identity.role else {
                    continue;
                };
                ca.issue_client(role, &identity.common_name, LEAF_VALIDITY)?
            }
        };
        let valid_until = certificate_end_of_pem(&pair.cert_pem).map_err(invalid)?;
        replace_pair(&cert, &key, &pair)?;
        crate::issued::record(dir, &pair.cert_pem)?;
        report.renewed.push(Renewed {
            cert,
            was_valid_until,
            valid_until,
            why,
        });
    }
    Ok(report)
}

/// Finishes a replacement of the pair (`cert`, `key`) that a crash cut short (see the
/// module's text); removes a new key whose certificate was never written.
pub(crate) fn finish_replacement(cert: &Path, key: &Path) -> Result<(), TlsError> {
    let (cert_new, key_new) = (pending(cert), pending(key));
    if exists(&cert_new)? {
        if exists(&key_new)? {
            rename_over(&key_new, key)?;
        }
        rename_over(&cert_new, cert)?;
    } else if exists(&key_new)? {
        std::fs::remove_file(&key_new).map_err(|err| TlsError::write(&key_new, err))?;
    }
    Ok(())
}

/// Replaces the pair (`cert`, `key`) with `pair` (see the module's text).
fn replace_pair(cert: &Path, key: &Path, pair: &IssuedPair) -> Result<(), TlsError> {
    let (cert_new, key_new) = (pending(cert), pending(key));
    replace(&key_new, pair.key_pem.as_bytes(), KEY_MODE)?;
    replace(&cert_new, pair.cert_pem.as_bytes(), CERT_MODE)?;
    rename_over(&key_new, key)?;
    rename_over(&cert_new, cert)
}

/// Where the new version of `path` is written before it replaces it.
fn pending(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

/// Which kind of certificate a pair holds.
enum Kind {
    Server,
    Client,
}

/// The pairs the server keeps valid: its own, and the admin and viewer ones.
fn kept_pairs(paths: &CertPaths) -> [(PathBuf, PathBuf, Kind); 3] {
    let (admin, admin_key) = paths.client(Role::Admin);
    let (viewer, viewer_key) = paths.client(Role::Viewer);
    [
        (paths.server(), paths.server_key(), Kind::Server),
        (admin, admin_key, Kind::Client),
        (viewer, viewer_key, Kind::Client),
    ]
}

/// The first certificate of the PEM file `path`.
fn first_certificate(path: &Path) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_slice(&read_pem_file(path)?).map_err(|err| TlsError::InvalidFile {
        what: "certificate",
        path: path.to_path_buf(),
        reason: err.to_string(),
    })
}

/// When the certificate in the PEM text `pem` ends.
fn certificate_end_of_pem(pem: &str) -> Result<OffsetDateTime, String> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|err| err.to_string())?;
    end_of(&der)
}
