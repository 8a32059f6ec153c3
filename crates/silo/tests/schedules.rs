//! Scheduled and recurring jobs end to end: `--in`/`--at` one-shots that are SCHEDULED
//! until their time, cron schedules whose firings are ordinary jobs linked to them, pause,
//! resume and delete, the overlap policy, a server down across a one-shot's time and
//! across cron firings, and every refusal with nothing stored.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// Runs the CLI with `args`; its stdout when it succeeds, else panics with its stderr.
fn ok(server: &TestServer, args: &[&str]) -> String {
    let out = server.cli().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "silo {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.server_log()
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the CLI with `args`, which must fail; its stderr.
fn refused(server: &TestServer, args: &[&str]) -> String {
    let out = server.cli().args(args).output().unwrap();
    assert!(!out.status.success(), "silo {args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

fn json(server: &TestServer, args: &[&str]) -> Value {
    serde_json::from_str(&ok(server, args)).unwrap()
}

fn job(server: &TestServer, id: &str) -> Value {
    json(server, &["job", "status", id, "--json"])
}

/// The jobs of schedule `id`, newest first.
fn jobs_of(server: &TestServer, id: &str) -> Vec<Value> {
    match json(
        server,
        &["job", "list", "--all", "--schedule", id, "--json"],
    ) {
        Value::Array(jobs) => jobs,
        other => panic!("not a list: {other}"),
    }
}

/// Polls `check` every 100 ms until it holds; panics after `limit` with `what`.
fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ended(job: &Value) -> bool {
    matches!(
        job["state"].as_str(),
        Some("completed" | "failed" | "stopped")
    )
}

/// Microseconds since the epoch of an RFC 3339 time in a job's JSON.
fn micros(value: &Value) -> i64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"));
    let t = humantime_parse(text);
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64
}

fn humantime_parse(text: &str) -> std::time::SystemTime {
    // RFC 3339 UTC with milliseconds, as the CLI prints: 2026-12-05T09:00:00.123Z.
    let (date, time) = text.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let millis: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    std::time::UNIX_EPOCH + Duration::from_millis((secs * 1000 + millis) as u64)
}

#[test]
fn a_job_run_in_two_seconds_is_scheduled_then_runs_and_records_its_lateness() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let id = ok(
        &server,
        &["job", "run", "--in", "2s", "--", "echo", "on time"],
    );
    let id = id.trim();
    let now = job(&server, id);
    assert_eq!(now["state"], "scheduled", "{now}");
    assert!(now["started_at"].is_null());
    let listed = ok(&server, &["job", "list", "--state", "scheduled"]);
    assert!(listed.contains(&id[..8]), "{listed}");
    wait_until(Duration::from_secs(60), "the scheduled job to end", || {
        ended(&job(&server, id))
    });
    let done = job(&server, id);
    assert_eq!(
        done["state"],
        "completed",
        "{done}\n{}",
        server.server_log()
    );
    let (scheduled, started) = (micros(&done["scheduled_at"]), micros(&done["started_at"]));
    // The command is held until its instant: never early.
    assert!(started >= scheduled, "started {started} before {scheduled}");
    eprintln!("lateness: {} µs", started - scheduled);
    let logs = ok(&server, &["job", "logs", id]);
    assert_eq!(logs, "on time\n");
}

#[test]
fn stopping_a_scheduled_job_cancels_it_and_deleting_one_removes_it() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let id = ok(&server, &["job", "run", "--in", "1h", "--", "true"]);
    let id = id.trim();
    ok(&server, &["job", "stop", id]);
    let stopped = job(&server, id);
    assert_eq!(stopped["state"], "stopped", "{stopped}");
    assert!(stopped["started_at"].is_null(), "{stopped}");
    assert!(
        stopped["reason"].as_str().unwrap().contains("never ran"),
        "{stopped}"
    );
    let e = refused(
        &server,
        &["job", "run", "--at", "2099-01-01T00:00:00Z", "--", "true"],
    );
    assert!(e.contains("more than a year ahead"), "{e}");
    let id2 = ok(&server, &["job", "run", "--in", "2h", "--", "true"]);
    let id2 = id2.trim();
    ok(&server, &["job", "delete", id2]);
    let stderr = refused(&server, &["job", "status", id2]);
    assert!(stderr.contains("not found"), "{stderr}");
}

