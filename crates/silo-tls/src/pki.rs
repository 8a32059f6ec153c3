//! Creating a certs directory: at server start-up (`ensure_server_pki`), by hand
//! (`silo certs init`), and one client certificate at a time (`silo certs issue`).

use std::collections::BTreeSet;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, DnsName};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use time::Duration;

use crate::authority::{CertificateAuthority, IssuedPair, LEAF_VALIDITY, client_files};
use crate::files::{
    CERT_MODE, KEY_MODE, create_private_dir, exists, read_pem_file, refuse_existing, write_new,
};
use crate::renew::finish_replacement;
use crate::{CertPaths, Role, TlsError};

/// What [`ensure_server_pki`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnsureReport {
    /// The files it created, in the order written; empty when everything already existed.
    pub created: Vec<PathBuf>,
    /// Names the server should answer to (localhost, loopback addresses, the hostname,
    /// `extra_sans`) that an existing `server.pem` does not cover. Empty when the server
    /// certificate was just created. [`crate::renew_due`] issues it anew with them.
    pub server_missing_sans: Vec<String>,
}

/// Server start-up: creates in `dir` whatever is missing, and keeps every existing file.
///
/// `dir` is created with mode 0700 if needed. Missing pairs are created in this order:
/// the CA (`ca.pem`, `ca-key.pem`), the server certificate (`server.pem`,
/// `server-key.pem`; subject alternative names localhost, 127.0.0.1, ::1, the machine's
/// hostname and every entry of `extra_sans`, as an IP address when it parses as one, else
/// as a DNS name), and client certificates for admin (CN "admin", OU "admin") and viewer
/// (CN "viewer", OU "viewer"). Keys are written with mode 0600.
///
/// Refuses, without writing anything, when half of a pair exists, when the CA is missing
/// but a certificate it signed is present, or when an `extra_sans` entry is neither an IP
/// address nor a DNS name. Calling it again on a complete directory changes nothing.
pub fn ensure_server_pki(dir: &Path, extra_sans: &[String]) -> Result<EnsureReport, TlsError> {
    let sans = server_sans(extra_sans)?;
    create_private_dir(dir)?;
    let paths = CertPaths::new(dir);
    // A renewal that a crash cut short is finished first (see `renew`).
    for (cert, key) in &paths.pairs() {
        finish_replacement(cert, key)?;
    }

    let pairs = paths.pairs();
    let mut missing = [false; 4];
    for (slot, (cert, key)) in missing.iter_mut().zip(&pairs) {
        *slot = pair_missing(cert, key)?;
    }
    let [ca_missing, server_missing, admin_missing, viewer_missing] = missing;

    let mut report = EnsureReport::default();
    if !missing.contains(&true) {
        report.server_missing_sans = uncovered_sans(&paths.server(), &sans)?;
        return Ok(report);
    }
    if ca_missing {
        let signed_leaf = pairs[1..]
            .iter()
            .zip(&missing[1..])
            .find(|(_, leaf_missing)| !**leaf_missing);
        if let Some(((leaf, _), _)) = signed_leaf {
            return Err(TlsError::MissingCa {
                ca: paths.ca(),
                leaf: leaf.clone(),
            });
        }
    }

    let ca = if ca_missing {
        let (ca, pair) = CertificateAuthority::generate()?;
        write_pair(
            None,
            &paths.ca(),
            &paths.ca_key(),
            &pair,
            &mut report.created,
        )?;
        ca
    } else {
        CertificateAuthority::load(&paths.ca(), &paths.ca_key())?
    };
    if server_missing {
        let pair = ca.issue_server(&sans, LEAF_VALIDITY)?;
        write_pair(
            Some(dir),
            &paths.server(),
            &paths.server_key(),
            &pair,
            &mut report.created,
        )?;
    } else {
        report.server_missing_sans = uncovered_sans(&paths.server(), &sans)?;
    }
    for (role, missing) in [(Role::Admin, admin_missing), (Role::Viewer, viewer_missing)] {
        if missing {
            let pair = ca.issue_client(role, role.as_str(), LEAF_VALIDITY)?;
            let (cert, key) = paths.client(role);
            write_pair(Some(dir), &cert, &key, &pair, &mut report.created)?;
        }
    }
    Ok(report)
}

