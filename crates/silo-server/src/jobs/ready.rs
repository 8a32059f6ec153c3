//! Inits that are ready before their job arrives.
//!
//! Starting a sandbox has a part that does not depend on the job: creating the cgroup,
//! cloning the init into its namespaces, re-executing the binary, and assembling the
//! job-independent part of the root filesystem. [`JobManager::spawn_ready`] does all of
//! that and stops at the init protocol's `sandbox.prepare`; the job then only needs its
//! own files, its limits and `job.start`. The manager keeps a few such inits in a pool so
//! that a job's launch pays only for what is its own. Each ready init already owns the id
//! its job will get: its cgroup and directory are made under that id.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use silo_sandbox::protocol::{InitError, METHOD_PREPARE};
use silo_sandbox::spawn::{Namespaces, SpawnRequest};
use silo_sandbox::{Isolation, Network, Prepare, Rootfs, SandboxBase};

use super::init_connection::InitConnection;
use super::{JobError, JobManager, resources};

/// How many inits are kept ready in each read-only runtime a job has used (at most
/// `--ready-inits`).
const READY_PER_RUNTIME: usize = 2;
/// How long a new init has to say hello.
const HELLO_DEADLINE: Duration = Duration::from_secs(5);
/// How long an init has to prepare its sandbox.
const PREPARE_DEADLINE: Duration = Duration::from_secs(30);

/// An init that has prepared its sandbox and waits for its job's `job.start`.
pub struct ReadyInit {
    /// The id its job gets.
    pub id: String,
    /// The host id its job runs as, held from the pool's range.
    pub host_id: u32,
    /// Its job's sandbox: built and entered, the command's process forked in it and
    /// waiting for its command line. A job it serves has exactly this isolation, but for
    /// its shared directory.
    pub isolation: Isolation,
    /// Its pid in the server's pid namespace.
    pub pid: i32,
    /// Its start time (clock ticks after boot, from /proc/PID/stat): with `pid` it names
    /// this process across a restart. Read here, off the launch's path.
    pub start_ticks: Option<u64>,
    /// For signalling and reaping it.
    pub pidfd: OwnedFd,
    /// The server's end of its control socket, hello and preparation done.
    pub control: InitConnection,
    /// Its job's cgroup, without limits yet.
    pub cgroup: Option<silo_cgroup::JobCgroup>,
    /// The limits written to `cgroup` already: the server's defaults, which most jobs
    /// keep, so that their launch writes no cgroup file.
    pub applied: Option<silo_cgroup::Limits>,
    /// Whether it has a private network namespace (else it shares the host's).
    pub private_network: bool,
    /// The size of its job's own filesystem for /work, when it has one.
    pub disk_bytes: Option<u64>,
    /// That filesystem, mounted detached: sent to the init with the start, which attaches
    /// it at /work. Dropped unused, it is unmounted.
    pub disk: Option<OwnedFd>,
    /// The root filesystem it has assembled.
    pub rootfs: Rootfs,
    /// Its mount namespace, held open so that the job's mounts (its /work filesystem above
    /// all, whose unmount flushes and detaches a loop device) are torn down after the job's
    /// end is published, off the launch's path, not while the init exits.
    pub mount_ns: Option<OwnedFd>,
}

/// The ready inits and the work of keeping them, under one lock, so that a launch that
/// finds none decides to wait for one being prepared, and a prepared one is handed to a
/// waiting launch or kept, each with the whole picture. (`T` is [`ReadyInit`] but in tests.)
pub(super) struct Pool<T = ReadyInit> {
    /// Inits ready for the next jobs.
    inits: Vec<T>,
    /// The host view's inits being prepared for the pool now, oldest first.
    refills: VecDeque<Refill>,
    /// Launches waiting for the next of those to be ready, oldest first; never more than
    /// the refills at the normal priority.
    waiters: VecDeque<tokio::sync::oneshot::Sender<T>>,
    /// Launches in a runtime waiting for the init being prepared in it (at most one per
    /// runtime, as there is at most one such init in flight).
    runtime_waiters: Vec<(Rootfs, tokio::sync::oneshot::Sender<T>)>,
    /// Numbers the refills.
    next_refill: u64,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            inits: Vec::new(),
            refills: VecDeque::new(),
            waiters: VecDeque::new(),
            runtime_waiters: Vec::new(),
            next_refill: 0,
        }
    }
}

/// One init being prepared for the pool.
struct Refill {
    /// Which one.
    id: u64,
    /// Whether it prepares under `SCHED_IDLE` (the pool had an init when it started).
    idle: bool,
}

/// What a launch gets from the pool.
enum Taken<T> {
    /// An init that fits.
    Ready(T),
    /// The next init a refill makes, when it comes (an error: that refill failed).
    Next(tokio::sync::oneshot::Receiver<T>),
    /// Nothing: the launch prepares its own.
    Nothing,
}

