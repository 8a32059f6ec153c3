//! Revoking client certificates.
//!
//! `silo certs revoke` adds a certificate's serial number to the CA's certificate
//! revocation list, `crl.pem` beside `ca.pem` (a standard X.509 CRL signed by the CA's key,
//! readable with `openssl crl`). The server reads the list at start and again whenever it
//! changes: a handshake with a revoked certificate fails, and so does every call on a
//! connection that was made with it before.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

use crate::authority::CertificateAuthority;
use crate::files::{CERT_MODE, exists, read_pem_file, replace};
use crate::{CertPaths, PeerIdentity, TlsError};

/// What [`revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// The serial number revoked, in hex.
    pub serial: String,
    /// False when it was revoked already (the list is unchanged).
    pub newly: bool,
    /// How many serial numbers the list holds now.
    pub listed: usize,
    /// The list's file.
    pub crl: PathBuf,
}

/// Adds `serial` to the revocation list of the CA in `ca_dir` (`crl.pem`, made when
/// missing), signed anew by the CA's key, under a lock on `ca_dir`. Revoking a serial
/// twice changes nothing.
pub fn revoke(ca_dir: &Path, serial: &[u8]) -> Result<Revocation, TlsError> {
    let paths = CertPaths::new(ca_dir);
    let serial = normalize_serial(serial);
    if serial.is_empty() {
        return Err(TlsError::InvalidSerial {
            serial: String::new(),
            reason: "a serial number is at least one byte other than zero",
        });
    }
    let ca = CertificateAuthority::load(&paths.ca(), &paths.ca_key())?;
    // Two revocations at once must not each write the list without the other's entry.
    let held = std::fs::File::open(ca_dir).map_err(|err| TlsError::read(ca_dir, err))?;
    held.lock().map_err(|err| TlsError::read(ca_dir, err))?;
    let crl = paths.crl();
    let mut entries = Vec::new();
    let mut number: u128 = 0;
    if exists(&crl)? {
        let pem = read_pem_file(&crl)?;
        let der = CertificateRevocationListDer::from_pem_slice(&pem)
            .map_err(|err| invalid_crl(&crl, err.to_string()))?;
        let (_, list) = CertificateRevocationList::from_der(der.as_ref())
            .map_err(|err| invalid_crl(&crl, err.to_string()))?;
        number = list
            .crl_number()
            .map(|n| n.to_bytes_be())
            .filter(|bytes| bytes.len() <= 16)
            .map(|bytes| bytes.iter().fold(0u128, |n, b| (n << 8) | u128::from(*b)))
            .unwrap_or(0);
        for revoked in list.iter_revoked_certificates() {
            entries.push((
                normalize_serial(revoked.raw_serial()),
                revoked.revocation_date.to_datetime(),
            ));
        }
    }
    let hex = hex(&serial);
    if entries.iter().any(|(listed, _)| *listed == serial) {
        return Ok(Revocation {
            serial: hex,
            newly: false,
            listed: entries.len(),
            crl,
        });
    }
    let now = OffsetDateTime::now_utc();
    entries.push((serial, now));
    let params = CertificateRevocationListParams {
        this_update: now,
        // Valid as long as the CA: the list is only ever replaced by a longer one.
        next_update: ca.not_after().max(now + time::Duration::days(1)),
        crl_number: SerialNumber::from_slice(&number.saturating_add(1).to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs: entries
            .iter()
            .map(|(serial, at)| RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial),
                revocation_time: *at,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let signed = params
        .signed_by(ca.issuer())
        .map_err(TlsError::generate("the revocation list"))?;
    let pem = signed
        .pem()
        .map_err(TlsError::generate("the revocation list"))?;
    replace(&crl, pem.as_bytes(), CERT_MODE)?;
    Ok(Revocation {
        serial: hex,
        newly: true,
        listed: entries.len(),
        crl,
    })
}

/// The serial number of the first certificate in the PEM text `cert_pem`.
pub fn certificate_serial(cert_pem: &[u8]) -> Result<Vec<u8>, TlsError> {
    let invalid = |reason: String| TlsError::InvalidCertificate { reason };
    let der = CertificateDer::from_pem_slice(cert_pem).map_err(|err| invalid(err.to_string()))?;
    let (_, cert) =
        X509Certificate::from_der(der.as_ref()).map_err(|err| invalid(err.to_string()))?;
    Ok(normalize_serial(cert.raw_serial()))
}

/// Who the client certificate in `cert_pem` names, with its serial number: it must be a
/// client certificate issued by the CA in `ca_dir` (only those are checked against the
/// list).
pub fn issued_client(ca_dir: &Path, cert_pem: &[u8]) -> Result<PeerIdentity, TlsError> {
    let invalid = |reason: String| TlsError::InvalidCertificate { reason };
    let der = CertificateDer::from_pem_slice(cert_pem).map_err(|err| invalid(err.to_string()))?;
    let (_, cert) =
        X509Certificate::from_der(der.as_ref()).map_err(|err| invalid(err.to_string()))?;
    let ca_path = CertPaths::new(ca_dir).ca();
    let ca_der = CertificateDer::from_pem_slice(&read_pem_file(&ca_path)?).map_err(|err| {
        TlsError::InvalidFile {
            what: "CA certificate",
            path: ca_path.clone(),
            reason: err.to_string(),
        }
    })?;
    let (_, ca) =
        X509Certificate::from_der(ca_der.as_ref()).map_err(|err| TlsError::InvalidFile {
            what: "CA certificate",
            path: ca_path.clone(),
            reason: err.to_string(),
        })?;
    if cert.issuer().as_raw() != ca.subject().as_raw() {
        return Err(invalid(format!(
            "it was issued by {}, not by the CA in {}",
            cert.issuer(),
            ca_path.display()
        )));
    }
    let client_auth = cert
        .extended_key_usage()
        .ok()
        .flatten()
        .is_some_and(|eku| eku.value.client_auth);
    if cert.is_ca() || !client_auth {
        return Err(invalid(
            "it is not a client certificate: the server checks only those against the list"
                .to_owned(),
        ));
    }
    crate::peer_identity(&der)
}

/// A serial number written in hex, as `openssl x509 -serial` or `silo certs revoke` print
/// it: digits with or without `:` between bytes, an optional `0x` or `serial=`.
pub fn parse_serial(text: &str) -> Result<Vec<u8>, TlsError> {
    let invalid = |reason| TlsError::InvalidSerial {
        serial: text.to_owned(),
        reason,
    };
    let trimmed = text.trim();
    // `openssl x509 -noout -serial` prints `serial=…`.
    let trimmed = trimmed.strip_prefix("serial=").unwrap_or(trimmed);
    let digits: String = trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
        .unwrap_or(trimmed)
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if digits.is_empty() || digits.len() > 40 {
        return Err(invalid("it must be 1 to 40 hex digits (20 bytes)"));
    }
    if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid("only hex digits and ':' are allowed"));
    }
    let padded = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits
    };
    let bytes = (0..padded.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&padded[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid("only hex digits and ':' are allowed"))?;
    Ok(normalize_serial(&bytes))
}

