//! silo's certificate authority: makes the CA and signs server and client certificates.
//!
//! Every key is ECDSA P-256. The CA is valid for 10 years, leaf certificates for 1 year
//! (never past the CA's own expiry). Validity starts one hour in the past so that a peer
//! whose clock is slightly behind still accepts a certificate made a moment ago.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::files::read_pem_file;
use crate::{Role, TlsError};

const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a leaf certificate is valid unless its issuer asks for less or more.
pub const LEAF_VALIDITY: Duration = Duration::days(365);
const CLOCK_SKEW: Duration = Duration::hours(1);
const ORGANIZATION: &str = "silo";

/// A PEM certificate and its PEM (PKCS#8) private key.
pub(crate) struct IssuedPair {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

/// A CA that can sign certificates.
pub(crate) struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    not_after: OffsetDateTime,
}

impl CertificateAuthority {
    /// A fresh self-signed CA, and its certificate and key to store.
    pub(crate) fn generate() -> Result<(Self, IssuedPair), TlsError> {
        let now = OffsetDateTime::now_utc();
        let serial = random_serial()?;
        // A name of its own (e.g. "silo CA 5c09e1a7"), so that two silo installations
        // never have CAs with the same subject: a certificate from the other one then
        // fails as "unknown issuer" instead of being tried against the wrong CA key.
        let tag: String = serial
            .as_ref()
            .iter()
            .take(4)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(&format!("silo CA {tag}"), None);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_VALIDITY;
        params.serial_number = Some(serial);

        let key = new_key("the CA key")?;
        let cert = params
            .self_signed(&key)
            .map_err(TlsError::generate("the CA certificate"))?;
        let pair = IssuedPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        let not_after = params.not_after;
        Ok((
            Self {
                issuer: Issuer::new(params, key),
                not_after,
            },
            pair,
        ))
    }

    /// Loads a CA from its certificate and key files. Fails, naming the file, when the
    /// certificate is not a CA, has expired, or the key does not belong to it.
    pub(crate) fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let invalid_cert = |reason: String| TlsError::InvalidFile {
            what: "CA certificate",
            path: cert_path.to_path_buf(),
            reason,
        };
        let invalid_key = |reason: String| TlsError::InvalidFile {
            what: "CA private key",
            path: key_path.to_path_buf(),
            reason,
        };

        let cert_der = CertificateDer::from_pem_slice(&read_pem_file(cert_path)?)
            .map_err(|err| invalid_cert(err.to_string()))?;
        let (_, cert) = X509Certificate::from_der(cert_der.as_ref())
            .map_err(|err| invalid_cert(err.to_string()))?;
        if !cert.is_ca() {
            return Err(invalid_cert("the certificate is not a CA".to_owned()));
        }
        let not_after = cert.validity().not_after.to_datetime();
        if not_after <= OffsetDateTime::now_utc() {
            return Err(invalid_cert(format!("the CA expired on {not_after}")));
        }

        let key_pem = String::from_utf8(read_pem_file(key_path)?)
            .map_err(|_| invalid_key("the file is not PEM text".to_owned()))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|err| invalid_key(err.to_string()))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(invalid_key(format!(
                "the key does not belong to the CA certificate {}",
                cert_path.display()
            )));
        }

        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(|err| invalid_cert(err.to_string()))?;
        Ok(Self { issuer, not_after })
    }

    /// A server certificate (CN "silo server", EKU serverAuth) for `sans`, each an IP
    /// address or a DNS name already validated by the caller, valid for `validity`.
    pub(crate) fn issue_server(
        &self,
        sans: &[String],
        validity: Duration,
    ) -> Result<IssuedPair, TlsError> {
        let mut params = CertificateParams::new(sans.to_vec())
            .map_err(TlsError::generate("the server certificate"))?;
        params.distinguished_name = subject("silo server", None);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign_leaf(params, validity, "the server certificate")
    }

    /// A client certificate with CN `name`, OU `role` and EKU clientAuth, valid for
    /// `validity`.
    pub(crate) fn issue_client(
        &self,
        role: Role,
        name: &str,
        validity: Duration,
    ) -> Result<IssuedPair, TlsError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = subject(name, Some(role));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign_leaf(params, validity, "the client certificate")
    }

    /// When the CA's own certificate ends.
    pub(crate) fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// The CA as a signer (of revocation lists).
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    fn sign_leaf(
        &self,
        mut params: CertificateParams,
        validity: Duration,
        what: &'static str,
    ) -> Result<IssuedPair, TlsError> {
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = (now + validity).min(self.not_after);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);

        let key = new_key("a certificate key")?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(TlsError::generate(what))?;
        Ok(IssuedPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The (certificate, key) file names for a client called `name` in `dir`.
pub(crate) fn client_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    )
}

fn subject(common_name: &str, role: Option<Role>) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, ORGANIZATION);
    if let Some(role) = role {
        name.push(DnType::OrganizationalUnitName, role.as_str());
    }
    name.push(DnType::CommonName, common_name);
    name
}

fn new_key(what: &'static str) -> Result<KeyPair, TlsError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(TlsError::generate(what))
}

/// 128 random bits from the ring provider's generator, as a positive serial number
/// (RFC 5280 §4.1.2.2 asks for unique, positive serials of at most 20 bytes).
fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| TlsError::Generate {
            what: "a serial number",
            source: rcgen::Error::RingUnspecified,
        })?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}
