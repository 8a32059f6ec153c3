//! Cgroup ownership: a server only ever touches the cgroups it owns. A second server
//! pointed at a running server's cgroup subtree (`--cgroup-name`) would otherwise take that
//! server's jobs for leftovers of a crash and kill them at start-up.

use std::time::{Duration, Instant};

use silo_proto::v1::{JobState, StopJobRequest};

use crate::common::*;

/// The pids in the cgroup of job `id` under the subtree `name`, in every hierarchy.
fn job_pids(name: &str, id: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for dir in job_cgroups(name) {
        if dir.file_name().is_some_and(|n| n == id) {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            pids.extend(
                procs
                    .split_whitespace()
                    .filter_map(|pid| pid.parse::<i32>().ok()),
            );
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// The pid of the job's `sleep 1000`, found in its cgroup (waits up to 5 s for it).
fn sleeper_of(name: &str, id: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let sleeper = job_pids(name, id).into_iter().find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == b"sleep\x001000\x00")
        });
        if let Some(pid) = sleeper {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no `sleep 1000` in the cgroup of job {id} (pids {:?})",
            job_pids(name, id)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The start time of `pid` (field 22 of /proc/PID/stat), which tells the process from a
/// later one that reuses its pid; `None` once it is gone.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[tokio::test]
async fn a_second_server_with_the_same_cgroup_name_refuses_to_start_and_the_first_servers_job_runs_on()
 {
    if !privileged() {
        return;
    }
    let first = TestServer::start();
    let mut c = first.admin().await;
    let job = run(&mut c, &["sleep", "1000"]).await;
    assert_eq!(job.state(), JobState::Running);
    let sleeper = sleeper_of(&first.cgroup_name, &job.id);
    let started = start_time(sleeper);
    assert!(started.is_some());

    let (status, output) = run_server_until_exit(&first.cgroup_name);

    assert!(
        !status.success(),
        "the second server ran ({status}):\n{output}"
    );
    assert!(status.code().is_some(), "it exited by itself: {status}");
    assert!(
        output.contains("is in use by another silo server")
            && output.contains("use a different --cgroup-name")
            && output.contains(&first.cgroup_name),
        "the second server does not name the clash:\n{output}"
    );
    assert!(
        output.contains(&format!("(pid {})", first.pid())),
        "the second server does not name the first one's pid:\n{output}"
    );
    assert_eq!(get(&mut c, &job.id).await.state(), JobState::Running);
    assert_eq!(
        start_time(sleeper),
        started,
        "the job's `sleep 1000` was killed"
    );
    assert_eq!(sleeper_of(&first.cgroup_name, &job.id), sleeper);

    let stopped = c
        .stop_job(StopJobRequest {
            id: job.id.clone(),
            grace_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.state(), JobState::Stopped);
}
