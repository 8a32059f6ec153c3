//! A job that is starting or running: what readers, watchers and stoppers share.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, watch};

use silo_cgroup::JobCgroup;
use silo_proto::v1::Usage;

use crate::store::JobRow;

/// Why the server is ending a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// A client called StopJob.
    Request,
    /// The job ran longer than its timeout.
    Timeout(Duration),
    /// The state filesystem came under the server's reserve while this job's disk or log
    /// grew most, or (nothing measured growing) while this job could write to it directly.
    DiskFull {
        /// What the filesystem had left.
        free: Free,
        /// What of the job grew most and the bytes it held; `None` for a job that writes
        /// to the filesystem directly.
        grew: Option<(Room, u64)>,
    },
}

/// What the state filesystem had left when the state-space watch stopped a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Free {
    /// Bytes, under `--state-reserve`.
    Bytes(u64),
    /// Inodes, under 5 % of the filesystem's (a job writing to it directly can use them all
    /// up with empty files while bytes stay plenty).
    Inodes(u64),
}

/// What of a job takes room on the state filesystem, as the state-space watch measures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Room {
    /// Its /work disk's image.
    Work,
    /// Its log (output, kept up to `--log-cap`).
    Log,
}

/// A job between its start and its end.
pub struct LiveJob {
    /// The full id.
    pub id: String,
    /// The job as it is now; every state change is published here.
    pub row: watch::Sender<JobRow>,
    /// Bumped whenever the job's log grows or its state changes: log readers wait on it.
    pub progress: watch::Sender<u64>,
    /// The init process, once spawned.
    pidfd: Mutex<Option<OwnedFd>>,
    stop: Mutex<Option<StopCause>>,
    /// The job's cgroup, where the host has cgroups. Shared so that a kill, which can take
    /// seconds, runs without this lock held.
    cgroup: Mutex<Option<Arc<JobCgroup>>>,
    /// The job's place under the server's `--max-jobs`, held until its end is published.
    slot: Mutex<Option<OwnedSemaphorePermit>>,
    /// The job writes to the state filesystem directly, not through a disk of its own (a
    /// runtime build's step writing the tree, a job without a disk): see `space`.
    pub writes_state: std::sync::atomic::AtomicBool,
    /// The last usage read from the cgroup for [`Self::usage_at_most`].
    usage_sample: Shared<Usage>,
}

/// How long one read of a live job's usage serves every caller: a viewer opening
/// thousands of StreamStats streams on one job costs four reads a second, not thousands.
const USAGE_SHARED_FOR: Duration = Duration::from_millis(250);

/// A value read at most once per freshness window, whoever asks: the last read and when.
#[derive(Default)]
struct Shared<T> {
    last: Mutex<Option<(Instant, T)>>,
}

impl<T: Clone> Shared<T> {
    /// The last value when it is younger than `fresh`, else a new one from `read` (kept
    /// when there is one). The lock is held while reading, so that callers arriving
    /// together read once.
    fn get(&self, fresh: Duration, read: impl FnOnce() -> Option<T>) -> Option<T> {
        let Ok(mut last) = self.last.lock() else {
            return read();
        };
        let now = Instant::now();
        if let Some((at, value)) = last.as_ref()
            && now.duration_since(*at) < fresh
        {
            return Some(value.clone());
        }
        let value = read()?;
        *last = Some((now, value.clone()));
        Some(value)
    }
}

impl LiveJob {
    /// A live job starting from `row`.
    pub fn new(row: JobRow) -> LiveJob {
        LiveJob {
            id: row.id.clone(),
            row: watch::Sender::new(row),
            progress: watch::Sender::new(0),
            pidfd: Mutex::new(None),
            stop: Mutex::new(None),
            cgroup: Mutex::new(None),
            slot: Mutex::new(None),
            writes_state: std::sync::atomic::AtomicBool::new(false),
            usage_sample: Shared::default(),
        }
    }

    /// Publishes a change of the job's row.
    pub fn update(&self, f: impl FnOnce(&mut JobRow)) -> JobRow {
        self.row.send_modify(f);
        self.progress.send_modify(|g| *g += 1);
        self.row.borrow().clone()
    }

    /// Whether the job has ended.
    pub fn has_ended(&self) -> bool {
        self.row.borrow().state.is_final()
    }

    /// Remembers the init's pidfd for signalling.
    pub fn set_pidfd(&self, fd: OwnedFd) {
        if let Ok(mut g) = self.pidfd.lock() {
            *g = Some(fd);
        }
    }

    /// Gives the job its place under the server's job cap.
    pub fn hold_slot(&self, permit: OwnedSemaphorePermit) {
        if let Ok(mut g) = self.slot.lock() {
            *g = Some(permit);
        }
    }

    /// Whether the job holds a place under the server's job cap.
    pub fn holds_slot(&self) -> bool {
        self.slot.lock().is_ok_and(|g| g.is_some())
    }

    /// Gives the job's place under the cap back, once the job no longer counts against it.
    pub fn release_slot(&self) {
        let permit = self.slot.lock().ok().and_then(|mut g| g.take());
        drop(permit);
    }

