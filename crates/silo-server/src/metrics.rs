//! Prometheus metrics, served at `/metrics` on `--metrics-listen` (off unless asked).
//!
//! Events (jobs started and ended, launch latency, log bytes, gRPC requests, workflows,
//! schedule firings) are counted where they happen through the `metrics` facade; without
//! `--metrics-listen` no recorder is installed and those calls do nothing. What is true now
//! (running jobs, the ready pool, the server's memory and descriptors, each running job's
//! cpu and memory) is read when a scrape arrives, so a job's series exist only while it runs
//! and the `job` label stays bounded by the running jobs.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tokio::net::TcpListener;

use crate::ServerError;
use crate::jobs::JobManager;

/// Launch latency (RunJob to the command running), seconds.
pub const LAUNCH_SECONDS: &str = "silo_launch_seconds";
/// How late a scheduled job's command started after its instant, seconds.
pub const SCHEDULE_LATENESS_SECONDS: &str = "silo_schedule_lateness_seconds";
/// Jobs whose command started.
pub const JOBS_STARTED: &str = "silo_jobs_started_total";
/// Jobs that ended, by state and end cause.
pub const JOBS_ENDED: &str = "silo_jobs_ended_total";
/// Bytes of output jobs wrote to their logs (counted when a job ends).
pub const LOG_BYTES: &str = "silo_log_bytes_total";
/// gRPC requests answered, by method and code.
pub const GRPC_REQUESTS: &str = "silo_grpc_requests_total";
/// Workflows submitted.
pub const WORKFLOWS_STARTED: &str = "silo_workflows_started_total";
/// Workflows that ended, by state.
pub const WORKFLOWS_ENDED: &str = "silo_workflows_ended_total";
/// Firings of cron schedules, by outcome (started, skipped, failed).
pub const SCHEDULE_FIRINGS: &str = "silo_schedule_firings_total";
/// Launches that found no fitting ready init and prepared one on their path.
pub const READY_POOL_MISSES: &str = "silo_ready_pool_misses_total";
/// Waits of a store write for another connection's write (50 µs, later 1 ms, each).
pub const STORE_BUSY_WAITS: &str = "silo_store_busy_waits_total";

const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Installs the recorder and serves `/metrics` on `addr`; returns the bound address.
pub async fn serve(addr: SocketAddr, jobs: JobManager) -> Result<SocketAddr, ServerError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(LAUNCH_SECONDS.into()), &LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(SCHEDULE_LATENESS_SECONDS.into()),
                &LATENCY_BUCKETS,
            )
        })
        .map(PrometheusBuilder::build_recorder)
        .map_err(|e| ServerError::Host(format!("cannot set up the metrics recorder: {e}")))?;
    let gate = Arc::new(RwLock::new(()));
    let handle = Drained {
        handle: recorder.handle(),
        gate: gate.clone(),
    };
    metrics::set_global_recorder(Gated {
        inner: recorder,
        gate,
    })
    .map_err(|e| ServerError::Host(format!("cannot set up the metrics recorder: {e}")))?;
    // Histogram values wait in the exporter until they are drained: at each scrape, and
    // here, so that a server nobody scrapes does not keep every value it ever recorded.
    tokio::spawn({
        let handle = handle.clone();
        async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                every.tick().await;
                handle.upkeep();
            }
        }
    });
    describe();
    // Every series that counts from zero is there from the first scrape.
    metrics::counter!(JOBS_STARTED).absolute(0);
    metrics::counter!(LOG_BYTES).absolute(0);
    metrics::counter!(WORKFLOWS_STARTED).absolute(0);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| ServerError::Host(format!("cannot listen on {addr} for metrics: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| ServerError::Host(format!("cannot read the metrics address: {e}")))?;
    // Renders one at a time: a scrape walks every live job on a blocking thread, and the
    // endpoint has no authentication, so scrapes in a loop from anyone who can reach it
    // must not take the blocking pool that jobs' preparations need.
    let rendering = Arc::new(tokio::sync::Semaphore::new(1));
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            let jobs = jobs.clone();
            let rendering = rendering.clone();
            async move {
                let body = match rendering.acquire_owned().await {
                    Ok(permit) => tokio::task::spawn_blocking(move || {
                        let body = render(&handle, &jobs);
                        drop(permit);
                        body
                    })
                    .await
                    .unwrap_or_default(),
                    Err(_) => String::new(),
                };
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the metrics listener stopped: {e}");
        }
    });
    tracing::info!("metrics at http://{bound}/metrics");
    Ok(bound)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_histogram};
    describe_histogram!(
        LAUNCH_SECONDS,
        Unit::Seconds,
        "Time from RunJob's arrival to the job's command running."
    );
    describe_histogram!(
        SCHEDULE_LATENESS_SECONDS,
        Unit::Seconds,
        "Time from a scheduled job's instant to its command running."
    );
    describe_counter!(JOBS_STARTED, "Jobs whose command started.");
    describe_counter!(JOBS_ENDED, "Jobs that ended, by final state and end cause.");
    describe_counter!(
        LOG_BYTES,
        Unit::Bytes,
        "Bytes of job log files (output with its record framing), counted when each job ends."
    );
    describe_counter!(
        GRPC_REQUESTS,
        "gRPC requests answered, by method and status code."
    );
    describe_counter!(WORKFLOWS_STARTED, "Workflows submitted.");
    describe_counter!(WORKFLOWS_ENDED, "Workflows that ended, by final state.");
    describe_counter!(
        READY_POOL_MISSES,
        "Launches that found no fitting ready init and prepared one on their path."
    );
    describe_counter!(
        STORE_BUSY_WAITS,
        "Waits of a store write for another write to end (50 us each, after 2 ms 1 ms each)."
    );
    describe_counter!(
        SCHEDULE_FIRINGS,
        "Firings of cron schedules, by outcome (started, skipped, failed)."
    );
}

