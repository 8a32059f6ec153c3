//! Who a peer is, read from its certificate: the common name names the client, the
//! organizational unit carries its role.

use std::fmt;
use std::str::FromStr;

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::TlsError;

/// What a client may do. Carried in the organizational unit (OU) of its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// May read and change everything.
    Admin,
    /// May only read.
    Viewer,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 2] = [Role::Admin, Role::Viewer];

    /// The role's name as written in certificates and on the command line:
    /// `"admin"` or `"viewer"`. Round-trips through [`FromStr`].
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is neither `admin` nor `viewer`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected \"admin\" or \"viewer\"")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    /// Accepts exactly `"admin"` or `"viewer"` (lower case, as written in certificates).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// The identity a client certificate claims.
///
/// Reading it does not verify anything: use it only for a certificate that the TLS
/// handshake already verified against silo's CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's first common name (CN).
    pub common_name: String,
    /// The role named by the subject's organizational unit (OU). `None` when there is no
    /// OU, when no OU names a known role, or when OUs name different roles: a peer without
    /// a role must be refused everything that needs one.
    pub role: Option<Role>,
    /// The certificate's serial number, without leading zero bytes (see
    /// [`crate::normalize_serial`]): what a revocation names.
    pub serial: Vec<u8>,
    /// When the certificate ends.
    pub valid_until: time::OffsetDateTime,
}

/// Reads the common name and role from a DER certificate.
///
/// Fails when the bytes are not an X.509 certificate, or when the subject has no
/// UTF-8 common name. An unknown, missing or ambiguous OU is not an error: the identity's
/// role is `None`.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Result<PeerIdentity, TlsError> {
    let (_, cert) =
        X509Certificate::from_der(cert.as_ref()).map_err(|err| TlsError::InvalidCertificate {
            reason: err.to_string(),
        })?;
    let subject = cert.subject();

    let common_name = subject
        .iter_common_name()
        .next()
        .ok_or(TlsError::MissingCommonName)?
        .as_str()
        .map_err(|err| TlsError::InvalidCertificate {
            reason: format!("the common name is not a string: {err}"),
        })?
        .to_owned();

    let mut roles = subject
        .iter_organizational_unit()
        .filter_map(|ou| ou.as_str().ok())
        .filter_map(|ou| ou.parse::<Role>().ok());
    let role = match roles.next() {
        Some(first) if roles.all(|other| other == first) => Some(first),
        _ => None,
    };

    Ok(PeerIdentity {
        common_name,
        role,
        serial: crate::crl::normalize_serial(cert.raw_serial()),
        valid_until: cert.validity().not_after.to_datetime(),
    })
}
