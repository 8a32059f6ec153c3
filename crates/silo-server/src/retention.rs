//! How long ended jobs and workflows are kept (`--keep-ended`): past it they are deleted
//! with their logs and files, as `silo job delete` and `silo workflow delete` would. Without
//! it every job ever run kept its directory, log (up to `--log-cap`) and row, and a host
//! running thousands of short jobs a day filled its state filesystem.
//!
//! A workflow's jobs go with their workflow (the engine started them with a request token,
//! which the job sweep leaves alone), so a workflow's picture, logs and `retry` keep every
//! job for as long as the workflow is kept. A schedule's firings are plain jobs (their
//! token names the firing; they are swept like any other).

use std::time::Duration;

use crate::jobs::{JobError, JobManager, now_micros};
use crate::store::StoreError;
use crate::workflows::{Engine, WorkflowError};

/// At most this many jobs (and workflows) are deleted per sweep, so that a first sweep
/// over a long history does not hold the store for long; the next sweep goes on.
const PER_SWEEP: u32 = 500;

/// The longest pause between two sweeps.
const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// Deletes, for as long as the server runs, the workflows and jobs that ended more than
/// `keep` ago; nothing when `keep` is zero (kept until deleted).
pub fn sweep(jobs: JobManager, engine: Engine, keep: Duration) {
    if keep.is_zero() {
        return;
    }
    // A few looks per `keep`, so that nothing stays much past it.
    let every = (keep / 4).clamp(Duration::from_millis(100), MAX_INTERVAL);
    let keep_micros = i64::try_from(keep.as_micros()).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let cutoff = now_micros().saturating_sub(keep_micros);
            let workflows = sweep_workflows(&engine, cutoff).await;
            let plain = sweep_jobs(&jobs, cutoff).await;
            let what: Vec<String> = [(workflows, "workflow"), (plain, "job")]
                .into_iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, noun)| format!("{n} {noun}{}", if n == 1 { "" } else { "s" }))
                .collect();
            if !what.is_empty() {
                tracing::info!(
                    "deleted {} that ended over {} ago (--keep-ended)",
                    what.join(" and "),
                    humantime::format_duration(keep)
                );
            }
        }
    });
}

/// Deletes the workflows that ended before `cutoff`, with their jobs; returns how many.
async fn sweep_workflows(engine: &Engine, cutoff: i64) -> usize {
    let ids = match engine.ended_before(cutoff, PER_SWEEP).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!("cannot list the workflows to delete: {e}");
            return 0;
        }
    };
    let mut deleted = 0;
    for id in ids {
        match engine.delete(&id).await {
            Ok(_) => deleted += 1,
            // Deleted meanwhile, or retried (running again): not ours to delete now.
            Err(WorkflowError::NotFound(_) | WorkflowError::StillRunning(_)) => {}
            Err(e) => tracing::warn!("cannot delete the ended workflow {id}: {e}"),
        }
    }
    deleted
}

/// Deletes the jobs that ended before `cutoff` and that no caller holds; returns how many.
async fn sweep_jobs(jobs: &JobManager, cutoff: i64) -> usize {
    let ids = match jobs.ended_before(cutoff, PER_SWEEP).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!("cannot list the jobs to delete: {e}");
            return 0;
        }
    };
    let mut deleted = 0;
    for id in ids {
        match jobs.delete(&id).await {
            Ok(_) => deleted += 1,
            Err(JobError::Store(StoreError::NotFound(_))) => {}
            Err(e) => tracing::warn!("cannot delete the ended job {id}: {e}"),
        }
    }
    deleted
}
