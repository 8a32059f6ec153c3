//! Blocking work that prepares a later job (a ready init that tops the pool up): run on one
//! thread of its own under `SCHED_IDLE`, so that it takes only CPU that nothing else wants.
//! On tokio's blocking threads, at the normal priority, a refill's directories, disk image
//! and cgroups (on cgroup v1, a directory and a memory cgroup in each hierarchy) competed
//! with the launch it follows and with the next one.
//!
//! Work that a launch waits for runs on tokio's blocking threads as before.

use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

use super::JobError;

type Work = Box<dyn FnOnce() + Send>;

/// The idle thread's queue; `None` where the thread could not be started.
static QUEUE: OnceLock<Option<Sender<Work>>> = OnceLock::new();

/// Runs `f` on a blocking thread: the idle one when `idle`, else one of tokio's.
pub(super) async fn run<T, F>(idle: bool, f: F) -> Result<T, JobError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let lost = |e: &dyn std::fmt::Display| JobError::Host(format!("blocking work was lost: {e}"));
    let queue = match idle {
        true => QUEUE.get_or_init(start).as_ref(),
        false => None,
    };
    let Some(queue) = queue else {
        return tokio::task::spawn_blocking(f).await.map_err(|e| lost(&e));
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let work: Work = Box::new(move || {
        let _ = tx.send(f());
    });
    if let Err(returned) = queue.send(work) {
        // The thread is gone (it never exits, so this would be a bug): run it as before.
        let work = returned.0;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| lost(&e))?;
    }
    // A panic in `f` drops its sender: an error, and the thread goes on.
    rx.await.map_err(|e| lost(&e))
}

/// Starts the idle thread.
fn start() -> Option<Sender<Work>> {
    let (tx, rx) = channel::<Work>();
    let spawned = std::thread::Builder::new()
        .name("silo-idle".into())
        .spawn(move || {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: a plain system call on this thread (0 is the calling thread);
            // `param` outlives it. A failure leaves the thread at the normal priority.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
            for work in rx {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            }
        });
    match spawned {
        Ok(_) => Some(tx),
        Err(e) => {
            tracing::warn!("cannot start the idle thread for refills: {e}");
            None
        }
    }
}
