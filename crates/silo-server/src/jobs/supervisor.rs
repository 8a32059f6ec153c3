//! Following one job from its start to its end.
//!
//! A job's life has three parts, each a function here: [`start_command`] (the init's
//! `job.start` and its answer), [`follow_run`] (the init's events until it reports the
//! command's exit) and [`await_init_end`] (the init's own end, after which what it said is
//! believed and becomes the job's [`Outcome`]). [`supervise`] runs them in turn and does
//! the manager's bookkeeping between them.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use silo_cgroup::JobCgroup;
use silo_proto::v1::JobState;
use silo_sandbox::InitSpec;
use silo_sandbox::protocol::{EVENT_EXIT, ErrorKind, ExitStatus, InitError, METHOD_START, Started};
use silo_sandbox::spawn::try_reap;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use super::init_connection::InitConnection;
use super::live::{LiveJob, StopCause};
use super::outcome::Outcome;
use super::ready::ReadyInit;
use super::{JobManager, now_micros};

/// How long the init has to set up and start the command.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// What a job's init told the server, from the start request to the end of its socket.
#[derive(Debug)]
enum InitReport {
    /// The command never ran: the init's error, or what went wrong in talking to it.
    StartFailed(InitError),
    /// The command ran, and the init reported its exit (`None`: the init's socket closed
    /// without a report, as when the init is killed).
    Ran(Option<ExitStatus>),
    /// While the command ran, the init sent what silo's own init never sends.
    BrokeProtocol(InitError),
}

/// Drives the job: start, RUNNING, exit, final state. Fires `started` once the command
/// runs or has failed to start.
pub async fn supervise(
    manager: JobManager,
    live: Arc<LiveJob>,
    ready: ReadyInit,
    spec: InitSpec,
    started: oneshot::Sender<()>,
) {
    let t0 = Instant::now();
    let ReadyInit {
        pid,
        pidfd,
        mut control,
        cgroup,
        mount_ns,
        disk,
        ..
    } = ready;
    let pidfd = hand_to_live(&live, pidfd, cgroup);
    let log_path = manager.log_path(&live.id);
    let watch = manager
        .inner
        .logs
        .watch(&log_path, live.progress.clone())
        .ok();
    let mut started = Some(started);
    // The store's copy of the RUNNING state, written while the command runs; the end's
    // store write waits for it, so the two land in order (its publication does not).
    let mut running_write = None;
    restore_priority(pid);
    let report = match start_command(&live, &mut control, &spec, disk).await {
        Ok(_) => {
            tracing::debug!(job = %live.id, elapsed = ?t0.elapsed(), "command started");
            running_write = Some(record_running(&manager, &live, started.take()));
            let report = follow_run(&live, &mut control).await;
            tracing::debug!(job = %live.id, elapsed = ?t0.elapsed(), "init reported the exit");
            report
        }
        Err(e) => InitReport::StartFailed(e),
    };
    drop(control);
    if let InitReport::Ran(Some(exit)) = report {
        // The init reports the exit once everything else in the job is dead and its
        // output is in the log: the end is known and is published now; the init's own
        // exit (the release of its memory) is waited for after, before the cgroup goes.
        let outcome = Outcome::of_run(live.stop_cause(), Some(exit), None);
        if let Some(wd) = watch {
            manager.inner.logs.unwatch(wd);
        }
        manager.finish(&live, outcome, running_write.take()).await;
        reap_after_report(&live, pidfd).await;
        tracing::debug!(job = %live.id, elapsed = ?t0.elapsed(), "init reaped");
    } else {
        let outcome = await_init_end(&live, report, pidfd).await;
        tracing::debug!(job = %live.id, elapsed = ?t0.elapsed(), "init reaped");
        if let Some(wd) = watch {
            manager.inner.logs.unwatch(wd);
        }
        manager.finish(&live, outcome, running_write.take()).await;
    }
    tear_down(&manager, &live, mount_ns).await;
    tracing::debug!(job = %live.id, elapsed = ?t0.elapsed(), "job finished");
    if let Some(tx) = started.take() {
        let _ = tx.send(());
    }
}

