//! How long ended jobs and workflows are kept (`--keep-ended`): past it they are deleted
//! with their logs and files, as `silo job delete` and `silo workflow delete` would. Without
//! it every job ever run kept its directory, log (up to `--log-cap`) and row, and a host
//! running thousands of short jobs a day filled its state filesystem.
//!
//! A workflow's jobs go with their workflow (the engine started them with a request token,
//! which the job sweep leaves alone), so a workflow's picture, logs and `retry` keep every
//! job for as long as the workflow is kept. A schedule's firings are plain jobs (their
//! token names the firing; they are swept like any other).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::jobs::{JobError, JobManager, now_micros};
use crate::store::StoreError;
use crate::workflows::{Engine, WorkflowError};

/// At most this many jobs (and workflows) are deleted per sweep, so that a first sweep
/// over a long history does not hold the store for long; the next sweep goes on.
const PER_SWEEP: u32 = 500;

/// At most this many jobs (and workflows) that could not be deleted are passed by; past
/// it the oldest of them are tried again at each sweep.
const MAX_PASSED_BY: usize = 10_000;

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
        let (mut failed_workflows, mut failed_jobs) = (HashSet::new(), HashSet::new());
        loop {
            ticks.tick().await;
            let cutoff = now_micros().saturating_sub(keep_micros);
            let listed = engine
                .ended_before(cutoff, limit(&failed_workflows))
                .await
                .map_err(|e| e.to_string());
            let workflows = sweep_some("workflow", &mut failed_workflows, listed, |id| {
                let engine = engine.clone();
                Box::pin(async move {
                    match engine.delete(&id).await {
                        Ok(_) => Ok(true),
                        // Deleted meanwhile, or retried (running again): not ours now.
                        Err(WorkflowError::NotFound(_) | WorkflowError::StillRunning(_)) => {
                            Ok(false)
                        }
                        Err(e) => Err(e.to_string()),
                    }
                })
            })
            .await;
            let listed = jobs
                .ended_before(cutoff, limit(&failed_jobs))
                .await
                .map_err(|e| e.to_string());
            let plain = sweep_some("job", &mut failed_jobs, listed, |id| {
                let jobs = jobs.clone();
                Box::pin(async move {
                    match jobs.delete(&id).await {
                        Ok(_) => Ok(true),
                        Err(JobError::Store(StoreError::NotFound(_))) => Ok(false),
                        Err(e) => Err(e.to_string()),
                    }
                })
            })
            .await;
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

/// How many to list: [`PER_SWEEP`] beyond those that `failed` before.
fn limit(failed: &HashSet<String>) -> u32 {
    PER_SWEEP.saturating_add(u32::try_from(failed.len()).unwrap_or(u32::MAX))
}

/// What deleting one answers: whether it deleted (false: nothing was left to delete), or
/// why it could not.
type Deletion = Pin<Box<dyn Future<Output = Result<bool, String>> + Send>>;

/// Deletes, with `delete`, the ones `listed` names; returns how many it deleted. One that
/// fails is said once and passed by from then on, so that it never holds back the ones
/// after it.
async fn sweep_some(
    what: &str,
    failed: &mut HashSet<String>,
    listed: Result<Vec<String>, String>,
    delete: impl Fn(String) -> Deletion,
) -> usize {
    let ids = match listed {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!("cannot list the ended {what}s to delete: {e}");
            return 0;
        }
    };
    let ids: Vec<String> = ids.into_iter().filter(|id| !failed.contains(id)).collect();
    let mut deleted = 0;
    for id in ids {
        match delete(id.clone()).await {
            Ok(true) => deleted += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(
                    "cannot delete the ended {what} {id} (--keep-ended passes it by until the \
                     server restarts): {e}"
                );
                if failed.len() < MAX_PASSED_BY {
                    failed.insert(id);
                }
            }
        }
    }
    deleted
}
