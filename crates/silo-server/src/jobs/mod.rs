//! The job manager: accepts jobs, starts them through the init protocol, tracks them to
//! their end, and answers questions about them.

mod disks;
mod ends;
mod host_ids;
mod idle;
mod init_connection;
mod outcome;
pub use host_ids::parse_range as parse_host_ids;
pub mod live;
mod ready;
mod reconcile;
mod resources;
mod scheduled;
mod space;

pub use space::default_reserve as space_reserve_default;
mod spawner;
pub use scheduled::ScheduledStart;
mod supervisor;
pub mod top;
pub mod uploads;
pub mod validate;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use silo_proto::v1::{JobNetwork, JobSpec, JobState, Upload};
use tokio::sync::Semaphore;

use crate::logs::LogWatcher;
use crate::store::{JobRow, Store, StoreError};
use live::{LiveJob, StopCause};
use outcome::Outcome;
use ready::ReadyInit;
use validate::{Bounds, Invalid};

/// Settings of the job manager.
#[derive(Debug, Clone)]
pub struct JobSettings {
    /// `<state-dir>/jobs`.
    pub jobs_dir: PathBuf,
    /// Output bytes kept per job.
    pub log_cap_bytes: u64,
    /// Jobs that may be starting or running at once.
    pub max_jobs: usize,
    /// Grace period between SIGTERM and SIGKILL when a job does not set one.
    pub default_grace: Duration,
    /// Upper bounds for requests.
    pub bounds: Bounds,
    /// Where job cgroups live; `None` on a host without cgroups (limits are then refused).
    pub cgroups: Option<Arc<silo_cgroup::CgroupRoot>>,
    /// The uid and gid jobs run as by default.
    pub job_user: (u32, u32),
    /// Size of each job's /tmp.
    pub tmp_size_bytes: u64,
    /// Inodes of each job's /tmp and /dev/shm.
    pub tmp_inodes: u64,
    /// Inits kept ready (sandbox prepared) for the next jobs; 0 starts each job from scratch.
    pub ready_inits: usize,
    /// Whether inits are cloned from a zygote (else each re-executes the binary).
    pub init_zygote: bool,
    /// The host ids jobs' users map to, `(first, count)`: one per live job.
    pub host_ids: (u32, u32),
    /// The key that seals jobs' secret variables in the store.
    pub secret_key: Arc<crate::secrets::SecretKey>,
}

/// The tree a job's root shows instead of a view of the host's system directories: an
/// installed runtime (read-only), or one being built (writable: the builder's package
/// managers install into it). The caller resolves it; the job manager only mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRoot {
    /// The runtime's `rootfs/` directory.
    pub rootfs: PathBuf,
    /// The environment the runtime gives its jobs, under the job's own env.
    pub env: Vec<(String, String)>,
    /// Whether the job may write the tree. The tree is then lent to the job's user (chowned
    /// to its host id) before the command starts; giving it back is the caller's part.
    pub writable: bool,
    /// Whether ready inits are kept for it, so that its next job starts at once (an
    /// installed runtime, not a build's tree under test).
    pub pooled: bool,
}

impl JobRoot {
    /// The sandbox's form of this root.
    fn sandbox_rootfs(&self) -> silo_sandbox::Rootfs {
        silo_sandbox::Rootfs::Runtime {
            path: self.rootfs.clone(),
            writable: self.writable,
        }
    }
}

/// What a caller inside the server may ask of a job beyond its spec.
#[derive(Debug, Clone, Default)]
pub struct JobOptions {
    /// The tree its root shows instead of the host's system directories.
    pub root: Option<JobRoot>,
    /// A host directory shown writable at `/shared`.
    pub shared_dir: Option<PathBuf>,
    /// An idempotency token, unique among jobs: a caller that lost track of a start (it
    /// crashed) finds the job by it ([`JobManager::find_by_token`]), or knows that it
    /// never existed (the job is stored before its command starts).
    pub request_token: Option<String>,
    /// A start at a given instant (a SCHEDULED job's, or a schedule's firing): the job is
    /// prepared ahead and its command held until then.
    pub scheduled: Option<ScheduledStart>,
    /// What the command waits for once the job is stored: the caller's own write that must
    /// land before the job can have any effect (a workflow's node row).
    pub gate: Option<StartGate>,
}

