//! Inits that are ready before their job arrives.
//!
//! Starting a sandbox has a part that does not depend on the job: creating the cgroup,
//! cloning the init into its namespaces, re-executing the binary, and assembling the
//! job-independent part of the root filesystem. [`JobManager::spawn_ready`] does all of
//! that and stops at the init protocol's `sandbox.prepare`; the job then only needs its
//! own files, its limits and `job.start`. The manager keeps a few such inits in a pool so
//! that a job's launch pays only for what is its own. Each ready init already owns the id
//! its job will get: its cgroup and directory are made under that id.

use std::fs::OpenOptions;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use silo_sandbox::protocol::{InitError, METHOD_PREPARE};
use silo_sandbox::spawn::{Namespaces, SpawnRequest, spawn_init};
use silo_sandbox::{Network, Prepare, Rootfs, SandboxBase};

use super::init_connection::InitConnection;
use super::{JobError, JobManager, resources};

/// The nice value of inits prepared for the pool while they prepare and wait.
const READY_NICE: i32 = 10;
/// How long a new init has to say hello.
const HELLO_DEADLINE: Duration = Duration::from_secs(5);
/// How long an init has to prepare its sandbox.
const PREPARE_DEADLINE: Duration = Duration::from_secs(30);

/// An init that has prepared its sandbox and waits for its job's `job.start`.
pub struct ReadyInit {
    /// The id its job gets.
    pub id: String,
    /// Its pid in the server's pid namespace.
    pub pid: i32,
    /// For signalling and reaping it.
    pub pidfd: OwnedFd,
    /// The server's end of its control socket, hello and preparation done.
    pub control: InitConnection,
    /// Its job's cgroup, without limits yet.
    pub cgroup: Option<silo_cgroup::JobCgroup>,
    /// Whether it has a private network namespace (else it shares the host's).
    pub private_network: bool,
    /// The size of the filesystem mounted at its /work, when it has one of its own.
    pub disk_bytes: Option<u64>,
    /// The root filesystem it has assembled.
    pub rootfs: Rootfs,
    /// Its mount namespace, held open so that the job's mounts (its /work filesystem above
    /// all, whose unmount flushes and detaches a loop device) are torn down after the job's
    /// end is published, off the launch's path, not while the init exits.
    pub mount_ns: Option<OwnedFd>,
}

