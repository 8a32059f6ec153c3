//! Kernel pools a job can exhaust: ptys, inotify instances, AIO contexts, processes, tmpfs
//! inodes. One job that takes all it can leaves the others (and the host) theirs.

use std::time::Duration;

use silo_proto::v1::JobState;

use crate::common::*;

/// Takes as many of a resource as it can, prints how many, then holds them.
fn hog(take_one: &str) -> String {
    format!(
        "python3 -c '
import os, sys, time, ctypes, errno
{PRELUDE}
held = []
while len(held) < 100000:
    try:
        held.append({take_one})
    except OSError as e:
        print(\"held\", len(held), \"then errno\", e.errno, flush=True)
        break
time.sleep(600)
'"
    )
}

/// Takes one of the resource and says whether it could.
fn one(take_one: &str) -> String {
    format!(
        "python3 -c '
import os, ctypes
{PRELUDE}
try:
    {take_one}
    print(\"got-one\")
except OSError as e:
    print(\"refused\", e.errno)
'"
    )
}

/// Python helpers the probes share (no single quotes: they run inside `sh -c '...'`).
const PRELUDE: &str = "libc = ctypes.CDLL(None, use_errno=True)
def inotify():
    fd = libc.inotify_init()
    if fd < 0:
        raise OSError(ctypes.get_errno(), \"inotify_init\")
    return fd
def io_setup():
    ctx = ctypes.c_ulong(0)
    if libc.syscall(206, 1024, ctypes.byref(ctx)) != 0:
        raise OSError(ctypes.get_errno(), \"io_setup\")
    return ctx";

const PTY: &str = "os.openpty()";
const INOTIFY: &str = "inotify()";

/// Runs a hog job until it reports, then a second job asking for one.
async fn second_job_still_gets_one(take_one: &str, hog_limit: Option<usize>) {
    let server = TestServer::start();
    let mut c = server.admin().await;
    let hogger = run(&mut c, &["sh", "-c", &hog(take_one)]).await;
    assert_eq!(hogger.state(), JobState::Running, "{hogger:?}");
    let (held, report) = hog_report(&mut c, &hogger.id).await;
    if let Some(limit) = hog_limit {
        assert!(
            held <= limit,
            "one job took {held} (the limit is {limit}): {report}"
        );
    }
    let (end, out, err) = sh(&mut c, &one(take_one)).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?} {err}");
    assert!(
        out.contains("got-one"),
        "the second job got none after the first took {held}: {out} {err}"
    );
    c.stop_job(silo_proto::v1::StopJobRequest {
        id: hogger.id,
        grace_ms: 0,
    })
    .await
    .unwrap();
}

/// Waits for a hog job's report: how many it held, and the line that says so.
async fn hog_report(
    c: &mut silo_proto::v1::job_service_client::JobServiceClient<tonic::transport::Channel>,
    id: &str,
) -> (usize, String) {
    let report = wait_for_output(c, id, "held ").await;
    let held = report
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    (held, report)
}

/// Follows a job's stdout until a line containing `needle` appears.
async fn wait_for_output(
    c: &mut silo_proto::v1::job_service_client::JobServiceClient<tonic::transport::Channel>,
    id: &str,
    needle: &str,
) -> String {
    let mut stream = c
        .stream_logs(silo_proto::v1::StreamLogsRequest {
            id: id.into(),
            from_sequence: 0,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = String::new();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(chunk) = stream.message().await.unwrap() {
            for r in chunk.records {
                out.push_str(&String::from_utf8_lossy(&r.data));
            }
            if let Some(line) = out.lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
        }
        String::new()
    })
    .await;
    match found {
        Ok(line) if !line.is_empty() => line,
        _ => panic!("job {id} never printed {needle:?}: {out}"),
    }
}

#[tokio::test]
async fn one_job_holding_every_pty_it_can_leaves_other_jobs_theirs() {
    if !privileged() {
        return;
    }
    // Each openpty holds one pty; a job's devpts holds at most 64.
    second_job_still_gets_one(PTY, Some(64)).await;
}

#[tokio::test]
async fn one_job_holding_every_inotify_instance_it_can_leaves_other_jobs_theirs() {
    if !privileged() {
        return;
    }
    second_job_still_gets_one(INOTIFY, None).await;
}

#[tokio::test]
async fn aio_contexts_of_the_host_wide_pool_are_refused_to_jobs() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    // io_setup(nr_events, ctx *): the pool is fs.aio-max-nr for the whole host.
    let (end, out, err) = sh(&mut c, &one("io_setup()")).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?} {err}");
    assert!(
        out.contains("refused 38"),
        "io_setup was not answered ENOSYS in a job: {out}"
    );
}

#[tokio::test]
async fn a_job_gets_a_process_limit_and_tmp_an_inode_limit_by_default() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let (end, out, err) = sh(
        &mut c,
        "df -i /tmp | tail -1 | awk '{print \"tmp-inodes\", $2}'",
    )
    .await;
    assert_eq!(end.state(), JobState::Completed, "{end:?} {err}");
    assert!(out.contains("tmp-inodes 65536"), "{out}");
    let limits = end.spec.unwrap_or_default().limits.unwrap_or_default();
    assert_eq!(
        limits.pids,
        Some(4096),
        "no default process limit: {limits:?}"
    );
}

/// `pids.max` of the server's `jobs` cgroup (the parent of every job's), in the hierarchy
/// that has the pids controller.
fn all_jobs_pids_max(server: &TestServer) -> Option<String> {
    cgroup_dirs(&server.cgroup_name)
        .into_iter()
        .find_map(|dir| std::fs::read_to_string(dir.join("jobs/pids.max")).ok())
        .map(|v| v.trim().to_owned())
}

#[tokio::test]
async fn all_jobs_together_leave_the_host_process_ids() {
    if !privileged() {
        return;
    }
    // By default three quarters of the host's limit: 8 jobs at the default 4096 would
    // otherwise take every id of a host whose kernel.pid_max is 32768.
    let host: u64 = ["/proc/sys/kernel/pid_max", "/proc/sys/kernel/threads-max"]
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().trim().parse().unwrap())
        .min()
        .unwrap();
    let server = TestServer::start();
    assert_eq!(all_jobs_pids_max(&server), Some((host / 4 * 3).to_string()));
    drop(server);
    // A job that forks all it can stops at the total, far below its own 4096.
    let server = TestServer::start_with(&["--total-pids", "300"]);
    assert_eq!(all_jobs_pids_max(&server).as_deref(), Some("300"));
    let mut c = server.admin().await;
    let hogger = run(
        &mut c,
        &[
            "sh",
            "-c",
            &hog("os.fork() or (time.sleep(600), os._exit(0))"),
        ],
    )
    .await;
    let (held, report) = hog_report(&mut c, &hogger.id).await;
    assert!(
        (100..300).contains(&held) && report.ends_with("errno 11"),
        "a job under a total of 300 forked {held}: {report}"
    );
    c.stop_job(silo_proto::v1::StopJobRequest {
        id: hogger.id.clone(),
        grace_ms: 0,
    })
    .await
    .unwrap();
    let end = wait_end(&mut c, &hogger.id).await;
    assert_eq!(end.state(), JobState::Stopped, "{end:?}");
}
