//! What the server shows of itself besides the job API: server reflection in both
//! protocols (grpc.reflection.v1 for grpcurl and most tools, v1alpha for older grpcurl
//! and Python's grpcio-reflection), and its own log.

mod common;

use common::*;
use predicates::prelude::*;

/// A channel as the viewer, over mutual TLS.
async fn viewer_channel(server: &TestServer) -> tonic::transport::Channel {
    let c = server.state().join("certs");
    let config = silo_tls::client_config(
        &std::fs::read(c.join("ca.pem")).unwrap(),
        &std::fs::read(c.join("viewer.pem")).unwrap(),
        &std::fs::read(c.join("viewer-key.pem")).unwrap(),
    )
    .unwrap();
    connect(&server.addr, config).await.unwrap()
}

#[tokio::test]
async fn reflection_lists_the_job_service_in_v1_and_v1alpha() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let channel = viewer_channel(&server).await;

    use tonic_reflection::pb::v1;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == "silo.v1.JobService"), "{names:?}");

    use tonic_reflection::pb::v1alpha;
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(channel);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == "silo.v1.JobService"), "{names:?}");
}

#[tokio::test]
async fn the_server_log_has_no_colour_codes_when_it_is_not_a_terminal() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let log = server.server_log();
    assert!(log.contains("listening on"), "{log}");
    assert!(!log.contains('\x1b'), "{log}");
}

#[test]
fn server_info_tells_the_version_the_callers_role_and_the_limits_in_force() {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(&["--max-memory", "1GiB", "--max-jobs", "7"]);
    let out = server
        .cli()
        .args(["server", "info", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let info: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"), "{info}");
    assert_eq!(info["caller"], "admin", "{info}");
    assert_eq!(info["caller_role"], "admin", "{info}");
    assert_eq!(info["max_jobs"], 7, "{info}");
    assert_eq!(info["max_limits"]["memory_bytes"], 1u64 << 30, "{info}");
    assert_eq!(info["min_limits"]["memory_bytes"], 4u64 << 20, "{info}");
    assert_eq!(info["default_limits"]["pids"], 4096, "{info}");
    assert_eq!(info["default_limits"]["disk_bytes"], 10u64 << 30, "{info}");
    assert_eq!(info["max_stop_grace_ms"], 3_600_000, "{info}");
    assert!(
        info["features"]
            .as_array()
            .unwrap()
            .contains(&"disk".into()),
        "{info}"
    );
    assert!(
        !info["cgroup_layout"].as_str().unwrap().is_empty(),
        "{info}"
    );

    // A viewer may ask too, and is told it is one.
    server
        .viewer_cli()
        .args(["server", "info"])
        .assert()
        .success()
        .stdout(predicates::str::contains("caller:").and(predicates::str::contains("(viewer)")));
}

/// The soft and hard "Max open files" of a process, from /proc/PID/limits.
fn open_files_limit(pid: &str) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[3].to_string(), words[4].to_string())
}

#[test]
fn the_server_raises_its_open_files_limit_and_its_jobs_keep_the_one_it_started_with() {
    if !privileged() {
        return;
    }
    // The server starts with this process's limit (a test harness, a shell, or systemd's
    // 1024 soft limit); it holds several descriptors per live job, so it raises its own
    // soft limit to the hard one, and gives each job the limit it started with.
    let (soft, hard) = open_files_limit("self");
    let server = TestServer::start();
    assert_eq!(
        open_files_limit(&server.pid().to_string()),
        (hard.clone(), hard.clone()),
        "the server's own"
    );
    let out = server
        .cli()
        .args(["job", "run", "--", "sh", "-c", "ulimit -Sn; ulimit -Hn"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!("{soft}\n{hard}\n"),
        "the job's"
    );
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_64_unfinished_handshakes() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    // 100 connections from 127.0.0.2 that never say anything: the first 64 wait for their
    // handshake (up to 10 s), the others are closed at once.
    let mut held = Vec::new();
    for _ in 0..100 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let conn = socket
            .connect(server.addr.parse().unwrap())
            .await
            .unwrap()
            .into_std()
            .unwrap();
        conn.set_nonblocking(false).unwrap();
        held.push(conn);
    }
    // Give the server a moment to see them all, then look (64 x 50 ms, well within the
    // 10 s the waiting ones have).
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut closed = 0;
    for conn in &held {
        conn.set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        // End of file (or a reset) is the server's close; a timeout is a connection that
        // still waits for its handshake.
        match std::io::Read::read(&mut &*conn, &mut [0u8; 1]) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            _ => {}
        }
    }
    assert_eq!(closed, 36, "connections closed at once");
    // A client from another address still gets in while they wait.
    server
        .cli()
        .args(["job", "list"])
        .timeout(std::time::Duration::from_secs(5))
        .assert()
        .success();
}