/// Gives the live job its cgroup and a copy of the init's pidfd (for stopping it); returns
/// the pidfd, for waiting on the init's end.
fn hand_to_live(live: &LiveJob, pidfd: OwnedFd, cgroup: Option<JobCgroup>) -> OwnedFd {
    if let Some(cg) = cgroup {
        live.set_cgroup(cg);
    }
    if let Ok(dup) = pidfd.try_clone() {
        live.set_pidfd(dup);
    }
    pidfd
}

/// A ready init waited under `SCHED_IDLE`; it must wake for its job under the normal
/// policy, at nice 0.
fn restore_priority(pid: i32) {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler and setpriority on our own child, which is not reaped yet
    // (its pid is its own); `param` outlives the call.
    unsafe {
        libc::sched_setscheduler(pid, libc::SCHED_OTHER, &param);
        libc::setpriority(libc::PRIO_PROCESS, pid as libc::id_t, 0);
    }
}

/// Has the init start the job's command, sending it the job's disk (`disk`, its detached
/// mount) when it has one. When that fails the init is killed: the job will not run.
async fn start_command(
    live: &LiveJob,
    control: &mut InitConnection,
    spec: &InitSpec,
    disk: Option<OwnedFd>,
) -> Result<Started, InitError> {
    // The init has entered the job's root already: a shared directory reaches it as a
    // detached mount.
    let shared = match spec.isolation.as_ref().and_then(|i| i.shared_dir.as_ref()) {
        Some(dir) => match silo_sandbox::spawn::detached_mount(dir) {
            Ok(tree) => Some(tree),
            Err(e) => {
                live.signal(libc::SIGKILL);
                return Err(InitError::setup(
                    "bind_shared",
                    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
                    format!("cannot open the shared directory {}: {e}", dir.display()),
                ));
            }
        },
        None => None,
    };
    // In the order the protocol gives: the disk, then the shared directory.
    let mounts: Vec<_> = disk
        .iter()
        .chain(shared.iter())
        .map(|m| m.as_fd())
        .collect();
    let started = control
        .call_with(METHOD_START, spec, &mounts, START_DEADLINE)
        .await
        .and_then(|result| {
            serde_json::from_value(result).map_err(|e| {
                InitError::protocol(format!(
                    "the job's init answered {METHOD_START} with a malformed result: {e}"
                ))
            })
        });
    if started.is_err() {
        live.signal(libc::SIGKILL);
    }
    started
}

/// Publishes that the command runs: at once in memory (and to the caller of RunJob, through
/// `started`), then in the store, on a task of its own whose end the caller awaits before
/// anything else of this job is stored (the init's reports are read meanwhile); and arms
/// the job's timeout.
fn record_running(
    manager: &JobManager,
    live: &Arc<LiveJob>,
    started: Option<oneshot::Sender<()>>,
) -> tokio::task::JoinHandle<()> {
    // Counted before it is told: whoever sees the start finds it in the metrics too.
    let started_at = now_micros();
    let (scheduled_at, created_at) = {
        let row = live.row.borrow();
        (row.scheduled_at, row.created_at)
    };
    metrics::counter!(crate::metrics::JOBS_STARTED).increment(1);
    match scheduled_at {
        Some(at) => metrics::histogram!(crate::metrics::SCHEDULE_LATENESS_SECONDS)
            .record((started_at - at) as f64 / 1e6),
        None => metrics::histogram!(crate::metrics::LAUNCH_SECONDS)
            .record((started_at - created_at) as f64 / 1e6),
    }
    // The row names its init (pid and start time) from its creation on.
    let row = live.update(|r| {
        r.state = JobState::Running;
        r.started_at = Some(started_at);
    });
    if let Some(tx) = started {
        let _ = tx.send(());
    }
    if row.spec.timeout_ms > 0 {
        arm_timeout(
            live,
            Duration::from_millis(row.spec.timeout_ms),
            manager.grace_of(&row),
        );
    }
    let store = manager.inner.store.clone();
    tokio::spawn(async move {
        // Debug builds: a test holds this write back to see that the job's end is told
        // without it and that the store still ends with the end.
        #[cfg(debug_assertions)]
        super::test_delay("SILO_TEST_DELAY_RUNNING_WRITE_MS").await;
        if let Err(e) = store.update(&row).await {
            tracing::error!(job = %row.id, "cannot record that the job runs: {e}");
        }
    })
}

