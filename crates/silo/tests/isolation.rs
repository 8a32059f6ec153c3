//! The escape matrix: real jobs trying to see or touch the host, the server and each other.
//! Each row runs a job through a real server and checks what it could do.

mod common;

use std::time::Duration;

use common::*;
use silo_proto::v1::{JobState, StopJobRequest};

#[tokio::test]
async fn a_job_sees_only_its_own_processes_and_cannot_signal_the_host() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let (end, out, _) = sh(
        &mut c,
        "ps -eo pid=,comm=; kill -9 1; echo kill-rc=$?; echo still-here",
    )
    .await;
    assert_eq!(end.state(), JobState::Completed, "{end:?}");
    let procs: Vec<(u32, String)> = out
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.parse().ok()?, it.next()?.to_string()))
        })
        .collect();
    assert_eq!(procs[0], (1, "silo-init".to_string()), "{out}");
    assert!(procs.len() <= 3, "the job sees more than itself: {out}");
    assert!(
        !out.contains("silo server") && !out.contains("cargo"),
        "{out}"
    );
    assert!(out.contains("still-here"), "kill -9 1 ended the job: {out}");
}

#[tokio::test]
async fn host_files_are_absent_and_the_root_is_read_only() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let state = server.state().display().to_string();
    let script = format!(
        "for p in /root /home /var /run /var/lib/silo {state}; do test -e $p && echo present:$p; done; \
         for p in /usr/x /etc/x /x /bin/x; do touch $p 2>/dev/null && echo wrote:$p; done; \
         touch /work/ok /tmp/ok /dev/shm/ok && echo writable-ok"
    );
    let (end, out, _) = sh(&mut c, &script).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?}");
    assert!(!out.contains("present:"), "{out}");
    assert!(!out.contains("wrote:"), "{out}");
    assert!(out.contains("writable-ok"), "{out}");
}

#[tokio::test]
async fn only_loopback_exists_and_the_host_loopback_is_unreachable() {
    if !privileged() {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = TestServer::start();
    let mut c = server.admin().await;
    let script = format!(
        "ls /sys/class/net; bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>/dev/null && echo connected || echo refused"
    );
    let (_, out, _) = sh(&mut c, &script).await;
    assert_eq!(out.lines().next(), Some("lo"), "{out}");
    assert!(
        out.contains("refused") && !out.contains("connected"),
        "{out}"
    );
}

#[tokio::test]
async fn privileged_operations_fail() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    // Each probe prints NAME:ok when the operation succeeded; none may.
    let script = r#"
        mount -t tmpfs none /tmp 2>/dev/null && echo mount:ok
        umount /proc 2>/dev/null && echo umount:ok
        unshare -U true 2>/dev/null && echo unshare-user:ok
        hostname evil 2>/dev/null && echo hostname:ok
        echo b > /proc/sysrq-trigger 2>/dev/null && echo sysrq:ok
        head -c 1 /proc/kcore >/dev/null 2>&1 && echo kcore:ok
        mkdir /sys/fs/cgroup/x 2>/dev/null && echo cgroup:ok
        head -c 1 /proc/1/mem >/dev/null 2>&1 && echo ptrace-mem:ok
        su root -c 'id -u' </dev/null 2>/dev/null | grep -qx 0 && echo setuid:ok
        python3 -c '
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
checks = {
    "init_module": lambda: libc.init_module(None, 0, b""),
    "ptrace-attach-1": lambda: libc.ptrace(16, 1, None, None),
    "keyctl": lambda: libc.syscall(250, 1, 0, 0, 0, 0),
    "bpf": lambda: libc.syscall(321, 0, None, 0),
    "settimeofday": lambda: libc.settimeofday(None, None) if False else libc.syscall(164, None, None),
}
for name, call in checks.items():
    if call() == 0:
        print(name + ":ok")
    else:
        print(name + ":errno=" + str(ctypes.get_errno()))
'
        id -u; grep CapEff /proc/self/status
    "#;
    let (end, out, err) = sh(&mut c, script).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?} {err}");
    assert!(!out.contains(":ok"), "an operation succeeded:\n{out}");
    for name in ["init_module", "ptrace-attach-1", "keyctl", "bpf"] {
        assert!(
            out.contains(&format!("{name}:errno=1")),
            "{name} was not refused with EPERM:\n{out}"
        );
    }
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("1000"), "{out}");
    assert_ne!(
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "evil"
    );

    // Root inside the job is still powerless.
    let mut s = spec(&[
        "sh",
        "-c",
        "id -u; mount -t tmpfs none /tmp 2>/dev/null && echo mount:ok; grep CapEff /proc/self/status",
    ]);
    s.uid = Some(0);
    let (_, out, _) = sh_spec(&mut c, s).await;
    assert!(out.starts_with("0\n"), "{out}");
    assert!(
        !out.contains("mount:ok") && out.contains("CapEff:\t0000000000000000"),
        "{out}"
    );
}