#[tokio::test]
async fn calls_past_max_calls_are_refused_at_once_until_one_ends() {
    use silo_proto::v1::WatchJobRequest;
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(&["--max-calls", "8"]);
    let mut c = server.admin().await;
    let job = run(&mut c, &["sleep", "60"]).await;
    // Eight streams that stay open while the job runs take every place.
    let mut watching = Vec::new();
    for _ in 0..8 {
        let stream = c
            .watch_job(WatchJobRequest { id: job.id.clone() })
            .await
            .unwrap()
            .into_inner();
        watching.push(stream);
    }
    let refused = c
        .get_job(silo_proto::v1::GetJobRequest { id: job.id.clone() })
        .await
        .unwrap_err();
    assert_refused(&refused, tonic::Code::ResourceExhausted, "--max-calls");
    // A stream its client drops gives its place back.
    drop(watching.pop());
    let c2 = c.clone();
    once_there_is_room(|| {
        let mut c = c2.clone();
        let id = job.id.clone();
        async move { c.get_job(silo_proto::v1::GetJobRequest { id }).await }
    })
    .await;
    drop(watching);
    c.stop_job(silo_proto::v1::StopJobRequest {
        id: job.id,
        grace_ms: 0,
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn one_client_holds_at_most_its_share_of_calls_and_the_others_go_on() {
    use silo_proto::v1::{GetJobRequest, WatchJobRequest};
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(&["--max-calls", "64", "--max-calls-per-client", "4"]);
    let mut admin = server.admin().await;
    let job = run(&mut admin, &["sleep", "60"]).await;
    let mut viewer =
        silo_proto::v1::job_service_client::JobServiceClient::new(viewer_channel(&server).await);
    // The viewer's four streams take its share, on as many connections as it likes.
    let mut watching = Vec::new();
    for _ in 0..4 {
        let mut c = silo_proto::v1::job_service_client::JobServiceClient::new(
            viewer_channel(&server).await,
        );
        let stream = c
            .watch_job(WatchJobRequest { id: job.id.clone() })
            .await
            .unwrap()
            .into_inner();
        watching.push(stream);
    }
    let refused = viewer
        .get_job(GetJobRequest { id: job.id.clone() })
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        tonic::Code::ResourceExhausted,
        "--max-calls-per-client",
    );
    assert!(
        refused.message().starts_with("viewer has 4 calls"),
        "{refused:?}"
    );
    // Another client is served.
    admin
        .get_job(GetJobRequest { id: job.id.clone() })
        .await
        .unwrap();
    // A stream its client drops gives its place back.
    drop(watching.pop());
    once_there_is_room(|| {
        let mut c = viewer.clone();
        let id = job.id.clone();
        async move { c.get_job(GetJobRequest { id }).await }
    })
    .await;
    drop(watching);
    admin
        .stop_job(silo_proto::v1::StopJobRequest {
            id: job.id,
            grace_ms: 0,
        })
        .await
        .unwrap();
}
