//! Connecting to a silo server: TCP, then mutual TLS 1.3 with the configured certificate,
//! then HTTP/2 for gRPC. Failures are turned into sentences a user can act on.

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use silo_proto::v1::job_service_client::JobServiceClient;
use silo_proto::v1::node_service_client::NodeServiceClient;
use silo_proto::v1::runtime_service_client::RuntimeServiceClient;
use silo_proto::v1::workflow_service_client::WorkflowServiceClient;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::coalesce::Coalesced;
use crate::config::ServerTarget;

/// The largest message the client accepts or sends: 64 MiB (log chunks, uploads, runtime
/// archive chunks).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// How long to wait for the TCP connection and the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the client could not reach the server, in words.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The configured address is not `host:port`.
    #[error("invalid server address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as configured.
        address: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The TLS name to verify is neither an IP address nor a DNS name.
    #[error("invalid TLS server name {name:?}: not an IP address or DNS name")]
    InvalidServerName {
        /// The name.
        name: String,
    },
    /// A certificate or key could not be read or used.
    #[error("{0}")]
    Tls(silo_tls::TlsError),
    /// The TCP connection failed.
    #[error("cannot connect to {address}: {}", describe_io(error))]
    Tcp {
        /// `host:port`.
        address: String,
        /// Why (described in the message, so not a separate source).
        error: io::Error,
    },
    /// TCP and TLS did not complete in time.
    #[error("cannot connect to {address}: timed out after {}s", CONNECT_TIMEOUT.as_secs())]
    Timeout {
        /// `host:port`.
        address: String,
    },
    /// The TLS handshake failed.
    #[error("{}", describe_handshake(address, server_name, error))]
    Handshake {
        /// `host:port`.
        address: String,
        /// The name the server's certificate was checked against.
        server_name: String,
        /// Why (usually wraps a `rustls::Error`; described in the message).
        error: io::Error,
    },
    /// A failure the connector already described, passed through the transport.
    #[error("{0}")]
    Reported(String),
    /// The connection failed in a way the checks above do not recognize.
    #[error("cannot connect to {address}: {message}")]
    Other {
        /// `host:port`.
        address: String,
        /// The transport's message.
        message: String,
    },
}

/// A gRPC client of the job service on the server chosen by `target`.
///
/// Guarantees: as [`connect_channel`]; messages up to [`MAX_MESSAGE_BYTES`] are accepted
/// and sent.
pub async fn connect(target: &ServerTarget) -> Result<JobServiceClient<Channel>, ConnectError> {
    Ok(job_client(connect_channel(target).await?))
}

