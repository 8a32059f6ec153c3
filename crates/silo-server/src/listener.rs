//! The TLS listener: accepts TCP connections, completes the mutual-TLS handshake (TLS 1.3,
//! client certificate verified against silo's CA) and hands finished connections to
//! tonic with the caller's identity attached.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::auth::Caller;

/// How long a client has to complete the TLS handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// Handshakes under way at once. Anyone who can reach the port may start one, before any
/// certificate is checked, and each holds a descriptor for up to HANDSHAKE_DEADLINE:
/// without a bound, connections that never finish would take the server's descriptors,
/// which its jobs need (logs, pidfds, cgroup files). Past it, the listener waits, and new
/// connections wait in the kernel's backlog.
const HANDSHAKES_AT_ONCE: usize = 1024;

/// Handshakes under way at once from one address (one IPv4 address, or one IPv6 /64,
/// which a single host may hold all of): past it a connection from there is closed at
/// once, so that one host cannot hold all of HANDSHAKES_AT_ONCE.
const HANDSHAKES_PER_ADDRESS: usize = 64;

/// Client connections open at once, after their handshakes: each holds a descriptor for
/// as long as the client keeps it, and a client with a certificate may open as many as it
/// likes. Past the bound a new connection is closed once its handshake is done.
const CONNECTIONS_AT_ONCE: usize = 4096;

/// A verified mutual-TLS connection.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    caller: Caller,
    /// Its place under CONNECTIONS_AT_ONCE, given back when tonic drops it.
    _open: tokio::sync::OwnedSemaphorePermit,
}

impl Connected for TlsConnection {
    type ConnectInfo = Caller;

    fn connect_info(&self) -> Caller {
        self.caller.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Accepts connections on `listener` forever; yields each one whose handshake succeeded.
/// Failed handshakes are logged and dropped without disturbing other clients.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<silo_tls::ServerTls>,
) -> ReceiverStream<io::Result<TlsConnection>> {
    let (tx, rx) = mpsc::channel(64);
    let at_once = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_AT_ONCE));
    let per_address = Arc::new(PerAddress::default());
    let open = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_AT_ONCE));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = at_once.clone().acquire_owned().await else {
                return;
            };
            let (tcp, addr) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(from_address) = per_address.enter(source(addr.ip())) else {
                tracing::info!(
                    %addr,
                    "connection closed: {HANDSHAKES_PER_ADDRESS} handshakes from there are under way"
                );
                continue;
            };
            let _ = tcp.set_nodelay(true);
            // The configuration of the moment: a renewed certificate or a new revocation
            // list applies from the next handshake on.
            let acceptor = TlsAcceptor::from(tls.config());
            let tls = tls.clone();
            let tx = tx.clone();
            let open = open.clone();
            tokio::spawn(async move {
                let done = handshake(acceptor, tcp, addr, open, tls).await;
                drop((from_address, permit));
                match done {
                    Ok(conn) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Err(e) => tracing::info!(%addr, "TLS handshake failed: {e}"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Where a connection comes from, for [`PerAddress`]: an IPv4 address (an IPv4-mapped
/// IPv6 one as such), or an IPv6 address's /64, the block one host is given and may
/// rotate through (temporary addresses, SLAAC privacy extensions).
fn source(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => std::net::IpAddr::V6(std::net::Ipv6Addr::from(
                v6.to_bits() & !u128::from(u64::MAX),
            )),
        },
        v4 => v4,
    }
}

/// Handshakes under way per client address.
#[derive(Default)]
struct PerAddress {
    counts: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

impl PerAddress {
    /// Counts one more handshake from `ip`, unless HANDSHAKES_PER_ADDRESS are under way
    /// from there; the guard counts it out.
    fn enter(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<AddressGuard> {
        let mut counts = self.counts.lock().ok()?;
        let count = counts.entry(ip).or_default();
        if *count >= HANDSHAKES_PER_ADDRESS {
            return None;
        }
        *count += 1;
        Some(AddressGuard {
            table: self.clone(),
            ip,
        })
    }
}

/// One handshake counted in [`PerAddress`].
struct AddressGuard {
    table: Arc<PerAddress>,
    ip: std::net::IpAddr,
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.table.counts.lock()
            && let Some(count) = counts.get_mut(&self.ip)
        {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    addr: SocketAddr,
    open: Arc<tokio::sync::Semaphore>,
    tls: Arc<silo_tls::ServerTls>,
) -> io::Result<TlsConnection> {
    let accepted = tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(tcp).into_fallible())
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"))?;
    let stream = match accepted {
        Ok(stream) => stream,
        // The client may have sent its first request behind its certificate: read it
        // away, so that the alert reaches the client instead of a reset.
        Err((error, tcp)) => {
            silo_tls::linger_after_refusal(tcp).await;
            return Err(error);
        }
    };
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|cert| match silo_tls::peer_identity(cert) {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(%addr, "cannot read the client certificate: {e}");
                None
            }
        });
    let Ok(permit) = open.try_acquire_owned() else {
        return Err(io::Error::other(format!(
            "{CONNECTIONS_AT_ONCE} client connections are open: closed"
        )));
    };
    Ok(TlsConnection {
        stream,
        caller: Caller {
            identity,
            tls: Some(tls),
        },
        _open: permit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_host_counts_as_its_64_and_a_mapped_ipv4_as_itself() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // Two addresses of one /64 (a host rotating its temporary addresses) are one source.
        assert_eq!(source(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            source(ip("2001:db8:1:2:ffff:eeee:dddd:cccc")),
            source(ip("2001:db8:1:2::7"))
        );
        assert_ne!(source(ip("2001:db8:1:2::1")), source(ip("2001:db8:1:3::1")));
        assert_eq!(source(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_ne!(source(ip("192.0.2.7")), source(ip("192.0.2.8")));
    }
}
