//! Scheduled and recurring jobs: one-shot starts (`RunJobRequest.start_at`) and cron
//! schedules (`ScheduleService`).
//!
//! One task, the [`Scheduler`]'s timer, sleeps until the earliest due instant of a sorted
//! set (less [`LEAD`], the time a start is prepared ahead) and is woken early when an entry
//! is added; there is no polling. A due entry fires on a task of its own through the job
//! manager's ordinary entry point ([`JobManager::run_in`], or
//! [`JobManager::start_scheduled`] for a one-shot), so a scheduled job is an ordinary job.
//! Entries are never removed: a firing reads its schedule (or job) again and does nothing
//! when it was paused, resumed, deleted or cancelled meanwhile.
//!
//! Exactly once across a crash: a schedule's firing carries the request token
//! `<schedule id>:<instant>`, found by [`JobManager::find_by_token`] before anything
//! starts, and the schedule's next instant is stored only after the firing's job exists;
//! a one-shot is SCHEDULED until its start is stored. On start-up, one-shots are armed
//! again (one whose instant passed runs once, late, its lateness recorded) and each cron
//! schedule's missed firings follow its [`plan::Missed`] policy: at most one catch-up job.

pub mod plan;
pub mod service;
pub mod store;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use silo_proto::v1::{JobSpec, JobState, MissedPolicy, OverlapPolicy};
use tokio::sync::Notify;

use crate::jobs::{JobError, JobManager, JobOptions, ScheduledStart, now_micros};
use crate::runtimes::Catalog;
use crate::store::{JobRow, StoreError};
use plan::{CronPlan, Missed, Overlap};
use store::{Firing, ScheduleRow, ScheduleStore};

/// How long before its instant a start is prepared (an init taken, the job stored), so
/// that its command starts on time.
pub const LEAD: Duration = Duration::from_millis(250);

/// How many upcoming firings GetSchedule shows.
const UPCOMING: usize = 3;

/// Why a schedule operation failed; each maps to one gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The request is malformed (names what).
    #[error("{0}")]
    Invalid(String),
    /// No schedule has this id or prefix.
    #[error("schedule {0} not found")]
    NotFound(String),
    /// Several schedules start with this prefix.
    #[error("schedule id prefix {0} is ambiguous; give more characters")]
    Ambiguous(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// The job manager refused or failed.
    #[error(transparent)]
    Jobs(#[from] JobError),
}

impl From<StoreError> for ScheduleError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(id) => ScheduleError::NotFound(id),
            StoreError::Ambiguous { prefix, .. } => ScheduleError::Ambiguous(prefix),
            e => ScheduleError::Store(e),
        }
    }
}

/// An entry of the timer's set: what is due.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// A SCHEDULED job (by id).
    Job(String),
    /// A schedule's firing (by id).
    Schedule(String),
}

/// Fires one-shot jobs and cron schedules at their instants.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: JobManager,
    catalog: Catalog,
    store: ScheduleStore,
    /// (instant in µs, what) — sorted, earliest first.
    due: Mutex<BTreeSet<(i64, Due)>>,
    /// Wakes the timer when an entry is added.
    wake: Notify,
}