#[test]
fn a_per_second_cron_fires_linked_jobs_and_pause_resume_delete_control_it() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let sid = ok(
        &server,
        &["job", "run", "--cron", "* * * * * *", "--", "true"],
    );
    let sid = sid.trim().to_owned();
    wait_until(Duration::from_secs(60), "three firings", || {
        jobs_of(&server, &sid).len() >= 3
    });
    let jobs = jobs_of(&server, &sid);
    let mut instants: Vec<i64> = jobs.iter().map(|j| micros(&j["scheduled_at"])).collect();
    for j in &jobs {
        assert_eq!(j["schedule_id"], Value::String(sid.clone()), "{j}");
        if !j["started_at"].is_null() {
            let late = micros(&j["started_at"]) - micros(&j["scheduled_at"]);
            assert!(late >= 0, "started before its instant: {j}");
            eprintln!("cron firing lateness: {late} µs");
        }
    }
    instants.sort();
    instants.dedup();
    assert_eq!(instants.len(), jobs.len(), "a firing ran twice: {jobs:?}");
    // A prefix works as well as the id.
    assert!(jobs_of(&server, &sid[..6]).len() >= jobs.len());
    let all = ok(&server, &["job", "list", "--all"]);
    assert!(all.contains(&jobs[0]["id"].as_str().unwrap()[..8]));

    ok(&server, &["schedule", "pause", &sid]);
    let status = json(&server, &["schedule", "status", &sid, "--json"]);
    assert_eq!(status["paused"], true, "{status}");
    assert_eq!(status["upcoming"], Value::Array(vec![]), "{status}");
    // A firing in flight when the pause came may still land; then nothing more.
    std::thread::sleep(Duration::from_millis(1500));
    let paused_count = jobs_of(&server, &sid).len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        jobs_of(&server, &sid).len(),
        paused_count,
        "fired while paused"
    );

    ok(&server, &["schedule", "resume", &sid]);
    let status = json(&server, &["schedule", "status", &sid, "--json"]);
    assert_eq!(status["upcoming"].as_array().unwrap().len(), 3, "{status}");
    wait_until(Duration::from_secs(60), "firings after resume", || {
        jobs_of(&server, &sid).len() >= paused_count + 2
    });
    let text = ok(&server, &["schedule", "status", &sid]);
    assert!(text.contains("state:") && text.contains("active"), "{text}");
    let list = ok(&server, &["schedule", "list"]);
    assert!(
        list.contains(&sid[..8]) && list.contains("* * * * * *"),
        "{list}"
    );

    ok(&server, &["schedule", "delete", &sid]);
    std::thread::sleep(Duration::from_millis(1500));
    let deleted_count = jobs_of(&server, &sid).len();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        jobs_of(&server, &sid).len(),
        deleted_count,
        "fired after delete"
    );
    let stderr = refused(&server, &["schedule", "status", &sid]);
    assert!(stderr.contains("not found"), "{stderr}");
}

#[test]
fn overlap_skip_never_runs_two_firings_at_once() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let sid = ok(
        &server,
        &["job", "run", "--cron", "* * * * * *", "--", "sleep", "2.5"],
    );
    let sid = sid.trim().to_owned();
    wait_until(Duration::from_secs(90), "three ended firings", || {
        jobs_of(&server, &sid).iter().filter(|j| ended(j)).count() >= 3
    });
    ok(&server, &["schedule", "pause", &sid]);
    let jobs: Vec<Value> = jobs_of(&server, &sid).into_iter().filter(ended).collect();
    let mut spans: Vec<(i64, i64)> = jobs
        .iter()
        .map(|j| (micros(&j["started_at"]), micros(&j["ended_at"])))
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(pair[1].0 >= pair[0].1, "two firings overlapped: {spans:?}");
    }
    let status = json(&server, &["schedule", "status", &sid, "--json"]);
    assert!(status["skipped"].as_u64().unwrap() > 0, "{status}");
}

#[test]
fn a_one_shot_due_while_the_server_is_down_runs_once_after_the_restart() {
    if !privileged() {
        return;
    }
    let mut server = TestServer::start();
    let id = ok(&server, &["job", "run", "--in", "1s", "--", "echo", "late"]);
    let id = id.trim().to_owned();
    server.crash_and_restart_after(Duration::from_secs(3));
    wait_until(Duration::from_secs(60), "the late job to end", || {
        ended(&job(&server, &id))
    });
    let done = job(&server, &id);
    assert_eq!(
        done["state"],
        "completed",
        "{done}\n{}",
        server.server_log()
    );
    assert!(micros(&done["started_at"]) > micros(&done["scheduled_at"]) + 1_000_000);
    let all = json(&server, &["job", "list", "--all", "--json"]);
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    assert_eq!(ok(&server, &["job", "logs", &id]), "late\n");
}

