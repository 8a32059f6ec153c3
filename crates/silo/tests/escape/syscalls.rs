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