impl<T> Pool<T> {
    /// Takes the first init that `fits`. When there is none, a launch of the kind the
    /// pool keeps (`pooled_kind`) waits for the next one if a refill at the normal priority
    /// is in flight that no other launch waits for: that refill started earlier and is
    /// further along than an init the launch would start now. A refill under `SCHED_IDLE`
    /// is not counted on: it may wait for CPU as long as the host is busy.
    fn take(&mut self, fits: impl Fn(&T) -> bool, pooled_kind: bool) -> Taken<T> {
        if let Some(i) = self.inits.iter().position(fits) {
            return Taken::Ready(self.inits.swap_remove(i));
        }
        self.forget_given_up();
        if !pooled_kind || self.waiters.len() >= self.prompt_refills() {
            return Taken::Nothing;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiters.push_back(tx);
        Taken::Next(rx)
    }

    /// Starts a refill when the pool, with `have` inits of the kind it keeps, the refills
    /// in flight and the launches waiting for them, is short of `target`; returns its id
    /// and whether it prepares under `SCHED_IDLE` (while the pool still has an init).
    fn start_refill(&mut self, have: usize, target: usize) -> Option<(u64, bool)> {
        // Each waiting launch takes one of the refills in flight.
        self.forget_given_up();
        if have + self.refills.len() >= target + self.waiters.len() {
            return None;
        }
        let (id, idle) = (self.next_refill, have > 0);
        self.next_refill += 1;
        self.refills.push_back(Refill { id, idle });
        Some((id, idle))
    }

    /// Refill `id` ended with `ready` (none: it failed). The init goes to the oldest launch
    /// still waiting, else into the pool. After a failure, the launches no refill at the
    /// normal priority is left for are told (their wait ends in an error) and prepare
    /// their own.
    fn refill_ended(&mut self, id: u64, ready: Option<T>) {
        self.refills.retain(|r| r.id != id);
        let Some(ready) = ready else {
            let prompt = self.prompt_refills();
            while self.waiters.len() > prompt {
                self.waiters.pop_front();
            }
            return;
        };
        self.hand_over(ready);
    }

    /// The refills in flight at the normal priority: those a waiting launch counts on.
    fn prompt_refills(&self) -> usize {
        self.refills.iter().filter(|r| !r.idle).count()
    }

    /// Drops the waits of launches given up (their callers went away), so that they are
    /// not counted as launches that need an init.
    fn forget_given_up(&mut self) {
        self.waiters.retain(|w| !w.is_closed());
    }

    /// Gives `ready` to the oldest launch still waiting, else keeps it.
    fn hand_over(&mut self, mut ready: T) {
        while let Some(waiter) = self.waiters.pop_front() {
            match waiter.send(ready) {
                Ok(()) => return,
                // That launch was given up (its caller went away): the next one.
                Err(back) => ready = back,
            }
        }
        self.inits.push(ready);
    }

    /// A launch in the runtime `rootfs` found no init there: it waits for the one being
    /// prepared in it (`in_flight`) unless another launch waits for that one already.
    fn wait_in_runtime(
        &mut self,
        rootfs: &Rootfs,
        in_flight: bool,
    ) -> Option<tokio::sync::oneshot::Receiver<T>> {
        self.runtime_waiters.retain(|(_, w)| !w.is_closed());
        if !in_flight || self.runtime_waiters.iter().any(|(r, _)| r == rootfs) {
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.runtime_waiters.push((rootfs.clone(), tx));
        Some(rx)
    }

    /// The init prepared in the runtime `rootfs` is ready: it goes to the launch waiting for
    /// it, else into the pool.
    fn runtime_ready(&mut self, rootfs: &Rootfs, mut ready: T) {
        while let Some(i) = self.runtime_waiters.iter().position(|(r, _)| r == rootfs) {
            let (_, waiter) = self.runtime_waiters.swap_remove(i);
            match waiter.send(ready) {
                Ok(()) => return,
                Err(back) => ready = back,
            }
        }
        self.inits.push(ready);
    }

    /// No init comes for the runtime `rootfs` (its preparation failed, or the runtime is
    /// being removed): the launch waiting for one is told (its wait ends in an error) and
    /// prepares its own.
    fn runtime_failed(&mut self, rootfs: &Rootfs) {
        self.runtime_waiters.retain(|(r, _)| r != rootfs);
    }
}

/// The runtime trees a ready init is being prepared in now, each marked by the one
/// preparation that makes it (at most one per tree at a time).
#[derive(Debug, Default)]
pub(super) struct RuntimeMarks {
    marks: std::collections::HashMap<Rootfs, u64>,
    next: u64,
}

impl RuntimeMarks {
    /// Marks `rootfs` for a new preparation and returns its mark, or none when one is
    /// being made there already.
    fn mark(&mut self, rootfs: &Rootfs) -> Option<u64> {
        if self.marks.contains_key(rootfs) {
            return None;
        }
        self.next += 1;
        self.marks.insert(rootfs.clone(), self.next);
        Some(self.next)
    }

    fn is_marked(&self, rootfs: &Rootfs) -> bool {
        self.marks.contains_key(rootfs)
    }

    /// Removes the preparation's `mark` from `rootfs`; false when that mark is no longer
    /// there (cleared since, perhaps replaced by a newer preparation's, which stays).
    fn unmark(&mut self, rootfs: &Rootfs, mark: u64) -> bool {
        if self.marks.get(rootfs) != Some(&mark) {
            return false;
        }
        self.marks.remove(rootfs);
        true
    }

    /// Clears the marks of the trees `matches` picks (their runtime is going away).
    fn clear(&mut self, matches: impl Fn(&Rootfs) -> bool) {
        self.marks.retain(|r, _| !matches(r));
    }
}

impl Pool<ReadyInit> {
    /// How many inits of the kind kept for runtimes wait in the runtime `rootfs`.
    fn ready_in(&self, rootfs: &Rootfs) -> usize {
        self.inits
            .iter()
            .filter(|r| r.rootfs == *rootfs && r.private_network)
            .count()
    }
}

/// A launch's wait for the pool's next init (of the host view, or of the runtime
/// `runtime`). A launch on the host view given up (its caller went away) after the init
/// was sent leaves the init to the pool instead of losing it; in a runtime the init is
/// ended, as the runtime may have been removed since it was prepared.
struct Wait {
    next: Option<tokio::sync::oneshot::Receiver<ReadyInit>>,
    manager: JobManager,
    runtime: Option<Rootfs>,
}

impl Wait {
    /// The init, or none when the refill failed.
    async fn ready(mut self) -> Option<ReadyInit> {
        let ready = (self.next.as_mut()?).await.ok();
        self.next = None;
        ready
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        let Some(mut next) = self.next.take() else {
            return;
        };
        next.close();
        let Ok(ready) = next.try_recv() else {
            return;
        };
        if self.runtime.is_some() {
            let manager = self.manager.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { manager.discard(ready).await });
            }
        } else if let Ok(mut pool) = self.manager.inner.pool.lock() {
            pool.hand_over(ready);
        }
    }
}