/// A future a job's command waits for after the job is stored ([`JobOptions::gate`]).
#[derive(Clone)]
pub struct StartGate(pub futures::future::Shared<futures::future::BoxFuture<'static, ()>>);

impl std::fmt::Debug for StartGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StartGate")
    }
}

/// Why a job operation failed; each maps to one gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The request is malformed.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The store failed or the id does not resolve.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Too many jobs at once.
    #[error("the server is running its maximum of {0} jobs; try again when one has ended")]
    Busy(usize),
    /// This host cannot do what the job asks (a controller is missing).
    #[error("{0}")]
    Unsupported(String),
    /// The job has not ended yet.
    #[error("job {0} is still running; stop it first")]
    StillRunning(String),
    /// Something on the host failed.
    #[error("{0}")]
    Host(String),
}

/// Accepts, runs and tracks jobs.
#[derive(Clone)]
pub struct JobManager {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    settings: JobSettings,
    /// The silo binary, opened at start-up; jobs re-execute this descriptor.
    exe: OwnedFd,
    live: Mutex<HashMap<String, Arc<LiveJob>>>,
    /// One permit per job that may be starting or running (`max_jobs`); each job holds
    /// one from before anything is made for it until its end is published.
    slots: Arc<Semaphore>,
    logs: Arc<LogWatcher>,
    /// Inits ready for the next jobs, those being prepared for them, and the launches
    /// waiting for those.
    pool: Mutex<ready::Pool>,
    /// Runtime trees a ready init is being prepared in now.
    refilling_runtimes: Mutex<ready::RuntimeMarks>,
    /// Job disks of the default size, made ahead.
    disks: disks::DiskPool,
    /// Which host ids live jobs hold.
    host_ids: host_ids::HostIds,
    /// Starts inits: from the zygote, or by re-executing `exe`.
    spawner: spawner::InitSpawner,
    /// Stores jobs' ends, in batches, a moment after they were told.
    ends: ends::EndWriter,
    /// The free space the state filesystem keeps (`--state-reserve`; 0 until the watch
    /// starts, or when it is off).
    state_reserve: std::sync::atomic::AtomicU64,
}

/// How long the end of a job waits for a kill of its cgroup that is still under way
/// (longer than a kill may take) before it leaves the cgroup in place.
const CGROUP_IN_USE_WAIT: Duration = Duration::from_secs(15);

/// Runs `work` on this thread at nice 19, then restores the thread's priority: for work
/// that can wait (tearing a finished job down) on a thread that also serves others.
pub(crate) fn at_idle_priority<T>(work: impl FnOnce() -> T) -> T {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    // SAFETY: getpriority/setpriority on this thread's own id.
    let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid) };
    // SAFETY: as above.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 19) };
    let result = work();
    // SAFETY: as above; root may raise a priority back.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, before) };
    result
}

/// Debug builds only: waits the milliseconds that the environment variable `name` gives,
/// so that a test can hold the server at a moment where a crash, or an order of events,
/// matters. Release builds have no such wait.
#[cfg(debug_assertions)]
pub(crate) async fn test_delay(name: &str) {
    if let Some(ms) = std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Lends the tree at `path` to the host id `owner`: chowns every entry (never following a
/// symlink), so that a job whose root user maps to `owner` may write it.
async fn lend_tree(path: &Path, owner: u32) -> Result<(), JobError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || crate::tree::chown_tree(&path, owner, owner))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|e| JobError::Host(format!("cannot lend the runtime tree to the job: {e}")))
}

/// Microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