/// The job service on `channel`, accepting and sending messages up to
/// [`MAX_MESSAGE_BYTES`].
pub fn job_client(channel: Channel) -> JobServiceClient<Channel> {
    JobServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The runtime service on `channel`, accepting and sending messages up to
/// [`MAX_MESSAGE_BYTES`].
pub fn runtime_client(channel: Channel) -> RuntimeServiceClient<Channel> {
    RuntimeServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The workflow service on `channel`, accepting and sending messages up to
/// [`MAX_MESSAGE_BYTES`].
pub fn workflow_client(channel: Channel) -> WorkflowServiceClient<Channel> {
    WorkflowServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The node service on `channel`, accepting and sending messages up to
/// [`MAX_MESSAGE_BYTES`].
pub fn node_client(channel: Channel) -> NodeServiceClient<Channel> {
    NodeServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A connection (one HTTP/2 channel, shared by every service client built on it) to the
/// server chosen by `target`.
///
/// Guarantees: the connection is established (TCP and TLS) before this returns; the
/// server was verified against the configured CA and `server_name` (default: the
/// address's host).
pub async fn connect_channel(target: &ServerTarget) -> Result<Channel, ConnectError> {
    let entry = &target.entry;
    let address = entry.address.clone();
    let host = address_host(&address)?;
    let name_text = entry.server_name.clone().unwrap_or_else(|| host.to_owned());
    let server_name =
        ServerName::try_from(name_text.clone()).map_err(|_| ConnectError::InvalidServerName {
            name: name_text.clone(),
        })?;
    let cert = silo_tls::read_pem_file(&entry.cert).map_err(ConnectError::Tls)?;
    warn_if_ending(&entry.cert, &cert, time::OffsetDateTime::now_utc());
    let tls = silo_tls::client_config(
        &silo_tls::read_pem_file(&entry.ca).map_err(ConnectError::Tls)?,
        &cert,
        &silo_tls::read_pem_file(&entry.key).map_err(ConnectError::Tls)?,
    )
    .map_err(ConnectError::Tls)?;

    let endpoint = Endpoint::from_shared(format!("http://{address}")).map_err(|_| {
        ConnectError::InvalidAddress {
            address: address.clone(),
            reason: "not a valid host:port",
        }
    })?;
    let endpoint = endpoint
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true);

    let dial_address = address.clone();
    let connector = tower::service_fn(move |_: Uri| {
        dial(
            dial_address.clone(),
            name_text.clone(),
            server_name.clone(),
            tls.clone(),
        )
    });
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|err| match connector_message(&err) {
            Some(message) => ConnectError::Reported(message),
            None => ConnectError::Other {
                address: address.clone(),
                message: error_chain(&err),
            },
        })
}

/// Says on stderr when the client certificate `cert_pem` (read from `path`) has ended or
/// ends within [`silo_tls::RENEW_BEFORE`] of `now`: a server renews its own, but a client's
/// copy is the user's to replace.
fn warn_if_ending(path: &std::path::Path, cert_pem: &[u8], now: time::OffsetDateTime) {
    if let Some(warning) = ending_warning(path, cert_pem, now) {
        eprintln!("silo: warning: {warning}");
    }
}

fn ending_warning(
    path: &std::path::Path,
    cert_pem: &[u8],
    now: time::OffsetDateTime,
) -> Option<String> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(cert_pem).ok()?;
    let ends = silo_tls::end_of(&der).ok()?;
    let left = ends - now;
    if left > silo_tls::RENEW_BEFORE {
        return None;
    }
    let date = crate::format::rfc3339_seconds(ends.into());
    let renew = "issue a new one with `silo certs issue` on the server's host";
    Some(if left.is_negative() {
        format!(
            "the client certificate {} ended on {date}; the server refuses it: {renew}",
            path.display()
        )
    } else {
        format!(
            "the client certificate {} ends on {date}, in {} days: {renew} before then",
            path.display(),
            left.whole_days()
        )
    })
}

/// TCP, then the TLS handshake; the stream wrapped for hyper.
async fn dial(
    address: String,
    name_text: String,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
) -> Result<TokioIo<tokio_rustls::client::TlsStream<Coalesced<TcpStream>>>, ConnectError> {
    let handshake = async {
        let tcp = TcpStream::connect(&address)
            .await
            .map_err(|error| ConnectError::Tcp {
                address: address.clone(),
                error,
            })?;
        // gRPC sends many small frames; do not let Nagle delay them.
        tcp.set_nodelay(true).map_err(|error| ConnectError::Tcp {
            address: address.clone(),
            error,
        })?;
        let handshake_error = |error| ConnectError::Handshake {
            address: address.clone(),
            server_name: name_text.clone(),
            error,
        };
        // A request's HEADERS and DATA in one write (see `coalesce`). The first request
        // goes out as soon as the handshake is over, without waiting for the server to
        // accept this client's certificate: over a network that is a round trip saved on
        // every command. A refusal still reads as one: the server's alert arrives in the
        // first answer's place (silo's server lingers so that it is not lost, see
        // `silo_tls::linger_after_refusal`), and `describe_status` says it in words.
        let stream = TlsConnector::from(tls)
            .connect(server_name, Coalesced::new(tcp))
            .await
            .map_err(handshake_error)?;
        Ok(stream)
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Ok(stream) => Ok(TokioIo::new(stream?)),
        Err(_) => Err(ConnectError::Timeout { address }),
    }
}

/// The host part of `host:port` (without IPv6 brackets), after checking the port.
pub fn address_host(address: &str) -> Result<&str, ConnectError> {
    let invalid = |reason| ConnectError::InvalidAddress {
        address: address.to_owned(),
        reason,
    };
    if address.contains("://") {
        return Err(invalid("expected host:port without a scheme"));
    }
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| invalid("expected host:port"))?;
    if port.parse::<u16>().is_err() {
        return Err(invalid("the port must be a number from 0 to 65535"));
    }
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed
            .strip_suffix(']')
            .ok_or_else(|| invalid("unbalanced '[' in an IPv6 address"))?,
        None if host.contains(':') => {
            return Err(invalid("write an IPv6 address in brackets: [::1]:50051"));
        }
        None => host,
    };
    if host.is_empty() {
        return Err(invalid("the host is missing"));
    }
    Ok(host)
}

