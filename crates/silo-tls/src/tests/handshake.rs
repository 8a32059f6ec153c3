//! Real TLS handshakes between `server_config` and `client_config`, pumped through
//! in-memory buffers.

use std::sync::Arc;

use rustls::{
    CertificateError, ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection,
};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{first_cert, fresh_pki, read};
use crate::{
    CertPaths, Role, TlsError, client_config, crypto_provider, peer_identity, server_config,
};

/// Which side gave up, and why.
#[derive(Debug)]
pub(super) enum Failure {
    Client(rustls::Error),
    Server(rustls::Error),
    /// Neither side failed but the handshake did not finish.
    Stalled,
}

pub(super) struct Established {
    pub client: ClientConnection,
    pub server: ServerConnection,
}

/// Runs a full handshake; `server_name` is what the client expects the server to be.
pub(super) fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    server_name: &str,
) -> Result<Established, Failure> {
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    let mut client = ClientConnection::new(client, name).expect("client connection");
    let mut server = ServerConnection::new(server).expect("server connection");
    loop {
        let to_server = flush(&mut client);
        feed(&mut server, &to_server).map_err(Failure::Server)?;
        let to_client = flush(&mut server);
        feed(&mut client, &to_client).map_err(Failure::Client)?;
        if to_server.is_empty() && to_client.is_empty() {
            break;
        }
    }
    if client.is_handshaking() || server.is_handshaking() {
        return Err(Failure::Stalled);
    }
    Ok(Established { client, server })
}

fn flush<D>(conn: &mut rustls::ConnectionCommon<D>) -> Vec<u8> {
    let mut bytes = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut bytes).expect("write_tls to a Vec");
    }
    bytes
}

fn feed<D>(conn: &mut rustls::ConnectionCommon<D>, mut bytes: &[u8]) -> Result<(), rustls::Error> {
    while !bytes.is_empty() {
        conn.read_tls(&mut bytes).expect("read_tls from a slice");
        conn.process_new_packets()?;
    }
    Ok(())
}

fn server_for(paths: &CertPaths) -> Arc<ServerConfig> {
    server_config(
        &read(&paths.ca()),
        &read(&paths.server()),
        &read(&paths.server_key()),
        None,
    )
    .expect("server config")
}

fn client_for(paths: &CertPaths, role: Role) -> Arc<ClientConfig> {
    let (cert, key) = paths.client(role);
    client_config(&read(&paths.ca()), &read(&cert), &read(&key)).expect("client config")
}

fn roots(paths: &CertPaths) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(first_cert(&paths.ca())).expect("root");
    Arc::new(roots)
}

