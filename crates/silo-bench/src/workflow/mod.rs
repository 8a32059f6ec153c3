//! Workflows on one server: how soon a job starts after the job it needs has ended (over a
//! chain, from the server's own timestamps), how fast a wide fan-out under `max_parallel`
//! runs with every job run exactly once, and the server's memory per workflow node.

pub mod shapes;
pub mod validate;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use prost_types::Timestamp;
use serde_json::{Map, Value, json};
use silo_proto::v1::job_service_client::JobServiceClient;
use silo_proto::v1::workflow_service_client::WorkflowServiceClient;
use silo_proto::v1::{
    DeleteWorkflowRequest, GetJobRequest, JobState, RunWorkflowRequest, WatchWorkflowRequest,
    Workflow, WorkflowJobState, WorkflowState,
};
use tonic::transport::Channel;

use crate::client;
use crate::measure::{nearest_rank, round, rss_kib};
use crate::runtime::rpc;

type Workflows = WorkflowServiceClient<Channel>;
type Jobs = JobServiceClient<Channel>;

/// How long the server is left alone before its RSS is read: the last job's end is still
/// being written when the workflow's final state arrives.
const SETTLE: Duration = Duration::from_millis(200);

/// The workflows [`on_server`] runs.
pub struct Shape {
    /// Jobs in the chain (at least 2: one edge).
    pub chain: usize,
    /// How long each job of the second, spaced chain runs (`sleep`), so that the host has
    /// finished the previous job's teardown and refilled its ready inits before each edge;
    /// 0: no spaced chain.
    pub spaced_ms: u64,
    /// Jobs that need the fan-out's root.
    pub fan_out: usize,
    /// The fan-out's `max_parallel`.
    pub max_parallel: u32,
    /// The server's metrics address, to count the chains' launches that found no ready
    /// init.
    pub metrics: Option<String>,
}

/// Runs a chain of `shape.chain` jobs, then a fan-out of one root and `shape.fan_out`
/// children under `max_parallel`, reading the RSS of the server `pid` before and after the
/// fan-out; then deletes both. Each result goes into `fields` as soon as it is known, so a
/// failure later on keeps what was measured before it.
pub async fn on_server(
    config: &Path,
    pid: u32,
    shape: &Shape,
    fields: &mut Map<String, Value>,
) -> Result<()> {
    ensure!(shape.chain >= 2, "--chain must be at least 2 (one edge)");
    ensure!(shape.fan_out >= 1, "--fan-out must be positive");
    ensure!(shape.max_parallel >= 1, "--max-parallel must be positive");
    let (mut workflows, mut jobs) = client::workflow_clients(config).await?;

    // The chain: each edge is a child's start minus its parent's end, both as the server
    // recorded them, so neither the client nor WatchWorkflow is part of it. Its jobs run
    // `true`: back to back, each edge meets the teardown of the job before and the ready
    // inits' refill on the same CPUs.
    let metrics = shape.metrics.as_deref();
    let chain = measure_chain(
        &mut workflows,
        &mut jobs,
        shape.chain,
        0,
        metrics,
        "",
        fields,
    )
    .await?;
    // The same with jobs that run a while: the edge on a host that has done the previous
    // job's work, as in a pipeline whose steps take longer than their launch.
    let spaced = match shape.spaced_ms {
        0 => None,
        ms => {
            let spaced = measure_chain(
                &mut workflows,
                &mut jobs,
                shape.chain,
                ms,
                metrics,
                "spaced_",
                fields,
            );
            Some(spaced.await?)
        }
    };

    // The fan-out, with the server's memory before and after it (the chain stays in the
    // store until the end, so its memory is not handed back to the fan-out).
    let nodes = shape.fan_out + 1;
    tokio::time::sleep(SETTLE).await;
    let rss_before = rss_kib(pid)?;
    let yaml = shapes::fan_out("bench-fan-out", shape.fan_out, shape.max_parallel);
    let (fan, wall) = run_to_end(&mut workflows, yaml).await?;
    tokio::time::sleep(SETTLE).await;
    let rss_after = rss_kib(pid)?;
    fields.insert("fan_out_wall_s".into(), json!(round(wall.as_secs_f64())));
    fields.insert(
        "fan_out_jobs_per_s".into(),
        json!(round(nodes as f64 / wall.as_secs_f64())),
    );
    if let (Some(created), Some(ended)) = (&fan.created_at, &fan.ended_at) {
        let server = (nanos(ended) - nanos(created)) as f64 / 1e9;
        fields.insert("fan_out_server_s".into(), json!(round(server)));
    }
    fields.insert("rss_before_kib".into(), json!(rss_before));
    fields.insert("rss_after_kib".into(), json!(rss_after));
    fields.insert(
        "rss_per_node_kib".into(),
        json!(round((rss_after as f64 - rss_before as f64) / nodes as f64)),
    );
    let spans = job_spans(&mut jobs, &fan, nodes).await?;
    let peak = peak_running(&spans);
    fields.insert("fan_out_peak_running".into(), json!(peak));
    ensure!(
        peak <= shape.max_parallel as usize,
        "{peak} of the fan-out's jobs ran at once, over its max_parallel of {}",
        shape.max_parallel
    );

    for workflow in [Some(chain), spaced, Some(fan)].into_iter().flatten() {
        workflows
            .delete_workflow(DeleteWorkflowRequest {
                id: workflow.id.clone(),
            })
            .await
            .map_err(|s| rpc("DeleteWorkflow", s))?;
    }
    Ok(())
}

