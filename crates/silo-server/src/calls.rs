//! The calls the server serves at once, streams included.
//!
//! Every call holds a permit from the moment it arrives until its response body is
//! dropped: for a stream (WatchJob, StreamLogs, WatchWorkflow, StreamStats, ...) that is
//! when it ends or its client goes away. Each open call is a task and buffers, and a client
//! with a certificate (a viewer too) may open as many as its connections carry; past
//! `--max-calls` a call is answered ResourceExhausted at once, naming the bound.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits the calls of the service it wraps to `max` at once.
#[derive(Clone)]
pub struct CallLimitLayer {
    permits: Arc<Semaphore>,
    max: usize,
}

impl CallLimitLayer {
    /// At most `max` calls at once.
    pub fn new(max: usize) -> CallLimitLayer {
        CallLimitLayer {
            permits: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
        }
    }
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
        let Ok(permit) = self.limit.permits.clone().try_acquire_owned() else {
            let refused: http::Response<R> = tonic::Status::resource_exhausted(format!(
                "the server is serving {} calls at once (--max-calls); try again later",
                self.limit.max
            ))
            .into_http();
            let (parts, body) = refused.into_parts();
            let response = http::Response::from_parts(
                parts,
                HeldBody {
                    inner: body,
                    _permit: None,
                },
            );
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
                },
            ))
        })
    }
}

/// A response body that holds its call's permit until it is dropped.
pub struct HeldBody<B> {
    inner: B,
    _permit: Option<OwnedSemaphorePermit>,
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