#[test]
fn a_cron_schedule_keeps_firing_after_a_restart_with_at_most_one_catch_up() {
    if !privileged() {
        return;
    }
    let mut server = TestServer::start();
    let sid = ok(
        &server,
        &[
            "job",
            "run",
            "--cron",
            "* * * * * *",
            "--missed",
            "once",
            "--",
            "true",
        ],
    );
    let sid = sid.trim().to_owned();
    wait_until(Duration::from_secs(60), "a first firing", || {
        !jobs_of(&server, &sid).is_empty()
    });
    let before: Vec<i64> = jobs_of(&server, &sid)
        .iter()
        .map(|j| micros(&j["scheduled_at"]))
        .collect();
    let down_from = before.iter().max().copied().unwrap();
    server.crash_and_restart_after(Duration::from_secs(4));
    let back = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    wait_until(Duration::from_secs(60), "firings after the restart", || {
        jobs_of(&server, &sid)
            .iter()
            .filter(|j| micros(&j["scheduled_at"]) > back)
            .count()
            >= 2
    });
    let jobs = jobs_of(&server, &sid);
    let mut instants: Vec<i64> = jobs.iter().map(|j| micros(&j["scheduled_at"])).collect();
    instants.sort();
    let n = instants.len();
    instants.dedup();
    assert_eq!(instants.len(), n, "a firing ran twice: {instants:?}");
    // The server was down for ~4 firings, and the restart took more: at most one job
    // stands for them all.
    let missed = instants
        .iter()
        .filter(|t| **t > down_from + 1_500_000 && **t < back - 1_000_000)
        .count();
    assert!(missed <= 1, "a burst after the restart: {instants:?}");
    let status = json(&server, &["schedule", "status", &sid, "--json"]);
    assert!(status["skipped"].as_u64().unwrap() >= 1, "{status}");
}

#[test]
fn bad_schedules_are_refused_naming_what_is_wrong_and_nothing_is_stored() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let e = refused(
        &server,
        &[
            "job",
            "run",
            "--at",
            "2020-12-05T09:00:00+01:00",
            "--",
            "true",
        ],
    );
    assert!(
        e.contains("2020-12-05T09:00:00+01:00 is in the past (now "),
        "{e}"
    );
    let e = refused(
        &server,
        &["job", "run", "--cron", "0 25 * * *", "--", "true"],
    );
    assert!(e.contains("cron field 2 (hour) '25': must be 0-23"), "{e}");
    let e = refused(&server, &["job", "run", "--cron", "* * *", "--", "true"]);
    assert!(e.contains("has 3 fields"), "{e}");
    let e = refused(
        &server,
        &[
            "job",
            "run",
            "--cron",
            "0 2 * * *",
            "--tz",
            "Europe/Berln",
            "--",
            "true",
        ],
    );
    assert!(e.contains("unknown time zone 'Europe/Berln'"), "{e}");
    let e = refused(
        &server,
        &[
            "job",
            "run",
            "--in",
            "1h",
            "--cron",
            "* * * * *",
            "--",
            "true",
        ],
    );
    assert!(e.contains("cannot be used with"), "{e}");
    let e = refused(
        &server,
        &[
            "job",
            "run",
            "--at",
            "2020-01-01T00:00",
            "--cron",
            "* * * * *",
            "--",
            "true",
        ],
    );
    assert!(e.contains("in the past"), "{e}");
    let e = refused(
        &server,
        &["job", "run", "--tz", "Europe/Berlin", "--", "true"],
    );
    assert!(e.contains("--cron"), "{e}");
    let e = refused(
        &server,
        &[
            "job",
            "run",
            "--in",
            "1m",
            "--upload",
            "/etc/hostname",
            "--",
            "true",
        ],
    );
    assert!(e.contains("cannot be used with"), "{e}");
    let e = refused(&server, &["job", "run", "--in", "soon", "--", "true"]);
    assert!(e.contains("--in"), "{e}");
    // A viewer may look but not schedule.
    let out = server
        .viewer_cli()
        .args(["job", "run", "--cron", "* * * * *", "--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("CreateSchedule needs role admin"), "{e}");
    server
        .viewer_cli()
        .args(["schedule", "list"])
        .assert()
        .success();
    assert_eq!(
        json(&server, &["schedule", "list", "--json"]),
        Value::Array(vec![])
    );
    assert_eq!(
        json(&server, &["job", "list", "--json"]),
        Value::Array(vec![])
    );
}