/// RunWorkflow of `yaml`, then WatchWorkflow until its final state; fails unless it
/// COMPLETED. Returns it as it ended and the time from sending RunWorkflow to receiving
/// its final state.
async fn run_to_end(workflows: &mut Workflows, yaml: String) -> Result<(Workflow, Duration)> {
    let start = Instant::now();
    let first = workflows
        .run_workflow(RunWorkflowRequest {
            yaml,
            ..Default::default()
        })
        .await
        .map_err(|s| rpc("RunWorkflow", s))?
        .into_inner();
    let mut stream = workflows
        .watch_workflow(WatchWorkflowRequest {
            id: first.id.clone(),
        })
        .await
        .map_err(|s| rpc("WatchWorkflow", s))?
        .into_inner();
    let (mut last, mut ended) = (first, None);
    while let Some(update) = stream
        .message()
        .await
        .map_err(|s| rpc("WatchWorkflow", s))?
    {
        if ended.is_none() && update.state() != WorkflowState::Running {
            ended = Some(start.elapsed());
        }
        last = update;
    }
    let took = ended.with_context(|| {
        format!(
            "WatchWorkflow of {} ended while the workflow was {:?}",
            last.id,
            last.state()
        )
    })?;
    ensure!(
        last.state() == WorkflowState::Completed,
        "workflow {} ended {:?}: {}",
        last.id,
        last.state(),
        last.reason
    );
    Ok((last, took))
}

/// Runs a chain of `jobs` jobs, each running `true` (`run_ms` 0) or `sleep` for `run_ms`
/// ms, and puts its edges' quantiles into `fields` under `prefix` (with the server's
/// `metrics` address, also how many of its launches found no ready init); returns the
/// workflow.
async fn measure_chain(
    workflows: &mut Workflows,
    jobs: &mut Jobs,
    count: usize,
    run_ms: u64,
    metrics: Option<&str>,
    prefix: &str,
    fields: &mut Map<String, Value>,
) -> Result<Workflow> {
    let name = format!("bench-{prefix}chain").replace('_', "-");
    // A blocking scrape, off the runtime's thread.
    let misses = async || -> Result<Option<f64>> {
        let Some(addr) = metrics.map(str::to_owned) else {
            return Ok(None);
        };
        let body = tokio::task::spawn_blocking(move || crate::ops::get_metrics(&addr))
            .await
            .context("the scraper panicked")??;
        Ok(crate::ops::metric_value(
            &body,
            "silo_ready_pool_misses_total",
        ))
    };
    let misses_before = misses().await?;
    let (chain, wall) = run_to_end(workflows, shapes::chain(&name, count, run_ms)).await?;
    if let (Some(before), Some(after)) = (misses_before, misses().await?) {
        fields.insert(
            format!("{prefix}chain_pool_misses"),
            json!((after - before).round() as u64),
        );
    }
    fields.insert(
        format!("{prefix}chain_wall_s"),
        json!(round(wall.as_secs_f64())),
    );
    let spans = job_spans(jobs, &chain, count).await?;
    let edges = sorted(spans.windows(2).map(|p| p[1].started - p[0].ended));
    // SILO_BENCH_EDGES=1: every edge in chain order on stderr, to find what a tail is made of.
    if std::env::var_os("SILO_BENCH_EDGES").is_some() {
        let ms = |nanos: i128| nanos as f64 / 1e6;
        for (i, p) in spans.windows(2).enumerate() {
            eprintln!(
                "{prefix}edge {i}: {:.3} ms (reaction {:.3}, launch {:.3}; parent ran {:.3})",
                ms(p[1].started - p[0].ended),
                ms(p[1].created - p[0].ended),
                ms(p[1].started - p[1].created),
                ms(p[0].ended - p[0].started),
            );
        }
    }
    fields.insert(format!("{prefix}chain_edges"), json!(edges.len()));
    fields.insert(
        format!("{prefix}edge_max_ms"),
        json!(round(edges[edges.len() - 1])),
    );
    // Of what each edge is made: the engine's reaction (the parent's end recorded to the
    // child's job created), then the child's launch (created to its command started).
    // Beside them, each job's own run (started to its end recorded).
    let reactions = sorted(spans.windows(2).map(|p| p[1].created - p[0].ended));
    let launches = sorted(spans[1..].iter().map(|s| s.started - s.created));
    let runs = sorted(spans.iter().map(|s| s.ended - s.started));
    for (field, values) in [
        ("edge", &edges),
        ("edge_reaction", &reactions),
        ("edge_launch", &launches),
        ("chain_job_run", &runs),
    ] {
        for (q, name) in [(0.50, "p50"), (0.99, "p99")] {
            let value = round(nearest_rank(values, q));
            fields.insert(format!("{prefix}{field}_{name}_ms"), json!(value));
        }
    }
    Ok(chain)
}

