//! Mutual TLS for silo's gRPC server and client.
//!
//! - [`ensure_server_pki`], [`init_pki`] and [`issue_client_cert`] create silo's private
//!   PKI: one CA, one server certificate, and client certificates whose organizational
//!   unit names the client's [`Role`].
//! - [`server_config`] and [`client_config`] build rustls configurations: TLS 1.3 only,
//!   both sides authenticated against silo's CA, ALPN "h2", rustls's ring provider passed
//!   explicitly (no process-wide default provider is installed or needed).
//! - [`peer_identity`] reads who a verified client is.
//! - [`linger_after_refusal`] closes a connection whose handshake the server refused so
//!   that the client reads why.
//! - [`ClientFile`] is the client configuration file: the server's address and the
//!   certificate paths a client connects with.

mod authority;
mod client_file;
mod config;
mod error;
mod files;
mod identity;
mod paths;
mod pki;
mod refusal;

#[cfg(test)]
mod tests;

pub use client_file::{ClientFile, ServerEntry};
pub use config::{ALPN_H2, client_config, crypto_provider, server_config};
pub use error::TlsError;
pub use files::read_pem_file;
pub use identity::{PeerIdentity, Role, UnknownRole, peer_identity};
pub use paths::CertPaths;
pub use pki::{EnsureReport, ensure_server_pki, init_pki, issue_client_cert};
pub use refusal::linger_after_refusal;