impl JobManager {
    /// Creates a job's cgroup and directory under a new id, starts its init and has it
    /// prepare the job-independent part of the sandbox. Leaves nothing behind on failure.
    pub(super) async fn spawn_ready(
        &self,
        private_network: bool,
        disk_bytes: Option<u64>,
        rootfs: &Rootfs,
        nice: i32,
    ) -> Result<ReadyInit, JobError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.spawn_ready_as(id, private_network, disk_bytes, rootfs, nice)
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
        nice: i32,
    ) -> Result<ReadyInit, JobError> {
        let dir = self.job_dir(&id);
        let root = dir.join("root");
        let log = create_job_dir(&dir, &root).await?;
        // From here on, every way out but success ends what was made.
        let mut parts = ReadyInitParts::new(dir.clone());
        let work_disk = match disk_bytes {
            Some(size) => Some(make_disk(&dir.join(DISK_IMAGE), size).await?),
            None => None,
        };
        if let Some(cgroups) = &self.inner.settings.cgroups {
            parts.cgroup = Some(cgroups.create_job(&id).map_err(resources::cgroup_error)?);
        }
        let init = spawn_init(&SpawnRequest {
            exe: self.inner.exe.as_fd(),
            log: log.as_fd(),
            cgroup: parts.cgroup.as_ref().and_then(|cg| cg.clone_into_fd()),
            namespaces: Namespaces {
                network: private_network,
            },
            nice,
        })
        .map_err(|e| JobError::Host(format!("cannot start a job's init process: {e}")))?;
        drop(log);
        parts.init = Some(init.pidfd);
        let params = Prepare {
            sandbox: self.sandbox_base(root, private_network, work_disk, rootfs.clone()),
            cgroup_dirs: parts
                .cgroup
                .as_ref()
                .map(|cg| cg.legacy_dirs().iter().map(|d| d.to_path_buf()).collect())
                .unwrap_or_default(),
        };
        let control = prepare(init.control, &params).await.map_err(|e| {
            JobError::Host(format!("cannot prepare a job's sandbox: {}", e.message))
        })?;
        let (pidfd, cgroup) = parts.keep();
        Ok(ReadyInit {
            mount_ns: std::fs::File::open(format!("/proc/{}/ns/mnt", init.pid))
                .ok()
                .map(OwnedFd::from),
            id,
            pid: init.pid,
            pidfd,
            control,
            cgroup,
            private_network,
            disk_bytes,
            rootfs: rootfs.clone(),
        })
    }

    /// The job-independent part of a sandbox whose root is built in `root_dir`.
    fn sandbox_base(
        &self,
        root_dir: PathBuf,
        private_network: bool,
        work_disk: Option<PathBuf>,
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

    /// Ends a ready init that will get no job, and removes its cgroup and directory.
    pub(super) async fn discard(
        &self,
        id: &str,
        pidfd: Option<OwnedFd>,
        cgroup: Option<silo_cgroup::JobCgroup>,
    ) {
        if let Some(pidfd) = &pidfd {
            let _ = silo_sandbox::spawn::signal(pidfd.as_fd(), libc::SIGKILL);
        }
        remove_ready_init(self.job_dir(id), pidfd, cgroup).await;
    }

    /// A ready init for a job, from the pool when there is one that fits, else a new one.
    ///
    /// The pool holds inits for the host view (topped up to its size) and, for each
    /// read-only runtime a job has used, one more, replaced as soon as a job takes it: the
    /// next job in that runtime starts as fast as one on the host view.
    pub(super) async fn take_ready(
        &self,
        private_network: bool,
        disk_bytes: Option<u64>,
        rootfs: &Rootfs,
        keep_ready: bool,
    ) -> Result<ReadyInit, JobError> {
        let pooled = self.inner.pool.lock().ok().and_then(|mut pool| {
            let i = pool.iter().position(|r| {
                r.private_network == private_network
                    && r.disk_bytes == disk_bytes
                    && r.rootfs == *rootfs
            })?;
            Some(pool.swap_remove(i))
        });
        match rootfs {
            Rootfs::HostView if pooled.is_some() => self.refill(),
            Rootfs::Runtime { .. } if keep_ready => self.keep_one_ready_in(rootfs.clone()),
            _ => {}
        }
        match pooled {
            Some(ready) => Ok(ready),
            None => {
                self.spawn_ready(private_network, disk_bytes, rootfs, 0)
                    .await
            }
        }
    }

    /// Prepares, in the background, one ready init in the runtime `rootfs` (private
    /// network, default disk) unless the pool has one or one is being made.
    fn keep_one_ready_in(&self, rootfs: Rootfs) {
        if self.inner.settings.ready_inits == 0 {
            return;
        }
        let has_one = |manager: &JobManager| {
            manager
                .inner
                .pool
                .lock()
                .map(|p| p.iter().any(|r| r.rootfs == rootfs && r.private_network))
                .unwrap_or(true)
        };
        if has_one(self) {
            return;
        }
        let marked = self
            .inner
            .refilling_runtimes
            .lock()
            .is_ok_and(|mut pending| pending.insert(rootfs.clone()));
        if !marked {
            return;
        }
        let manager = self.clone();
        tokio::spawn(async move {
            let disk = manager.inner.settings.bounds.defaults.disk_bytes;
            let ready = manager.spawn_ready(true, disk, &rootfs, READY_NICE).await;
            let mut keep = None;
            match ready {
                Ok(ready) => keep = Some(ready),
                Err(e) => tracing::warn!("cannot prepare a ready init in a runtime: {e}"),
            }
            // Registered and unmarked under the pool's lock, so that `discard_ready_in`
            // either sees it in the pool or sees it pending.
            let stale = match manager.inner.pool.lock() {
                Ok(mut pool) => {
                    let gone = manager
                        .inner
                        .refilling_runtimes
                        .lock()
                        .map(|mut p| !p.remove(&rootfs))
                        .unwrap_or(true);
                    match keep.take() {
                        Some(ready) if !gone => {
                            pool.push(ready);
                            None
                        }
                        other => other,
                    }
                }
                Err(_) => keep.take(),
            };
            if let Some(ready) = stale {
                manager
                    .discard(&ready.id, Some(ready.pidfd), ready.cgroup)
                    .await;
            }
        });
    }

    /// Ends the ready inits prepared in the runtime tree `rootfs` (the runtime is being
    /// removed or replaced); one being prepared now is ended when it is ready.
    pub async fn discard_ready_in(&self, rootfs: &Path) {
        let matches = |r: &Rootfs| matches!(r, Rootfs::Runtime { path, .. } if path == rootfs);
        let taken: Vec<ReadyInit> = match self.inner.pool.lock() {
            Ok(mut pool) => {
                if let Ok(mut pending) = self.inner.refilling_runtimes.lock() {
                    pending.retain(|r| !matches(r));
                }
                let (gone, kept) = std::mem::take(&mut *pool)
                    .into_iter()
                    .partition(|r| matches(&r.rootfs));
                *pool = kept;
                gone
            }
            Err(_) => Vec::new(),
        };
        for ready in taken {
            self.discard(&ready.id, Some(ready.pidfd), ready.cgroup)
                .await;
        }
    }

    /// How many ready inits wait in the pool now.
    pub fn ready_count(&self) -> usize {
        self.inner.pool.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// Ends the pool's ready inits and removes their cgroups and directories (at shutdown;
    /// running jobs are left alone and adopted by the next server).
    pub async fn drain_pool(&self) {
        let pool: Vec<ReadyInit> = self
            .inner
            .pool
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        for ready in pool {
            self.discard(&ready.id, Some(ready.pidfd), ready.cgroup)
                .await;
        }
    }

    /// Tops the pool up to its size in the background (inits with a private network).
    pub(super) fn refill(&self) {
        let manager = self.clone();
        tokio::spawn(async move {
            let target = manager.inner.settings.ready_inits;
            loop {
                let have = manager
                    .inner
                    .pool
                    .lock()
                    .map(|p| p.iter().filter(|r| r.rootfs == Rootfs::HostView).count())
                    .unwrap_or(usize::MAX);
                let pending = manager.inner.refilling.fetch_add(1, Ordering::SeqCst);
                if have + pending >= target {
                    manager.inner.refilling.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
                let disk = manager.inner.settings.bounds.defaults.disk_bytes;
                let ready = manager
                    .spawn_ready(true, disk, &Rootfs::HostView, READY_NICE)
                    .await;
                manager.inner.refilling.fetch_sub(1, Ordering::SeqCst);
                match ready {
                    Ok(ready) => {
                        if let Ok(mut pool) = manager.inner.pool.lock() {
                            pool.push(ready);
                        }
                    }
                    Err(e) => {
                        tracing::warn!("cannot prepare a ready init: {e}");
                        return;
                    }
                }
            }
        });
    }
}

/// Creates a job's directory (for root only), the directory its root is built in, and its
/// log; returns the log, opened for appending. Leaves nothing behind on failure.
async fn create_job_dir(dir: &Path, root: &Path) -> Result<std::fs::File, JobError> {
    let (dir, root) = (dir.to_path_buf(), root.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let created = std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .and_then(|()| std::fs::create_dir(&root))
            .and_then(|()| {
                OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .mode(0o600)
                    .open(dir.join("log"))
            });
        if created.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        created.map_err(|e| JobError::Host(format!("cannot create {}: {e}", dir.display())))
    })
    .await
    .unwrap_or_else(|e| {
        Err(JobError::Host(format!(
            "cannot create a job's directory: {e}"
        )))
    })
}

/// What [`JobManager::spawn_ready`] has made of a ready init so far: its directory, then
/// its cgroup and its init process. Dropped before [`ReadyInitParts::keep`], it ends the
/// init at once and removes the rest in the background; whatever a server that shuts down
/// meanwhile leaves of it, the next server removes as strays.
struct ReadyInitParts {
    dir: Option<PathBuf>,
    cgroup: Option<silo_cgroup::JobCgroup>,
    /// The init's pidfd.
    init: Option<OwnedFd>,
}

impl ReadyInitParts {
    /// Parts of which only the directory `dir` exists yet.
    fn new(dir: PathBuf) -> ReadyInitParts {
        ReadyInitParts {
            dir: Some(dir),
            cgroup: None,
            init: None,
        }
    }

    /// Keeps everything made: the init's pidfd and the cgroup, for the ready init.
    fn keep(mut self) -> (OwnedFd, Option<silo_cgroup::JobCgroup>) {
        self.dir = None;
        let init = self
            .init
            .take()
            .expect("a ready init is kept only once its init runs");
        (init, self.cgroup.take())
    }
}

impl Drop for ReadyInitParts {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let (init, cgroup) = (self.init.take(), self.cgroup.take());
        if let Some(pidfd) = &init {
            let _ = silo_sandbox::spawn::signal(pidfd.as_fd(), libc::SIGKILL);
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(remove_ready_init(dir, init, cgroup));
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
        let _ = std::fs::remove_dir_all(dir);
    })
    .await;
}

