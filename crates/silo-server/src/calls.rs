//! The calls the server serves at once, streams included.
//!
//! Every call holds a permit from the moment it arrives until its response body is
//! dropped: for a stream (WatchJob, StreamLogs, WatchWorkflow, StreamStats, ...) that is
//! when it ends or its client goes away. Each open call is a task and buffers (and an
//! answer its client does not read stays in memory), and a client with a certificate (a
//! viewer too) may open as many as its connections carry; past `--max-calls` a call is
//! answered ResourceExhausted at once, naming the bound. One client certificate may hold
//! at most `--max-calls-per-client` of them, so that one client (a leaked viewer
//! certificate, a dashboard gone wrong) cannot take every place from the others, nor hold
//! more than that share of the server's memory in answers it never reads.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::Caller;

/// Limits the calls of the service it wraps to `max` at once, and to `per_client` of one
/// client certificate.
#[derive(Clone)]
pub struct CallLimitLayer {
    permits: Arc<Semaphore>,
    max: usize,
    per_client: usize,
    /// The calls each client certificate (by serial number) has open.
    clients: Arc<Mutex<HashMap<Vec<u8>, usize>>>,
}

impl CallLimitLayer {
    /// At most `max` calls at once, and `per_client` of one certificate.
    pub fn new(max: usize, per_client: usize) -> CallLimitLayer {
        CallLimitLayer {
            permits: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
            per_client,
            clients: Arc::default(),
        }
    }

    /// A place for one more call of the client `serial`, or none when it has its share.
    fn enter(&self, serial: &[u8]) -> Option<ClientCall> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let open = clients.entry(serial.to_vec()).or_insert(0);
        if *open >= self.per_client {
            return None;
        }
        *open += 1;
        Some(ClientCall {
            clients: self.clients.clone(),
            serial: serial.to_vec(),
        })
    }
}

/// One open call of a client, counted until it is dropped.
struct ClientCall {
    clients: Arc<Mutex<HashMap<Vec<u8>, usize>>>,
    serial: Vec<u8>,
}

impl Drop for ClientCall {
    fn drop(&mut self) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = clients.get_mut(&self.serial) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                clients.remove(&self.serial);
            }
        }
    }
}

/// A ResourceExhausted answer with `message`, holding nothing.
fn refused<R: Default>(message: String) -> http::Response<HeldBody<R>> {
    let refused: http::Response<R> = tonic::Status::resource_exhausted(message).into_http();
    let (parts, body) = refused.into_parts();
    http::Response::from_parts(
        parts,
        HeldBody {
            inner: body,
            _permit: None,
            _client: None,
        },
    )
}

impl<S> tower::Layer<S> for CallLimitLayer {
    type Service = CallLimit<S>;
    fn layer(&self, inner: S) -> CallLimit<S> {
        CallLimit {
            inner,
            limit: self.clone(),
        }
    }
}

/// See [`CallLimitLayer`].
#[derive(Clone)]
pub struct CallLimit<S> {
    inner: S,
    limit: CallLimitLayer,
}

impl<S, B, R> tower::Service<http::Request<B>> for CallLimit<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: http_body::Body + Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<HeldBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The certificate the connection was made with (an unreadable one: one client).
        let identity = request
            .extensions()
            .get::<Caller>()
            .and_then(|caller| caller.identity.as_ref());
        let serial = identity.map_or(&[][..], |id| id.serial.as_slice());
        let Ok(permit) = self.limit.permits.clone().try_acquire_owned() else {
            let response = refused(format!(
                "the server is serving {} calls at once (--max-calls); try again later",
                self.limit.max
            ));
            return Box::pin(async move { Ok(response) });
        };
        let Some(client) = self.limit.enter(serial) else {
            let name = identity.map_or("this client", |id| id.common_name.as_str());
            let response = refused(format!(
                "{name} has {} calls open at once (--max-calls-per-client); close some or \
                 try again later",
                self.limit.per_client
            ));
            return Box::pin(async move { Ok(response) });
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let (parts, body) = future.await?.into_parts();
            Ok(http::Response::from_parts(
                parts,
                HeldBody {
                    inner: body,
                    _permit: Some(permit),
                    _client: Some(client),
                },
            ))
        })
    }
}

/// A response body that holds its call's places until it is dropped.
pub struct HeldBody<B> {
    inner: B,
    _permit: Option<OwnedSemaphorePermit>,
    _client: Option<ClientCall>,
}

impl<B: http_body::Body + Unpin> http_body::Body for HeldBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
