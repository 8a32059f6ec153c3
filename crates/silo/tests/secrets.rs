//! Secret environment variables end to end: a secret reaches its job's environment and
//! nothing else (no RPC answer for either role, no byte of the store, the server's debug
//! log or the job's directory), goes with its job, survives a key rotation, and bad ones
//! are refused without being repeated.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use prost::Message;
use rand::Rng;
use rand::distr::Alphanumeric;
use silo_proto::v1::{
    DeleteJobRequest, JobState, JobView, ListJobsRequest, RunJobRequest, SecretVar,
    StreamLogsRequest, WatchJobRequest,
};

/// 32 random letters and digits.
fn random_secret() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// Lowercase hex of `text`'s bytes, as `od -An -tx1 | tr -d ' \n'` prints them.
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A job script that prints `ok` when `$S` is `expected`, without `expected` in its argv.
fn compares_to(expected: &str) -> String {
    format!(
        "test \"$(printf %s \"$S\" | od -An -tx1 | tr -d ' \\n')\" = {} && echo ok",
        hex(expected)
    )
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every regular file under `dir`, never following a symlink.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            found.extend(files_under(&entry.path()));
        } else if kind.is_file() {
            found.push(entry.path());
        }
    }
    found
}

/// The CLI's stdout for `args`, which must succeed.
fn cli_out(mut cmd: assert_cmd::Command, args: &[&str]) -> Vec<u8> {
    let out = cmd.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all = out.stdout;
    all.extend(out.stderr);
    all
}

