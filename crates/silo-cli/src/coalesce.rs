//! A client connection's writes, gathered into one `write` per scheduler round.
//!
//! The HTTP/2 client writes a request's HEADERS and its DATA in two flushes: the body may
//! only be sent once the stream is open, and the stream opens when the connection task
//! writes the HEADERS. Each flush was a TLS record of its own in a `write` of its own, so
//! the server woke for the HEADERS alone, and again for the DATA a moment later (often
//! preempting the client in between). [`Coalesced`] holds a flush back for one turn of the
//! runtime: the tasks already woken (the body's) run first, and what they write goes out
//! in the same `write`. A flush is never held back twice in a row, so nothing waits for
//! more than one turn.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Gathered bytes past this are written out before more are taken.
const LIMIT: usize = 64 * 1024;

/// `S` with writes gathered until a flush that has waited one turn.
#[derive(Debug)]
pub struct Coalesced<S> {
    inner: S,
    /// Taken by `poll_write`, not yet written to `inner`.
    pending: Vec<u8>,
    /// How much of `pending` `inner` has taken.
    written: usize,
    /// Whether the last flush was held back (the next one is not).
    held: bool,
}

impl<S> Coalesced<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Coalesced<S> {
        Coalesced {
            inner,
            pending: Vec::new(),
            written: 0,
            held: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Writes out what was gathered; `Ready(Ok)` once `inner` has taken all of it.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n = std::task::ready!(
                Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.pending.len() >= LIMIT {
            std::task::ready!(self.drain(cx))?;
        }
        self.pending.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.pending.is_empty() {
            self.held = false;
            return Pin::new(&mut self.inner).poll_flush(cx);
        }
        if !self.held {
            // One turn for the tasks already woken to add theirs; this one is polled
            // again right after them.
            self.held = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        std::task::ready!(self.drain(cx))?;
        self.held = false;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// A sink that records each write it is given and takes at most `max` bytes at once.
    #[derive(Clone, Default)]
    struct Sink {
        writes: Arc<Mutex<Vec<Vec<u8>>>>,
        max: usize,
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.max);
            self.writes.lock().unwrap().push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn what_another_task_writes_in_the_same_turn_goes_out_in_one_write() {
        let sink = Sink {
            max: usize::MAX,
            ..Sink::default()
        };
        let writes = sink.writes.clone();
        let shared = Arc::new(Mutex::new(Coalesced::new(sink)));
        // The "connection" writes the HEADERS and flushes; the "body" task, woken in the
        // meantime, writes the DATA before the connection is polled again.
        let conn = shared.clone();
        let connection = tokio::spawn(async move {
            std::future::poll_fn(|cx| {
                Pin::new(&mut *conn.lock().unwrap()).poll_write(cx, b"HEADERS")
            })
            .await
            .unwrap();
            std::future::poll_fn(|cx| Pin::new(&mut *conn.lock().unwrap()).poll_flush(cx))
                .await
                .unwrap();
        });
        let data = shared.clone();
        let body = tokio::spawn(async move {
            std::future::poll_fn(|cx| Pin::new(&mut *data.lock().unwrap()).poll_write(cx, b"DATA"))
                .await
                .unwrap();
        });
        connection.await.unwrap();
        body.await.unwrap();
        assert_eq!(*writes.lock().unwrap(), vec![b"HEADERSDATA".to_vec()]);
    }

    #[tokio::test]
    async fn a_lone_flush_waits_one_turn_and_partial_writes_lose_nothing() {
        let sink = Sink {
            max: 3,
            ..Sink::default()
        };
        let writes = sink.writes.clone();
        let mut c = Coalesced::new(sink);
        c.write_all(b"0123456789").await.unwrap();
        assert!(
            writes.lock().unwrap().is_empty(),
            "written before the flush"
        );
        c.flush().await.unwrap();
        assert_eq!(writes.lock().unwrap().concat(), b"0123456789".to_vec());
        // The next flush with nothing new gathered is not held back.
        c.flush().await.unwrap();
        c.write_all(b"ab").await.unwrap();
        c.shutdown().await.unwrap();
        assert_eq!(writes.lock().unwrap().concat(), b"0123456789ab".to_vec());
    }

    #[tokio::test]
    async fn more_than_the_limit_is_written_before_more_is_taken() {
        let sink = Sink {
            max: usize::MAX,
            ..Sink::default()
        };
        let writes = sink.writes.clone();
        let mut c = Coalesced::new(sink);
        let big = vec![7u8; LIMIT];
        c.write_all(&big).await.unwrap();
        c.write_all(b"x").await.unwrap();
        assert_eq!(writes.lock().unwrap().len(), 1, "the first 64 KiB went out");
        c.flush().await.unwrap();
        assert_eq!(writes.lock().unwrap().concat().len(), LIMIT + 1);
    }
}