/// Reads the init's events while the command runs, until it reports the exit or closes its
/// socket. Only silo's own init writes to the control socket; a frame it would never send
/// means the init is broken or subverted: the job is killed, and nothing the init said is
/// believed.
async fn follow_run(live: &LiveJob, control: &mut InitConnection) -> InitReport {
    match exit_report(control).await {
        Ok(exit) => InitReport::Ran(exit),
        Err(e) => {
            tracing::warn!(job = %live.id, "killing the job: {}", e.message);
            live.signal(libc::SIGKILL);
            InitReport::BrokeProtocol(e)
        }
    }
}

/// The init's exit report: `Ok(None)` when the socket closes without one; an error for a
/// frame the init would never send (oversized, malformed, an exit report that does not
/// parse). Other events are passed over.
async fn exit_report(control: &mut InitConnection) -> Result<Option<ExitStatus>, InitError> {
    while let Some((name, body)) = control.next_event().await? {
        if name == EVENT_EXIT {
            return serde_json::from_value(body).map(Some).map_err(|e| {
                InitError::protocol(format!("the job's init sent a malformed exit report: {e}"))
            });
        }
    }
    Ok(None)
}

/// Waits for the init's own end and reaps it, then tells how the job ended. An exit report
/// is believed only together with the init's end: the init exits once every process of the
/// job is gone and its output is in the log, so a report from anything else (or a report
/// followed by more life) changes nothing.
async fn await_init_end(live: &LiveJob, report: InitReport, pidfd: OwnedFd) -> Outcome {
    let init_status = wait_reaped(pidfd).await;
    match report {
        // A stop (or a timeout) during the start ends the init before it answers: the job
        // was stopped, not broken. A start that failed for its own reason says so.
        InitReport::StartFailed(e) => match live.stop_cause() {
            Some(stop) if e.kind == ErrorKind::Protocol => {
                Outcome::of_run(Some(stop), None, init_status)
            }
            _ => Outcome::start_failed(&e),
        },
        InitReport::BrokeProtocol(e) => {
            Outcome::killed(format!("the job was killed: {}", e.message))
        }
        InitReport::Ran(exit) => Outcome::of_run(live.stop_cause(), exit, init_status),
    }
}

/// Releases what the ended job held: its mounts (in the background), its cgroup and its
/// host id.
async fn tear_down(manager: &JobManager, live: &Arc<LiveJob>, mount_ns: Option<OwnedFd>) {
    // The last reference to the job's mount namespace: its mounts go now, in the
    // background and at the lowest priority, so that the teardown of one job's
    // filesystem does not slow the start of the next. Then its disk's blocks are freed,
    // and those kept ahead of its log's end.
    let dir = manager.job_dir(&live.id);
    tokio::task::spawn_blocking(move || {
        super::at_idle_priority(|| {
            drop(mount_ns);
            super::disks::free_disk(&dir);
            super::disks::release_log_room(&dir);
        })
    });
    manager.release_cgroup(live).await;
    manager.give_back_host_id(live);
}

/// How long an init that reported its job's exit may take to exit itself (it exits at
/// once, under `SCHED_IDLE`: on a saturated host that may take a while).
const INIT_EXIT_GRACE: Duration = Duration::from_secs(10);

