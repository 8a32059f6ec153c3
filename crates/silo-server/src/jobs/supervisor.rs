//! Following one job from its init's hello to its exit.

use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use silo_proto::v1::JobState;
use silo_sandbox::InitSpec;
use silo_sandbox::protocol::{
    EVENT_EXIT, ExitStatus, Frame, InitError, MAX_INIT_FRAME, METHOD_START, Message, Started,
};
use silo_sandbox::spawn::try_reap;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::oneshot;

use super::live::{LiveJob, StopCause};
use super::outcome::Outcome;
use super::ready::ReadyInit;
use super::{JobManager, now_micros};

/// How long the init has to set up and start the command.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Drives the job: start handshake, RUNNING, exit, final state. Fires `started` once the
/// command runs or has failed to start.
pub async fn supervise(
    manager: JobManager,
    live: Arc<LiveJob>,
    ready: ReadyInit,
    spec: InitSpec,
    started: oneshot::Sender<()>,
) {
    let t0 = std::time::Instant::now();
    let ReadyInit {
        pid,
        pidfd,
        control,
        cgroup,
        mount_ns,
        ..
    } = ready;
    if let Some(cg) = cgroup {
        live.set_cgroup(cg);
    }
    let pidfd = match pidfd.try_clone() {
        Ok(dup) => {
            live.set_pidfd(dup);
            pidfd
        }
        Err(_) => pidfd,
    };
    let log_path = manager.log_path(&live.id);
    let watch = manager
        .inner
        .logs
        .watch(&log_path, live.progress.clone())
        .ok();
    let mut control = Some(control);
    let mut started = Some(started);
    let mut report: Result<Option<ExitStatus>, InitError> = Ok(None);
    let mut start_error: Option<InitError> = None;

    // A ready init waited at a low priority; it must wake for its job at the normal one.
    // SAFETY: setpriority on our own child, which is not reaped yet (its pid is its own).
    unsafe { libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, 0) };
    if let Some(c) = control.as_mut() {
        match start(c, &spec).await {
            Ok(_) => {
                tracing::debug!(job = %live.id, elapsed = ?t0.elapsed(), "command started");
                let start_ticks = super::reconcile::process_start_ticks(pid);
                let row = live.update(|r| {
                    r.state = JobState::Running;
                    r.started_at = Some(now_micros());
                    r.init = start_ticks.map(|t| (pid, t));
                });
                // The caller learns at once; readers of a live job see it in memory, and
                // the store follows (before anything else of this job is stored).
                if let Some(tx) = started.take() {
                    let _ = tx.send(());
                }
                if let Err(e) = manager.inner.store.update(&row).await {
                    tracing::error!(job = %live.id, "cannot record that the job runs: {e}");
                }
                if row.spec.timeout_ms > 0 {
                    arm_timeout(
                        &live,
                        Duration::from_millis(row.spec.timeout_ms),
                        manager.grace_of(&row),
                    );
                }
                report = wait_exit(c).await;
                tracing::debug!(job = %live.id, elapsed = ?t0.elapsed(), "init reported the exit");
            }
            Err(e) => {
                start_error = Some(e);
                live.signal(libc::SIGKILL);
            }
        }
    } else {
        live.signal(libc::SIGKILL);
        start_error = Some(InitError::protocol("cannot talk to the job's init process"));
    }
    drop(control);
    if let Err(e) = &report {
        // Only silo's own init writes to the control socket; a frame it would never send
        // means the init is broken or subverted, and nothing it says is believed.
        tracing::warn!(job = %live.id, "killing the job: {}", e.message);
        live.signal(libc::SIGKILL);
    }

    // An exit report is believed only together with the init's own end: the init exits
    // once every process of the job is gone and its output is in the log, so a report
    // from anything else (or a report followed by more life) changes nothing.
    let init_status = wait_reaped(pidfd).await;
    tracing::debug!(job = %live.id, elapsed = ?t0.elapsed(), "init reaped");
    if let Some(wd) = watch {
        manager.inner.logs.unwatch(wd);
    }
    let outcome = match (start_error, report) {
        (Some(e), _) => Outcome::start_failed(&e),
        (None, Err(e)) => Outcome::killed(format!("the job was killed: {}", e.message)),
        (None, Ok(exit)) => Outcome::of_run(live.stop_cause(), exit, init_status),
    };
    manager.finish(&live, outcome).await;
    // The last reference to the job's mount namespace: its mounts go now, in the
    // background and at the lowest priority, so that the teardown of one job's
    // filesystem does not slow the start of the next.
    if let Some(ns) = mount_ns {
        tokio::task::spawn_blocking(move || super::at_idle_priority(|| drop(ns)));
    }
    manager.release_cgroup(&live).await;
    manager.give_back_host_id(&live);
    tracing::debug!(job = %live.id, elapsed = ?t0.elapsed(), "job finished");
    if let Some(tx) = started.take() {
        let _ = tx.send(());
    }
}

/// The start request and its response.
async fn start(control: &mut UnixStream, spec: &InitSpec) -> Result<Started, InitError> {
    let params = serde_json::to_value(spec).map_err(|e| InitError::protocol(e.to_string()))?;
    let request = Frame::new(Message::Request {
        id: 2,
        method: METHOD_START.into(),
        params,
    });
    control
        .write_all(&request.encode())
        .await
        .map_err(|e| InitError::protocol(format!("cannot send the job to its init: {e}")))?;
    let response = tokio::time::timeout(START_DEADLINE, read_frame(control))
        .await
        .map_err(|_| timeout_error("the job's init did not start the command in time"))??;
    match response.message {
        Message::Response {
            id: 2,
            result: Ok(v),
        } => serde_json::from_value(v).map_err(|e| InitError::protocol(e.to_string())),
        Message::Response {
            id: 2,
            result: Err(e),
        } => Err(e),
        other => Err(InitError::protocol(format!(
            "unexpected answer from the job's init: {other:?}"
        ))),
    }
}