/// How often recorded histogram values are drained into their histograms.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The exporter's recorder, with histogram values recorded under a shared lock that a drain
/// takes exclusively. The exporter keeps each value in a lock-free bucket until a render or
/// an upkeep drains it, and a value recorded while a drain runs could be lost
/// (metrics-util's `AtomicBucket`: a push that loaded the bucket before the drain swapped it
/// out writes into the block being drained, after it was read); CI saw
/// `silo_launch_seconds_count` one short of the launches while a scraper ran.
struct Gated {
    inner: PrometheusRecorder,
    gate: Arc<RwLock<()>>,
}

impl Recorder for Gated {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(GatedHistogram {
            inner: self.inner.register_histogram(key, metadata),
            gate: self.gate.clone(),
        }))
    }
}

/// A histogram of [`Gated`].
struct GatedHistogram {
    inner: Histogram,
    gate: Arc<RwLock<()>>,
}

impl HistogramFn for GatedHistogram {
    fn record(&self, value: f64) {
        let _shared = self.gate.read().unwrap_or_else(PoisonError::into_inner);
        self.inner.record(value);
    }
}

/// The exporter's handle; it drains histogram values only while no value is recorded.
#[derive(Clone)]
struct Drained {
    handle: PrometheusHandle,
    gate: Arc<RwLock<()>>,
}

impl Drained {
    fn render(&self) -> String {
        let _exclusive = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        self.handle.render()
    }

    fn upkeep(&self) {
        let _exclusive = self.gate.write().unwrap_or_else(PoisonError::into_inner);
        self.handle.run_upkeep();
    }
}

/// The exporter's series, then what is read now.
fn render(handle: &Drained, jobs: &JobManager) -> String {
    let mut out = handle.render();
    let running = jobs.running_cpu_and_memory();
    gauge(
        &mut out,
        "silo_jobs_running",
        "Jobs whose command is running now.",
        &[(None, running.len() as f64)],
    );
    gauge(
        &mut out,
        "silo_ready_inits",
        "Inits waiting in the ready pool for a job.",
        &[(None, jobs.ready_count() as f64)],
    );
    if let Some(rss) = own_rss_bytes() {
        gauge(
            &mut out,
            "silo_process_resident_memory_bytes",
            "The server's resident memory.",
            &[(None, rss as f64)],
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            &mut out,
            "silo_process_open_fds",
            "Descriptors the server has open.",
            &[(None, fds.count() as f64)],
        );
    }
    let cpu: Vec<(Option<&str>, f64)> = running
        .iter()
        .filter_map(|j| {
            let u = j.usage.as_ref()?;
            Some((Some(j.id.as_str()), u.cpu_usec? as f64 / 1e6))
        })
        .collect();
    family(
        &mut out,
        "silo_job_cpu_seconds_total",
        "counter",
        "CPU time used by each running job.",
        &cpu,
    );
    let memory: Vec<(Option<&str>, f64)> = running
        .iter()
        .filter_map(|j| {
            let u = j.usage.as_ref()?;
            Some((Some(j.id.as_str()), u.memory_current_bytes? as f64))
        })
        .collect();
    gauge(
        &mut out,
        "silo_job_memory_bytes",
        "Memory used by each running job now.",
        &memory,
    );
    out
}