/// Reaps the init after its exit report. One that does not exit within
/// [`INIT_EXIT_GRACE`] (broken, or turned by its job) is killed: it must not keep the job's
/// cgroup, mounts, disk and host id from being released.
async fn reap_after_report(live: &LiveJob, pidfd: OwnedFd) {
    let kill = pidfd.try_clone().ok();
    if tokio::time::timeout(INIT_EXIT_GRACE, wait_reaped(pidfd))
        .await
        .is_ok()
    {
        return;
    }
    let Some(pidfd) = kill else { return };
    tracing::warn!(
        job = %live.id,
        "the job's init reported its exit but did not exit within {INIT_EXIT_GRACE:?}: killing it"
    );
    let _ = silo_sandbox::spawn::signal(pidfd.as_fd(), libc::SIGKILL);
    let _ = wait_reaped(pidfd).await;
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
        let ended = tokio::time::timeout(after, rx.wait_for(|r| r.state.is_final()))
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
    use std::os::unix::net::UnixStream as StdUnixStream;
    use std::process::{Command, Stdio};

    use serde_json::json;
    use silo_proto::v1::EndCause;
    use silo_sandbox::protocol::{Frame, Message, write_frame};
    use silo_sandbox::spawn::pidfd_open;

    use super::*;
    use crate::store::JobRow;

    /// A stand-in for a job's init: a `sleep` process that holds the init's end of the
    /// control socket (so the socket closes when it ends, as an init's does), the test's
    /// own copy of that end (to speak as the init), and a live job whose init it is.
    struct FakeInit {
        control: InitConnection,
        init_end: StdUnixStream,
        pidfd: OwnedFd,
        live: Arc<LiveJob>,
    }

    #[expect(
        clippy::zombie_processes,
        reason = "the fake init is reaped through its pidfd, as an init is"
    )]
    fn fake_init() -> FakeInit {
        let (server_end, init_end) = StdUnixStream::pair().unwrap();
        let held = OwnedFd::from(init_end.try_clone().unwrap());
        let child = Command::new("sleep")
            .arg("60")
            .stdin(Stdio::from(held))
            .spawn()
            .unwrap();
        let pidfd = pidfd_open(child.id() as i32).unwrap();
        let live = Arc::new(LiveJob::new(JobRow::default()));
        live.set_pidfd(pidfd.try_clone().unwrap());
        FakeInit {
            control: InitConnection::from_std(server_end).unwrap(),
            init_end,
            pidfd,
            live,
        }
    }

    fn exit_event(body: serde_json::Value) -> Frame {
        Frame::new(Message::Event {
            name: EVENT_EXIT.into(),
            body,
        })
    }

    fn spec() -> InitSpec {
        InitSpec {
            job_id: "j".into(),
            argv: vec!["true".into()],
            env: Vec::new(),
            cwd: "/".into(),
            log_cap_bytes: 0,
            isolation: None,
        }
    }

    /// Fails the test instead of hanging it.
    async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), future)
            .await
            .expect("the lifecycle step did not finish")
    }

    #[tokio::test]
    async fn the_exit_report_is_read_after_other_events() {
        let mut init = fake_init();
        let other = Frame::new(Message::Event {
            name: "job.progress".into(),
            body: json!(1),
        });
        write_frame(&mut init.init_end, &other).unwrap();
        write_frame(&mut init.init_end, &exit_event(json!({"code": 3}))).unwrap();
        let report = within(follow_run(&init.live, &mut init.control)).await;
        assert!(matches!(report, InitReport::Ran(Some(ExitStatus::Code(3)))));
        init.live.signal(libc::SIGKILL);
        within(wait_reaped(init.pidfd)).await;
    }

    #[tokio::test]
    async fn an_exit_report_is_believed_only_once_the_init_has_ended() {
        let mut init = fake_init();
        write_frame(&mut init.init_end, &exit_event(json!({"code": 3}))).unwrap();
        drop(init.init_end);
        let report = within(follow_run(&init.live, &mut init.control)).await;
        let end = await_init_end(&init.live, report, init.pidfd);
        tokio::pin!(end);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut end)
                .await
                .is_err(),
            "the job ended while its init still ran"
        );
        init.live.signal(libc::SIGTERM);
        let outcome = within(end).await;
        assert_eq!(
            (outcome.state, outcome.cause, outcome.exit_code),
            (JobState::Failed, EndCause::Exited, Some(3))
        );
    }

    #[tokio::test]
    async fn an_init_that_ends_without_a_report_was_killed() {
        let mut init = fake_init();
        drop(init.init_end);
        init.live.signal(libc::SIGKILL);
        let report = within(follow_run(&init.live, &mut init.control)).await;
        assert!(matches!(report, InitReport::Ran(None)));
        let outcome = within(await_init_end(&init.live, report, init.pidfd)).await;
        assert_eq!(
            (outcome.state, outcome.cause, outcome.signal),
            (JobState::Failed, EndCause::Killed, Some(libc::SIGKILL))
        );
        assert!(outcome.reason.contains("without reporting an exit"));
    }

    #[tokio::test]
    async fn an_init_that_breaks_the_protocol_is_killed_and_not_believed() {
        let mut init = fake_init();
        write_frame(&mut init.init_end, &exit_event(json!({"nonsense": true}))).unwrap();
        write_frame(&mut init.init_end, &exit_event(json!({"code": 0}))).unwrap();
        drop(init.init_end);
        let report = within(follow_run(&init.live, &mut init.control)).await;
        // The kill is the supervisor's: nothing in this test ends the init.
        let outcome = within(await_init_end(&init.live, report, init.pidfd)).await;
        assert_eq!(
            (outcome.state, outcome.cause),
            (JobState::Failed, EndCause::Killed)
        );
        assert!(
            outcome
                .reason
                .starts_with("the job was killed: the job's init sent a malformed exit report"),
            "{}",
            outcome.reason
        );
    }

    #[tokio::test]
    async fn a_start_refused_by_the_init_kills_it_and_fails_the_job() {
        let mut init = fake_init();
        let mut init_end = init.init_end;
        let answer = std::thread::spawn(move || {
            let request = silo_sandbox::protocol::read_frame(&mut init_end)
                .unwrap()
                .unwrap();
            let Message::Request { id, method, .. } = request.message else {
                panic!("expected the start request, got {request:?}");
            };
            assert_eq!(method, METHOD_START);
            let refusal = InitError {
                kind: ErrorKind::Exec,
                message: "command not found: true".into(),
                step: Some("exec".into()),
                errno: Some(libc::ENOENT),
            };
            let response = Message::Response {
                id,
                result: Err(refusal),
            };
            write_frame(&mut init_end, &Frame::new(response)).unwrap();
        });
        let err = within(start_command(&init.live, &mut init.control, &spec(), None))
            .await
            .unwrap_err();
        answer.join().unwrap();
        assert_eq!(err.kind, ErrorKind::Exec);
        let outcome = within(await_init_end(
            &init.live,
            InitReport::StartFailed(err),
            init.pidfd,
        ))
        .await;
        assert_eq!(
            (outcome.cause, outcome.reason.as_str()),
            (EndCause::StartFailed, "command not found: true")
        );
    }

    #[tokio::test]
    async fn a_stop_during_the_start_ends_the_init_and_the_start_at_once() {
        let mut init = fake_init();
        drop(init.init_end);
        let spec = spec();
        let stop = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            init.live
                .begin_stop(StopCause::Request, Duration::from_secs(60));
        };
        let (started, ()) = within(async {
            tokio::join!(
                start_command(&init.live, &mut init.control, &spec, None),
                stop
            )
        })
        .await;
        // The init ended on the stop's SIGTERM, long before the start's deadline.
        let err = started.unwrap_err();
        assert_eq!(
            (err.kind, err.message.as_str()),
            (
                ErrorKind::Protocol,
                "the job's init exited before answering job.start"
            )
        );
        let outcome = within(await_init_end(
            &init.live,
            InitReport::StartFailed(err),
            init.pidfd,
        ))
        .await;
        assert_eq!(
            (outcome.state, outcome.cause),
            (JobState::Stopped, EndCause::Stopped)
        );
    }
}
