//! Jobs that start at a given instant.
//!
//! A one-shot job (`RunJobRequest.start_at`) is stored at once in state SCHEDULED under a
//! fresh id, with no directory, cgroup or init: it can be listed, stopped (cancelled) and
//! deleted like any job. At its time the scheduler calls [`JobManager::start_scheduled`],
//! which starts it through the ordinary launch under that same id. Every start at an
//! instant (a one-shot's, or a schedule's firing) is prepared a little ahead and its
//! command held until the instant ([`ScheduledStart::wait`]), so that it starts on time;
//! `scheduled_at` is stored with the job, and `started_at - scheduled_at` is its lateness.

use std::sync::Arc;
use std::time::Duration;

use silo_proto::v1::{EndCause, JobSpec, JobState, StartFailure};

use super::live::LiveJob;
use super::{JobError, JobManager, JobOptions, now_micros, validate};
use crate::store::{JobPage, JobRow, PageCursor};

/// The furthest ahead a job may be scheduled: a year.
pub const MAX_AHEAD_MICROS: i64 = 366 * 24 * 3600 * 1_000_000;

/// A start at an instant, for [`JobOptions::scheduled`].
#[derive(Debug, Clone, Default)]
pub struct ScheduledStart {
    /// The instant the command starts at, in microseconds since the epoch (at once if it
    /// has passed).
    pub at: i64,
    /// The SCHEDULED job to start (its stored id); `None` makes a new job.
    pub job_id: Option<String>,
    /// When the SCHEDULED job was stored (it keeps its place in the list).
    pub created_at: Option<i64>,
    /// The schedule whose firing this is.
    pub schedule_id: Option<String>,
}

impl ScheduledStart {
    /// `row` with what this start records in it.
    pub(super) fn mark(&self, mut row: JobRow) -> JobRow {
        row.scheduled_at = Some(self.at);
        row.schedule_id = self.schedule_id.clone();
        if let Some(created) = self.created_at {
            row.created_at = created;
        }
        row
    }

    /// Waits until the instant (returns at once once it has passed).
    pub(super) async fn wait(&self) {
        let left = self.at - now_micros();
        if left > 0 {
            tokio::time::sleep(Duration::from_micros(left as u64)).await;
        }
    }
}

impl JobManager {
    /// Validates a job as [`JobManager::run`] would and stores it in state SCHEDULED, to
    /// start at `at` (microseconds since the epoch: in the future, at most a year ahead).
    /// Nothing else is made for it until then. `spec.runtime`, if any, is the label the
    /// caller resolved.
    pub async fn schedule(
        &self,
        spec: JobSpec,
        owner: String,
        at: i64,
    ) -> Result<JobRow, JobError> {
        let s = &self.inner.settings;
        let mut spec = spec;
        s.bounds.apply_defaults(&mut spec.limits);
        validate::check_request(&spec, &[], &s.bounds)?;
        let now = now_micros();
        if at <= now {
            return Err(JobError::Invalid(validate::Invalid(format!(
                "start_at is in the past ({} µs before now)",
                now.saturating_sub(at)
            ))));
        }
        if at - now > MAX_AHEAD_MICROS {
            return Err(JobError::Invalid(validate::Invalid(
                "start_at is more than a year ahead".into(),
            )));
        }
        // The secret values are sealed under the job's id until its start, like a started
        // job's; the row's spec keeps only their names.
        let secrets = crate::secrets::Secrets::take(&mut spec);
        let row = JobRow {
            id: uuid::Uuid::new_v4().simple().to_string(),
            spec,
            owner,
            state: JobState::Scheduled,
            created_at: now,
            scheduled_at: Some(at),
            ..JobRow::default()
        };
        let sealed = secrets
            .seal(&s.secret_key, &row.id)
            .map_err(|e| JobError::Host(e.to_string()))?;
        self.inner.store.insert_with_secrets(&row, &sealed).await?;
        tracing::info!(job = %row.id, at, "job scheduled");
        Ok(row)
    }

    /// The SCHEDULED jobs, with their instants, earliest first.
    pub async fn scheduled_jobs(&self) -> Result<Vec<(String, i64)>, JobError> {
        Ok(self.inner.store.scheduled().await?)
    }