fn gauge(out: &mut String, name: &str, help: &str, samples: &[(Option<&str>, f64)]) {
    family(out, name, "gauge", help, samples);
}

/// One family in the text format. The only label is `job`, a job id (hex), which needs
/// no escaping.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(Option<&str>, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (job, value) in samples {
        match job {
            Some(id) => {
                let _ = writeln!(out, "{name}{{job=\"{id}\"}} {value}");
            }
            None => {
                let _ = writeln!(out, "{name} {value}");
            }
        }
    }
}

fn own_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// A tower layer that counts every gRPC request by method and status code.
#[derive(Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: http_body::Body,
{
    type Response = http::Response<CountedBody<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let (parts, body) = response.into_parts();
            // A status in the headers is a trailers-only answer (an error, or an unknown
            // method); otherwise the code arrives in the trailers.
            let mut counted = CountedBody {
                inner: body,
                method: Some(method),
            };
            if let Some(code) = grpc_status(&parts.headers) {
                counted.record(code);
            }
            Ok(http::Response::from_parts(parts, counted))
        })
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<tonic::Code> {
    let value = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<i32>()
        .ok()?;
    Some(tonic::Code::from_i32(value))
}

/// A response body that records its request once its gRPC status is known.
pub struct CountedBody<B> {
    inner: B,
    /// The request's path until it is recorded.
    method: Option<String>,
}

impl<B> CountedBody<B> {
    fn record(&mut self, code: tonic::Code) {
        if let Some(path) = self.method.take() {
            // Only methods that exist get a label of their own: a client cannot grow the
            // label set by asking for paths that do not.
            let method = if code == tonic::Code::Unimplemented || !known_method(&path) {
                "other".to_owned()
            } else {
                path
            };
            metrics::counter!(GRPC_REQUESTS, "method" => method, "code" => format!("{code:?}"))
                .increment(1);
        }
    }
}

/// Whether `path` is `/package.Service/Method` of a package the server serves.
fn known_method(path: &str) -> bool {
    const PACKAGES: [&str; 3] = ["silo.v1.", "grpc.health.v1.", "grpc.reflection."];
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return false;
    };
    PACKAGES.iter().any(|p| service.starts_with(p))
        && !method.is_empty()
        && path.len() < 100
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "./_".contains(c))
}

impl<B> Drop for CountedBody<B> {
    fn drop(&mut self) {
        // Dropped before its trailers: the client went away (or the stream broke).
        self.record(tonic::Code::Cancelled);
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    this.record(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.record(tonic::Code::Internal),
            Poll::Ready(None) => this.record(tonic::Code::Ok),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A proto enum value's name for a label: `JOB_STATE_COMPLETED` -> `completed`.
pub fn short_name(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count of a histogram in `text`.
    fn count_of(text: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix("h_count "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0.0)
    }

    /// Four threads record 50,000 values each while another renders without pause: every
    /// value is in the last render's count.
    #[test]
    fn no_histogram_value_is_lost_to_a_render_running_beside_it() {
        const THREADS: usize = 4;
        const EACH: usize = 50_000;
        let recorder = PrometheusBuilder::new()
            .set_buckets(&LATENCY_BUCKETS)
            .unwrap()
            .build_recorder();
        let gate = Arc::new(RwLock::new(()));
        let drained = Drained {
            handle: recorder.handle(),
            gate: gate.clone(),
        };
        let gated = Arc::new(Gated {
            inner: recorder,
            gate,
        });
        let key = Key::from_name("h");
        let metadata = Metadata::new("test", metrics::Level::INFO, None);
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let renderer = std::thread::spawn({
            let (drained, done) = (drained.clone(), done.clone());
            move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    drained.render();
                }
            }
        });
        let writers: Vec<_> = (0..THREADS)
            .map(|_| {
                let histogram = gated.register_histogram(&key, &metadata);
                std::thread::spawn(move || {
                    for _ in 0..EACH {
                        histogram.record(0.004);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        renderer.join().unwrap();
        assert_eq!(count_of(&drained.render()), (THREADS * EACH) as f64);
    }
}
