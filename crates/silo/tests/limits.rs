//! Resource limits on the real kernel of this host (cgroup v1 or hybrid here; v2 is
//! covered in the VM test): each limit is enforced and measured.

mod common;

use std::time::{Duration, Instant};

use common::*;
use silo_proto::v1::{JobSpec, JobState, Limits, StopJobRequest};

/// These tests measure cpu time and disk bandwidth: they run one at a time, so that they
/// do not compete with each other on a small machine.
async fn measuring_alone() -> tokio::sync::MutexGuard<'static, ()> {
    static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ALONE.lock().await
}

fn limited(cmd: &[&str], limits: Limits) -> JobSpec {
    let mut s = spec(cmd);
    s.limits = Some(limits);
    s
}

#[tokio::test]
async fn a_memory_hog_is_oom_killed_and_reported() {
    let _alone = measuring_alone().await;
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let job = run_spec(
        &mut c,
        limited(
            &["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"],
            Limits {
                memory_bytes: Some(32 << 20),
                ..Default::default()
            },
        ),
    )
    .await;
    let end = wait_end(&mut c, &job.id).await;
    assert_eq!(end.state(), JobState::Failed, "{end:?}");
    assert_eq!(end.reason, "out of memory (limit 32 MiB)");
    assert_eq!(end.end_cause(), silo_proto::v1::EndCause::OutOfMemory);
    let usage = end.usage.unwrap();
    assert!(usage.oom_kills.unwrap() >= 1, "{usage:?}");
    assert!(usage.memory_peak_bytes.unwrap() <= 33 << 20, "{usage:?}");
    assert!(job_cgroups_after_cleanup(&server.cgroup_name, &[&job.id]).is_empty());
}