impl JobManager {
    /// Creates a job's cgroup and directory under a new id, takes a host id, starts its
    /// init and has it prepare the whole sandbox of a job that runs as `user` (uid, gid)
    /// and fork its command's process. Leaves nothing behind on failure.
    pub(super) async fn spawn_ready(
        &self,
        private_network: bool,
        disk_bytes: Option<u64>,
        rootfs: &Rootfs,
        idle: bool,
        user: (u32, u32),
    ) -> Result<ReadyInit, JobError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.spawn_ready_as(id, private_network, disk_bytes, rootfs, idle, user)
            .await
    }

    /// As [`JobManager::spawn_ready`], under the id `id` (a SCHEDULED job's, which has no
    /// directory or cgroup yet).
    pub(super) async fn spawn_ready_as(
        &self,
        id: String,
        private_network: bool,
        disk_bytes: Option<u64>,
        rootfs: &Rootfs,
        idle: bool,
        user: (u32, u32),
    ) -> Result<ReadyInit, JobError> {
        let dir = self.job_dir(&id);
        let root = dir.join("root");
        // When each step ended, for the debug line of a prepared init.
        let t0 = std::time::Instant::now();
        let mut marks: Vec<(&str, std::time::Duration)> = Vec::with_capacity(6);
        let Some(host_id) = self.inner.host_ids.take() else {
            return Err(JobError::Host(
                "every host id of the server's range (--host-ids) is held by a live job".into(),
            ));
        };
        // The directory, the cgroup with the default limits and the init's clone are
        // blocking work, done in one trip to a blocking thread: each trip is a wake-up of
        // another thread, and under load each cost up to a millisecond here.
        let manager = self.clone();
        let (made_id, made_dir, made_root) = (id.clone(), dir.clone(), root.clone());
        let work_dir = disk_bytes.is_none();
        let made = super::idle::run(idle, move || {
            manager.make_init(
                &made_id,
                &made_dir,
                &made_root,
                work_dir,
                private_network,
                idle,
            )
        })
        .await;
        let made = match made.and_then(|made| made) {
            Ok(made) => made,
            Err(e) => {
                // Nothing was made (or the trip itself was lost, and what it made is found
                // as a stray later).
                self.inner.host_ids.give_back(host_id);
                return Err(e);
            }
        };
        // From here on, every way out but success ends what was made.
        let mut parts = ReadyInitParts::new(self.clone(), dir.clone(), host_id);
        parts.cgroup = made.cgroup;
        let applied = made.applied;
        let init = made.init.map(|init| {
            parts.init = Some(init.pidfd);
            (init.pid, init.control)
        });
        made.result?;
        let Some((pid, control)) = init else {
            return Err(JobError::Host("cannot start a job's init process".into()));
        };
        marks.push(("clone", t0.elapsed()));
        let base = self.sandbox_base(root, private_network, disk_bytes.is_some(), rootfs.clone());
        let isolation = self.isolation(&id, base.clone(), user, host_id);
        let params = Prepare {
            sandbox: base,
            cgroup_dirs: parts
                .cgroup
                .as_ref()
                .map(|cg| cg.legacy_dirs().iter().map(|d| d.to_path_buf()).collect())
                .unwrap_or_default(),
            job: Some(isolation.clone()),
        };
        // The job's own filesystem (from the disk pool when it has one, else made now)
        // while the init prepares: the init needs it only at the start, attached at /work.
        let take_disk = async {
            match disk_bytes {
                Some(size) => self
                    .take_disk(size, idle, &dir, (host_id, host_id))
                    .await
                    .map(Some),
                None => Ok(None),
            }
        };
        let (control, disk) = tokio::join!(prepare(control, &params), take_disk);
        let control = control.map_err(|e| {
            JobError::Host(format!("cannot prepare a job's sandbox: {}", e.message))
        })?;
        let disk = disk?;
        marks.push(("prepare", t0.elapsed()));
        // The job's user (its host id outside its user namespace) owns its /work from the
        // start: a job without uploads needs nothing else written at its launch. A job
        // disk was handed over when it was taken.
        if disk.is_none() {
            let work = dir.join("work");
            let owner = Some((host_id, host_id));
            super::idle::run(idle, move || {
                super::uploads::write_uploads(&work, &[], owner)
            })
            .await?
            .map_err(|e| JobError::Host(format!("cannot hand /work over: {e}")))?;
        }
        marks.push(("uploads", t0.elapsed()));
        tracing::debug!(idle, steps_ended_at = ?marks, "ready init prepared");
        let Some((pidfd, cgroup)) = parts.keep() else {
            return Err(JobError::Host("cannot start a job's init process".into()));
        };
        Ok(ReadyInit {
            mount_ns: std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
                .ok()
                .map(OwnedFd::from),
            id,
            host_id,
            isolation,
            pid,
            start_ticks: super::reconcile::process_start_ticks(pid),
            pidfd,
            control,
            cgroup,
            applied,
            private_network,
            disk_bytes,
            disk,
            rootfs: rootfs.clone(),
        })
    }

    /// The job-independent part of a sandbox whose root is built in `root_dir`.
    fn sandbox_base(
        &self,
        root_dir: PathBuf,
        private_network: bool,
        work_disk: bool,
        rootfs: Rootfs,
    ) -> SandboxBase {
        SandboxBase {
            root_dir,
            rootfs,
            network: if private_network {
                Network::None
            } else {
                Network::Host
            },
            tmp_size_bytes: self.inner.settings.tmp_size_bytes,
            tmp_inodes: self.inner.settings.tmp_inodes,
            work_disk,
        }
    }

    /// The whole sandbox of job `id`, whose job-independent part is `base`, for a job that
    /// runs as `user` (uid, gid) and host id `host_id`; without a shared directory.
    fn isolation(&self, id: &str, base: SandboxBase, user: (u32, u32), host_id: u32) -> Isolation {
        let dir = self.job_dir(id);
        Isolation {
            hostname: id[..8.min(id.len())].to_owned(),
            root_dir: base.root_dir,
            work_dir: dir.join("work"),
            work_disk: base.work_disk,
            rootfs: base.rootfs,
            uid: user.0,
            gid: user.1,
            host_id: Some(host_id),
            network: base.network,
            tmp_size_bytes: base.tmp_size_bytes,
            tmp_inodes: base.tmp_inodes,
            shared_dir: None,
        }
    }

    /// Ends a ready init that will get no job, and removes its cgroup and directory; its
    /// host id is given back once the init is gone.
    pub(super) async fn discard(&self, ready: ReadyInit) {
        let ReadyInit {
            id,
            pidfd,
            cgroup,
            host_id,
            ..
        } = ready;
        let _ = silo_sandbox::spawn::signal(pidfd.as_fd(), libc::SIGKILL);
        remove_ready_init(self.job_dir(&id), Some(pidfd), cgroup).await;
        self.inner.host_ids.give_back(host_id);
    }

    /// A ready init for a job, from the pool when there is one that fits, else a new one.
    ///
    /// The pool holds inits for the host view (topped up to its size) and, for each
    /// read-only runtime a job has used, [`READY_PER_RUNTIME`] more, replaced as soon as a
    /// job takes one: the next job in that runtime starts as fast as one on the host view.
    /// The replacement is the caller's to ask for, with [`JobManager::replenish`], once its
    /// job runs: made during the launch, it would compete with the launch it serves.
    ///
    /// When the pool is empty but an init of the kind it keeps is being prepared for it at
    /// the normal priority, and no other launch waits for that one, the launch waits for
    /// the next init the pool gets and has one more prepared for the pool: the refill
    /// started earlier and is further along than an init the launch would start now.
    /// Likewise a launch in a read-only runtime that finds no init there waits for the one
    /// being prepared in it, when no other launch waits for that one.
    pub(super) async fn take_ready(
        &self,
        private_network: bool,
        disk_bytes: Option<u64>,
        rootfs: &Rootfs,
        user: (u32, u32),
    ) -> Result<ReadyInit, JobError> {
        // The kind of init the pool keeps: on the host view, and in a read-only runtime
        // (see `keep_ready_in`).
        let default_kind = private_network
            && disk_bytes == self.inner.settings.bounds.defaults.disk_bytes
            && user == self.inner.settings.job_user;
        let pooled_kind = default_kind && *rootfs == Rootfs::HostView;
        let runtime_kind = default_kind
            && matches!(
                rootfs,
                Rootfs::Runtime {
                    writable: false,
                    ..
                }
            );
        let fits = |r: &ReadyInit| {
            r.private_network == private_network
                && r.disk_bytes == disk_bytes
                && r.rootfs == *rootfs
                && (r.isolation.uid, r.isolation.gid) == user
        };
        let taken = match self.inner.pool.lock() {
            Ok(mut pool) => match pool.take(fits, pooled_kind) {
                // In a runtime, the launch waits for the init being prepared there, as a
                // launch on the host view does for a refill.
                Taken::Nothing if runtime_kind => {
                    let in_flight = self
                        .inner
                        .refilling_runtimes
                        .lock()
                        .is_ok_and(|marks| marks.is_marked(rootfs));
                    pool.wait_in_runtime(rootfs, in_flight)
                        .map_or(Taken::Nothing, Taken::Next)
                }
                taken => taken,
            },
            Err(_) => Taken::Nothing,
        };
        let next = match taken {
            Taken::Ready(ready) => return Ok(ready),
            Taken::Next(next) => Some(next),
            Taken::Nothing => None,
        };
        metrics::counter!(crate::metrics::READY_POOL_MISSES).increment(1);
        if let Some(next) = next {
            // The init this launch takes leaves the pool short of one: it is made now (a
            // runtime's next one once this launch's job runs, see `replenish`).
            if !runtime_kind {
                self.refill();
            }
            tracing::debug!("no ready init: the launch waits for the one being prepared");
            let wait = Wait {
                next: Some(next),
                manager: self.clone(),
                runtime: runtime_kind.then(|| rootfs.clone()),
            };
            // None: that refill failed, and the launch prepares its own.
            if let Some(ready) = wait.ready().await {
                return Ok(ready);
            }
        }
        tracing::debug!("no ready init fits: the launch prepares one on its path");
        self.spawn_ready(private_network, disk_bytes, rootfs, false, user)
            .await
    }

    /// Replaces what a launch in `rootfs` took from the pool: tops the host view's inits
    /// up, or (`keep_ready`) keeps inits ready in the runtime `rootfs`. While one is still
    /// ready, the new ones prepare under `SCHED_IDLE`, so they take only CPU that nothing
    /// else wants.
    pub(super) fn replenish(&self, rootfs: &Rootfs, keep_ready: bool) {
        match rootfs {
            Rootfs::HostView => self.refill(),
            Rootfs::Runtime { .. } if keep_ready => self.keep_ready_in(rootfs.clone()),
            Rootfs::Runtime { .. } => {}
        }
    }

    /// Keeps [`READY_PER_RUNTIME`] inits (private network, default disk) ready in the runtime
    /// `rootfs`, prepared in the background one at a time unless one is being made: the
    /// first at the normal priority, so that it is ready for the next launch there, the
    /// next under `SCHED_IDLE`, as on the host view.
    fn keep_ready_in(&self, rootfs: Rootfs) {
        let target = self.inner.settings.ready_inits.min(READY_PER_RUNTIME);
        if target == 0 {
            return;
        }
        // Counted and marked under the pool's lock, as `discard_ready_in` clears marks.
        let (have, mut mark) = {
            let Ok(pool) = self.inner.pool.lock() else {
                return;
            };
            let have = pool.ready_in(&rootfs);
            if have >= target {
                return;
            }
            let Some(mark) = self
                .inner
                .refilling_runtimes
                .lock()
                .ok()
                .and_then(|mut marks| marks.mark(&rootfs))
            else {
                return;
            };
            (have, mark)
        };
        let manager = self.clone();
        tokio::spawn(async move {
            let disk = manager.inner.settings.bounds.defaults.disk_bytes;
            let user = manager.inner.settings.job_user;
            let mut have = have;
            loop {
                let idle = have > 0;
                let unfinished =
                    Unfinished::new(&manager, Preparing::Runtime(rootfs.clone(), mark));
                let ready = manager.spawn_ready(true, disk, &rootfs, idle, user).await;
                unfinished.finished();
                let mut keep = None;
                match ready {
                    Ok(ready) => keep = Some(ready),
                    Err(e) => tracing::warn!("cannot prepare a ready init in a runtime: {e}"),
                }
                // Registered and unmarked under the pool's lock, so that `discard_ready_in`
                // either sees it in the pool or sees it pending; the next one is marked
                // under the same lock, so that a runtime removed meanwhile gets no other.
                // Its own mark only: had the runtime been removed (its mark cleared) and
                // installed again at the same path, a newer preparation's mark is there
                // now, and this init was prepared in the old tree.
                let (stale, next) = match manager.inner.pool.lock() {
                    Ok(mut pool) => {
                        let mut marks = manager.inner.refilling_runtimes.lock().ok();
                        let gone = marks.as_mut().is_none_or(|m| !m.unmark(&rootfs, mark));
                        match keep.take() {
                            Some(ready) if !gone => {
                                pool.runtime_ready(&rootfs, ready);
                                let have = pool.ready_in(&rootfs);
                                let again = if have < target {
                                    marks.as_mut().and_then(|m| m.mark(&rootfs))
                                } else {
                                    None
                                };
                                (None, again.map(|again| (have, again)))
                            }
                            other => {
                                // A newer preparation's launch keeps waiting for that one.
                                if !gone {
                                    pool.runtime_failed(&rootfs);
                                }
                                (other, None)
                            }
                        }
                    }
                    Err(_) => (keep.take(), None),
                };
                if let Some(ready) = stale {
                    manager.discard(ready).await;
                }
                match next {
                    Some((ready_now, again)) => (have, mark) = (ready_now, again),
                    None => return,
                }
            }
        });
    }

    /// Ends the ready inits prepared in the runtime tree `rootfs` (the runtime is being
    /// removed or replaced); one being prepared now is ended when it is ready.
    pub async fn discard_ready_in(&self, rootfs: &Path) {
        let matches = |r: &Rootfs| matches!(r, Rootfs::Runtime { path, .. } if path == rootfs);
        let taken: Vec<ReadyInit> = match self.inner.pool.lock() {
            Ok(mut pool) => {
                if let Ok(mut marks) = self.inner.refilling_runtimes.lock() {
                    marks.clear(matches);
                }
                // A launch waiting for an init there prepares its own (and finds the
                // runtime gone, or not).
                pool.runtime_waiters.retain(|(r, _)| !matches(r));
                let (gone, kept) = std::mem::take(&mut pool.inits)
                    .into_iter()
                    .partition(|r| matches(&r.rootfs));
                pool.inits = kept;
                gone
            }
            Err(_) => Vec::new(),
        };
        for ready in taken {
            self.discard(ready).await;
        }
    }

    /// How many ready inits wait in the pool now.
    pub fn ready_count(&self) -> usize {
        self.inner.pool.lock().map(|p| p.inits.len()).unwrap_or(0)
    }

    /// Ends the pool's ready inits and removes their cgroups and directories (at shutdown;
    /// running jobs are left alone and adopted by the next server).
    pub async fn drain_pool(&self) {
        let pool: Vec<ReadyInit> = self
            .inner
            .pool
            .lock()
            .map(|mut p| std::mem::take(&mut p.inits))
            .unwrap_or_default();
        for ready in pool {
            self.discard(ready).await;
        }
        self.drain_disks();
    }

    /// Tops the pool up to its size in the background (inits with a private network).
    pub(super) fn refill(&self) {
        let manager = self.clone();
        tokio::spawn(async move {
            let target = manager.inner.settings.ready_inits;
            loop {
                // Topping up a pool that still has an init waits for idle CPU
                // (SCHED_IDLE); an empty pool is refilled at the normal priority, or under
                // steady load the next launch would make its init itself, on its path.
                let started = manager.inner.pool.lock().ok().and_then(|mut pool| {
                    let have = pool
                        .inits
                        .iter()
                        .filter(|r| r.rootfs == Rootfs::HostView)
                        .count();
                    pool.start_refill(have, target)
                });
                let Some((id, idle)) = started else {
                    return;
                };
                let disk = manager.inner.settings.bounds.defaults.disk_bytes;
                let user = manager.inner.settings.job_user;
                let unfinished = Unfinished::new(&manager, Preparing::Refill(id));
                let ready = manager
                    .spawn_ready(true, disk, &Rootfs::HostView, idle, user)
                    .await;
                unfinished.finished();
                let failed = ready.as_ref().err().map(|e| e.to_string());
                if let Ok(mut pool) = manager.inner.pool.lock() {
                    pool.refill_ended(id, ready.ok());
                }
                if let Some(e) = failed {
                    tracing::warn!("cannot prepare a ready init: {e}");
                    return;
                }
            }
        });
    }
}