impl JobManager {
    /// A manager over `store`, re-executing `exe` for each job. Reconciles jobs left by a
    /// previous server before returning.
    pub async fn start(
        store: Store,
        settings: JobSettings,
        exe: OwnedFd,
    ) -> Result<JobManager, JobError> {
        std::fs::create_dir_all(&settings.jobs_dir)
            .and_then(|()| crate::restrict_to_root(&settings.jobs_dir))
            .map_err(|e| {
                JobError::Host(format!(
                    "cannot create {}: {e}",
                    settings.jobs_dir.display()
                ))
            })?;
        let logs = LogWatcher::start()
            .map_err(|e| JobError::Host(format!("cannot start inotify: {e}")))?;
        let host_ids = host_ids::HostIds::new(settings.host_ids.0, settings.host_ids.1);
        let slots = Arc::new(Semaphore::new(
            settings.max_jobs.min(Semaphore::MAX_PERMITS),
        ));
        let spawner = spawner::InitSpawner::new(settings.init_zygote);
        // Twice the ready inits: each takes one as it is prepared, and a launch that found
        // no ready init takes one for the init it prepares on its path.
        let disk_target = match settings.bounds.defaults.disk_bytes {
            Some(_) => settings.ready_inits * 2,
            None => 0,
        };
        let disks_dir = settings.jobs_dir.with_file_name("disks");
        let disks = disks::DiskPool::new(disks_dir.clone(), disk_target)
            .map_err(|e| JobError::Host(format!("cannot create {}: {e}", disks_dir.display())))?;
        let ends = ends::EndWriter::start(store.clone());
        let manager = JobManager {
            inner: Arc::new(Inner {
                ends,
                store,
                settings,
                exe,
                live: Mutex::default(),
                slots,
                logs,
                pool: Mutex::default(),
                refilling_runtimes: Mutex::default(),
                disks,
                host_ids,
                spawner,
                state_reserve: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        manager.reconcile().await?;
        manager.remove_stray_cgroups().await;
        manager.remove_stray_dirs().await;
        manager.refill_disks();
        manager.refill();
        Ok(manager)
    }

    fn job_dir(&self, id: &str) -> PathBuf {
        self.inner.settings.jobs_dir.join(id)
    }

    /// The key that seals secrets in the store (jobs' and workflows').
    pub fn secret_key(&self) -> Arc<crate::secrets::SecretKey> {
        self.inner.settings.secret_key.clone()
    }

    /// The path of a job's log file.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.job_dir(id).join("log")
    }

    /// The live handle of a job that has not ended.
    pub fn live(&self, id: &str) -> Option<Arc<LiveJob>> {
        self.inner.live.lock().ok()?.get(id).cloned()
    }

    /// The job a caller started with the request token `token`, if there is one.
    pub async fn find_by_token(&self, token: &str) -> Result<Option<JobRow>, JobError> {
        let stored = self.inner.store.find_by_token(token).await?;
        // A live job's row is fresher than the store's.
        Ok(stored.map(|row| match self.live(&row.id) {
            Some(live) => live.row.borrow().clone(),
            None => row,
        }))
    }

    /// The jobs that have not ended.
    fn live_jobs(&self) -> Vec<Arc<LiveJob>> {
        self.inner
            .live
            .lock()
            .map(|m| m.values().filter(|j| !j.has_ended()).cloned().collect())
            .unwrap_or_default()
    }

    /// Ids of at most `limit` jobs that ended before `cutoff` (µs since the epoch) and that
    /// no caller holds (see [`crate::store::Store::ended_before`]).
    pub async fn ended_before(&self, cutoff: i64, limit: u32) -> Result<Vec<String>, JobError> {
        Ok(self.inner.store.ended_before(cutoff, limit).await?)
    }

    /// Stops the job whose disk grows most whenever the state filesystem has less than
    /// `reserve` bytes free (see `space`); nothing when `reserve` is 0.
    pub fn watch_state_space(&self, reserve: u64) {
        self.inner
            .state_reserve
            .store(reserve, std::sync::atomic::Ordering::Relaxed);
        space::watch(self.clone(), reserve);
    }

    /// The bytes the server may still write itself (installing a runtime) on the state
    /// filesystem, at `path`: its free space less `--state-reserve`. (Unmeasurable: no
    /// bound.)
    pub fn state_room(&self, path: &Path) -> u64 {
        let reserve = self
            .inner
            .state_reserve
            .load(std::sync::atomic::Ordering::Relaxed);
        nix::sys::statvfs::statvfs(path)
            .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
            .unwrap_or(u64::MAX)
            .saturating_sub(reserve)
    }

    /// Number of jobs starting or running in the runtime `label` (`name@version`).
    pub fn live_in_runtime(&self, label: &str) -> usize {
        self.inner
            .live
            .lock()
            .map(|m| {
                m.values()
                    .filter(|j| !j.has_ended() && j.row.borrow().spec.runtime == label)
                    .count()
            })
            .unwrap_or(usize::MAX)
    }

    /// Number of jobs starting or running.
    pub fn running(&self) -> usize {
        self.inner
            .live
            .lock()
            .map(|m| m.values().filter(|j| !j.has_ended()).count())
            .unwrap_or(0)
    }

    /// Checks a job as [`JobManager::run`] would (with the server's default limits applied),
    /// without starting anything.
    pub fn check(&self, spec: &JobSpec, uploads: &[Upload]) -> Result<(), JobError> {
        let bounds = &self.inner.settings.bounds;
        let mut spec = spec.clone();
        bounds.apply_defaults(&mut spec.limits);
        validate::check_request(&spec, uploads, bounds)?;
        Ok(())
    }

    /// Validates and starts a job whose root views the host's system directories; answers
    /// once its command runs or has failed to start.
    pub async fn run(
        &self,
        spec: JobSpec,
        uploads: Vec<Upload>,
        owner: String,
    ) -> Result<JobRow, JobError> {
        self.run_in(spec, uploads, owner, JobOptions::default())
            .await
    }

    /// Validates and starts a job with `options`: in `options.root` (a runtime the caller
    /// resolved from `spec.runtime`) or a view of the host's system directories; answers
    /// once its command runs or has failed to start.
    pub async fn run_in(
        &self,
        spec: JobSpec,
        uploads: Vec<Upload>,
        owner: String,
        options: JobOptions,
    ) -> Result<JobRow, JobError> {
        self.run_live(spec, uploads, owner, options)
            .await
            .map(|(row, _)| row)
    }

    /// As [`JobManager::run_in`], and also the live job, to follow it to its end without
    /// looking it up (a job that has ended leaves the live table).
    pub async fn run_live(
        &self,
        spec: JobSpec,
        uploads: Vec<Upload>,
        owner: String,
        options: JobOptions,
    ) -> Result<(JobRow, Arc<LiveJob>), JobError> {
        let root = options.root.clone();
        let s = &self.inner.settings;
        let mut spec = spec;
        s.bounds.apply_defaults(&mut spec.limits);
        validate::check_request(&spec, &uploads, &s.bounds)?;
        // The secret values leave the spec here: the row, the store's copy of the spec and
        // every answer carry only their names.
        let secrets = crate::secrets::Secrets::take(&mut spec);
        if root.is_none() && !spec.runtime.is_empty() {
            return Err(JobError::Host(format!(
                "the runtime {:?} was not resolved before the job started",
                spec.runtime
            )));
        }
        // The job's place under the cap comes first and at once: requests that arrive
        // together cannot all pass a count, and one that would wait is refused instead.
        // Every way out of this function before the job is live drops it.
        let Ok(slot) = self.inner.slots.clone().try_acquire_owned() else {
            return Err(JobError::Busy(s.max_jobs));
        };
        let t0 = std::time::Instant::now();
        // When the job was accepted: before its init is taken, so that an init prepared on
        // the launch's path (the pool had none) counts in its start, not before its creation.
        let created_at = now_micros();
        let disk = spec.limits.as_ref().and_then(|l| l.disk_bytes);
        let rootfs = root
            .as_ref()
            .map_or(silo_sandbox::Rootfs::HostView, JobRoot::sandbox_rootfs);
        let keep_ready = root.as_ref().is_some_and(|r| r.pooled && !r.writable);
        let user = self.job_user(&spec);
        let private_network = spec.network() != JobNetwork::Host;
        let mut ready = match options.scheduled.as_ref().and_then(|s| s.job_id.clone()) {
            // A SCHEDULED job starts under the id it was given when it was stored.
            Some(id) => {
                self.spawn_ready_as(id, private_network, disk, &rootfs, false, user)
                    .await?
            }
            None => {
                self.take_ready(private_network, disk, &rootfs, user)
                    .await?
            }
        };
        let host_id = ready.host_id;
        if let Some(root) = root.as_ref().filter(|r| r.writable)
            && let Err(e) = lend_tree(&root.rootfs, host_id).await
        {
            self.discard(ready).await;
            return Err(e);
        }
        tracing::debug!(elapsed = ?t0.elapsed(), "ready init taken");
        let id = ready.id.clone();
        let row = JobRow {
            id: id.clone(),
            spec,
            owner,
            uploads: Vec::new(),
            state: JobState::Starting,
            reason: String::new(),
            exit_code: None,
            signal: None,
            created_at,
            started_at: None,
            ended_at: None,
            // Stored with the job, so that a restarted server finds the init even if it
            // crashed before recording the start.
            init: ready.start_ticks.map(|t| (ready.pid, t)),
            usage: None,
            host_id: Some(host_id),
            request_token: options.request_token.clone(),
            ..JobRow::default()
        };
        let row = match &options.scheduled {
            Some(at) => at.mark(row),
            None => row,
        };
        let live = Arc::new(LiveJob::new(row));
        // What the job writes outside its disk lands on the state filesystem: a work
        // directory without a disk, a writable runtime tree (a build's step), a workflow's
        // /shared.
        live.writes_state.store(
            disk.is_none()
                || root.as_ref().is_some_and(|r| r.writable)
                || options.shared_dir.is_some(),
            std::sync::atomic::Ordering::Relaxed,
        );
        live.hold_slot(slot);
        if let Ok(mut map) = self.inner.live.lock() {
            map.insert(id.clone(), live.clone());
        }
        if let Err(e) = self.prepare_job(&live, &mut ready, uploads, &secrets).await {
            // Nothing of the job stays behind: no row, no files, no cgroup, no slot, and
            // its host id goes back once its init is gone.
            self.forget(&id);
            self.discard(ready).await;
            self.replenish(&rootfs, keep_ready);
            return Err(e);
        }
        tracing::debug!(elapsed = ?t0.elapsed(), "job prepared");
        let mut isolation = ready.isolation.clone();
        isolation.shared_dir = options.shared_dir.clone();
        let mut init_spec = self.init_spec(&live.row.borrow(), root.as_ref(), isolation);
        secrets.add_to(&mut init_spec.env);
        if let Some(at) = &options.scheduled {
            at.wait().await;
        }
        if let Some(gate) = &options.gate {
            gate.0.clone().await;
        }
        // Debug builds: a test holds the job here, stored but not started, to crash the
        // server at that moment.
        #[cfg(debug_assertions)]
        test_delay("SILO_TEST_DELAY_BEFORE_START_MS").await;
        let (tx, started) = tokio::sync::oneshot::channel();
        tokio::spawn(supervisor::supervise(
            self.clone(),
            live.clone(),
            ready,
            init_spec,
            tx,
        ));
        // The supervisor reports once the command runs or has failed to start. Only then
        // is the pool replenished, so that the launch has the CPU to itself.
        let _ = started.await;
        self.replenish(&rootfs, keep_ready);
        if options.scheduled.is_some() {
            self.stop_again_if_asked(&live);
        }
        tracing::debug!(elapsed = ?t0.elapsed(), "job started");
        let row = live.row.borrow().clone();
        Ok((row, live))
    }

    /// Gives a ready init's job its files (work directory, uploads), its limits and its
    /// row (with its sealed secrets) in the store.
    async fn prepare_job(
        &self,
        live: &Arc<LiveJob>,
        ready: &mut ReadyInit,
        uploads: Vec<Upload>,
        secrets: &crate::secrets::Secrets,
    ) -> Result<(), JobError> {
        let id = live.id.clone();
        let job_dir = self.job_dir(&id);
        let disk_bytes = ready.disk_bytes;
        // The job's user is its host id outside its user namespace.
        let owner = live.row.borrow().host_id.map(|id| (id, id));
        let limits = live.row.borrow().spec.limits.clone();
        // Most jobs bring no uploads and keep the default limits, which the ready init's
        // cgroup has already: nothing to write, no trip to a blocking thread.
        let defaults_suffice = uploads.is_empty()
            && limits.as_ref().is_none_or(|l| l.io_bps.is_none())
            && match (&ready.cgroup, &ready.applied) {
                (Some(_), Some(applied)) => {
                    resources::cgroup_limits(limits.as_ref(), Path::new("/"))
                        .is_ok_and(|wanted| wanted == *applied)
                }
                (None, _) => !resources::any_limit(limits.as_ref()),
                (Some(_), None) => false,
            };
        if defaults_suffice {
            let row = live.row.borrow().clone();
            return self.store_new_job(&row, secrets).await;
        }
        // The job's own filesystem, reached through its detached mount's descriptor.
        let disk = match ready.disk.as_ref().map(|d| d.try_clone()).transpose() {
            Ok(disk) => disk,
            Err(e) => {
                tracing::error!(job = %live.id, "cannot reach the job's disk: {e}");
                return Err(JobError::Host("cannot prepare the job's files".into()));
            }
        };
        // Directories, uploads (written and chowned) and cgroup files are blocking work:
        // it runs on a blocking thread, and the cgroup goes there and comes back.
        let cgroup = ready.cgroup.take();
        let prepared = tokio::task::spawn_blocking(move || {
            // The client hears what failed; the host path and the OS error stay in the
            // server's log (a client has no use for them, and they describe the server's
            // host).
            let host = |told: &str, path: &Path, e: std::io::Error| {
                tracing::error!(job = %id, "{told}: {}: {e}", path.display());
                JobError::Host(told.into())
            };
            let files = || -> Result<Vec<String>, JobError> {
                let work = match &disk {
                    // The job's own filesystem, not mounted anywhere yet: its root through
                    // the mount's descriptor (this process's, for as long as it runs).
                    Some(disk) => PathBuf::from(format!("/proc/self/fd/{}", disk.as_raw_fd())),
                    // Made with the job's directory.
                    None => job_dir.join("work"),
                };
                // The uploads were validated: what fails here is the host's fault, except
                // a full job disk.
                let root = match &disk {
                    Some(disk) => uploads::open_root_of(disk),
                    None => uploads::open_work_dir(&work),
                };
                let written = root
                    .and_then(|root| uploads::write_uploads_at(root, &uploads, owner))
                    .map_err(|e| {
                        if disk_bytes.is_some() && e.raw_os_error() == Some(libc::ENOSPC) {
                            JobError::Invalid(validate::Invalid(
                                "the uploads do not fit in the job's disk (limits.disk_bytes)"
                                    .into(),
                            ))
                        } else {
                            host("cannot write the job's uploads", &work, e)
                        }
                    })?;
                match &cgroup {
                    Some(cg) => {
                        let wanted = resources::cgroup_limits(limits.as_ref(), &work)?;
                        cg.apply(&wanted).map_err(resources::cgroup_error)?;
                    }
                    None if resources::any_limit(limits.as_ref()) => {
                        return Err(JobError::Unsupported(
                            "cannot limit resources here: this host has no usable cgroups".into(),
                        ));
                    }
                    None => {}
                }
                Ok(written)
            };
            (files(), cgroup)
        })
        .await;
        let written = match prepared {
            Ok((written, cgroup)) => {
                ready.cgroup = cgroup;
                written?
            }
            Err(e) => {
                tracing::error!(job = %live.id, "preparing the job's files failed: {e}");
                return Err(JobError::Host("cannot prepare the job's files".into()));
            }
        };
        let row = live.update(|r| r.uploads = written);
        self.store_new_job(&row, secrets).await
    }

    /// Stores a new job's row with its secrets, sealed.
    async fn store_new_job(
        &self,
        row: &JobRow,
        secrets: &crate::secrets::Secrets,
    ) -> Result<(), JobError> {
        let sealed = secrets
            .seal(&self.inner.settings.secret_key, &row.id)
            .map_err(|e| JobError::Host(e.to_string()))?;
        self.inner.store.insert_with_secrets(row, &sealed).await?;
        Ok(())
    }

    /// The uid and gid a job runs as.
    fn job_user(&self, spec: &JobSpec) -> (u32, u32) {
        let (uid, gid) = self.inner.settings.job_user;
        match (spec.uid, spec.gid) {
            (Some(u), Some(g)) => (u, g),
            (Some(u), None) => (u, u),
            (None, Some(g)) => (uid, g),
            (None, None) => (uid, gid),
        }
    }

    /// What the job's init is told at `job.start`: the command, its environment and
    /// `isolation` (the ready init's, with the job's shared directory).
    fn init_spec(
        &self,
        row: &JobRow,
        root: Option<&JobRoot>,
        isolation: silo_sandbox::Isolation,
    ) -> silo_sandbox::InitSpec {
        // Inside the job, the work directory is /work.
        let cwd = Path::new("/work").join(&row.spec.workdir);
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), silo_sandbox::DEFAULT_PATH.into()),
            ("HOME".into(), "/work".into()),
            ("SILO_JOB_ID".into(), row.id.clone()),
        ];
        for (name, value) in root.map(|r| r.env.as_slice()).unwrap_or_default() {
            env.retain(|(k, _)| k != name);
            env.push((name.clone(), value.clone()));
        }
        for var in &row.spec.env {
            env.retain(|(k, _)| k != &var.name);
            env.push((var.name.clone(), var.value.clone()));
        }
        silo_sandbox::InitSpec {
            job_id: row.id.clone(),
            argv: row.spec.command.clone(),
            env,
            cwd,
            log_cap_bytes: self.inner.settings.log_cap_bytes,
            isolation: Some(isolation),
        }
    }

    /// Publishes the job's end, releases its slot and records the end in the store, after
    /// `running` (the store write of its RUNNING state, still in flight) when given: the
    /// end is told without waiting for that write, and the two writes land in order.
    async fn finish(
        &self,
        live: &Arc<LiveJob>,
        outcome: Outcome,
        running: Option<tokio::task::JoinHandle<()>>,
    ) {
        let usage = live.final_usage();
        let oom_kills = usage.as_ref().and_then(|u| u.oom_kills).unwrap_or(0);
        let memory_limit = live
            .row
            .borrow()
            .spec
            .limits
            .as_ref()
            .and_then(|l| l.memory_bytes);
        let outcome = outcome.with_oom(oom_kills, memory_limit);
        let state = outcome.state;
        let mut row = live.row.borrow().clone();
        row.usage = usage.or(row.usage.take());
        row.state = outcome.state;
        row.reason = outcome.reason;
        row.exit_code = outcome.exit_code;
        row.signal = outcome.signal;
        row.end_cause = outcome.cause;
        if let Some(failure) = outcome.start_failure {
            row.start_failure = failure.kind;
            row.failed_step = failure.step;
            row.errno = failure.errno;
        }
        row.ended_at = Some(now_micros());
        row.init = None;
        // Told at once; the job stays in the live table (where GetJob and ListJobs read
        // it) until the store has it too. An ended job no longer takes a slot: its place
        // goes back first, so that whoever sees the end may start a job in it.
        live.release_slot();
        // Counted before it is told, like the start: whoever sees the end finds it in the
        // metrics too.
        metrics::counter!(
            crate::metrics::JOBS_ENDED,
            "state" => crate::metrics::short_name(state.as_str_name(), "JOB_STATE_"),
            "cause" => crate::metrics::short_name(row.end_cause.as_str_name(), "END_CAUSE_"),
        )
        .increment(1);
        live.update(|r| *r = row.clone());
        tracing::debug!(job = %row.id, "end published");
        // The log's size is a stat of its file: after the end is told, not before.
        if let Ok(meta) = std::fs::metadata(self.log_path(&row.id)) {
            metrics::counter!(crate::metrics::LOG_BYTES).increment(meta.len());
        }
        if let Some(write) = running {
            let _ = write.await;
        }
        // Stored a moment later, with the ends of that moment (see `ends`): what this end
        // lets start stores its own row first.
        self.inner.ends.record(row.clone()).await;
        self.forget(&row.id);
        tracing::info!(job = %row.id, state = ?state, reason = %row.reason, "job ended");
    }

    /// Kills whatever is left in the job's cgroup and removes it; called once the init
    /// has exited.
    async fn release_cgroup(&self, live: &Arc<LiveJob>) {
        let live = live.clone();
        let _ = tokio::task::spawn_blocking(move || {
            // A stop's kill may still be under way; it ends within its own timeout.
            let Some(cg) = live.take_cgroup_blocking(CGROUP_IN_USE_WAIT) else {
                return;
            };
            let id = &live.id;
            if let Err(e) = cg.kill_all() {
                tracing::warn!(job = %id, "cannot kill what is left in the job's cgroup: {e}");
            }
            if let Err(e) = cg.remove() {
                tracing::warn!(job = %id, "cannot remove the job's cgroup: {e}");
            }
        })
        .await;
    }

    /// Gives the job's host id back; only once nothing of the job can run any more.
    fn give_back_host_id(&self, live: &LiveJob) {
        if let Some(id) = live.row.borrow().host_id {
            self.inner.host_ids.give_back(id);
        }
    }

    /// Drops the job from the live table; it no longer counts against the cap.
    fn forget(&self, id: &str) {
        let live = self
            .inner
            .live
            .lock()
            .ok()
            .and_then(|mut map| map.remove(id));
        if let Some(live) = live {
            live.release_slot();
        }
    }

    /// The full id of the job with this id or unique id prefix.
    pub async fn resolve(&self, prefix: &str) -> Result<String, JobError> {
        // A live job named by its full id needs no trip to the store (the common case of a
        // client that just started the job and now watches it).
        if self.live(prefix).is_some() {
            return Ok(prefix.to_owned());
        }
        Ok(self.inner.store.resolve(prefix).await?)
    }

    /// The job with this id or unique id prefix.
    pub async fn get(&self, prefix: &str) -> Result<JobRow, JobError> {
        let id = self.resolve(prefix).await?;
        if let Some(live) = self.live(&id) {
            let mut row = live.row.borrow().clone();
            if !live.has_ended() {
                row.usage = live.usage_shared();
            }
            return Ok(row);
        }
        Ok(self.inner.store.get(&id).await?)
    }

    /// A page of at most `size` jobs, newest first, after `after` (see [`Store::page`]).
    pub async fn list(
        &self,
        states: &[JobState],
        after: Option<&crate::store::PageCursor>,
        size: u32,
    ) -> Result<crate::store::JobPage, JobError> {
        let mut page = self.inner.store.page(states, after, size).await?;
        // A live job's state in memory is ahead of the store by at most two writes (its
        // RUNNING state and its end, which is told before either lands). Its creation time
        // and id, which place it in the list, never change.
        for row in &mut page.rows {
            if let Some(live) = self.live(&row.id) {
                *row = live.row.borrow().clone();
            }
        }
        Ok(page)
    }

    /// Stops a job and waits for its end. A job that has already ended is returned as is.
    pub async fn stop(&self, prefix: &str, grace: Option<Duration>) -> Result<JobRow, JobError> {
        let id = self.resolve(prefix).await?;
        let Some(live) = self.live(&id) else {
            let row = self.inner.store.get(&id).await?;
            if row.state == JobState::Scheduled {
                return self.cancel_scheduled(row).await;
            }
            return Ok(row);
        };
        let grace = grace.unwrap_or_else(|| self.grace_of(&live.row.borrow()));
        live.begin_stop(StopCause::Request, grace);
        Ok(live.ended().await)
    }

    fn grace_of(&self, row: &JobRow) -> Duration {
        match row.spec.stop_grace_ms {
            0 => self.inner.settings.default_grace,
            ms => Duration::from_millis(ms),
        }
    }

    /// Removes an ended job, its log and its files.
    pub async fn delete(&self, prefix: &str) -> Result<String, JobError> {
        let id = self.resolve(prefix).await?;
        let state = match self.live(&id) {
            Some(live) => live.row.borrow().state,
            None => {
                let row = self.inner.store.get(&id).await?;
                if row.state == JobState::Scheduled {
                    // Deleting a job that has not started cancels it first.
                    self.cancel_scheduled(row).await?.state
                } else {
                    row.state
                }
            }
        };
        if !state.is_final() {
            return Err(JobError::StillRunning(id));
        }
        let dir = self.job_dir(&id);
        let removed = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || crate::tree::remove_dir_all(dir)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match removed {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(JobError::Host(format!(
                    "cannot remove {}: {e}",
                    dir.display()
                )));
            }
        }
        self.inner.store.delete(&id).await?;
        // An ended job stays in the live table until its end is stored (see `finish`);
        // deleted in between, it goes from there too, or GetJob and ListJobs would still
        // find it. The end's write that comes later updates no row.
        self.forget(&id);
        Ok(id)
    }
}