#[tokio::test]
async fn a_secret_reaches_its_jobs_environment_and_nothing_else() {
    if !privileged() {
        return;
    }
    // Debug logging, so that every debug line of the server is searched too; plain work
    // directories, so that the job's files are plain files to search.
    let server = TestServer::start_with_env(&["--default-disk", "0"], &[("SILO_LOG", "debug")]);
    let secret = random_secret();
    let dir = tempfile::tempdir().unwrap();
    let dotenv = dir.path().join("prod.env");

    // A job that does not print it (set on the command line).
    let quiet = String::from_utf8(cli_out(
        server.cli(),
        &[
            "job",
            "run",
            "-d",
            "--env",
            "PLAIN=visible",
            "--secret-env",
            &format!("S={secret}"),
            "--",
            "sh",
            "-c",
            "true",
        ],
    ))
    .unwrap()
    .trim()
    .to_owned();
    // One that prints its length, from this client's environment.
    let length = server
        .cli()
        .env("S", &secret)
        .args(["job", "run", "--secret-env", "S", "--", "sh", "-c"])
        .arg("echo ${#S}")
        .assert()
        .success()
        .stdout("32\n");
    drop(length);
    // One that compares it, from a dotenv file.
    std::fs::write(&dotenv, format!("# test\nexport S=\"{secret}\"\n")).unwrap();
    server
        .cli()
        .args(["job", "run", "--secret-env-file"])
        .arg(&dotenv)
        .args(["--", "sh", "-c", &compares_to(&secret)])
        .assert()
        .success()
        .stdout("ok\n");
    std::fs::remove_file(&dotenv).unwrap();
    // A positive control: a job that prints it puts it in its own log, where the search
    // below must find it (so a search that finds nothing elsewhere means something).
    let mut admin = server.admin().await;
    let mut loud_spec = spec(&["sh", "-c", "echo \"$S\""]);
    loud_spec.secret_env = vec![SecretVar {
        name: "S".into(),
        value: secret.clone(),
    }];
    let (loud, out, _) = sh_spec(&mut admin, loud_spec).await;
    assert_eq!(out, format!("{secret}\n"));
    let loud_log = server.state().join("jobs").join(&loud.id).join("log");
    assert!(contains(&std::fs::read(&loud_log).unwrap(), &secret));
    assert_eq!(loud.spec.as_ref().unwrap().secret_env_names, ["S"]);
    assert!(loud.spec.as_ref().unwrap().secret_env.is_empty());

    let jobs: Vec<String> = admin
        .list_jobs(ListJobsRequest {
            view: JobView::Full as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(jobs.len(), 4);
    assert!(jobs.contains(&quiet));
    let quiet_job = get(&mut admin, &quiet).await;
    wait_end(&mut admin, &quiet).await;
    let shown = quiet_job.spec.unwrap();
    assert_eq!(shown.secret_env_names, ["S"]);
    assert_eq!(shown.env[0].value, "visible", "plain values stay readable");

    // Every answer, as both roles, through the API and the CLI.
    let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
    for role in ["admin", "viewer"] {
        let mut c = server.client(role).await;
        for view in [JobView::Summary, JobView::Full] {
            let list = c
                .list_jobs(ListJobsRequest {
                    view: view as i32,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            seen.push((format!("{role} ListJobs {view:?}"), list.encode_to_vec()));
        }
        for id in &jobs {
            let job = get(&mut c, id).await;
            seen.push((format!("{role} GetJob {id}"), job.encode_to_vec()));
            seen.push((
                format!("{role} GetJob {id} debug"),
                format!("{job:?}").into(),
            ));
            let mut watch = c
                .watch_job(WatchJobRequest { id: id.clone() })
                .await
                .unwrap()
                .into_inner();
            while let Some(job) = watch.message().await.unwrap() {
                seen.push((format!("{role} WatchJob {id}"), job.encode_to_vec()));
            }
            if *id != loud.id {
                let mut logs = c
                    .stream_logs(StreamLogsRequest {
                        id: id.clone(),
                        from_sequence: 0,
                        follow: true,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                while let Some(chunk) = logs.message().await.unwrap() {
                    seen.push((format!("{role} StreamLogs {id}"), chunk.encode_to_vec()));
                }
            }
        }
        let cli = || match role {
            "admin" => server.cli(),
            _ => server.viewer_cli(),
        };
        seen.push((
            format!("{role} job list --json"),
            cli_out(cli(), &["job", "list", "--all", "--json"]),
        ));
        seen.push((
            format!("{role} job list"),
            cli_out(cli(), &["job", "list", "--all"]),
        ));
        for id in &jobs {
            seen.push((
                format!("{role} job status --json {id}"),
                cli_out(cli(), &["job", "status", "--json", id]),
            ));
            let text = cli_out(cli(), &["job", "status", id]);
            assert!(
                contains(&text, "S=<hidden>"),
                "{}",
                String::from_utf8_lossy(&text)
            );
            seen.push((format!("{role} job status {id}"), text));
            if *id != loud.id {
                seen.push((
                    format!("{role} job logs {id}"),
                    cli_out(cli(), &["job", "logs", id]),
                ));
            }
        }
    }
    // Every file of the state directory: the store with its WAL and shared memory (read
    // while the server runs), the server's log, each job's directory. Only the loud job's
    // own log may hold the secret.
    for path in files_under(server.state()) {
        if path != loud_log {
            seen.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    let names: Vec<&str> = seen.iter().map(|(name, _)| name.as_str()).collect();
    for wanted in [
        "silo.db",
        "silo.db-wal",
        "silo.db-shm",
        "server.log",
        "/jobs/",
    ] {
        assert!(
            names.iter().any(|n| n.contains(wanted)),
            "{wanted} was not searched: {names:?}"
        );
    }
    assert!(
        server.server_log().contains("DEBUG"),
        "the server did not log at debug level"
    );
    for (name, bytes) in &seen {
        assert!(!contains(bytes, &secret), "the secret is in {name}");
    }
}

#[tokio::test]
async fn deleting_a_job_deletes_its_secrets() {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(&["--default-disk", "0"]);
    let mut admin = server.admin().await;
    let mut s = spec(&["true"]);
    s.secret_env = vec![
        SecretVar {
            name: "A".into(),
            value: random_secret(),
        },
        SecretVar {
            name: "B".into(),
            value: random_secret(),
        },
    ];
    let (job, _, _) = sh_spec(&mut admin, s).await;
    let store = silo_server::store::Store::open(&server.state().join("silo.db"))
        .await
        .unwrap();
    let stored = store.secrets_of(&job.id).await.unwrap();
    let names: Vec<&str> = stored.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["A", "B"]);
    admin
        .delete_job(DeleteJobRequest { id: job.id.clone() })
        .await
        .unwrap();
    assert!(store.secrets_of(&job.id).await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_secrets_are_refused_without_repeating_them_and_start_nothing() {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(&["--default-disk", "0"]);
    let mut admin = server.admin().await;
    let secret = random_secret();
    let mut both = spec(&["true"]);
    both.env = vec![silo_proto::v1::EnvVar {
        name: "A".into(),
        value: "plain".into(),
    }];
    both.secret_env = vec![SecretVar {
        name: "A".into(),
        value: secret.clone(),
    }];
    let mut bad_name = spec(&["true"]);
    bad_name.secret_env = vec![SecretVar {
        name: "1A".into(),
        value: secret.clone(),
    }];
    for (s, expected) in [
        (both, "both a plain"),
        (bad_name, "not a valid variable name"),
    ] {
        let e = admin
            .run_job(RunJobRequest {
                spec: Some(s),
                uploads: vec![],
                start_at: None,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains(expected) && !e.message().contains(&secret),
            "{}",
            e.message()
        );
    }
    // The CLI refuses before sending.
    let out = server
        .cli()
        .args(["job", "run", "--env", "A=1"])
        .arg(format!("--secret-env=A={secret}"))
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("A is given both") && !err.contains(&secret),
        "{err}"
    );
    server
        .cli()
        .env_remove("SURELY_NOT_SET_HERE")
        .args([
            "job",
            "run",
            "--secret-env",
            "SURELY_NOT_SET_HERE",
            "--",
            "true",
        ])
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "SURELY_NOT_SET_HERE is not set in this environment",
        ));
    let listed = admin
        .list_jobs(ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.is_empty(), "{:?}", listed.jobs);
    assert!(!contains(server.server_log().as_bytes(), &secret));
}

#[tokio::test]
async fn a_rotated_key_still_opens_every_secret_and_needs_a_stopped_server() {
    if !privileged() {
        return;
    }
    let mut server = TestServer::start_with(&["--default-disk", "0"]);
    let secret = random_secret();
    let mut admin = server.admin().await;
    let mut s = spec(&["sh", "-c", &compares_to(&secret)]);
    s.secret_env = vec![SecretVar {
        name: "S".into(),
        value: secret.clone(),
    }];
    let (job, out, _) = sh_spec(&mut admin, s).await;
    assert_eq!(out, "ok\n");
    let state = server.state().to_path_buf();
    let rotate = || {
        let mut c = assert_cmd::Command::new(silo_bin());
        c.args(["server", "rotate-secrets-key", "--state-dir"])
            .arg(&state);
        c
    };
    // Not under a running server.
    rotate()
        .assert()
        .failure()
        .stderr(predicates::str::contains("a silo server is running"));
    drop(admin);
    server.stop();
    let key_path = state.join("secrets.key");
    let before = std::fs::read(&key_path).unwrap();
    rotate()
        .assert()
        .success()
        .stdout(predicates::str::contains("1 stored secrets re-encrypted"));
    let after = std::fs::read(&key_path).unwrap();
    assert_ne!(before, after);
    assert_eq!(after.len(), 32);
    // The new key opens the job's secret; the old one no longer does.
    let store = silo_server::store::Store::open(&state.join("silo.db"))
        .await
        .unwrap();
    let sealed = store.secrets_of(&job.id).await.unwrap();
    let owner = silo_server::secrets::job_owner(&job.id);
    let new_key = silo_server::secrets::SecretKey::from_bytes(&after).unwrap();
    let old_key = silo_server::secrets::SecretKey::from_bytes(&before).unwrap();
    assert_eq!(new_key.open(&owner, &sealed[0]).unwrap(), secret);
    assert!(old_key.open(&owner, &sealed[0]).is_err());
    // The server starts with it (it checks the key against the stored secrets) and runs
    // secrets as before.
    server.start_again();
    let mut admin = server.admin().await;
    let other = random_secret();
    let mut s = spec(&["sh", "-c", &compares_to(&other)]);
    s.secret_env = vec![SecretVar {
        name: "S".into(),
        value: other,
    }];
    let (_, out, _) = sh_spec(&mut admin, s).await;
    assert_eq!(out, "ok\n");
    // A key that does not open the store stops the server from starting.
    drop(admin);
    server.stop();
    std::fs::write(&key_path, before).unwrap();
    let log_before = server.server_log().len();
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| server.start_again()));
    assert!(
        started.is_err(),
        "the server started with a key that does not open its secrets"
    );
    let log = server.server_log();
    assert!(
        log[log_before..].contains("does not open the secrets in the store"),
        "{log}"
    );
}

#[tokio::test]
async fn a_workflows_secrets_reach_its_jobs_are_stored_sealed_and_survive_a_rotation() {
    use silo_proto::v1::workflow_service_client::WorkflowServiceClient;
    use silo_proto::v1::{
        GetWorkflowRequest, RetryWorkflowRequest, RunWorkflowRequest, WatchWorkflowRequest,
        WorkflowState,
    };
    if !privileged() {
        return;
    }
    let mut server = TestServer::start_with_env(&["--default-disk", "0"], &[("SILO_LOG", "debug")]);
    let (inherited, own) = (random_secret(), random_secret());
    // Fails on its first run and passes on the second (the count lives in /shared): the
    // retry runs after a key rotation and a restart, from the sealed YAML.
    let script = format!(
        "{} && S=$T && {} && echo x >> /shared/n && test $(wc -l < /shared/n) -ge 2",
        compares_to(&inherited),
        compares_to(&own)
    );
    let yaml = format!(
        "name: sealed\ndefaults:\n  secret_environment: {{S: {inherited}}}\njobs:\n  check:\n    command: sh\n    args: [-c, '{}']\n    environment: {{PLAIN: visible}}\n    secret_environment: {{T: {own}}}\n",
        script.replace('\'', "''")
    );
    let run = |c: WorkflowServiceClient<tonic::transport::Channel>, id: String| async move {
        let mut c = c;
        let mut watch = c
            .watch_workflow(WatchWorkflowRequest { id })
            .await
            .unwrap()
            .into_inner();
        let mut last = None;
        while let Some(w) = watch.message().await.unwrap() {
            last = Some(w);
        }
        last.unwrap()
    };
    let mut wf = WorkflowServiceClient::new(server.channel("admin").await);
    let w = wf
        .run_workflow(RunWorkflowRequest {
            yaml: yaml.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = run(wf.clone(), w.id.clone()).await;
    assert_eq!(first.state(), WorkflowState::Failed, "{first:?}");

    let state = server.state().to_path_buf();
    server.stop();
    assert_cmd::Command::new(silo_bin())
        .args(["server", "rotate-secrets-key", "--state-dir"])
        .arg(&state)
        .assert()
        .success()
        // The job's two secrets and the workflow's YAML.
        .stdout(predicates::str::contains("3 stored secrets re-encrypted"));
    server.start_again();
    let mut wf = WorkflowServiceClient::new(server.channel("admin").await);
    wf.retry_workflow(RetryWorkflowRequest { id: w.id.clone() })
        .await
        .unwrap();
    let second = run(wf.clone(), w.id.clone()).await;
    assert_eq!(second.state(), WorkflowState::Completed, "{second:?}");

    // Neither value is anywhere but in the jobs' environments.
    let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
    for role in ["admin", "viewer"] {
        let mut c = WorkflowServiceClient::new(server.channel(role).await);
        let got = c
            .get_workflow(GetWorkflowRequest { id: w.id.clone() })
            .await
            .unwrap()
            .into_inner();
        seen.push((format!("{role} GetWorkflow"), got.encode_to_vec()));
        let mut jobs = server.client(role).await;
        for job in jobs
            .list_jobs(ListJobsRequest {
                view: JobView::Full as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .jobs
        {
            assert_eq!(job.spec.as_ref().unwrap().secret_env_names, ["S", "T"]);
            seen.push((format!("{role} job {}", job.id), job.encode_to_vec()));
        }
    }
    for path in files_under(server.state()) {
        seen.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    for (name, bytes) in &seen {
        assert!(
            !contains(bytes, &inherited),
            "the default secret is in {name}"
        );
        assert!(!contains(bytes, &own), "the job's secret is in {name}");
    }
}

/// `silo job run WHEN --secret-env S=<secret> -- <compare S to secret>`: the id it prints.
fn run_comparing(server: &TestServer, when: &[&str], secret: &str) -> String {
    let mut args = vec!["job", "run"];
    args.extend_from_slice(when);
    let setting = format!("S={secret}");
    let compare = compares_to(secret);
    args.extend_from_slice(&["--secret-env", &setting, "--", "sh", "-c", &compare]);
    let out = String::from_utf8(cli_out(server.cli(), &args)).unwrap();
    out.lines().next().unwrap().to_owned()
}

#[tokio::test]
async fn scheduled_jobs_and_cron_firings_get_their_secrets_sealed_until_they_start() {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(&["--default-disk", "0"]);
    let secret = random_secret();
    let id = run_comparing(&server, &["--in", "1s"], &secret);
    // Until its start the value is sealed in the store and the row has only its name.
    let store = silo_server::store::Store::open(&server.state().join("silo.db"))
        .await
        .unwrap();
    let waiting = store.get(&id).await.unwrap();
    assert_eq!(waiting.spec.secret_env_names, ["S"]);
    assert!(waiting.spec.secret_env.is_empty());
    assert_eq!(store.secrets_of(&id).await.unwrap().len(), 1);
    let mut admin = server.admin().await;
    // WatchJob answers at once for a job that has not started: poll until it has ended.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let job = loop {
        let job = get(&mut admin, &id).await;
        if job.ended_at.is_some() || std::time::Instant::now() > deadline {
            break job;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(job.state, JobState::Completed as i32, "{job:?}");
    assert_eq!(stdout_of(&mut admin, &id).await, b"ok\n");

    // A cron schedule keeps its secret sealed under its own id; each firing's job gets it.
    let schedule = run_comparing(&server, &["--cron", "* * * * * *"], &secret);
    let shown = cli_out(server.cli(), &["schedule", "status", &schedule, "--json"]);
    assert!(!contains(&shown, &secret));
    let db = server.state().join("silo.db");
    let sealed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM schedule_secrets WHERE schedule_id = ?")
            .bind(&schedule)
            .fetch_one(&store.pool())
            .await
            .unwrap();
    assert_eq!(sealed, 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let fired = loop {
        let page = admin
            .list_jobs(ListJobsRequest {
                schedule_id: schedule.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if let Some(job) = page.jobs.iter().find(|j| j.ended_at.is_some()) {
            break job.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no firing ended");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(fired.state, JobState::Completed as i32, "{fired:?}");
    assert_eq!(stdout_of(&mut admin, &fired.id).await, b"ok\n");
    cli_out(server.cli(), &["schedule", "delete", &schedule]);
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schedule_secrets")
        .fetch_one(&store.pool())
        .await
        .unwrap();
    assert_eq!(
        left,
        0,
        "a deleted schedule's secrets stay in {}",
        db.display()
    );
}
