//! `silo node` and `silo top` against a real server: the host's facts as the server reads
//! them, and the running jobs' usage from one WatchTop stream.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use predicates::prelude::*;
use silo_proto::v1::WatchTopRequest;
use silo_proto::v1::node_service_client::NodeServiceClient;

fn json_of(cmd: &mut assert_cmd::Command) -> serde_json::Value {
    let out = cmd.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out).unwrap()
}

/// Starts `argv` as a detached job through the CLI and returns its full id.
fn detached(server: &TestServer, argv: &[&str]) -> String {
    let out = server
        .cli()
        .args(["job", "run", "-d", "--"])
        .args(argv)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).unwrap().trim().to_owned()
}

/// The CPU % column of the table line of job `id`, or `None` when it shows a dash.
fn cpu_of(table: &str, id: &str) -> Option<f64> {
    let line = table
        .lines()
        .find(|l| l.starts_with(&id[..8]))
        .unwrap_or_else(|| panic!("no line for {id} in:\n{table}"));
    line.split_whitespace()
        .find(|w| w.ends_with('%'))
        .map(|w| w.trim_end_matches('%').parse().unwrap())
}

#[test]
fn node_json_describes_the_host_and_the_servers_jobs() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let node = json_of(server.cli().args(["node", "--json"]));
    assert_eq!(node["version"], env!("CARGO_PKG_VERSION"), "{node}");
    assert!(node["cpus"].as_u64().unwrap() >= 1, "{node}");
    let total = node["memory_total_bytes"].as_u64().unwrap();
    assert!(total > 0, "{node}");
    assert!(
        node["memory_available_bytes"].as_u64().unwrap() <= total,
        "{node}"
    );
    assert!(node["disk_total_bytes"].as_u64().unwrap() > 0, "{node}");
    assert!(
        node["disk_free_bytes"].as_u64().unwrap() <= node["disk_total_bytes"].as_u64().unwrap(),
        "{node}"
    );
    assert_eq!(
        node["state_dir"],
        server.state().display().to_string(),
        "{node}"
    );
    assert!(!node["hostname"].as_str().unwrap().is_empty(), "{node}");
    assert!(!node["kernel"].as_str().unwrap().is_empty(), "{node}");
    assert!(node["uptime_ms"].as_u64().unwrap() > 0, "{node}");
    assert!(node["server_started_at"].is_string(), "{node}");
    assert_eq!(node["running_jobs"], 0, "{node}");
    assert_eq!(node["total_jobs"], 0, "{node}");
    assert_eq!(node["runtimes"], serde_json::json!([]), "{node}");
    // The cgroups are the server's own detection, the same GetServerInfo reports.
    let info = json_of(server.cli().args(["server", "info", "--json"]));
    assert_eq!(node["cgroup_layout"], info["cgroup_layout"], "{node}");
    assert_eq!(node["controllers"], info["controllers"], "{node}");
    // Load and pressure are there exactly when the host has them.
    assert_eq!(
        node["load"].is_object(),
        std::path::Path::new("/proc/loadavg").exists()
    );
    let psi = std::fs::read_to_string("/proc/pressure/cpu").is_ok();
    assert_eq!(node["pressure"]["cpu"].is_object(), psi, "{node}");

    // Jobs are counted: one ended, one running.
    server
        .cli()
        .args(["job", "run", "--", "true"])
        .assert()
        .success();
    let sleeper = detached(&server, &["sleep", "30"]);
    let node = json_of(server.cli().args(["node", "--json"]));
    assert_eq!(node["running_jobs"], 1, "{node}");
    assert_eq!(node["total_jobs"], 2, "{node}");
    server
        .cli()
        .args(["job", "stop", &sleeper])
        .assert()
        .success();
}

#[test]
fn a_viewer_may_see_the_node_and_the_top_table() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    server
        .viewer_cli()
        .args(["node"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("cpus:")
                .and(predicate::str::contains("memory:"))
                .and(predicate::str::contains(" available of "))
                .and(predicate::str::contains(
                    "jobs:            0 running, 0 in all",
                )),
        );
    server
        .viewer_cli()
        .args(["top", "--once", "--interval", "200ms"])
        .assert()
        .success()
        .stdout(predicate::str::starts_with("ID"));
}

