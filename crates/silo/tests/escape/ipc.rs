//! What a job reaches over the host's local IPC when it shares the host's network: abstract
//! unix sockets have no file and no permissions, so without Landlock's scopes any such job
//! could connect to any host service listening on one.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};

use silo_proto::v1::{JobNetwork, JobState};

use crate::common::*;

#[tokio::test]
async fn a_job_with_the_hosts_network_cannot_connect_to_the_hosts_abstract_sockets() {
    if !privileged()
        || !needs(
            silo_sandbox::isolation::landlock::scopes_available(),
            "Landlock scopes (Linux 6.12+, landlock in lsm=)",
        )
    {
        return;
    }
    // A host service on an abstract socket, reachable from the host itself.
    let name = format!("silo-escape-ipc-{}", std::process::id());
    let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let service = UnixListener::bind_addr(&address).unwrap();
    service.set_nonblocking(true).unwrap();
    UnixStream::connect_addr(&address).unwrap();
    service.accept().unwrap();

    let server = TestServer::start();
    let mut c = server.admin().await;
    let script = format!(
        r#"python3 -c '
import socket
def attempt(address):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(address)
        return "ok"
    except OSError as e:
        return "errno %d" % e.errno
own = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
own.bind("\0silo-job-own")
own.listen(1)
print("host", attempt("\0{name}"))
print("own", attempt("\0silo-job-own"))
'"#
    );
    let mut job = spec(&["sh", "-c", &script]);
    job.network = JobNetwork::Host as i32;
    job.uid = Some(0);
    job.gid = Some(0);
    let (end, out, err) = sh_spec(&mut c, job).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?} {err}");
    assert!(
        out.contains("host errno 1\n"),
        "the host's socket was reachable:\n{out}{err}"
    );
    assert!(
        out.contains("own ok\n"),
        "the job's own socket was not:\n{out}{err}"
    );
    assert!(
        service.accept().is_err(),
        "the host's service got a connection from the job"
    );
}