/// `silo certs init --out DIR`: writes a fresh CA, a server certificate (names as for
/// [`ensure_server_pki`]) and admin and viewer client certificates into `dir`, creating it
/// with mode 0700 if needed; keys get mode 0600. The three leaf certificates are valid for
/// `validity` (see [`LEAF_VALIDITY`]).
///
/// Refuses to overwrite: if any of the eight files exists, nothing is written and the error
/// names that file.
pub fn init_pki(dir: &Path, extra_sans: &[String], validity: Duration) -> Result<(), TlsError> {
    let sans = server_sans(extra_sans)?;
    let paths = CertPaths::new(dir);
    let pairs = paths.pairs();
    refuse_existing(pairs.iter().flat_map(|(cert, key)| [cert, key]))?;
    create_private_dir(dir)?;

    let (ca, ca_pair) = CertificateAuthority::generate()?;
    let server_pair = ca.issue_server(&sans, validity)?;
    let admin_pair = ca.issue_client(Role::Admin, Role::Admin.as_str(), validity)?;
    let viewer_pair = ca.issue_client(Role::Viewer, Role::Viewer.as_str(), validity)?;

    let mut created = Vec::new();
    for ((cert, key), pair) in pairs
        .iter()
        .zip([&ca_pair, &server_pair, &admin_pair, &viewer_pair])
    {
        // The CA's own pair comes first, and is not an issued certificate.
        let record = (cert != &paths.ca()).then_some(dir);
        write_pair(record, cert, key, pair, &mut created)?;
    }
    Ok(())
}

/// `silo certs issue`: a client certificate with CN `name` and OU `role`, signed by the CA
/// in `ca_cert_pem` / `ca_key_pem`, written as `<out>/<name>.pem` and
/// `<out>/<name>-key.pem` (mode 0600), valid for `validity`. `out` is created with mode
/// 0700 if needed.
///
/// `name` must be 1 to 64 characters of ASCII letters, digits, `.`, `_` and `-`, not
/// starting with `.` or `-`. Refuses to overwrite either file, and refuses a CA
/// certificate that is not a CA, has expired, or does not match the key. The certificate
/// never outlives the CA. Returns (certificate path, key path).
pub fn issue_client_cert(
    ca_cert_pem: &Path,
    ca_key_pem: &Path,
    role: Role,
    name: &str,
    out: &Path,
    validity: Duration,
) -> Result<(PathBuf, PathBuf), TlsError> {
    validate_client_name(name)?;
    let (cert, key) = client_files(out, name);
    refuse_existing([&cert, &key])?;
    let ca = CertificateAuthority::load(ca_cert_pem, ca_key_pem)?;
    let pair = ca.issue_client(role, name, validity)?;
    create_private_dir(out)?;
    let ca_dir = ca_cert_pem.parent().unwrap_or(Path::new("."));
    write_pair(Some(ca_dir), &cert, &key, &pair, &mut Vec::new())?;
    Ok((cert, key))
}

/// Whether both files of a pair are missing (`true`) or both present (`false`); half a
/// pair is an error.
fn pair_missing(cert: &Path, key: &Path) -> Result<bool, TlsError> {
    let (present, missing) = match (exists(cert)?, exists(key)?) {
        (true, true) => return Ok(false),
        (false, false) => return Ok(true),
        (true, false) => (cert, key),
        (false, true) => (key, cert),
    };
    Err(TlsError::IncompletePair {
        present: present.to_path_buf(),
        missing: missing.to_path_buf(),
    })
}