/// The name of a job's disk image in its directory.
pub(super) const DISK_IMAGE: &str = "disk.img";

/// Makes an empty ext4 filesystem of `size` bytes in a new sparse file at `image`, in a
/// few milliseconds and a few hundred KiB whatever its size: no journal (the filesystem
/// lives as long as its job, and a host crash ends the job anyway), no blocks reserved for
/// root (the job's root is not the host's), no reserve for online resizing, and inode
/// tables left unwritten (lazy init; the sandbox mounts with noinit_itable, and a sparse
/// file reads as zeros).
async fn make_disk(image: &Path, size: u64) -> Result<PathBuf, JobError> {
    let failed = |e: String| {
        JobError::Host(format!(
            "cannot make the job's disk {}: {e}",
            image.display()
        ))
    };
    let file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(image)
        .map_err(|e| failed(e.to_string()))?;
    file.set_len(size).map_err(|e| failed(e.to_string()))?;
    drop(file);
    // At the lowest priority: it prepares a later job, and must not slow a starting one.
    let out = tokio::process::Command::new("nice")
        .args(["-n", "19", "mkfs.ext4"])
        .args(["-q", "-F", "-m", "0", "-O", "^has_journal,^resize_inode"])
        .args(["-E", "nodiscard,lazy_itable_init=1"])
        .arg(image)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| failed(format!("mkfs.ext4: {e}")))?;
    if !out.status.success() {
        return Err(failed(format!(
            "mkfs.ext4 {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(image.to_path_buf())
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