/// The CA's list in `paths` for a verifier, and the serial numbers it revokes; none (and
/// no serial numbers) while nothing was ever revoked.
pub(crate) fn current_list(
    paths: &CertPaths,
) -> Result<
    (
        Option<CertificateRevocationListDer<'static>>,
        HashSet<Vec<u8>>,
    ),
    TlsError,
> {
    let path = paths.crl();
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, HashSet::new())),
        Err(e) => return Err(TlsError::read(&path, e)),
    };
    let der = CertificateRevocationListDer::from_pem_slice(&pem)
        .map_err(|err| invalid_crl(&path, err.to_string()))?;
    let (_, list) = CertificateRevocationList::from_der(der.as_ref())
        .map_err(|err| invalid_crl(&path, err.to_string()))?;
    let serials = list
        .iter_revoked_certificates()
        .map(|revoked| normalize_serial(revoked.raw_serial()))
        .collect();
    Ok((Some(der), serials))
}

/// A serial number's bytes without leading zeros (DER adds one before a high bit), so
/// that a certificate's and a list's forms compare equal.
pub fn normalize_serial(serial: &[u8]) -> Vec<u8> {
    let start = serial.iter().position(|b| *b != 0).unwrap_or(serial.len());
    serial[start..].to_vec()
}

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn invalid_crl(path: &Path, reason: String) -> TlsError {
    TlsError::InvalidFile {
        what: "certificate revocation list",
        path: path.to_path_buf(),
        reason,
    }
}