/// Writes the key (0600) first, then the certificate (0644), recording both in `created`,
/// and the certificate in the record of the CA in `ca_dir`, when given (see `issued`).
fn write_pair(
    ca_dir: Option<&Path>,
    cert: &Path,
    key: &Path,
    pair: &IssuedPair,
    created: &mut Vec<PathBuf>,
) -> Result<(), TlsError> {
    write_new(key, pair.key_pem.as_bytes(), KEY_MODE)?;
    created.push(key.to_path_buf());
    write_new(cert, pair.cert_pem.as_bytes(), CERT_MODE)?;
    created.push(cert.to_path_buf());
    match ca_dir {
        Some(ca_dir) => crate::issued::record(ca_dir, &pair.cert_pem),
        None => Ok(()),
    }
}

fn validate_client_name(name: &str) -> Result<(), TlsError> {
    let invalid = |reason| TlsError::InvalidClientName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() || name.len() > 64 {
        return Err(invalid("it must be 1 to 64 characters long"));
    }
    if name.starts_with(['.', '-']) {
        return Err(invalid("it must not start with '.' or '-'"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(invalid(
            "only ASCII letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

/// The names a server certificate should carry: localhost, 127.0.0.1, ::1, the hostname
/// (when it is a valid DNS name) and `extra`, without duplicates, in that order. IP
/// addresses are normalized, DNS names lower-cased.
pub(crate) fn server_sans(extra: &[String]) -> Result<Vec<String>, TlsError> {
    let mut sans: Vec<String> = Vec::new();
    let mut push = |san: String| {
        if !sans.contains(&san) {
            sans.push(san);
        }
    };
    for san in ["localhost", "127.0.0.1", "::1"] {
        push(san.to_owned());
    }
    if let Some(san) = machine_hostname().and_then(|name| normalize_san(&name).ok()) {
        push(san);
    }
    for san in extra {
        push(normalize_san(san)?);
    }
    Ok(sans)
}

fn normalize_san(san: &str) -> Result<String, TlsError> {
    let san = san.trim();
    if let Ok(ip) = san.parse::<IpAddr>() {
        return Ok(ip.to_string());
    }
    match DnsName::try_from_str(san) {
        Ok(_) => Ok(san.to_ascii_lowercase()),
        Err(_) => Err(TlsError::InvalidSan {
            san: san.to_owned(),
        }),
    }
}

/// The kernel's host name for this UTS namespace (what gethostname(2) returns), if it
/// can be read.
fn machine_hostname() -> Option<String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty() && name != "(none)").then(|| name.to_owned())
}

/// The subject alternative names of a certificate, normalized like [`server_sans`]:
/// DNS names lower-cased, IP addresses in their standard text form.
pub(crate) fn certificate_sans(cert: &CertificateDer<'_>) -> Result<Vec<String>, TlsError> {
    let invalid = |reason: String| TlsError::InvalidCertificate { reason };
    let (_, cert) =
        X509Certificate::from_der(cert.as_ref()).map_err(|err| invalid(err.to_string()))?;
    let Some(sans) = cert
        .subject_alternative_name()
        .map_err(|err| invalid(err.to_string()))?
    else {
        return Ok(Vec::new());
    };
    let mut names = Vec::new();
    for name in &sans.value.general_names {
        match name {
            GeneralName::DNSName(dns) => names.push(dns.to_ascii_lowercase()),
            GeneralName::IPAddress(bytes) => {
                if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                    names.push(IpAddr::from(v4).to_string());
                } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                    names.push(IpAddr::from(v6).to_string());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

/// Which of `wanted` the certificate in `path` lacks.
fn uncovered_sans(path: &Path, wanted: &[String]) -> Result<Vec<String>, TlsError> {
    let cert = CertificateDer::from_pem_slice(&read_pem_file(path)?).map_err(|err| {
        TlsError::InvalidFile {
            what: "server certificate",
            path: path.to_path_buf(),
            reason: err.to_string(),
        }
    })?;
    let present: BTreeSet<String> = certificate_sans(&cert)
        .map_err(|err| TlsError::InvalidFile {
            what: "server certificate",
            path: path.to_path_buf(),
            reason: err.to_string(),
        })?
        .into_iter()
        .collect();
    Ok(wanted
        .iter()
        .filter(|san| !present.contains(*san))
        .cloned()
        .collect())
}