#[test]
fn ca_signed_client_completes_a_tls13_h2_handshake() {
    let (_temp, paths) = fresh_pki();

    let Established { client, server } = handshake(
        client_for(&paths, Role::Admin),
        server_for(&paths),
        "localhost",
    )
    .expect("handshake");

    assert_eq!(
        client.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(client.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(server.alpn_protocol(), Some(&b"h2"[..]));
    // Both sides prefer AES-128-GCM (the cheapest bulk cipher with AES instructions).
    assert_eq!(
        client.negotiated_cipher_suite().map(|s| s.suite()),
        Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
    let peer = server
        .peer_certificates()
        .expect("client presented a certificate");
    let identity = peer_identity(&peer[0]).expect("identity");
    assert_eq!(identity.common_name, "admin");
    assert_eq!(identity.role, Some(Role::Admin));
}

#[test]
fn client_reaches_the_server_by_loopback_address() {
    let (_temp, paths) = fresh_pki();
    for name in ["127.0.0.1", "::1"] {
        handshake(client_for(&paths, Role::Viewer), server_for(&paths), name)
            .unwrap_or_else(|failure| panic!("{name}: {failure:?}"));
    }
}

#[test]
fn client_refuses_a_server_name_the_certificate_does_not_carry() {
    let (_temp, paths) = fresh_pki();

    let failure = handshake(
        client_for(&paths, Role::Admin),
        server_for(&paths),
        "elsewhere.example",
    )
    .err()
    .expect("handshake must fail");

    assert!(
        matches!(
            failure,
            Failure::Client(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ),
        "{failure:?}"
    );
}

#[test]
fn server_refuses_a_client_cert_from_another_ca() {
    let (_temp, paths) = fresh_pki();
    let (_other_temp, other) = fresh_pki();
    let (cert, key) = other.client(Role::Admin);
    // Trusts the right server, but authenticates with a certificate from the other CA.
    let client = client_config(&read(&paths.ca()), &read(&cert), &read(&key)).expect("client");

    let failure = handshake(client, server_for(&paths), "localhost")
        .err()
        .expect("handshake must fail");

    assert!(
        matches!(
            failure,
            Failure::Server(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ),
        "{failure:?}"
    );
}

#[test]
fn server_refuses_a_client_without_a_certificate() {
    let (_temp, paths) = fresh_pki();
    let mut client = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots(&paths))
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];

    let failure = handshake(Arc::new(client), server_for(&paths), "localhost")
        .err()
        .expect("handshake must fail");

    assert!(
        matches!(
            failure,
            Failure::Server(rustls::Error::NoCertificatesPresented)
        ),
        "{failure:?}"
    );
}

#[test]
fn server_refuses_a_server_certificate_used_as_a_client_certificate() {
    let (_temp, paths) = fresh_pki();
    let client = client_config(
        &read(&paths.ca()),
        &read(&paths.server()),
        &read(&paths.server_key()),
    )
    .expect("client");

    let failure = handshake(client, server_for(&paths), "localhost")
        .err()
        .expect("handshake must fail");

    assert!(matches!(failure, Failure::Server(_)), "{failure:?}");
}

#[test]
fn server_refuses_a_tls12_only_client() {
    let (_temp, paths) = fresh_pki();
    let (cert, key) = paths.client(Role::Admin);
    let mut client = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("TLS 1.2")
        .with_root_certificates(roots(&paths))
        .with_client_auth_cert(
            vec![first_cert(&cert)],
            PrivateKeyDer::from_pem_slice(&read(&key)).expect("key"),
        )
        .expect("client auth");
    client.alpn_protocols = vec![b"h2".to_vec()];

    let failure = handshake(Arc::new(client), server_for(&paths), "localhost")
        .err()
        .expect("handshake must fail");

    assert!(
        matches!(failure, Failure::Server(rustls::Error::PeerIncompatible(_))),
        "{failure:?}"
    );
}

#[test]
fn client_refuses_a_server_from_another_ca() {
    let (_temp, paths) = fresh_pki();
    let (_other_temp, other) = fresh_pki();

    let failure = handshake(
        client_for(&paths, Role::Admin),
        server_for(&other),
        "localhost",
    )
    .err()
    .expect("handshake must fail");

    assert!(
        matches!(
            failure,
            Failure::Client(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        ),
        "{failure:?}"
    );
}

#[test]
fn configs_refuse_a_key_that_does_not_belong_to_the_certificate() {
    let (_temp, paths) = fresh_pki();
    let (admin, _) = paths.client(Role::Admin);

    let err = server_config(
        &read(&paths.ca()),
        &read(&paths.server()),
        &read(&paths.ca_key()),
        None,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot build the TLS server configuration: the private key does not belong to the certificate"
    );
    let err = client_config(
        &read(&paths.ca()),
        &read(&admin),
        &read(&paths.server_key()),
    )
    .unwrap_err();
    assert!(
        matches!(err, TlsError::Config { side: "client", .. }),
        "{err}"
    );
}

#[test]
fn configs_name_the_pem_input_that_holds_nothing() {
    let (_temp, paths) = fresh_pki();
    let cert = read(&paths.server());
    let key = read(&paths.server_key());

    let err = server_config(b"", &cert, &key, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid CA certificate: no PEM certificate found"
    );
    let err = server_config(&read(&paths.ca()), &key, &key, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid certificate: no PEM certificate found"
    );
    let err = client_config(&read(&paths.ca()), &cert, &cert).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid private key: no PEM private key found"
    );
}

#[test]
fn certificate_chain_keeps_its_order() {
    let (_temp, paths) = fresh_pki();
    let mut chain = read(&paths.server());
    chain.extend(read(&paths.ca()));

    let certs: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<_, _>>()
        .expect("chain");
    assert_eq!(certs.len(), 2);
    server_config(&read(&paths.ca()), &chain, &read(&paths.server_key()), None)
        .expect("a chain with the CA appended is accepted");
}

#[test]
fn a_second_connection_is_a_full_handshake_that_presents_the_certificate_again() {
    let (_temp, paths) = fresh_pki();
    // The same configurations on both sides, as a long-lived client and server have.
    let (client, server) = (client_for(&paths, Role::Admin), server_for(&paths));
    for attempt in 0..2 {
        let Established { client, server } =
            handshake(client.clone(), server.clone(), "localhost").expect("handshake");
        assert_eq!(
            client.handshake_kind(),
            Some(rustls::HandshakeKind::Full),
            "connection {attempt}"
        );
        assert!(
            server.peer_certificates().is_some(),
            "connection {attempt}: the client's certificate was verified again"
        );
    }
}