pub(super) fn timeout_error(message: &str) -> InitError {
    InitError {
        kind: silo_sandbox::protocol::ErrorKind::Timeout,
        message: message.into(),
        step: None,
        errno: None,
    }
}

pub(super) async fn read_frame(control: &mut UnixStream) -> Result<Frame, InitError> {
    let mut len = [0u8; 4];
    control
        .read_exact(&mut len)
        .await
        .map_err(|_| InitError::protocol("the job's init exited during setup"))?;
    read_body(control, len).await
}

/// The rest of a frame whose length prefix was `len`.
async fn read_body(control: &mut UnixStream, len: [u8; 4]) -> Result<Frame, InitError> {
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_INIT_FRAME {
        return Err(InitError::protocol(format!(
            "the job's init sent a frame of {len} bytes (the limit is {MAX_INIT_FRAME})"
        )));
    }
    let mut body = vec![0u8; len];
    control
        .read_exact(&mut body)
        .await
        .map_err(|_| InitError::protocol("the job's init exited mid-frame"))?;
    Frame::decode(&body)
}

/// Reads frames until the init reports the exit: `Ok(None)` when the socket closes without
/// a report (the init was killed), an error for a frame the init would never send
/// (oversized, malformed, or an exit report that does not parse).
async fn wait_exit(control: &mut UnixStream) -> Result<Option<ExitStatus>, InitError> {
    loop {
        let mut len = [0u8; 4];
        match control.read_exact(&mut len).await {
            Ok(_) => {}
            Err(_) => return Ok(None),
        }
        let frame = read_body(control, len).await?;
        if let Message::Event { name, body } = frame.message
            && name == EVENT_EXIT
        {
            return serde_json::from_value(body).map(Some).map_err(|e| {
                InitError::protocol(format!("the job's init sent a malformed exit report: {e}"))
            });
        }
    }
}

/// Waits for the init process to exit and reaps it. Returns its wait status.
pub(super) async fn wait_reaped(pidfd: std::os::fd::OwnedFd) -> Option<(Option<i32>, Option<i32>)> {
    let Ok(fd) = watch_pidfd(pidfd) else {
        return None;
    };
    loop {
        match try_reap(fd.get_ref().as_fd()) {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            // Not our child (adopted after a restart): it has exited once readable.
            Err(_) => {
                let _ = fd.readable().await.map(|mut g| g.clear_ready());
                if try_reap(fd.get_ref().as_fd()).is_err() {
                    return None;
                }
                continue;
            }
        }
        match fd.readable().await {
            Ok(mut guard) => guard.clear_ready(),
            Err(_) => return None,
        }
    }
}

fn arm_timeout(live: &Arc<LiveJob>, after: Duration, grace: Duration) {
    let live = live.clone();
    tokio::spawn(async move {
        let mut rx = live.row.subscribe();
        let ended = tokio::time::timeout(after, rx.wait_for(|r| super::live::is_terminal(r.state)))
            .await
            .is_ok();
        if !ended {
            live.begin_stop(StopCause::Timeout(after), grace);
        }
    });
}

/// Registers a pidfd with the runtime; it becomes readable when the process exits.
pub fn watch_pidfd(pidfd: std::os::fd::OwnedFd) -> std::io::Result<AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: the AsyncFd takes ownership of the pidfd, which nothing else closes or
    // replaces while it is registered.
    unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `wait_exit` makes of `wire`, written by a fake init that then hangs up.
    async fn exit_from(wire: Vec<u8>) -> Result<Option<ExitStatus>, InitError> {
        let (mut server, mut init) = UnixStream::pair().unwrap();
        tokio::spawn(async move {
            let _ = init.write_all(&wire).await;
        });
        wait_exit(&mut server).await
    }

    fn exit_frame(body: serde_json::Value) -> Vec<u8> {
        Frame::new(Message::Event {
            name: EVENT_EXIT.into(),
            body,
        })
        .encode()
    }

    #[tokio::test]
    async fn an_exit_report_is_read_after_other_frames() {
        let mut wire = Frame::new(Message::Hello { pid: 1 }).encode();
        wire.extend(exit_frame(serde_json::json!({"code": 3})));
        assert_eq!(exit_from(wire).await.unwrap(), Some(ExitStatus::Code(3)));
        assert_eq!(exit_from(Vec::new()).await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_without_reading_it() {
        let wire = u32::MAX.to_le_bytes().to_vec();
        let err = exit_from(wire).await.unwrap_err();
        assert!(err.message.contains("4294967295 bytes"), "{}", err.message);
    }

    #[tokio::test]
    async fn malformed_frames_and_reports_are_protocol_errors() {
        let mut garbage = 5u32.to_le_bytes().to_vec();
        garbage.extend(b"{oops");
        let err = exit_from(garbage).await.unwrap_err();
        assert_eq!(err.kind, silo_sandbox::protocol::ErrorKind::Protocol);
        let err = exit_from(exit_frame(serde_json::json!({"nonsense": true})))
            .await
            .unwrap_err();
        assert!(
            err.message.contains("malformed exit report"),
            "{}",
            err.message
        );
    }
}
