//! Prometheus metrics end to end: the text `promtool check metrics` accepts, counters that
//! move by exactly the jobs launched while scrapes run beside them, per-job series only
//! while the job runs, and no endpoint unless asked.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use silo_proto::v1::{JobState, StopJobRequest};

/// A server with `--metrics-listen 127.0.0.1:0`, and where its metrics are.
fn server_with_metrics() -> (TestServer, String) {
    server_with_metrics_and(&[])
}

/// As [`server_with_metrics`], with more server flags.
fn server_with_metrics_and(extra: &[&str]) -> (TestServer, String) {
    let mut args = vec!["--default-disk", "0", "--metrics-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let server = TestServer::start_with(&args);
    let log = server.server_log();
    let addr = log
        .split("metrics at http://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .unwrap_or_else(|| panic!("no metrics address in the server's log:\n{log}"))
        .to_owned();
    (server, addr)
}

/// GET /metrics: the status line and the body.
fn scrape(addr: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_owned();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    (status, body.to_owned())
}

/// The value of the series `name` with exactly `labels` (in any order), if present.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeSet<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, v) = line.rsplit_once(' ')?;
            let (n, have) = match series.split_once('{') {
                Some((n, rest)) => (
                    n,
                    rest.trim_end_matches('}')
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect::<BTreeSet<String>>(),
                ),
                None => (series, BTreeSet::new()),
            };
            (n == name && have == want).then(|| v.parse().ok())?
        })
}

fn counter(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(text, name, labels).unwrap_or(0.0)
}

const RUN_JOB: &str = "/silo.v1.JobService/RunJob";

#[tokio::test]
async fn the_metrics_pass_promtool_and_count_200_launches_exactly_while_scraped() {
    if !privileged() {
        return;
    }
    let (server, addr) = server_with_metrics();
    let mut admin = server.admin().await;
    // Every kind of series present at least once: a job that ran, one still running.
    let first = run(&mut admin, &["true"]).await;
    wait_end(&mut admin, &first.id).await;
    let sleeper = run(&mut admin, &["sleep", "60"]).await;

    let (status, before) = scrape(&addr);
    assert!(status.contains("200"), "{status}");
    promtool_accepts(&before);
    let job_label = [("job", sleeper.id.as_str())];
    assert!(
        value(&before, "silo_job_memory_bytes", &job_label).is_some(),
        "{before}"
    );
    assert!(
        value(&before, "silo_job_cpu_seconds_total", &job_label).is_some(),
        "{before}"
    );
    assert_eq!(
        value(&before, "silo_jobs_running", &[]),
        Some(1.0),
        "{before}"
    );
    assert!(value(&before, "silo_process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(value(&before, "silo_process_open_fds", &[]).unwrap() > 3.0);
    assert!(value(&before, "silo_ready_inits", &[]).is_some());

    // 200 launches, 8 at a time, with a scraper beside them that sees counters only grow.
    let scraping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let scraper = {
        let scraping = scraping.clone();
        let addr = addr.clone();
        std::thread::spawn(move || {
            let mut last = 0.0;
            let mut scrapes = 0;
            while scraping.load(std::sync::atomic::Ordering::Relaxed) {
                let (_, text) = scrape(&addr);
                let started = counter(&text, "silo_jobs_started_total", &[]);
                assert!(
                    started >= last,
                    "silo_jobs_started_total went from {last} to {started}"
                );
                last = started;
                scrapes += 1;
            }
            scrapes
        })
    };
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let mut client = server.admin().await;
        tasks.spawn(async move {
            for _ in 0..25 {
                let job = run(&mut client, &["true"]).await;
                let job = wait_end(&mut client, &job.id).await;
                assert_eq!(
                    job.state,
                    JobState::Completed as i32,
                    "worker {worker}: {job:?}"
                );
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    scraping.store(false, std::sync::atomic::Ordering::Relaxed);
    let scrapes = scraper.join().unwrap();
    assert!(scrapes > 0);

    let (_, after) = scrape(&addr);
    promtool_accepts(&after);
    let delta = |name: &str, labels: &[(&str, &str)]| {
        counter(&after, name, labels) - counter(&before, name, labels)
    };
    assert_eq!(delta("silo_jobs_started_total", &[]), 200.0);
    assert_eq!(
        delta(
            "silo_jobs_ended_total",
            &[("state", "completed"), ("cause", "exited")]
        ),
        200.0
    );
    assert_eq!(delta("silo_launch_seconds_count", &[]), 200.0);
    assert_eq!(
        delta(
            "silo_grpc_requests_total",
            &[("method", RUN_JOB), ("code", "Ok")]
        ),
        200.0
    );

    // A job's series go with it.
    admin
        .stop_job(StopJobRequest {
            id: sleeper.id.clone(),
            grace_ms: 1,
        })
        .await
        .unwrap();
    wait_end(&mut admin, &sleeper.id).await;
    let (_, last) = scrape(&addr);
    assert_eq!(value(&last, "silo_job_memory_bytes", &job_label), None);
    assert_eq!(value(&last, "silo_jobs_running", &[]), Some(0.0));
    assert_eq!(
        delta_of(
            &before,
            &last,
            "silo_jobs_ended_total",
            &[("state", "stopped"), ("cause", "stopped")]
        ),
        1.0
    );
}

fn delta_of(before: &str, after: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    counter(after, name, labels) - counter(before, name, labels)
}

#[tokio::test]
async fn a_refused_call_is_counted_under_its_method_and_code() {
    if !privileged() {
        return;
    }
    let (server, addr) = server_with_metrics();
    let mut viewer = server.client("viewer").await;
    let refused = viewer
        .run_job(silo_proto::v1::RunJobRequest {
            spec: Some(spec(&["true"])),
            uploads: vec![],
            start_at: None,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let (_, text) = scrape(&addr);
    assert_eq!(
        value(
            &text,
            "silo_grpc_requests_total",
            &[("method", RUN_JOB), ("code", "PermissionDenied")]
        ),
        Some(1.0),
        "{text}"
    );
    promtool_accepts(&text);
}

#[tokio::test]
async fn launches_without_a_ready_init_are_counted_as_pool_misses() {
    if !privileged() {
        return;
    }
    // No pool: every launch prepares its init on its path.
    let (server, addr) = server_with_metrics_and(&["--ready-inits", "0"]);
    let mut c = server.admin().await;
    for _ in 0..3 {
        let job = run(&mut c, &["true"]).await;
        wait_end(&mut c, &job.id).await;
    }
    let (_, text) = scrape(&addr);
    assert_eq!(
        value(&text, "silo_ready_pool_misses_total", &[]),
        Some(3.0),
        "{text}"
    );
    promtool_accepts(&text);
}

#[test]
fn without_the_flag_there_is_no_metrics_endpoint() {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(&["--default-disk", "0"]);
    assert!(!server.server_log().contains("metrics at"));
}

/// `promtool check metrics` accepts `text` (Debian's `prometheus` package has promtool).
fn promtool_accepts(text: &str) {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            let message = format!(
                "SKIPPED: promtool cannot run ({e}); apt-get install prometheus to check the metrics format"
            );
            eprintln!("{message}");
            assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool refused the metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