/// An init being prepared for the pool, which launches may be waiting for.
enum Preparing {
    /// A refill of the host view's inits (its id).
    Refill(u64),
    /// An init for a runtime (the runtime, and the preparation's mark on it).
    Runtime(Rootfs, u64),
}

/// Ends, when dropped before [`Unfinished::finished`], what a preparation that never
/// finished (its task panicked or was cancelled) leaves counted: the launches waiting for
/// it are told, and prepare their own, instead of waiting for good.
struct Unfinished {
    manager: JobManager,
    preparing: Option<Preparing>,
}

impl Unfinished {
    fn new(manager: &JobManager, preparing: Preparing) -> Unfinished {
        Unfinished {
            manager: manager.clone(),
            preparing: Some(preparing),
        }
    }

    /// The preparation finished (well or not): its caller accounts for it.
    fn finished(mut self) {
        self.preparing = None;
    }
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        let Some(preparing) = self.preparing.take() else {
            return;
        };
        let Ok(mut pool) = self.manager.inner.pool.lock() else {
            return;
        };
        match preparing {
            Preparing::Refill(id) => pool.refill_ended(id, None),
            Preparing::Runtime(rootfs, mark) => {
                let ours = self
                    .manager
                    .inner
                    .refilling_runtimes
                    .lock()
                    .is_ok_and(|mut marks| marks.unmark(&rootfs, mark));
                // A newer preparation's launch keeps waiting for that one.
                if ours {
                    pool.runtime_failed(&rootfs);
                }
            }
        }
    }
}