/// The message of the connector's own error inside `err`, if any: it already says what
/// failed in words.
fn connector_message(err: &(dyn StdError + 'static)) -> Option<String> {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<ConnectError>() {
            return Some(found.to_string());
        }
        current = err.source();
    }
    None
}

/// The messages of `err` and its sources joined by ": ", skipping repeats.
pub fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(err) = current {
        let text = err.to_string();
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

/// An I/O error in lower case without the "(os error N)" suffix:
/// "connection refused", "no route to host".
pub fn describe_io(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => return "connection refused".to_owned(),
        io::ErrorKind::TimedOut => return "timed out".to_owned(),
        _ => {}
    }
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(end) => &text[..end],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_owned(),
    }
}

/// The rustls error inside `err` or its sources, if any.
pub fn find_rustls_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(err) = current {
        if let Some(found) = err.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        // io::Error::source() skips the error it wraps, so look inside explicitly.
        if let Some(found) = err
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        current = err.source();
    }
    None
}

/// The alerts a TLS 1.3 server sends when it refuses the client's certificate.
const CERTIFICATE_ALERTS: [&str; 9] = [
    "BadCertificate",
    "CertificateRequired",
    "UnknownCA",
    "CertificateUnknown",
    "CertificateExpired",
    "CertificateRevoked",
    "UnsupportedCertificate",
    "AccessDenied",
    "DecryptError",
];

/// The message for a fatal alert from the server, by the alert's rustls name.
fn describe_alert(address: &str, alert: &str) -> String {
    if alert == "CertificateRevoked" {
        format!(
            "the server refused this client's certificate ({address}): it has been revoked (`silo certs revoke`); ask the server's admin for a new one"
        )
    } else if alert == "CertificateExpired" {
        format!(
            "the server refused this client's certificate ({address}): it has ended; issue a new one with `silo certs issue` on the server's host"
        )
    } else if CERTIFICATE_ALERTS.contains(&alert) {
        format!(
            "the server rejected this client's certificate ({address}, alert {alert}): check that cert and key in the client configuration were issued by the server's CA"
        )
    } else if alert == "ProtocolVersion" {
        format!("cannot connect to {address}: the server does not speak TLS 1.3")
    } else {
        format!("TLS with {address} failed: the server sent the alert {alert}")
    }
}