/// A wall-clock instant in microseconds as a Timestamp (the epoch if out of range).
fn instant(micros: i64) -> Timestamp {
    Timestamp::from_microsecond(micros).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The policy enums as the plan reads them.
fn policies(row: &ScheduleRow) -> (Missed, Overlap) {
    (
        match row.missed {
            MissedPolicy::Skip => Missed::Skip,
            MissedPolicy::Once | MissedPolicy::Unspecified => Missed::Once,
        },
        match row.overlap {
            OverlapPolicy::Allow => Overlap::Allow,
            OverlapPolicy::Skip | OverlapPolicy::Unspecified => Overlap::Skip,
        },
    )
}

impl Scheduler {
    /// Starts the scheduler over the store whose pool is `pool`: arms every SCHEDULED job
    /// and every schedule that is not paused, applying each schedule's missed-firing
    /// policy to what fell while no server ran.
    pub async fn start(
        pool: sqlx::SqlitePool,
        jobs: JobManager,
        catalog: Catalog,
    ) -> Result<Scheduler, ScheduleError> {
        let scheduler = Scheduler {
            inner: Arc::new(Inner {
                jobs,
                catalog,
                store: ScheduleStore::new(pool),
                due: Mutex::default(),
                wake: Notify::new(),
            }),
        };
        for (id, at) in scheduler.inner.jobs.scheduled_jobs().await? {
            if at < now_micros() {
                tracing::info!(job = %id, "a scheduled job's time passed while the server was down; it starts now");
            }
            scheduler.arm(at, Due::Job(id));
        }
        for row in scheduler.inner.store.list().await? {
            if let Err(e) = scheduler.recover(row).await {
                tracing::warn!("cannot arm a schedule again: {e}");
            }
        }
        let timer = scheduler.clone();
        tokio::spawn(async move { timer.run_timer().await });
        Ok(scheduler)
    }

    /// Arms a schedule found at start-up, catching up on what it missed.
    async fn recover(&self, row: ScheduleRow) -> Result<(), ScheduleError> {
        let Some(due) = row.next_at.filter(|_| !row.paused) else {
            return Ok(());
        };
        let plan = CronPlan::parse(&row.cron, &row.tz).map_err(|e| ScheduleError::Invalid(e.0))?;
        let (missed, _) = policies(&row);
        let now = Timestamp::now();
        let c = plan::catch_up(&plan, instant(due), now, missed);
        if c.fire.is_none() && c.next == Some(instant(due)) {
            self.arm(due, Due::Schedule(row.id));
            return Ok(());
        }
        // The firing to run now (the latest missed one), else the next regular one.
        let target = c.fire.or(c.next).map(|t| t.as_microsecond());
        tracing::info!(
            schedule = %row.id,
            dropped = c.dropped,
            catch_up = c.fire.is_some(),
            "firings missed while the server was down"
        );
        if self
            .inner
            .store
            .advance(&row.id, due, target, &Firing::Skipped(c.dropped))
            .await?
            && let Some(target) = target
        {
            self.arm(target, Due::Schedule(row.id));
        }
        Ok(())
    }

    /// Adds an entry and wakes the timer.
    fn arm(&self, at: i64, what: Due) {
        if let Ok(mut due) = self.inner.due.lock() {
            due.insert((at, what));
        }
        self.inner.wake.notify_one();
    }

    /// The timer: sleeps until the earliest entry is due (less [`LEAD`]) or a new entry
    /// arrives, then hands every due entry to a task of its own.
    async fn run_timer(&self) {
        let lead = LEAD.as_micros() as i64;
        loop {
            let earliest = self
                .inner
                .due
                .lock()
                .ok()
                .and_then(|d| d.first().map(|(at, _)| *at));
            let Some(earliest) = earliest else {
                self.inner.wake.notified().await;
                continue;
            };
            let wait = earliest - lead - now_micros();
            if wait > 0 {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_micros(wait as u64)) => {}
                    () = self.inner.wake.notified() => continue,
                }
            }
            let ready: Vec<(i64, Due)> = match self.inner.due.lock() {
                Ok(mut due) => {
                    let limit = now_micros() + lead;
                    let mut ready = Vec::new();
                    while let Some(first) = due.first().filter(|(at, _)| *at <= limit).cloned() {
                        due.remove(&first);
                        ready.push(first);
                    }
                    ready
                }
                Err(_) => return,
            };
            for (at, what) in ready {
                let scheduler = self.clone();
                tokio::spawn(async move {
                    match what {
                        Due::Job(id) => scheduler.fire_job(&id).await,
                        Due::Schedule(id) => scheduler.fire_schedule(&id, at).await,
                    }
                });
            }
        }
    }

    /// The options of a job in the runtime its spec names (resolved now, its label made
    /// exact), and the hold that keeps that runtime installed until the job is live.
    async fn resolve_root(
        &self,
        spec: &mut JobSpec,
    ) -> Result<(JobOptions, Option<RuntimeHold>), String> {
        if spec.runtime.is_empty() {
            return Ok((JobOptions::default(), None));
        }
        let (installed, hold) = self
            .inner
            .catalog
            .resolve(&spec.runtime)
            .await
            .map_err(|e| e.to_string())?;
        spec.runtime = installed.label();
        let options = JobOptions {
            root: Some(installed.job_root()),
            ..JobOptions::default()
        };
        Ok((options, Some(hold)))
    }

    /// Starts a one-shot job at its instant.
    async fn fire_job(&self, id: &str) {
        let jobs = &self.inner.jobs;
        let mut row = match jobs.get(id).await {
            Ok(row) if row.state == JobState::Scheduled => row,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(job = %id, "cannot read a scheduled job: {e}");
                return;
            }
        };
        let started = match self.resolve_root(&mut row.spec).await {
            Ok((options, hold)) => {
                let started = jobs.start_scheduled(row, options).await;
                drop(hold);
                started
            }
            Err(why) => jobs.fail_scheduled(row, why).await,
        };
        match started {
            Ok(job) => tracing::info!(job = %id, state = ?job.state, "scheduled job fired"),
            Err(e) => tracing::warn!(job = %id, "cannot start a scheduled job: {e}"),
        }
    }

    /// Fires schedule `id` for its instant `at` (µs), then arms its next firing.
    async fn fire_schedule(&self, id: &str, at: i64) {
        let row = match self.inner.store.find(id).await {
            Ok(Some(row)) if !row.paused && row.next_at == Some(at) => row,
            // Paused, resumed, moved or deleted since it was armed.
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(schedule = %id, "cannot read a schedule: {e}");
                return;
            }
        };
        let plan = match CronPlan::parse(&row.cron, &row.tz) {
            Ok(plan) => plan,
            Err(e) => {
                tracing::warn!(schedule = %id, "a stored schedule no longer parses: {e}");
                return;
            }
        };
        let firing = self.fire(&row, at).await;
        let outcome = match &firing {
            Firing::Started { .. } => "started",
            Firing::Skipped(_) => "skipped",
            Firing::Failed(_) => "failed",
        };
        metrics::counter!(crate::metrics::SCHEDULE_FIRINGS, "outcome" => outcome).increment(1);
        match &firing {
            Firing::Started { job, .. } => {
                tracing::debug!(schedule = %id, job = %job, "schedule fired");
            }
            Firing::Skipped(_) => {
                tracing::info!(schedule = %id, "firing skipped: the previous job still runs");
            }
            Firing::Failed(why) => tracing::warn!(schedule = %id, "firing failed: {why}"),
        }
        // Never a burst: the next firing is the first after both this instant and now.
        let after = instant(at).max(Timestamp::now());
        let next = plan.next_after(after).map(|t| t.as_microsecond());
        match self.inner.store.advance(id, at, next, &firing).await {
            Ok(true) => {
                if let Some(next) = next {
                    self.arm(next, Due::Schedule(id.to_owned()));
                }
            }
            Ok(false) => {}
            Err(e) => tracing::error!(schedule = %id, "cannot record a firing: {e}"),
        }
    }

    /// Runs the job of schedule `row`'s firing at `at`, unless its overlap policy skips
    /// it, or a job for this firing exists already (a server that crashed after starting
    /// it).
    async fn fire(&self, row: &ScheduleRow, at: i64) -> Firing {
        let jobs = &self.inner.jobs;
        let token = format!("{}:{at}", row.id);
        match jobs.find_by_token(&token).await {
            Ok(Some(job)) => return Firing::Started { at, job: job.id },
            Ok(None) => {}
            Err(e) => return Firing::Failed(e.to_string()),
        }
        let (_, overlap) = policies(row);
        let previous_running = match &row.last_job_id {
            Some(last) => match jobs.get(last).await {
                Ok(job) => !job.state.is_final(),
                Err(_) => false,
            },
            None => false,
        };
        if !plan::may_fire(overlap, previous_running) {
            return Firing::Skipped(1);
        }
        let mut spec = row.spec.clone();
        if !spec.secret_env_names.is_empty() {
            let opened = match self.inner.store.secrets_of(&row.id).await {
                Ok(sealed) => crate::secrets::Secrets::open_into(
                    &jobs.secret_key(),
                    &crate::secrets::schedule_owner(&row.id),
                    &sealed,
                    &mut spec,
                )
                .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = opened {
                return Firing::Failed(format!("its secrets cannot be opened: {e}"));
            }
        }
        let (options, hold) = match self.resolve_root(&mut spec).await {
            Ok(resolved) => resolved,
            Err(why) => return Firing::Failed(why),
        };
        let options = JobOptions {
            request_token: Some(token),
            scheduled: Some(ScheduledStart {
                at,
                schedule_id: Some(row.id.clone()),
                ..ScheduledStart::default()
            }),
            ..options
        };
        let started = jobs
            .run_in(spec, Vec::new(), row.owner.clone(), options)
            .await;
        drop(hold);
        match started {
            Ok(job) => Firing::Started { at, job: job.id },
            Err(e) => Firing::Failed(e.to_string()),
        }
    }

    /// Validates and stores a one-shot job that starts at `at` (µs), and arms it.
    pub async fn schedule_job(
        &self,
        mut spec: JobSpec,
        owner: String,
        at: i64,
    ) -> Result<JobRow, ScheduleError> {
        // The runtime must exist now; its exact version is resolved again at the start.
        let (_, hold) = self
            .resolve_root(&mut spec)
            .await
            .map_err(ScheduleError::Invalid)?;
        drop(hold);
        let row = self.inner.jobs.schedule(spec, owner, at).await?;
        self.arm(at, Due::Job(row.id.clone()));
        Ok(row)
    }

    /// Validates and stores a cron schedule, and arms its first firing.
    pub async fn create(&self, mut row: ScheduleRow) -> Result<ScheduleRow, ScheduleError> {
        let plan = CronPlan::parse(&row.cron, &row.tz).map_err(|e| ScheduleError::Invalid(e.0))?;
        row.tz = plan.zone_name().to_owned();
        let (_, hold) = self
            .resolve_root(&mut row.spec)
            .await
            .map_err(ScheduleError::Invalid)?;
        drop(hold);
        // Checked as a job would be, so a schedule never fires a job the server refuses.
        self.inner.jobs.check(&row.spec, &[])?;
        let next = plan.next_after(Timestamp::now()).ok_or_else(|| {
            ScheduleError::Invalid(format!(
                "cron expression '{}' never fires in {}",
                row.cron, row.tz
            ))
        })?;
        row.id = uuid::Uuid::new_v4().simple().to_string();
        row.created_at = now_micros();
        row.next_at = Some(next.as_microsecond());
        // The secret values leave the spec here, sealed under the schedule; the stored
        // spec (and every answer) keeps their names only.
        let secrets = crate::secrets::Secrets::take(&mut row.spec);
        let sealed = secrets
            .seal_for(
                &self.inner.jobs.secret_key(),
                &crate::secrets::schedule_owner(&row.id),
            )
            .map_err(|e| ScheduleError::Jobs(JobError::Host(e.to_string())))?;
        self.inner.store.insert_with_secrets(&row, &sealed).await?;
        self.arm(next.as_microsecond(), Due::Schedule(row.id.clone()));
        tracing::info!(schedule = %row.id, cron = %row.cron, tz = %row.tz, "schedule created");
        Ok(row)
    }

    /// The schedule with this id or unique prefix.
    pub async fn get(&self, prefix: &str) -> Result<ScheduleRow, ScheduleError> {
        let id = self.inner.store.resolve(prefix).await?;
        self.inner
            .store
            .find(&id)
            .await?
            .ok_or_else(|| ScheduleError::NotFound(prefix.to_owned()))
    }

    /// Every schedule, newest first.
    pub async fn list(&self) -> Result<Vec<ScheduleRow>, ScheduleError> {
        Ok(self.inner.store.list().await?)
    }

    /// The next firings of `row` (none while paused).
    pub fn upcoming(&self, row: &ScheduleRow) -> Vec<i64> {
        let (Some(next), false) = (row.next_at, row.paused) else {
            return Vec::new();
        };
        let Ok(plan) = CronPlan::parse(&row.cron, &row.tz) else {
            return Vec::new();
        };
        let mut out = vec![next];
        out.extend(
            plan.upcoming(instant(next), UPCOMING - 1)
                .into_iter()
                .map(|t| t.as_microsecond()),
        );
        out
    }

    /// Pauses a schedule: it fires no more until resumed.
    pub async fn pause(&self, prefix: &str) -> Result<ScheduleRow, ScheduleError> {
        let row = self.get(prefix).await?;
        self.inner.store.set_paused(&row.id, true, None).await?;
        self.get(&row.id).await
    }

    /// Resumes a schedule from its next instant after now.
    pub async fn resume(&self, prefix: &str) -> Result<ScheduleRow, ScheduleError> {
        let row = self.get(prefix).await?;
        if !row.paused {
            return Ok(row);
        }
        let plan = CronPlan::parse(&row.cron, &row.tz).map_err(|e| ScheduleError::Invalid(e.0))?;
        let next = plan
            .next_after(Timestamp::now())
            .map(|t| t.as_microsecond());
        self.inner.store.set_paused(&row.id, false, next).await?;
        if let Some(next) = next {
            self.arm(next, Due::Schedule(row.id.clone()));
        }
        self.get(&row.id).await
    }

    /// Deletes a schedule; its jobs stay.
    pub async fn delete(&self, prefix: &str) -> Result<String, ScheduleError> {
        let id = self.inner.store.resolve(prefix).await?;
        if !self.inner.store.delete(&id).await? {
            return Err(ScheduleError::NotFound(prefix.to_owned()));
        }
        tracing::info!(schedule = %id, "schedule deleted");
        Ok(id)
    }
}

/// What keeps a runtime installed while a job in it starts.
type RuntimeHold = tokio::sync::OwnedRwLockReadGuard<()>;