/// Creates a job's directory (for root only), the directory its root is built in, its
/// work directory (`work`, unless the job has a disk of its own) and its log; returns the
/// log, opened for appending. Leaves nothing behind on failure.
fn create_job_dir(dir: &Path, root: &Path, work: bool) -> Result<std::fs::File, JobError> {
    let created = std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .and_then(|()| std::fs::create_dir(root))
        .and_then(|()| match work {
            true => std::fs::create_dir(dir.join("work")),
            false => Ok(()),
        })
        .and_then(|()| {
            OpenOptions::new()
                .create_new(true)
                .append(true)
                .mode(0o600)
                .open(dir.join("log"))
        });
    if created.is_err() {
        let _ = crate::tree::remove_dir_all(dir);
    }
    created.map_err(|e| JobError::Host(format!("cannot create {}: {e}", dir.display())))
}

/// What [`JobManager::make_init`] made once the job's directory was, kept even when a later
/// step failed (`result`), so that the caller ends it.
struct Made {
    cgroup: Option<silo_cgroup::JobCgroup>,
    /// The default limits written to `cgroup`.
    applied: Option<silo_cgroup::Limits>,
    init: Option<silo_sandbox::spawn::InitProcess>,
    result: Result<(), JobError>,
}

impl JobManager {
    /// The blocking part of a ready init: its job's directory (`dir`, with `root` and, with
    /// `work`, a work directory), its cgroup with the default limits, and the init cloned
    /// into it, not yet prepared. An error: nothing was made.
    fn make_init(
        &self,
        id: &str,
        dir: &Path,
        root: &Path,
        work: bool,
        private_network: bool,
        idle: bool,
    ) -> Result<Made, JobError> {
        let log = create_job_dir(dir, root, work)?;
        let mut made = Made {
            cgroup: None,
            applied: None,
            init: None,
            result: Ok(()),
        };
        if let Some(cgroups) = &self.inner.settings.cgroups {
            let cg = match cgroups.create_job(id) {
                Ok(cg) => cg,
                Err(e) => {
                    made.result = Err(resources::cgroup_error(e));
                    return Ok(made);
                }
            };
            // The defaults apply to most jobs; an io default needs the job's disk, so it
            // waits for the job.
            let defaults = &self.inner.settings.bounds.defaults;
            let limits = match defaults.io_bps {
                Some(_) => Ok(None),
                None => resources::cgroup_limits(Some(defaults), root).and_then(|limits| {
                    cg.apply(&limits).map_err(resources::cgroup_error)?;
                    Ok(Some(limits))
                }),
            };
            made.cgroup = Some(cg);
            match limits {
                Ok(applied) => made.applied = applied,
                Err(e) => {
                    made.result = Err(e);
                    return Ok(made);
                }
            }
        }
        let cgroup_fd = made.cgroup.as_ref().and_then(|cg| cg.clone_into_fd());
        let spawned = self.inner.spawner.spawn(&SpawnRequest {
            exe: self.inner.exe.as_fd(),
            log: log.as_fd(),
            cgroup: cgroup_fd,
            namespaces: Namespaces {
                network: private_network,
            },
            idle,
        });
        match spawned {
            Ok(init) => made.init = Some(init),
            Err(e) => {
                made.result = Err(JobError::Host(format!(
                    "cannot start a job's init process: {e}"
                )))
            }
        }
        Ok(made)
    }
}

