//! rustls configurations for silo's gRPC server and client: mutual TLS 1.3 with ALPN h2,
//! trusting only silo's CA, on rustls's ring provider.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::TlsError;

/// The one ALPN protocol both sides offer: gRPC runs over HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// rustls's ring provider, passed explicitly to every builder so that nothing depends on
/// a process-wide default provider. Its TLS 1.3 suites are ordered AES-128-GCM,
/// AES-256-GCM, ChaCha20-Poly1305: both sides prefer AES-128-GCM, the cheapest per byte
/// where the CPU has AES instructions (a log stream is bulk data), and still accept the
/// others from any other client.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| match suite.suite() {
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
            _ => 2,
        });
    Arc::new(provider)
}

/// The server side of silo's mutual TLS.
///
/// Guarantees: TLS 1.3 only; every client must present a certificate that chains to a
/// CA in `ca_pem` and carries the clientAuth usage, or the handshake fails; the server
/// presents `cert_pem` (leaf first, then any intermediates) with `key_pem`; a client
/// certificate that `crl` (the CA's revocation list, when there is one) lists is refused;
/// ALPN offers only "h2"; no session is resumed (every handshake is a full one). Fails
/// when a PEM input holds no usable item or the key does not belong to the certificate.
pub fn server_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
    crl: Option<CertificateRevocationListDer<'static>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = crypto_provider();
    let roots = Arc::new(root_store(ca_pem)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .with_crls(crl)
        .only_check_end_entity_revocation()
        .build()
        .map_err(|err| TlsError::Config {
            side: "server",
            reason: format!("cannot verify client certificates: {err}"),
        })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::config("server"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certificate_chain(cert_pem)?, private_key(key_pem)?)
        .map_err(TlsError::config("server"))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // No session resumption: every connection presents and verifies a full certificate
    // (a resumed session would carry the client's role from an earlier handshake), and a
    // client process (one per CLI command) never lives to resume. Tickets were two
    // records and a stored session per connection for nothing.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// The client side of silo's mutual TLS.
///
/// Guarantees: TLS 1.3 only; the server must present a certificate that chains to a CA
/// in `ca_pem` (the system's roots are never trusted), carries the serverAuth usage and
/// names the server the caller connects to; the client authenticates with `cert_pem` and
/// `key_pem`; ALPN offers only "h2". Fails when a PEM input holds no usable item or the
/// key does not belong to the certificate.
pub fn client_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::config("client"))?
        .with_root_certificates(root_store(ca_pem)?)
        .with_client_auth_cert(certificate_chain(cert_pem)?, private_key(key_pem)?)
        .map_err(TlsError::config("client"))?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    // The server offers no resumption (see `server_config`); nothing to keep.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// Every certificate in `ca_pem` as a trust anchor; at least one is required.
fn root_store(ca_pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let invalid = |reason: String| TlsError::InvalidPem {
        what: "CA certificate",
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|err| invalid(err.to_string()))?;
        roots.add(cert).map_err(|err| invalid(err.to_string()))?;
    }
    if roots.is_empty() {
        return Err(invalid("no PEM certificate found".to_owned()));
    }
    Ok(roots)
}

/// Every certificate in `cert_pem`, in order; at least one is required.
fn certificate_chain(cert_pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |reason: String| TlsError::InvalidPem {
        what: "certificate",
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| invalid(err.to_string()))?;
    if chain.is_empty() {
        return Err(invalid("no PEM certificate found".to_owned()));
    }
    Ok(chain)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in `key_pem`.
fn private_key(key_pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(key_pem).map_err(|err| TlsError::InvalidPem {
        what: "private key",
        reason: match err {
            rustls_pki_types::pem::Error::NoItemsFound => "no PEM private key found".to_owned(),
            other => other.to_string(),
        },
    })
}