/// When a job was created, when its command started and when its end was recorded, in
/// nanoseconds since the epoch, as the server recorded them.
struct Span {
    created: i128,
    started: i128,
    ended: i128,
}

fn nanos(t: &Timestamp) -> i128 {
    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
}

/// Nanosecond differences as milliseconds, ascending.
fn sorted(nanos: impl Iterator<Item = i128>) -> Vec<f64> {
    let mut ms: Vec<f64> = nanos.map(|n| n as f64 / 1e6).collect();
    ms.sort_by(f64::total_cmp);
    ms
}

/// The span of each node's job, in file order. Fails unless the workflow has `nodes`
/// nodes, each COMPLETED after exactly one attempt whose job no other node shares and
/// which COMPLETED: every job ran exactly once.
async fn job_spans(jobs: &mut Jobs, workflow: &Workflow, nodes: usize) -> Result<Vec<Span>> {
    ensure!(
        workflow.jobs.len() == nodes,
        "workflow {} has {} jobs, not {nodes}",
        workflow.id,
        workflow.jobs.len()
    );
    let mut seen = HashSet::new();
    let mut spans = Vec::with_capacity(nodes);
    for node in &workflow.jobs {
        ensure!(
            node.state() == WorkflowJobState::Completed,
            "job {} ended {:?}: {}",
            node.name,
            node.state(),
            node.reason
        );
        ensure!(
            node.attempts == 1 && node.job_ids.len() == 1,
            "job {} ran {} times (attempts {}, jobs {:?}), not once",
            node.name,
            node.job_ids.len(),
            node.attempts,
            node.job_ids
        );
        let id = &node.job_ids[0];
        ensure!(seen.insert(id.clone()), "job {id} serves two nodes");
        let job = jobs
            .get_job(GetJobRequest { id: id.clone() })
            .await
            .map_err(|s| rpc("GetJob", s))?
            .into_inner();
        ensure!(
            job.state() == JobState::Completed,
            "job {id} of {} is {:?}: {}",
            node.name,
            job.state(),
            job.reason
        );
        let (Some(created), Some(started), Some(ended)) =
            (&job.created_at, &job.started_at, &job.ended_at)
        else {
            anyhow::bail!(
                "job {id} of {} lacks created_at, started_at or ended_at",
                node.name
            );
        };
        spans.push(Span {
            created: nanos(created),
            started: nanos(started),
            ended: nanos(ended),
        });
    }
    Ok(spans)
}

/// The most spans that overlap at any instant (an end at the same instant as a start
/// frees its slot first).
fn peak_running(spans: &[Span]) -> usize {
    let mut events: Vec<(i128, i32)> = spans
        .iter()
        .flat_map(|s| [(s.started, 1), (s.ended, -1)])
        .collect();
    events.sort();
    let (mut running, mut peak) = (0i32, 0i32);
    for (_, step) in events {
        running += step;
        peak = peak.max(running);
    }
    peak as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(started: i128, ended: i128) -> Span {
        Span {
            created: started,
            started,
            ended,
        }
    }

    #[test]
    fn peak_running_counts_overlaps_and_frees_a_slot_before_the_next_start() {
        assert_eq!(peak_running(&[span(0, 10), span(5, 15), span(12, 20)]), 2);
        assert_eq!(peak_running(&[span(0, 10), span(10, 20), span(20, 30)]), 1);
        assert_eq!(peak_running(&[span(0, 10), span(1, 9), span(2, 8)]), 3);
    }
}