/// What [`JobManager::spawn_ready`] has made of a ready init so far: its directory, then
/// its cgroup and its init process. Dropped before [`ReadyInitParts::keep`], it ends the
/// init at once and removes the rest in the background; whatever a server that shuts down
/// meanwhile leaves of it, the next server removes as strays.
struct ReadyInitParts {
    manager: JobManager,
    dir: Option<PathBuf>,
    host_id: u32,
    cgroup: Option<silo_cgroup::JobCgroup>,
    /// The init's pidfd.
    init: Option<OwnedFd>,
}

impl ReadyInitParts {
    /// Parts of which only the directory `dir` and the host id exist yet.
    fn new(manager: JobManager, dir: PathBuf, host_id: u32) -> ReadyInitParts {
        ReadyInitParts {
            manager,
            dir: Some(dir),
            host_id,
            cgroup: None,
            init: None,
        }
    }

    /// Keeps everything made: the init's pidfd and the cgroup, for the ready init; `None`
    /// (and everything ended) when no init was made.
    fn keep(mut self) -> Option<(OwnedFd, Option<silo_cgroup::JobCgroup>)> {
        let init = self.init.take()?;
        self.dir = None;
        Some((init, self.cgroup.take()))
    }
}

impl Drop for ReadyInitParts {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let (init, cgroup) = (self.init.take(), self.cgroup.take());
        if let Some(pidfd) = &init {
            let _ = silo_sandbox::spawn::signal(pidfd.as_fd(), libc::SIGKILL);
        }
        let (manager, host_id) = (self.manager.clone(), self.host_id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                remove_ready_init(dir, init, cgroup).await;
                manager.inner.host_ids.give_back(host_id);
            });
        }
    }
}

