//! The server's end of a connection whose handshake it refused.
//!
//! In TLS 1.3 a client's handshake is over before the server has checked the client's
//! certificate (RFC 8446, section 4.4.2), so a client may send its first request at once,
//! in the same flight as its certificate, and silo's client does. A server that refuses
//! the certificate sends an alert and closes; closed with that request still unread, the
//! kernel answers with a reset instead of a FIN, and the reset discards the alert in the
//! client's receive queue: the client sees "connection reset" or "broken pipe" instead of
//! being told its certificate was refused. [`linger_after_refusal`] closes the way a web
//! server's lingering close does: it sends its FIN after the alert, then reads and drops
//! what the client still sends until the client closes (it does once it has read the
//! alert), a second has passed or 1 MiB has come, and only then closes the socket.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// How long a refused client may keep sending before the socket is closed.
const LINGER: Duration = Duration::from_secs(1);
/// How much a refused client may send before the socket is closed.
const LINGER_BYTES: usize = 1 << 20;
/// How many refused connections linger at once; beyond that, one closes at once.
static LINGERING: Semaphore = Semaphore::const_new(64);

/// Closes `tcp`, whose TLS handshake the server refused after sending its alert, so that
/// the client reads the alert: see the module's documentation.
pub async fn linger_after_refusal(mut tcp: TcpStream) {
    let Ok(_permit) = LINGERING.try_acquire() else {
        return;
    };
    if tcp.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut sink = [0u8; 16 * 1024];
        let mut read = 0;
        while read < LINGER_BYTES {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => read += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}
