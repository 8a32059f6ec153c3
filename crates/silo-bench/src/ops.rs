//! Operations: how late a per-second cron schedule's jobs start, and how long a Prometheus
//! scrape takes while many jobs run.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use silo_proto::v1::schedule_service_client::ScheduleServiceClient;
use silo_proto::v1::{
    CreateScheduleRequest, DeleteScheduleRequest, JobSpec, ListJobsRequest, RunJobRequest,
    StopJobRequest,
};

use crate::client;
use crate::measure::{nearest_rank, round};

fn micros(t: &Option<prost_types::Timestamp>) -> Option<i64> {
    t.as_ref()
        .map(|t| t.seconds * 1_000_000 + i64::from(t.nanos) / 1000)
}

/// A schedule `* * * * * *` (every second) of /bin/true, until `firings` of its jobs have
/// started; lateness = started_at - scheduled_at of each (the server's clock).
pub async fn schedule_lateness(config: &Path, firings: usize) -> Result<Value> {
    let channel = client::channel(config).await?;
    let mut schedules = ScheduleServiceClient::new(channel.clone());
    let mut jobs = silo_cli::connect::job_client(channel);
    let schedule = schedules
        .create_schedule(CreateScheduleRequest {
            spec: Some(JobSpec {
                command: vec!["/bin/true".into()],
                ..Default::default()
            }),
            cron: "* * * * * *".into(),
            ..Default::default()
        })
        .await
        .context("CreateSchedule")?
        .into_inner();
    let deadline = Instant::now() + Duration::from_secs(firings as u64 * 2 + 30);
    let mut late = Vec::new();
    let outcome = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut page_token = String::new();
        late.clear();
        loop {
            let page = jobs
                .list_jobs(ListJobsRequest {
                    schedule_id: schedule.id.clone(),
                    page_size: 1000,
                    page_token: page_token.clone(),
                    ..Default::default()
                })
                .await
                .context("ListJobs")?
                .into_inner();
            for job in &page.jobs {
                if let (Some(started), Some(due)) =
                    (micros(&job.started_at), micros(&job.scheduled_at))
                {
                    late.push((due, started - due));
                }
            }
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        if late.len() >= firings {
            break Ok(());
        }
        if Instant::now() > deadline {
            break Err(anyhow::anyhow!(
                "only {} of {firings} firings started in time",
                late.len()
            ));
        }
    };
    let _ = schedules
        .delete_schedule(DeleteScheduleRequest {
            id: schedule.id.clone(),
        })
        .await;
    outcome?;
    // The first `firings` firings, by their instants.
    late.sort_unstable();
    late.truncate(firings);
    let mut late: Vec<i64> = late.into_iter().map(|(_, l)| l).collect();
    late.sort_unstable();
    let ms = |us: i64| round(us as f64 / 1e3);
    Ok(json!({
        "runs": late.len(),
        "p50_ms": ms(nearest_rank(&late, 0.50)),
        "p99_ms": ms(nearest_rank(&late, 0.99)),
        "max_ms": ms(*late.last().unwrap_or(&0)),
    }))
}

/// Starts `jobs` sleeping jobs, then times `scrapes` GETs of http://`addr`/metrics; stops
/// the jobs after.
pub async fn metrics_scrape(
    config: &Path,
    addr: &str,
    jobs: usize,
    scrapes: usize,
) -> Result<Value> {
    let channel = client::channel(config).await?;
    let mut started = Vec::with_capacity(jobs);
    let mut tasks = tokio::task::JoinSet::new();
    let workers = 8.min(jobs.max(1));
    for w in 0..workers {
        let mut client = silo_cli::connect::job_client(channel.clone());
        let n = jobs / workers + usize::from(w < jobs % workers);
        tasks.spawn(async move {
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                let job = client
                    .run_job(RunJobRequest {
                        spec: Some(JobSpec {
                            command: vec!["sleep".into(), "3600".into()],
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner().id);
                match job {
                    Ok(id) => ids.push(id),
                    Err(e) => return (ids, Some(e)),
                }
            }
            (ids, None)
        });
    }
    let mut failure = None;
    while let Some(done) = tasks.join_next().await {
        let (ids, err) = done.context("a launcher panicked")?;
        started.extend(ids);
        failure = failure.or(err);
    }
    let measured = match failure {
        Some(e) => Err(anyhow::anyhow!(
            "RunJob failed after {} jobs: {}",
            started.len(),
            e.message()
        )),
        None => {
            let addr = addr.to_owned();
            tokio::task::spawn_blocking(move || time_scrapes(&addr, scrapes))
                .await
                .context("the scraper panicked")?
        }
    };
    let mut client = silo_cli::connect::job_client(channel);
    for id in &started {
        let _ = client
            .stop_job(StopJobRequest {
                id: id.clone(),
                grace_ms: 1,
            })
            .await;
    }
    let (samples, bytes, series) = measured?;
    Ok(json!({
        "jobs": started.len(),
        "body_bytes": bytes,
        "job_series": series,
        "runs": samples.len(),
        "p50_ms": round(nearest_rank(&samples, 0.50)),
        "p95_ms": round(nearest_rank(&samples, 0.95)),
    }))
}

/// Scrape times in ms (sorted), the last body's size and its per-job series.
fn time_scrapes(addr: &str, scrapes: usize) -> Result<(Vec<f64>, usize, usize)> {
    let mut samples = Vec::with_capacity(scrapes);
    let mut last = String::new();
    for _ in 0..scrapes.max(1) {
        let t0 = Instant::now();
        let body = get_metrics(addr)?;
        samples.push(t0.elapsed().as_secs_f64() * 1e3);
        last = body;
    }
    samples.sort_by(f64::total_cmp);
    let series = last
        .lines()
        .filter(|l| l.starts_with("silo_job_memory_bytes{"))
        .count();
    Ok((samples, last.len(), series))
}

/// The value of the counter or gauge `name` (without labels) in a /metrics `body`.
pub fn metric_value(body: &str, name: &str) -> Option<f64> {
    body.lines().find_map(|line| {
        let (key, value) = line.split_once(' ')?;
        (key == name).then(|| value.trim().parse().ok())?
    })
}

/// The body of GET /metrics on a fresh connection (as Prometheus scrapes).
pub fn get_metrics(addr: &str) -> Result<String> {
    let mut stream =
        std::net::TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!("not an HTTP response from {addr}");
    };
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::metric_value;

    #[test]
    fn a_metric_is_read_by_its_whole_name_without_labels() {
        let body = "# TYPE silo_ready_pool_misses_total counter\n\
                    silo_ready_pool_misses_total_x 9\n\
                    silo_ready_pool_misses_total 44\n\
                    silo_launch_seconds_bucket{le=\"0.001\"} 3\n";
        assert_eq!(
            metric_value(body, "silo_ready_pool_misses_total"),
            Some(44.0)
        );
        assert_eq!(metric_value(body, "silo_launch_seconds_bucket"), None);
        assert_eq!(metric_value(body, "silo_jobs_started_total"), None);
    }
}
