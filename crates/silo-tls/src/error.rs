//! The one error type of this crate.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while creating, reading or using silo's certificates.
///
/// Every message is one sentence that names what failed, where (the file, or which PEM
/// input when the caller passed bytes) and why.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// A file or directory could not be created or written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },

    /// A file that would be written already exists; nothing is ever overwritten.
    #[error("refusing to overwrite {}: the file already exists", path.display())]
    AlreadyExists {
        /// The existing file.
        path: PathBuf,
    },

    /// One half of a certificate/key pair exists without the other, so the pair can be
    /// neither kept nor regenerated without losing data.
    #[error(
        "{} exists but {} is missing: restore it, or remove both to have them generated again",
        present.display(),
        missing.display()
    )]
    IncompletePair {
        /// The half that exists.
        present: PathBuf,
        /// The half that is missing.
        missing: PathBuf,
    },

    /// The CA is missing while certificates it signed are still present; a new CA would
    /// not be trusted by (or trust) them.
    #[error(
        "{} is missing but {} exists: a new CA would not match the existing certificates; restore the CA or empty the directory",
        ca.display(),
        leaf.display()
    )]
    MissingCa {
        /// The missing CA certificate.
        ca: PathBuf,
        /// An existing certificate that the old CA signed.
        leaf: PathBuf,
    },

    /// PEM input passed as bytes could not be used.
    #[error("invalid {what}: {reason}")]
    InvalidPem {
        /// Which input ("CA certificate", "certificate", "private key").
        what: &'static str,
        /// Why.
        reason: String,
    },

    /// A certificate or key file could not be used.
    #[error("invalid {what} in {}: {reason}", path.display())]
    InvalidFile {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// A certificate could not be parsed as X.509.
    #[error("cannot parse certificate: {reason}")]
    InvalidCertificate {
        /// Why.
        reason: String,
    },

    /// A certificate has no subject common name, so it names no peer.
    #[error("certificate has no subject common name (CN)")]
    MissingCommonName,

    /// A subject alternative name is neither an IP address nor a valid DNS name.
    #[error("invalid subject alternative name {san:?}: not an IP address and not a valid DNS name")]
    InvalidSan {
        /// The rejected entry.
        san: String,
    },

    /// A client name cannot be used as a common name and file name.
    #[error("invalid client name {name:?}: {reason}")]
    InvalidClientName {
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },

    /// A certificate serial number written wrong.
    #[error("invalid serial number {serial:?}: {reason}")]
    InvalidSerial {
        /// The rejected text.
        serial: String,
        /// Why.
        reason: &'static str,
    },

    /// A key or certificate could not be generated or signed.
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// What was being generated.
        what: &'static str,
        /// Why.
        #[source]
        source: rcgen::Error,
    },

    /// rustls refused the configuration.
    #[error("cannot build the TLS {side} configuration: {reason}")]
    Config {
        /// "server" or "client".
        side: &'static str,
        /// Why.
        reason: String,
    },
}

impl TlsError {
    pub(crate) fn read(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Read {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn write(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Write {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn generate(what: &'static str) -> impl FnOnce(rcgen::Error) -> Self {
        move |source| Self::Generate { what, source }
    }

    pub(crate) fn config(side: &'static str) -> impl FnOnce(rustls::Error) -> Self {
        move |err| Self::Config {
            side,
            reason: match err {
                rustls::Error::InconsistentKeys(_) => {
                    "the private key does not belong to the certificate".to_owned()
                }
                other => other.to_string(),
            },
        }
    }
}