#[tokio::test]
async fn two_jobs_cannot_see_each_others_processes_files_or_tmp() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let a = run(
        &mut c,
        &[
            "sh",
            "-c",
            "echo secret > /tmp/a-secret; echo x > /work/a-file; sleep 876543",
        ],
    )
    .await;
    assert_eq!(a.state(), JobState::Running);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, out, _) = sh(
        &mut c,
        "ps -eo args=; ls /tmp /work; ls /proc | grep -c '^[0-9]'",
    )
    .await;
    assert!(!out.contains("876543"), "{out}");
    assert!(
        !out.contains("a-secret") && !out.contains("a-file"),
        "{out}"
    );
    c.stop_job(StopJobRequest {
        id: a.id,
        grace_ms: 0,
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn orphans_are_reaped_and_the_commands_exit_code_is_the_jobs() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let script = "for i in $(seq 100); do (sleep 0.1 &); done; sleep 1; \
                  echo zombies=$(ps -eo stat= | grep -c Z); exit 7";
    let (end, out, _) = sh(&mut c, script).await;
    assert!(out.contains("zombies=0"), "{out}");
    assert_eq!(end.exit_code, Some(7));
    assert_eq!(end.state(), JobState::Failed);
}

#[tokio::test]
async fn jobs_run_under_the_normal_scheduling_policy_though_their_inits_waited_idle() {
    if !privileged() {
        return;
    }
    // Ready inits are prepared under SCHED_IDLE; a job (and what it forks) must not be.
    let server = TestServer::start();
    let mut c = server.admin().await;
    // Field 41 of /proc/PID/stat is the policy (0 SCHED_OTHER, 5 SCHED_IDLE), 19 the nice.
    let script = "s=$(cut -d' ' -f19,41 /proc/$$/stat); sh -c 'cut -d\" \" -f19,41 /proc/$$/stat' \
                  | { read c; echo \"$s|$c\"; }";
    for _ in 0..4 {
        let (end, out, _) = sh(&mut c, script).await;
        assert_eq!(end.state(), JobState::Completed, "{end:?}");
        assert_eq!(
            out.trim(),
            "0 0|0 0",
            "nice and policy of the job and its child"
        );
    }
}

#[tokio::test]
async fn work_is_the_jobs_own_with_or_without_a_disk_and_without_uploads() {
    if !privileged() {
        return;
    }
    for flags in [&["--default-disk", "0"][..], &[][..]] {
        let server = TestServer::start_with(flags);
        let mut c = server.admin().await;
        for _ in 0..3 {
            let (end, out, err) = sh(&mut c, "echo mine > /work/x && cat /work/x").await;
            assert_eq!(end.state(), JobState::Completed, "{flags:?}: {err}");
            assert_eq!(out, "mine\n", "{flags:?}");
        }
    }
}

/// Waits until the disk image at `image` holds nothing (its job ended and the server
/// freed it, in the background); panics after 10 s with what it still holds.
async fn wait_freed(image: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let mut held = None;
    for _ in 0..200 {
        let m = std::fs::metadata(image).expect("the image stays until the job is removed");
        if m.len() == 0 && m.blocks() == 0 {
            return;
        }
        held = Some((m.len(), m.blocks()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{image:?} still holds (length, blocks) {held:?}");
}

#[tokio::test]
async fn an_ended_jobs_disk_gives_its_space_back_and_its_log_stays() {
    if !privileged() {
        return;
    }
    let mut server = TestServer::start();
    let mut c = server.admin().await;
    let image =
        |server: &TestServer, id: &str| server.state().join("jobs").join(id).join("disk.img");
    // 8 MiB written and synced to the job's own filesystem, so that they reach the image.
    let write = "head -c 8388608 /dev/zero > /work/big && sync -f /work/big && wc -c < /work/big";
    let (end, out, err) = sh(&mut c, write).await;
    assert_eq!(end.state(), JobState::Completed, "{err}");
    assert_eq!(out, "8388608\n");
    wait_freed(&image(&server, &end.id)).await;
    assert_eq!(stdout_of(&mut c, &end.id).await, b"8388608\n");

    // A job that ends after a restart, adopted by the new server, is freed the same way.
    let script = format!("{write}; sleep 1.5");
    let running = run(&mut c, &["sh", "-c", &script]).await;
    assert_eq!(running.state(), JobState::Running);
    server.crash_and_restart();
    let mut c = server.admin().await;
    let end = wait_end(&mut c, &running.id).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?}");
    wait_freed(&image(&server, &running.id)).await;
    assert_eq!(stdout_of(&mut c, &running.id).await, b"8388608\n");
}

#[tokio::test]
async fn setup_failures_name_their_cause_and_leave_nothing_behind() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let mut s = spec(&["true"]);
    s.workdir = "/nonexistent/dir".into();
    let job = run_spec(&mut c, s).await;
    assert_eq!(job.state(), JobState::Failed);
    assert_eq!(
        job.reason,
        "working directory /nonexistent/dir does not exist"
    );
    assert_eq!(job.end_cause(), silo_proto::v1::EndCause::StartFailed);
    assert_eq!(
        job.start_failure(),
        silo_proto::v1::StartFailure::WorkingDirectory
    );
    assert_eq!(
        (job.failed_step.as_str(), job.errno),
        ("chdir", Some(libc_enoent()))
    );

    let job2 = run(&mut c, &["definitely-not-a-command"]).await;
    assert_eq!(job2.reason, "command not found: definitely-not-a-command");
    assert_eq!(
        job2.start_failure(),
        silo_proto::v1::StartFailure::CommandNotFound
    );
    // Stored as sent: the store's copy says the same.
    assert_eq!(
        get(&mut c, &job2.id).await.end_cause(),
        silo_proto::v1::EndCause::StartFailed
    );

    tokio::time::sleep(Duration::from_millis(100)).await;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let state = server.state().display().to_string();
    assert!(!mounts.contains(&state), "a job mount leaked onto the host");
    assert!(job_cgroups_after_cleanup(&server.cgroup_name, &[&job.id, &job2.id]).is_empty());
    for id in [&job.id, &job2.id] {
        let root = server.state().join("jobs").join(id).join("root");
        assert_eq!(
            std::fs::read_dir(&root).unwrap().count(),
            0,
            "{root:?} is not empty"
        );
    }
    // No process of these jobs is left.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(link) = std::fs::read_link(entry.path().join("fd/4")) {
            for id in [&job.id, &job2.id] {
                assert!(
                    !link.starts_with(server.state().join("jobs").join(id)),
                    "a job process survived: {:?}",
                    entry.path()
                );
            }
        }
    }
}

/// ENOENT (the tests do not depend on libc).
fn libc_enoent() -> i32 {
    2
}
