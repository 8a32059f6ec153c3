//! System calls and socket families a job has no use for, refused by the seccomp filter.

use silo_proto::v1::JobState;

use crate::common::*;

#[tokio::test]
async fn socket_families_beyond_unix_inet_and_netlink_are_refused() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let script = r#"python3 -c '
import socket
for name in ("AF_VSOCK", "AF_PACKET", "AF_ALG", "AF_KEY", "AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"):
    family = getattr(socket, name, None)
    kind = socket.SOCK_RAW if name in ("AF_PACKET", "AF_KEY", "AF_NETLINK") else (socket.SOCK_SEQPACKET if name == "AF_ALG" else socket.SOCK_STREAM)
    try:
        socket.socket(family, kind).close()
        print(name, "ok")
    except OSError as e:
        print(name, "errno", e.errno)
'"#;
    let (end, out, err) = sh(&mut c, script).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?} {err}");
    for refused in ["AF_VSOCK", "AF_PACKET", "AF_ALG", "AF_KEY"] {
        assert!(
            out.contains(&format!("{refused} errno 97")),
            "{refused} was not refused with EAFNOSUPPORT:\n{out}"
        );
    }
    for allowed in ["AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"] {
        assert!(
            out.contains(&format!("{allowed} ok")),
            "{allowed} was refused:\n{out}"
        );
    }
}

#[tokio::test]
async fn personality_is_limited_to_what_docker_allows() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let script = r#"python3 -c '
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
for value in (0xffffffff, 0x0, 0x0400000, 0x0040000):
    r = libc.personality(ctypes.c_ulong(value))
    print(hex(value), "refused" if r == -1 else "ok")
'"#;
    let (end, out, err) = sh(&mut c, script).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?} {err}");
    assert!(
        out.contains("0xffffffff ok") && out.contains("0x0 ok"),
        "{out}"
    );
    // READ_IMPLIES_EXEC and ADDR_NO_RANDOMIZE are not among Docker's values.
    assert!(
        out.contains("0x400000 refused") && out.contains("0x40000 refused"),
        "{out}"
    );
}

#[tokio::test]
async fn a_job_gets_no_real_time_or_raised_scheduling_even_from_a_server_that_has_it() {
    if !privileged() {
        return;
    }
    // The server inherits this process's limits: raised, as limits.conf or a unit's
    // LimitRTPRIO= would. Raising them needs CAP_SYS_RESOURCE, which root lacks on some
    // machines (this one); there the job's limits are 0 anyway, and that is checked.
    let raised = RLimit { cur: 50, max: 50 };
    for resource in [RLIMIT_RTPRIO, RLIMIT_NICE] {
        // SAFETY: setrlimit reads a struct on this stack.
        if unsafe { setrlimit(resource, &raised) } != 0 {
            eprintln!("NOTE: cannot raise the server's scheduling limits here");
        }
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let script = r#"python3 -c '
import os, resource
print(resource.getrlimit(resource.RLIMIT_RTPRIO), resource.getrlimit(resource.RLIMIT_NICE))
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    print("fifo ok")
except OSError as e:
    print("fifo errno", e.errno)
'"#;
    let mut job = spec(&["sh", "-c", script]);
    job.uid = Some(0);
    job.gid = Some(0);
    let (end, out, err) = sh_spec(&mut c, job).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?} {err}");
    assert_eq!(out, "(0, 0) (0, 0)\nfifo errno 1\n", "{err}");
}

#[repr(C)]
struct RLimit {
    cur: u64,
    max: u64,
}

const RLIMIT_NICE: i32 = 13;
const RLIMIT_RTPRIO: i32 = 14;

unsafe extern "C" {
    fn setrlimit(resource: i32, limit: *const RLimit) -> i32;
}
