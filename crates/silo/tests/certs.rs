//! The server's certificates over time: renewed before they end, at start and while the
//! server runs, and client certificates revoked with `silo certs revoke`, on new
//! connections and on open ones.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use predicates::prelude::*;
use silo_proto::v1::ListJobsRequest;

/// Days from now to the end of the certificate in `path`.
fn days_left(path: &Path) -> i64 {
    let ends = silo_tls::certificate_end(path).unwrap();
    (ends - time::OffsetDateTime::now_utc()).whole_days()
}

/// `silo certs init --out DIR --valid-for VALID`, in a fresh state directory.
fn state_with_certs_valid_for(valid: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("silo-e2e-")
        .tempdir()
        .unwrap();
    let certs = dir.path().join("certs");
    assert_cmd::Command::new(silo_bin())
        .args(["certs", "init", "--out"])
        .arg(&certs)
        .args(["--valid-for", valid])
        .assert()
        .success();
    dir
}

/// The end of the certificate the server at `addr` presents to a new connection.
async fn presented_end(server: &TestServer) -> time::OffsetDateTime {
    let certs = server.state().join("certs");
    let config = silo_tls::client_config(
        &std::fs::read(certs.join("ca.pem")).unwrap(),
        &std::fs::read(certs.join("admin.pem")).unwrap(),
        &std::fs::read(certs.join("admin-key.pem")).unwrap(),
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    silo_tls::end_of(&leaf).unwrap()
}

#[test]
fn certificates_near_their_end_are_renewed_at_start_and_clients_keep_their_ca() {
    if !privileged() {
        return;
    }
    let dir = state_with_certs_valid_for("10d");
    let ca_before = std::fs::read(dir.path().join("certs/ca.pem")).unwrap();
    let server = TestServer::start_in(dir, &[], &[]);
    let certs = server.state().join("certs");
    for name in ["server.pem", "admin.pem", "viewer.pem"] {
        assert!(
            (364..=365).contains(&days_left(&certs.join(name))),
            "{name}"
        );
    }
    assert_eq!(std::fs::read(certs.join("ca.pem")).unwrap(), ca_before);
    let log = server.server_log();
    assert!(
        log.contains("renewed ") && log.contains("server.pem"),
        "{log}"
    );
    // The renewed admin certificate needs no warning, and the CA clients hold still works.
    server
        .cli()
        .args(["job", "list"])
        .assert()
        .success()
        .stderr(predicates::str::contains("warning").not());
    // `server info` says until when both certificates of the connection are valid.
    let out = server
        .cli()
        .args(["server", "info", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let info: serde_json::Value = serde_json::from_slice(&out).unwrap();
    for (key, file) in [
        ("server_certificate_ends", "server.pem"),
        ("caller_certificate_ends", "admin.pem"),
    ] {
        let date = silo_tls::certificate_end(&certs.join(file)).unwrap().date();
        let said = info[key].as_str().unwrap_or_default();
        assert!(
            said.starts_with(&date.to_string()),
            "{key}: {said} ({date})"
        );
    }
}

#[tokio::test]
async fn a_running_server_renews_its_certificate_when_it_comes_due_and_keeps_its_connections() {
    if !privileged() {
        return;
    }
    // Due 30 days before its end: 15 seconds after `certs init` (a slow start is no
    // renewal at start).
    let dir = state_with_certs_valid_for("30d 15s");
    let server = TestServer::start_in(dir, &[], &[]);
    let first = presented_end(&server).await;
    assert!((first - time::OffsetDateTime::now_utc()).whole_days() <= 30);
    let mut open = server.admin().await;
    open.list_jobs(ListJobsRequest::default()).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let renewed = loop {
        let end = presented_end(&server).await;
        if end > first + time::Duration::days(300) {
            break end;
        }
        assert!(Instant::now() < deadline, "{}", server.server_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!((364..=365).contains(&(renewed - time::OffsetDateTime::now_utc()).whole_days()));
    // The connection made before goes on, and the renewed admin certificate connects.
    open.list_jobs(ListJobsRequest::default()).await.unwrap();
    server.cli().args(["job", "list"]).assert().success();
    let log = server.server_log();
    assert!(log.contains("read the certificates again"), "{log}");
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_on_new_connections_and_on_open_ones() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let certs = server.state().join("certs");
    let out = server.state().join("alice");
    assert_cmd::Command::new(silo_bin())
        .args([
            "certs", "issue", "--role", "admin", "--name", "alice", "--out",
        ])
        .arg(&out)
        .arg("--ca-dir")
        .arg(&certs)
        .assert()
        .success();
    let alice_config = server.state().join("client-alice.toml");
    let admin_config = std::fs::read_to_string(server.admin_config()).unwrap();
    std::fs::write(
        &alice_config,
        admin_config
            .replace(
                &certs.join("admin.pem").display().to_string(),
                &out.join("alice.pem").display().to_string(),
            )
            .replace(
                &certs.join("admin-key.pem").display().to_string(),
                &out.join("alice-key.pem").display().to_string(),
            ),
    )
    .unwrap();
    let alice_cli = || {
        let mut cli = server.cli();
        cli.env("SILO_CONFIG", &alice_config);
        cli
    };
    alice_cli().args(["job", "list"]).assert().success();
    let tls = silo_tls::client_config(
        &std::fs::read(certs.join("ca.pem")).unwrap(),
        &std::fs::read(out.join("alice.pem")).unwrap(),
        &std::fs::read(out.join("alice-key.pem")).unwrap(),
    )
    .unwrap();
    let mut open = silo_proto::v1::job_service_client::JobServiceClient::new(
        connect(&server.addr, tls).await.unwrap(),
    );
    open.list_jobs(ListJobsRequest::default()).await.unwrap();

    assert_cmd::Command::new(silo_bin())
        .args(["certs", "revoke"])
        .arg(out.join("alice.pem"))
        .arg("--ca-dir")
        .arg(&certs)
        .assert()
        .success()
        .stdout(predicates::str::contains("revoked alice (admin, serial "));

    // Within the server's look at its certs directory (2 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        match open.list_jobs(ListJobsRequest::default()).await {
            Err(status) => break status,
            Ok(_) => assert!(Instant::now() < deadline, "still served"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_refused(&refused, tonic::Code::PermissionDenied, "has been revoked");
    assert!(refused.message().contains("alice"), "{refused:?}");
    alice_cli()
        .args(["job", "list"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("has been revoked"));
    // Everyone else goes on.
    server.cli().args(["job", "list"]).assert().success();
    server.viewer_cli().args(["job", "list"]).assert().success();

    // The server's own admin certificate leaked: revoked, it is issued anew at once, and
    // the configuration the server wrote connects with the new one.
    let admin = certs.join("admin.pem");
    let leaked = silo_tls::certificate_serial(&std::fs::read(&admin).unwrap()).unwrap();
    assert_cmd::Command::new(silo_bin())
        .args(["certs", "revoke"])
        .arg(&admin)
        .arg("--ca-dir")
        .arg(&certs)
        .assert()
        .success();
    let deadline = Instant::now() + Duration::from_secs(10);
    while silo_tls::certificate_serial(&std::fs::read(&admin).unwrap()).unwrap() == leaked {
        assert!(Instant::now() < deadline, "{}", server.server_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server
        .cli()
        .args(["job", "list"])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "{}", server.server_log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