    /// Gives the job its cgroup.
    pub fn set_cgroup(&self, cgroup: JobCgroup) {
        if let Ok(mut g) = self.cgroup.lock() {
            *g = Some(Arc::new(cgroup));
        }
    }

    /// Takes the job's cgroup (at the job's end), once no kill or read of it is in flight
    /// any more; blocks for up to `wait`, and gives up (`None`, the cgroup left in place)
    /// after that. Call it on a blocking thread.
    pub fn take_cgroup_blocking(&self, wait: Duration) -> Option<JobCgroup> {
        let mut cg = self.cgroup.lock().ok()?.take()?;
        let deadline = Instant::now() + wait;
        loop {
            match Arc::try_unwrap(cg) {
                Ok(cg) => return Some(cg),
                Err(shared) if Instant::now() < deadline => {
                    cg = shared;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => {
                    tracing::warn!(job = %self.id, "the job's cgroup is still in use; leaving it");
                    return None;
                }
            }
        }
    }

    fn cgroup(&self) -> Option<Arc<JobCgroup>> {
        self.cgroup.lock().ok()?.clone()
    }

    /// The job's resource usage now, when it has a cgroup.
    pub fn usage(&self) -> Option<Usage> {
        let usage = self.cgroup()?.usage().ok()?;
        Some(super::resources::usage_to_proto(usage))
    }

    /// The job's resource usage, read from its cgroup at most once per
    /// [`USAGE_SHARED_FOR`]: every caller (GetJob, each StreamStats stream) shares the
    /// reads, however many calls a client makes (each read is a dozen cgroup files).
    pub fn usage_shared(&self) -> Option<Usage> {
        self.usage_sample.get(USAGE_SHARED_FOR, || self.usage())
    }

    /// What the ended job used, with nothing in use now (see
    /// [`silo_cgroup::JobCgroup::final_usage`]), when it has a cgroup.
    pub fn final_usage(&self) -> Option<Usage> {
        let usage = self.cgroup()?.final_usage().ok()?;
        Some(super::resources::usage_to_proto(usage))
    }

    /// The job's CPU time so far and memory now only (two cgroup files), when it has a
    /// cgroup; for sampling every running job often.
    pub fn cpu_and_memory(&self) -> Option<Usage> {
        let usage = self.cgroup()?.cpu_and_memory().ok()?;
        Some(super::resources::usage_to_proto(usage))
    }

    /// Kills every process in the job's cgroup and waits until it is empty, on a blocking
    /// thread (the kill may take seconds).
    async fn kill_cgroup(&self) {
        let Some(cg) = self.cgroup() else { return };
        let id = self.id.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = cg.kill_all() {
                tracing::warn!(job = %id, "cannot kill the job's cgroup: {e}");
            }
        })
        .await;
    }

    /// Why the job is being stopped, if it is.
    pub fn stop_cause(&self) -> Option<StopCause> {
        self.stop.lock().ok().and_then(|g| *g)
    }

    /// Sends `signal` to the job's init (which forwards SIGTERM to the command).
    pub fn signal(&self, signal: i32) {
        if let Ok(g) = self.pidfd.lock()
            && let Some(fd) = g.as_ref()
            && let Err(e) = silo_sandbox::spawn::signal(fd.as_fd(), signal)
        {
            tracing::warn!(job = %self.id, "cannot signal the job's init: {e}");
        }
    }

    /// Starts stopping the job: SIGTERM now, SIGKILL to the whole job after `grace`
    /// unless it has ended by then. The first cause given is the one reported.
    pub fn begin_stop(self: &Arc<Self>, cause: StopCause, grace: Duration) {
        if let Ok(mut g) = self.stop.lock()
            && g.is_none()
        {
            *g = Some(cause);
        }
        self.signal(libc::SIGTERM);
        let job = self.clone();
        tokio::spawn(async move {
            let mut rx = job.row.subscribe();
            let ended = tokio::time::timeout(grace, rx.wait_for(|r| r.state.is_final()))
                .await
                .is_ok();
            if !ended {
                // SIGKILL to the init ends every process of the job's pid namespace, and
                // killing the cgroup ends anything that got out of it.
                job.signal(libc::SIGKILL);
                job.kill_cgroup().await;
            }
        });
    }

    /// Waits until the job has ended and returns its final row.
    pub async fn ended(&self) -> JobRow {
        let mut rx = self.row.subscribe();
        let result = rx.wait_for(|r| r.state.is_final()).await.map(|r| r.clone());
        match result {
            Ok(row) => row,
            Err(_) => self.row.borrow().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_value_is_read_once_per_window_whoever_asks() {
        let shared = Shared::default();
        let reads = std::cell::Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            Some(reads.get())
        };
        for _ in 0..1000 {
            assert_eq!(shared.get(Duration::from_secs(60), read), Some(1));
        }
        assert_eq!(reads.get(), 1);
        // Past the window, a new read; a read that finds nothing keeps nothing.
        assert_eq!(shared.get(Duration::ZERO, read), Some(2));
        assert_eq!(shared.get(Duration::ZERO, || None), None);
        assert_eq!(shared.get(Duration::from_secs(60), read), Some(2));
    }
}
