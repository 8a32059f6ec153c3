//! A job that is starting or running: what readers, watchers and stoppers share.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use silo_proto::v1::JobState;
use tokio::sync::watch;

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
    /// The job's cgroup, where the host has cgroups.
    cgroup: Mutex<Option<JobCgroup>>,
}

/// Whether a job in `state` has ended.
pub fn is_terminal(state: JobState) -> bool {
    matches!(
        state,
        JobState::Completed | JobState::Failed | JobState::Stopped
    )
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
        is_terminal(self.row.borrow().state)
    }

    /// Remembers the init's pidfd for signalling.
    pub fn set_pidfd(&self, fd: OwnedFd) {
        if let Ok(mut g) = self.pidfd.lock() {
            *g = Some(fd);
        }
    }

    /// Gives the job its cgroup.
    pub fn set_cgroup(&self, cgroup: JobCgroup) {
        if let Ok(mut g) = self.cgroup.lock() {
            *g = Some(cgroup);
        }
    }

    /// Takes the job's cgroup (at the job's end).
    pub fn take_cgroup(&self) -> Option<JobCgroup> {
        self.cgroup.lock().ok()?.take()
    }

    /// The job's resource usage now, when it has a cgroup.
    pub fn usage(&self) -> Option<Usage> {
        let g = self.cgroup.lock().ok()?;
        let usage = g.as_ref()?.usage().ok()?;
        Some(super::resources::usage_to_proto(usage))
    }

    /// Kills every process in the job's cgroup (blocking until it is empty).
    fn kill_cgroup(&self) {
        if let Ok(g) = self.cgroup.lock()
            && let Some(cg) = g.as_ref()
            && let Err(e) = cg.kill_all()
        {
            tracing::warn!(job = %self.id, "cannot kill the job's cgroup: {e}");
        }
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
    pub fn begin_stop(self: &std::sync::Arc<Self>, cause: StopCause, grace: Duration) {
        if let Ok(mut g) = self.stop.lock()
            && g.is_none()
        {
            *g = Some(cause);
        }
        self.signal(libc::SIGTERM);
        let job = self.clone();
        tokio::spawn(async move {
            let mut rx = job.row.subscribe();
            let ended = tokio::time::timeout(grace, rx.wait_for(|r| is_terminal(r.state)))
                .await
                .is_ok();
            if !ended {
                // SIGKILL to the init ends every process of the job's pid namespace, and
                // killing the cgroup ends anything that got out of it.
                job.signal(libc::SIGKILL);
                let job = job.clone();
                let _ = tokio::task::spawn_blocking(move || job.kill_cgroup()).await;
            }
        });
    }

    /// Waits until the job has ended and returns its final row.
    pub async fn ended(&self) -> JobRow {
        let mut rx = self.row.subscribe();
        let result = rx
            .wait_for(|r| is_terminal(r.state))
            .await
            .map(|r| r.clone());
        match result {
            Ok(row) => row,
            Err(_) => self.row.borrow().clone(),
        }
    }
}