    /// Starts the SCHEDULED job `row` at its instant, under its own id, with `options`
    /// (its runtime root, resolved by the caller); answers once its command runs or has
    /// failed to start. A job that is no longer SCHEDULED (stopped, started already) is
    /// returned as it is. A job that cannot be started at all (the server is full) ends
    /// FAILED, saying why.
    pub async fn start_scheduled(
        &self,
        row: JobRow,
        options: JobOptions,
    ) -> Result<JobRow, JobError> {
        let current = self.get(&row.id).await?;
        if current.state != JobState::Scheduled {
            return Ok(current);
        }
        // A server that crashed while starting it may have left its directory.
        let dir = self.job_dir(&row.id);
        let _ = tokio::task::spawn_blocking(move || crate::tree::remove_dir_all(dir)).await;
        let at = row.scheduled_at.unwrap_or_else(now_micros);
        let options = JobOptions {
            scheduled: Some(ScheduledStart {
                at,
                job_id: Some(row.id.clone()),
                created_at: Some(row.created_at),
                schedule_id: row.schedule_id.clone(),
            }),
            ..options
        };
        // Its sealed secrets go back into the spec, for the start to take as RunJob's.
        let mut spec = row.spec.clone();
        let key = self.inner.settings.secret_key.clone();
        let owner = crate::secrets::job_owner(&row.id);
        let sealed = self.inner.store.secrets_of(&row.id).await?;
        for sealed in &sealed {
            match key.open(&owner, sealed) {
                Ok(value) => spec.secret_env.push(silo_proto::v1::SecretVar {
                    name: sealed.name.clone(),
                    value,
                }),
                Err(e) => {
                    return self
                        .fail_scheduled(
                            row,
                            format!("its secret {} cannot be opened: {e}", sealed.name),
                        )
                        .await;
                }
            }
        }
        spec.secret_env_names.clear();
        match self
            .run_in(spec, Vec::new(), row.owner.clone(), options)
            .await
        {
            Ok(started) => Ok(started),
            Err(e) => self.fail_scheduled(row, e.to_string()).await,
        }
    }

    /// Ends a SCHEDULED job that cannot start (`why`: its runtime is gone, the server is
    /// full): FAILED, its command never ran. One no longer SCHEDULED is left as it is.
    pub async fn fail_scheduled(&self, row: JobRow, why: String) -> Result<JobRow, JobError> {
        let mut failed = row;
        failed.state = JobState::Failed;
        failed.reason = format!("could not start at its scheduled time: {why}");
        failed.end_cause = EndCause::StartFailed;
        failed.start_failure = StartFailure::Internal;
        failed.ended_at = Some(now_micros());
        self.inner.store.end_scheduled(&failed).await?;
        self.get(&failed.id).await
    }

    /// A stop asked for while a start was held until its instant reached no process (the
    /// init was not the job's yet): it is sent again now that the command runs.
    pub(super) fn stop_again_if_asked(&self, live: &Arc<LiveJob>) {
        if let Some(cause) = live.stop_cause()
            && !live.has_ended()
        {
            live.begin_stop(cause, self.grace_of(&live.row.borrow()));
        }
    }

    /// Cancels a SCHEDULED job: it ends STOPPED without having run. One that has just
    /// started meanwhile is stopped as any running job.
    pub(super) async fn cancel_scheduled(&self, row: JobRow) -> Result<JobRow, JobError> {
        let mut stopped = row.clone();
        stopped.state = JobState::Stopped;
        stopped.reason = "stopped before its scheduled start; it never ran".into();
        stopped.end_cause = EndCause::Stopped;
        stopped.ended_at = Some(now_micros());
        if self.inner.store.end_scheduled(&stopped).await? {
            tracing::info!(job = %row.id, "scheduled job cancelled");
            return Ok(self.inner.store.get(&row.id).await?);
        }
        match self.live(&row.id) {
            Some(_) => Box::pin(self.stop(&row.id, None)).await,
            None => Ok(self.inner.store.get(&row.id).await?),
        }
    }

    /// A page of the jobs of schedule `schedule`, as [`JobManager::list`] pages all jobs.
    pub async fn list_of_schedule(
        &self,
        states: &[JobState],
        schedule: &str,
        after: Option<&PageCursor>,
        size: u32,
    ) -> Result<JobPage, JobError> {
        let mut page = self
            .inner
            .store
            .page_of_schedule(states, Some(schedule), after, size)
            .await?;
        for row in &mut page.rows {
            if let Some(live) = self.live(&row.id) {
                *row = live.row.borrow().clone();
            }
        }
        Ok(page)
    }
}