/// Waits for a killed ready init to end, then removes its cgroup (killing anything left
/// in it) and its directory, on a blocking thread; what cannot be removed stays.
async fn remove_ready_init(
    dir: PathBuf,
    init: Option<OwnedFd>,
    cgroup: Option<silo_cgroup::JobCgroup>,
) {
    if let Some(pidfd) = init {
        super::supervisor::wait_reaped(pidfd).await;
    }
    let _ = tokio::task::spawn_blocking(move || {
        if let Some(cg) = cgroup {
            let _ = cg.kill_all();
            let _ = cg.remove();
        }
        let _ = crate::tree::remove_dir_all(dir);
    })
    .await;
}

/// Hello, version check, `sandbox.prepare`, its answer: the connection to an init that
/// waits for its job.
async fn prepare(
    control: std::os::unix::net::UnixStream,
    params: &Prepare,
) -> Result<InitConnection, InitError> {
    let mut control = InitConnection::from_std(control)
        .map_err(|e| InitError::protocol(format!("cannot use the control socket: {e}")))?;
    control.hello(HELLO_DEADLINE).await?;
    control
        .call(METHOD_PREPARE, params, PREPARE_DEADLINE)
        .await?;
    Ok(control)
}

#[cfg(test)]
mod tests {
    use super::{Pool, RuntimeMarks, Taken};

    #[test]
    fn a_preparation_unmarks_only_its_own_mark() {
        let (a, b) = (runtime("a"), runtime("b"));
        let mut marks = RuntimeMarks::default();
        let first = marks.mark(&a).unwrap();
        assert_eq!(marks.mark(&a), None, "one preparation per tree at a time");
        let other = marks.mark(&b).unwrap();
        // The runtime is removed (its mark cleared) and installed again at the same path;
        // a launch there marks a new preparation before the first one finishes.
        marks.clear(|r| *r == a);
        assert!(!marks.is_marked(&a));
        let second = marks.mark(&a).unwrap();
        assert_ne!(first, second);
        // The first preparation finds its mark gone and leaves the second one's.
        assert!(!marks.unmark(&a, first));
        assert!(marks.is_marked(&a));
        assert!(marks.unmark(&a, second));
        assert!(!marks.is_marked(&a));
        assert!(marks.unmark(&b, other));
    }

    fn any(_: &u32) -> bool {
        true
    }

    #[test]
    fn a_launch_takes_a_ready_init_first() {
        let mut pool = Pool::<u32>::default();
        pool.inits.push(7);
        assert!(matches!(pool.take(any, true), Taken::Ready(7)));
        assert!(matches!(pool.take(any, true), Taken::Nothing));
    }