#[tokio::test]
async fn a_fork_bomb_stops_at_the_pid_limit_and_the_job_can_still_be_stopped() {
    let _alone = measuring_alone().await;
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let job = run_spec(
        &mut c,
        limited(
            // A shell gives up when a fork fails; this keeps forking.
            &[
                "python3",
                "-c",
                "import os, time\nwhile True:\n    try:\n        if os.fork() == 0:\n            time.sleep(60)\n            os._exit(0)\n    except OSError:\n        time.sleep(0.01)\n",
            ],
            Limits {
                pids: Some(16),
                ..Default::default()
            },
        ),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let usage = get(&mut c, &job.id).await.usage.unwrap_or_default();
        if usage.pids_refused.unwrap_or(0) > 0 {
            assert!(usage.pids_current.unwrap() <= 16, "{usage:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no fork was refused: {usage:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t0 = Instant::now();
    let stopped = c
        .stop_job(StopJobRequest {
            id: job.id.clone(),
            grace_ms: 100,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(stopped.state(), JobState::Stopped);
    assert!(stopped.usage.unwrap().pids_refused.unwrap() > 0);
    assert!(job_cgroups_after_cleanup(&server.cgroup_name, &[&job.id]).is_empty());
}

#[tokio::test]
async fn half_a_cpu_is_half_a_cpu() {
    let _alone = measuring_alone().await;
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let mut s = limited(
        &["sh", "-c", "while :; do :; done"],
        Limits {
            cpu_percent: Some(50),
            ..Default::default()
        },
    );
    s.timeout_ms = 3000;
    let job = run_spec(&mut c, s).await;
    let end = wait_end(&mut c, &job.id).await;
    let wall = (ts(&end.ended_at) - ts(&end.started_at)) as f64;
    let cpu = end.usage.unwrap().cpu_usec.unwrap() as f64;
    let share = cpu / wall;
    assert!(
        (0.35..=0.65).contains(&share),
        "got {:.0}% of a core",
        share * 100.0
    );
}

fn ts(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.as_ref().unwrap();
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1000
}

#[tokio::test]
async fn cpus_pin_the_job_whatever_form_the_list_is_in() {
    let _alone = measuring_alone().await;
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let job = run_spec(
        &mut c,
        limited(
            &["sh", "-c", "grep Cpus_allowed_list /proc/self/status"],
            Limits {
                // Not in normal form: the server writes "0" to cpuset.cpus.
                cpus: Some("0,0".into()),
                ..Default::default()
            },
        ),
    )
    .await;
    wait_end(&mut c, &job.id).await;
    let out = String::from_utf8(stdout_of(&mut c, &job.id).await).unwrap();
    assert_eq!(out.split_whitespace().last(), Some("0"), "{out}");
}

#[tokio::test]
async fn io_bandwidth_is_throttled_on_the_work_directory_disk() {
    let _alone = measuring_alone().await;
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let job = run_spec(
        &mut c,
        limited(
            &[
                "dd",
                "if=/dev/zero",
                "of=out",
                "bs=1M",
                "count=20",
                "oflag=direct",
            ],
            Limits {
                io_bps: Some(10 << 20),
                ..Default::default()
            },
        ),
    )
    .await;
    let end = wait_end(&mut c, &job.id).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?}");
    let secs = (ts(&end.ended_at) - ts(&end.started_at)) as f64 / 1e6;
    let rate = 20.0 / secs;
    assert!((7.0..=13.0).contains(&rate), "wrote at {rate:.1} MiB/s");
    let usage = end.usage.unwrap();
    assert!(usage.io_write_bytes.unwrap_or(0) >= 20 << 20, "{usage:?}");
}

#[tokio::test]
async fn no_cgroup_is_left_after_a_thousand_jobs() {
    let _alone = measuring_alone().await;
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    // Eight clients, 125 jobs each, one after another.
    let mut clients = Vec::new();
    for _ in 0..8 {
        let mut c = server.admin().await;
        clients.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..125 {
                let job = run_spec(
                    &mut c,
                    limited(
                        &["true"],
                        Limits {
                            memory_bytes: Some(64 << 20),
                            pids: Some(64),
                            ..Default::default()
                        },
                    ),
                )
                .await;
                let end = wait_end(&mut c, &job.id).await;
                assert_eq!(end.state(), JobState::Completed, "{end:?}");
                ids.push(job.id);
            }
            ids
        }));
    }
    let mut ids = Vec::new();
    for c in clients {
        ids.extend(c.await.unwrap());
    }
    assert_eq!(ids.len(), 1000);
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let left = job_cgroups_after_cleanup(&server.cgroup_name, &ids);
    assert!(left.is_empty(), "{} job cgroups left: {left:?}", left.len());
}

#[tokio::test]
async fn server_maximums_refuse_and_defaults_fill_in() {
    let _alone = measuring_alone().await;
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(&["--max-memory", "128M", "--default-pids", "100"]);
    let mut c = server.admin().await;
    let err = c
        .run_job(silo_proto::v1::RunJobRequest {
            spec: Some(limited(
                &["true"],
                Limits {
                    memory_bytes: Some(256 << 20),
                    ..Default::default()
                },
            )),
            uploads: vec![],
            start_at: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("maximum"), "{}", err.message());
    let job = run(&mut c, &["true"]).await;
    assert_eq!(job.spec.unwrap().limits.unwrap().pids, Some(100));
    let end = wait_end(&mut c, &job.id).await;
    assert_eq!(end.state(), JobState::Completed);
}

#[tokio::test]
async fn an_ended_jobs_usage_has_its_peaks_and_nothing_current() {
    let _alone = measuring_alone().await;
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let job = run(
        &mut c,
        &[
            "sh",
            "-c",
            "head -c 16000000 /dev/zero | tail -c 1 >/dev/null; sleep 0.2",
        ],
    )
    .await;
    wait_end(&mut c, &job.id).await;
    // As the store has it, and as a live job's row had it when it ended.
    let end = get(&mut c, &job.id).await;
    let usage = end.usage.expect("an ended job has its usage");
    assert_eq!(usage.pids_current, Some(0), "{usage:?}");
    assert_eq!(usage.memory_current_bytes, Some(0), "{usage:?}");
    assert!(usage.memory_peak_bytes.unwrap_or(0) > 0, "{usage:?}");
    assert!(usage.cpu_usec.unwrap_or(0) > 0, "{usage:?}");
}

#[tokio::test]
async fn the_memory_limit_bounds_the_socket_buffers_a_job_holds() {
    let _alone = measuring_alone().await;
    if !privileged() {
        return;
    }
    // Socket buffers come from host-wide pools (net.ipv4.tcp_mem, udp_mem).
    // 40 loopback connections written to until the kernel takes no more and never read:
    // about 4 MB of send buffer each, 155 MB in all without a bound.
    let tcp = r#"python3 -c '
import socket
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(64)
held, queued = [], 0
for _ in range(40):
    sender = socket.create_connection(listener.getsockname())
    receiver, _ = listener.accept()
    sender.setblocking(False)
    while True:
        try:
            queued += sender.send(b"x" * 65536)
        except OSError:
            break
    held.append((sender, receiver))
print(queued)
'"#;
    // 450 datagram sockets, each sent 2.4 MB it never reads: each keeps at most its
    // receive buffer (about 425 kB), 190 MB in all without a bound; the script prints the
    // UDP memory in use on the whole host.
    let udp = r#"python3 -c '
import socket
held = []
for _ in range(450):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setblocking(False)
    for _ in range(40):
        try:
            sender.sendto(b"x" * 60000, receiver.getsockname())
        except OSError:
            break
    held.append((sender, receiver))
udp = [l.split() for l in open("/proc/net/sockstat") if l.startswith("UDP:")][0]
print(int(udp[udp.index("mem") + 1]) * 4096)
'"#;
    let server = TestServer::start();
    let mut c = server.admin().await;
    let limit = 64u64 << 20;
    for (what, script) in [("TCP", tcp), ("UDP", udp)] {
        let mut job = spec(&["sh", "-c", script]);
        job.limits = Some(Limits {
            memory_bytes: Some(limit),
            ..Default::default()
        });
        let (end, out, err) = sh_spec(&mut c, job).await;
        assert_eq!(end.state(), JobState::Completed, "{end:?} {err}");
        let held: u64 = out.trim().parse().unwrap_or_else(|_| panic!("{out}{err}"));
        assert!(
            held > 16 << 20 && held <= limit + (4 << 20),
            "{held} bytes of {what} buffers held under a {limit}-byte memory limit"
        );
    }
}
