//! The real CLI against a real server: what a user types and what they see.

mod common;

use common::*;
use predicates::prelude::*;

#[test]
fn run_streams_output_and_exits_with_the_jobs_code() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    server
        .cli()
        .args([
            "job",
            "run",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .assert()
        .code(3)
        .stdout("out\n")
        .stderr(predicate::str::contains("err\n"));
    server
        .cli()
        .args(["job", "run", "--", "sh", "-c", "kill -9 $$"])
        .assert()
        .code(137);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("in.txt"), "uploaded\n").unwrap();
    server
        .cli()
        .args([
            "job",
            "run",
            "--env",
            "A=1 2",
            "--workdir",
            "data",
            "--upload",
        ])
        .arg(&data)
        .args(["--", "sh", "-c", "echo \"$A\"; pwd; cat in.txt"])
        .assert()
        .success()
        .stdout("1 2\n/work/data\nuploaded\n");
}

#[test]
fn start_failures_say_why_with_docker_like_exit_codes() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    server
        .cli()
        .args(["job", "run", "--", "no-such-program"])
        .assert()
        .code(127)
        .stderr(predicate::str::contains(
            "silo: command not found: no-such-program",
        ));
    server
        .cli()
        .args(["job", "run", "--workdir", "/nope", "--", "true"])
        .assert()
        .code(125)
        .stderr(predicate::str::contains(
            "silo: working directory /nope does not exist",
        ));
    // A file that is there but not executable: 126, as in the shell.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    server
        .cli()
        .args(["job", "run", "--upload"])
        .arg(&script)
        .args(["--", "./script.sh"])
        .assert()
        .code(126)
        .stderr(predicate::str::contains("not executable"));
    // The typed cause, as `job status --json` shows it.
    let out = server
        .cli()
        .args(["job", "run", "-d", "--", "no-such-program"])
        .assert()
        .code(127)
        .get_output()
        .stdout
        .clone();
    let id = String::from_utf8(out).unwrap().trim().to_owned();
    let out = server
        .cli()
        .args(["job", "status", "--json", &id])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let status: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(status["end_cause"], "start_failed", "{status}");
    assert_eq!(status["start_failure"], "command_not_found", "{status}");
    assert_eq!(status["failed_step"], "exec", "{status}");
    assert_eq!(status["errno"], 2, "{status}");
}

#[test]
fn detach_list_status_logs_stop_delete() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let out = server
        .cli()
        .args([
            "job",
            "run",
            "-d",
            "--name",
            "sleeper",
            "--",
            "sh",
            "-c",
            "echo started; sleep 30",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let id = String::from_utf8(out).unwrap().trim().to_string();
    assert_eq!(id.len(), 32, "{id}");
    let short = &id[..8];
    server
        .cli()
        .args(["job", "list"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains(short)
                .and(predicate::str::contains("running"))
                .and(predicate::str::contains("sleeper")),
        );
    server
        .cli()
        .args(["job", "status", short])
        .assert()
        .success()
        .stdout(predicate::str::contains("running"));
    server
        .cli()
        .args(["job", "logs", short])
        .assert()
        .success()
        .stdout("started\n");
    server
        .cli()
        .args(["job", "delete", short])
        .assert()
        .failure()
        .stderr(predicate::str::contains("still running"));
    server.cli().args(["job", "stop", short]).assert().success();
    let json = server
        .cli()
        .args(["job", "status", short, "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["state"], "stopped");
    assert_eq!(v["id"], id.as_str());
    assert!(v["usage"].is_object(), "{v}");
    server
        .cli()
        .args(["job", "stats", short])
        .assert()
        .success()
        .stdout(predicate::str::contains("cpu="));
    server
        .cli()
        .args(["job", "delete", short])
        .assert()
        .success();
    server
        .cli()
        .args(["job", "status", short])
        .assert()
        .failure()
        .stderr(predicate::str::contains(format!("job {short} not found")));
}

#[test]
fn bad_input_gets_a_clear_error_and_starts_nothing() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    for (args, want) in [
        (vec!["--env", "=x"], "env"),
        (vec!["--memory", "0"], "memory"),
        (vec!["--pids", "-1"], "pids"),
        (vec!["--cpu", "abc"], "cpu"),
        (vec!["--timeout", "soon"], "timeout"),
    ] {
        let mut cmd = server.cli();
        cmd.args(["job", "run"]).args(&args).args(["--", "true"]);
        cmd.assert()
            .failure()
            .stderr(predicate::str::contains(want));
    }
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("escape")).unwrap();
    server
        .cli()
        .args(["job", "run", "--upload"])
        .arg(dir.path())
        .args(["--", "true"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("escape"));
    server
        .cli()
        .args(["job", "run", "--", ""])
        .assert()
        .failure();
    let list = server
        .cli()
        .args(["job", "list", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&list).unwrap();
    assert_eq!(
        v.as_array().map(Vec::len),
        Some(0),
        "a refused run left a job: {v}"
    );
}

#[test]
fn viewers_can_read_but_not_run_and_issued_certificates_work() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    server
        .cli()
        .args(["job", "run", "--", "true"])
        .assert()
        .success();
    server
        .viewer_cli()
        .args(["job", "run", "--", "true"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("viewer"));
    server.viewer_cli().args(["job", "list"]).assert().success();

    // A certificate issued with `silo certs issue` is accepted with its role.
    let out = tempfile::tempdir().unwrap();
    server
        .cli()
        .args([
            "certs", "issue", "--role", "viewer", "--name", "bob", "--out",
        ])
        .arg(out.path())
        .arg("--ca-dir")
        .arg(server.state().join("certs"))
        .assert()
        .success();
    let config = out.path().join("bob.toml");
    std::fs::write(
        &config,
        format!(
            "[servers.s]\naddress = \"{}\"\nca = {:?}\ncert = {:?}\nkey = {:?}\n",
            server.addr,
            server.state().join("certs/ca.pem"),
            out.path().join("bob.pem"),
            out.path().join("bob-key.pem"),
        ),
    )
    .unwrap();
    let bob = || {
        let mut c = server.cli();
        c.env("SILO_CONFIG", &config);
        c
    };
    bob().args(["job", "list"]).assert().success();
    bob()
        .args(["job", "run", "--", "true"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("bob has role viewer"));
}

#[test]
fn certs_init_makes_a_fresh_set_and_never_overwrites_one() {
    let out = tempfile::tempdir().unwrap();
    let silo = || {
        let mut c = assert_cmd::Command::new(silo_bin());
        c.env_remove("SILO_CONFIG");
        c
    };
    silo()
        .args(["certs", "init", "--out"])
        .arg(out.path())
        .assert()
        .success();
    for name in ["ca", "server", "admin", "viewer"] {
        assert!(
            out.path().join(format!("{name}.pem")).is_file(),
            "{name}.pem"
        );
        assert!(
            out.path().join(format!("{name}-key.pem")).is_file(),
            "{name}-key.pem"
        );
    }
    let ca_before = std::fs::read(out.path().join("ca.pem")).unwrap();
    silo()
        .args(["certs", "init", "--out"])
        .arg(out.path())
        .assert()
        .failure()
        .stderr(predicate::str::contains("exists"));
    assert_eq!(std::fs::read(out.path().join("ca.pem")).unwrap(), ca_before);
}
