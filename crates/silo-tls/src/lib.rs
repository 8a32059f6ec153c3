//! Mutual TLS for silo's gRPC server and client.
//!
//! - [`ensure_server_pki`], [`init_pki`] and [`issue_client_cert`] create silo's private
//!   PKI: one CA, one server certificate, and client certificates whose organizational
//!   unit names the client's [`Role`].
//! - [`server_config`] and [`client_config`] build rustls configurations: TLS 1.3 only,
//!   both sides authenticated against silo's CA, ALPN "h2", rustls's ring provider passed
//!   explicitly (no process-wide default provider is installed or needed).
//! - [`renew_due`] issues the server's own certificates anew as their end nears;
//!   [`revoke`] adds a client certificate to the CA's revocation list; [`ServerTls`] is
//!   the server's configuration, read again when those files change.
//! - [`peer_identity`] reads who a verified client is.
//! - [`linger_after_refusal`] closes a connection whose handshake the server refused so
//!   that the client reads why.
//! - [`ClientFile`] is the client configuration file: the server's address and the
//!   certificate paths a client connects with.

mod authority;
mod client_file;
mod config;
mod crl;
mod error;
mod files;
mod identity;
mod issued;
mod paths;
mod pki;
mod refusal;
mod reload;
mod renew;

#[cfg(test)]
mod tests;

pub use authority::LEAF_VALIDITY;
pub use client_file::{ClientFile, ServerEntry};
pub use config::{ALPN_H2, client_config, crypto_provider, server_config};
pub use crl::{
    Revocation, certificate_serial, hex, issued_client, normalize_serial, parse_serial, revoke,
};
pub use error::TlsError;
pub use files::read_pem_file;
pub use identity::{PeerIdentity, Role, UnknownRole, peer_identity};
pub use issued::{Issued, list_issued};
pub use paths::CertPaths;
pub use pki::{EnsureReport, ensure_server_pki, init_pki, issue_client_cert};
pub use refusal::linger_after_refusal;
pub use reload::ServerTls;
pub use renew::{
    RENEW_BEFORE, RenewReport, Renewed, Why, certificate_end, end_of, next_renewal, renew_due,
};