    #[test]
    fn a_launch_waits_only_for_a_refill_at_the_normal_priority_that_no_other_waits_for() {
        let mut pool = Pool::<u32>::default();
        // The pool had an init: this refill prepares under SCHED_IDLE.
        let (idle, is_idle) = pool.start_refill(1, 2).unwrap();
        assert!(is_idle);
        assert!(matches!(pool.take(any, true), Taken::Nothing));
        let (prompt, is_idle) = pool.start_refill(0, 2).unwrap();
        assert!(!is_idle);
        // Only a launch of the kind the pool keeps waits.
        assert!(matches!(pool.take(any, false), Taken::Nothing));
        let Taken::Next(mut next) = pool.take(any, true) else {
            panic!("the launch does not wait for the refill");
        };
        // One launch per prompt refill.
        assert!(matches!(pool.take(any, true), Taken::Nothing));
        // Whichever refill ends first serves the waiting launch; the next one is kept.
        pool.refill_ended(idle, Some(1));
        assert_eq!(next.try_recv().unwrap(), 1);
        pool.refill_ended(prompt, Some(2));
        assert_eq!(pool.inits, vec![2]);
    }

    #[test]
    fn a_waiting_launch_is_counted_as_an_init_the_pool_lacks() {
        let mut pool = Pool::<u32>::default();
        assert!(pool.start_refill(0, 2).is_some());
        assert!(pool.start_refill(0, 2).is_some());
        assert!(pool.start_refill(0, 2).is_none());
        let Taken::Next(_next) = pool.take(any, true) else {
            panic!("the launch does not wait");
        };
        // The refill it waits for is its own now: one more is made for the pool.
        assert!(pool.start_refill(0, 2).is_some());
        assert!(pool.start_refill(0, 2).is_none());
    }

    #[test]
    fn an_init_for_a_launch_that_went_away_goes_to_the_next_or_into_the_pool() {
        let mut pool = Pool::<u32>::default();
        let (a, _) = pool.start_refill(0, 2).unwrap();
        let (b, _) = pool.start_refill(0, 2).unwrap();
        let Taken::Next(gone) = pool.take(any, true) else {
            panic!("no wait");
        };
        let Taken::Next(mut waiting) = pool.take(any, true) else {
            panic!("no wait");
        };
        drop(gone);
        pool.refill_ended(a, Some(1));
        assert_eq!(waiting.try_recv().unwrap(), 1);
        pool.refill_ended(b, Some(2));
        assert_eq!(pool.inits, vec![2]);
    }

    #[test]
    fn a_launch_given_up_is_not_counted_as_one_that_needs_an_init() {
        let mut pool = Pool::<u32>::default();
        assert!(pool.start_refill(0, 2).is_some());
        assert!(pool.start_refill(0, 2).is_some());
        let Taken::Next(gone) = pool.take(any, true) else {
            panic!("no wait");
        };
        drop(gone);
        // No third refill for a launch that went away, and its refill serves the next.
        assert!(pool.start_refill(0, 2).is_none());
        assert!(matches!(pool.take(any, true), Taken::Next(_)));
    }

    fn runtime(name: &str) -> silo_sandbox::Rootfs {
        silo_sandbox::Rootfs::Runtime {
            path: format!("/runtimes/{name}/rootfs").into(),
            writable: false,
        }
    }

    #[test]
    fn a_launch_in_a_runtime_waits_for_the_init_being_prepared_there_alone() {
        let mut pool = Pool::<u32>::default();
        let (python, node) = (runtime("python"), runtime("node"));
        // Nothing in flight: the launch prepares its own.
        assert!(pool.wait_in_runtime(&python, false).is_none());
        let mut first = pool.wait_in_runtime(&python, true).expect("no wait");
        // One init in flight, one launch waits for it; another runtime is apart.
        assert!(pool.wait_in_runtime(&python, true).is_none());
        let mut other = pool.wait_in_runtime(&node, true).expect("no wait");
        pool.runtime_ready(&python, 1);
        assert_eq!(first.try_recv().unwrap(), 1);
        assert!(pool.inits.is_empty());
        // The next one, with no launch waiting, is kept.
        pool.runtime_ready(&python, 2);
        assert_eq!(pool.inits, vec![2]);
        // A failed preparation ends the wait: that launch prepares its own.
        pool.runtime_failed(&node);
        assert!(other.try_recv().is_err());
        assert!(pool.runtime_waiters.is_empty());
    }

    #[test]
    fn a_runtime_init_for_a_launch_that_went_away_is_kept() {
        let mut pool = Pool::<u32>::default();
        let python = runtime("python");
        drop(pool.wait_in_runtime(&python, true).expect("no wait"));
        // A launch given up does not block the next one's wait.
        let mut next = pool.wait_in_runtime(&python, true).expect("no wait");
        next.close();
        pool.runtime_ready(&python, 3);
        assert_eq!(pool.inits, vec![3]);
    }

    #[test]
    fn a_failed_refill_ends_the_waits_it_was_counted_for() {
        let mut pool = Pool::<u32>::default();
        let (a, _) = pool.start_refill(0, 2).unwrap();
        let (b, _) = pool.start_refill(0, 2).unwrap();
        let Taken::Next(mut first) = pool.take(any, true) else {
            panic!("no wait");
        };
        let Taken::Next(mut second) = pool.take(any, true) else {
            panic!("no wait");
        };
        pool.refill_ended(a, None);
        // One refill is left for two launches: the oldest prepares its own.
        assert!(first.try_recv().is_err());
        assert!(matches!(
            second.try_recv(),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty)
        ));
        pool.refill_ended(b, Some(2));
        assert_eq!(second.try_recv().unwrap(), 2);
        assert!(pool.inits.is_empty() && pool.waiters.is_empty() && pool.refills.is_empty());
    }
}