#[test]
fn top_once_shows_every_running_job_and_the_busy_ones_cpu() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let sleeper = detached(&server, &["sleep", "30"]);
    let busy = detached(&server, &["sh", "-c", "while :; do :; done"]);
    let out = server
        .cli()
        .args(["top", "--once", "--sort", "cpu"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let table = String::from_utf8(out).unwrap();
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains("CPU %"), "{table}");
    let busy_cpu = cpu_of(&table, &busy).expect("the busy job's cpu % is measured");
    assert!(busy_cpu > 0.0, "{table}");
    assert!(cpu_of(&table, &sleeper).is_some(), "{table}");
    // Sorted by cpu: the busy job comes first.
    assert!(
        table.lines().nth(1).unwrap().starts_with(&busy[..8]),
        "{table}"
    );
    assert!(!table.contains("no jobs are running"), "{table}");

    // By id, the two jobs in id order.
    let out = server
        .cli()
        .args(["top", "-n", "--sort", "id", "--interval", "200ms"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let table = String::from_utf8(out).unwrap();
    let mut ids = [&busy[..8], &sleeper[..8]];
    ids.sort();
    let shown: Vec<&str> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(shown, ids, "{table}");
    for id in [&sleeper, &busy] {
        server.cli().args(["job", "stop", id]).assert().success();
    }
}

#[test]
fn top_into_a_pipe_prints_a_plain_line_per_job_per_snapshot() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let sleeper = detached(&server, &["sleep", "30"]);
    let mut child = Command::new(silo_bin())
        .args(["top", "--interval", "200ms"])
        .env("SILO_CONFIG", server.admin_config())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .take(3)
        .map(Result::unwrap)
        .collect();
    child.kill().unwrap();
    child.wait().unwrap();
    for line in &lines {
        let (time, rest) = line.split_once(' ').unwrap();
        // RFC 3339 in UTC, whole seconds: 2025-01-31T12:00:00Z.
        assert!(
            time.len() == 20 && time.ends_with('Z') && time.contains('T'),
            "{line}"
        );
        assert!(rest.starts_with(&sleeper[..8]), "{line}");
        assert!(rest.contains(" cpu=") && rest.contains(" mem="), "{line}");
        assert!(
            !line.contains('\x1b'),
            "no terminal codes in a pipe: {line}"
        );
    }
    server
        .cli()
        .args(["job", "stop", &sleeper])
        .assert()
        .success();
}

#[test]
fn top_with_no_jobs_prints_the_header_and_says_so() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    server
        .cli()
        .args(["top", "--once", "--interval", "200ms"])
        .assert()
        .success()
        .stdout(
            predicate::str::starts_with("ID")
                .and(predicate::str::ends_with("\nno jobs are running\n")),
        );
}

#[test]
fn a_bad_sort_key_or_interval_is_refused_before_anything_is_sent() {
    // No server: clap refuses these while parsing.
    let cli = || {
        let mut c = assert_cmd::Command::new(silo_bin());
        c.env("SILO_CONFIG", "/nonexistent/silo-client.toml");
        c
    };
    cli()
        .args(["top", "--sort", "fast"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("invalid value 'fast' for '--sort <KEY>'").and(
                predicate::str::contains("[possible values: cpu, mem, id, uptime]"),
            ),
        );
    cli()
        .args(["top", "--interval", "10ms"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "10ms is out of range: the interval must be between 200ms and 1m",
        ));
    cli()
        .args(["top", "--interval", "soon"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "invalid value 'soon' for '--interval",
        ));
    cli()
        .args(["node", "--yaml"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("unexpected argument '--yaml'"));
}

#[tokio::test]
async fn the_server_refuses_an_interval_out_of_bounds_naming_the_field() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut client = NodeServiceClient::new(server.channel("viewer").await);
    for interval_ms in [50, 60_001] {
        let status = client
            .watch_top(WatchTopRequest { interval_ms })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(
            status
                .message()
                .starts_with(&format!("interval_ms {interval_ms} is out of range")),
            "{status:?}"
        );
    }
    // 0 is the default: the first snapshot comes at once, the next a second later.
    let mut stream = client
        .watch_top(WatchTopRequest { interval_ms: 0 })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.interval_ms, 0);
    assert!(first.jobs.is_empty());
    let second = stream.message().await.unwrap().unwrap();
    assert!(second.interval_ms > 0);
}

#[tokio::test]
async fn at_most_64_top_watchers_are_open_at_once_and_a_closed_one_makes_room() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut client = NodeServiceClient::new(server.channel("viewer").await);
    let mut open = Vec::new();
    for _ in 0..64 {
        let stream = client
            .watch_top(WatchTopRequest {
                interval_ms: 60_000,
            })
            .await
            .unwrap()
            .into_inner();
        open.push(stream);
    }
    let refused = client
        .watch_top(WatchTopRequest {
            interval_ms: 60_000,
        })
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        tonic::Code::ResourceExhausted,
        "64 WatchTop streams",
    );
    // A stream closed by its client is noticed at its next send, which comes at once.
    drop(open.pop());
    once_there_is_room(|| {
        let mut client = client.clone();
        async move {
            client
                .watch_top(WatchTopRequest {
                    interval_ms: 60_000,
                })
                .await
        }
    })
    .await;
}