/// The alert name in a message written by rustls ("received fatal alert: UnknownCA"):
/// HTTP/2 keeps only the text of I/O errors, so the typed error is gone by then.
fn alert_in_text(text: &str) -> Option<&str> {
    let (_, rest) = text.split_once("received fatal alert: ")?;
    let end = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// A TLS failure in words, for the server at `address` checked against `server_name`.
pub fn describe_tls(address: &str, server_name: &str, err: &rustls::Error) -> String {
    use rustls::CertificateError;
    match err {
        rustls::Error::AlertReceived(alert) => describe_alert(address, &format!("{alert:?}")),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName)
        | rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            format!(
                "cannot verify the server's certificate at {address}: it is not valid for {server_name:?}; set server_name in the client configuration to a name the certificate carries"
            )
        }
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "cannot verify the server's certificate at {address}: it was not issued by the CA named by ca in the client configuration"
        ),
        rustls::Error::InvalidCertificate(CertificateError::Expired)
        | rustls::Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            format!("cannot verify the server's certificate at {address}: it has expired")
        }
        rustls::Error::InvalidCertificate(reason) => format!(
            "cannot verify the server's certificate at {address}: {reason:?}; is ca in the client configuration the server's CA?"
        ),
        other => format!("TLS with {address} failed: {other}"),
    }
}

fn describe_handshake(address: &str, server_name: &str, err: &io::Error) -> String {
    match find_rustls_error(err) {
        Some(tls) => describe_tls(address, server_name, tls),
        None => format!("TLS handshake with {address} failed: {}", describe_io(err)),
    }
}

/// A failed call in words. A status sent by the server is shown as its message, as-is
/// ("job 3f2a not found"); a transport failure is described, naming `address`.
pub fn describe_status(status: &tonic::Status, address: &str) -> String {
    if let Some(message) = connector_message(status) {
        return message;
    }
    if let Some(tls) = find_rustls_error(status) {
        return describe_tls(address, "", tls);
    }
    if let Some(source) = StdError::source(status) {
        let chain = error_chain(source);
        if let Some(alert) = alert_in_text(&chain) {
            return describe_alert(address, alert);
        }
        return format!(
            "connection to {address} failed: {}: {chain}",
            status.message()
        );
    }
    if status.message().is_empty() {
        return format!("the server answered {:?} without a message", status.code());
    }
    status.message().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_need_a_host_and_a_numeric_port() {
        assert_eq!(address_host("127.0.0.1:50051").unwrap(), "127.0.0.1");
        assert_eq!(address_host("[::1]:50051").unwrap(), "::1");
        assert_eq!(address_host("silo.example:1").unwrap(), "silo.example");
        for bad in [
            "localhost",
            "::1:50051",
            ":50051",
            "host:port",
            "http://h:1",
            "[::1:5",
        ] {
            assert!(address_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn alerts_are_found_in_flattened_transport_messages() {
        let text = "transport error: received fatal alert: UnknownCA: connection error";
        assert_eq!(alert_in_text(text), Some("UnknownCA"));
        assert!(describe_alert("h:1", "UnknownCA").starts_with("the server rejected"));
        assert!(describe_alert("h:1", "ProtocolVersion").contains("TLS 1.3"));
        assert_eq!(alert_in_text("connection reset"), None);
        assert!(describe_alert("h:1", "CertificateRevoked").contains("has been revoked"));
        assert!(describe_alert("h:1", "CertificateExpired").contains("has ended"));
    }

    #[test]
    fn a_client_certificate_near_or_past_its_end_is_named_with_its_date() {
        let temp = tempfile::tempdir().unwrap();
        let pki = temp.path().join("pki");
        silo_tls::init_pki(&pki, &[], time::Duration::days(10)).unwrap();
        let path = pki.join("admin.pem");
        let pem = std::fs::read(&path).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let soon = ending_warning(&path, &pem, now).expect("a warning");
        assert!(
            soon.contains("admin.pem ends on") && soon.contains("in 9 days"),
            "{soon}"
        );
        let later = now + time::Duration::days(11);
        let past = ending_warning(&path, &pem, later).expect("a warning");
        assert!(
            past.contains("ended on") && past.contains("refuses it"),
            "{past}"
        );
        assert_eq!(
            ending_warning(&path, &pem, now - time::Duration::days(30)),
            None
        );
    }

    #[test]
    fn io_errors_read_in_lower_case_without_os_numbers() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(describe_io(&refused), "connection refused");
        let missing = io::Error::from_raw_os_error(2);
        assert_eq!(describe_io(&missing), "no such file or directory");
    }
}
