//! How long ended jobs and workflows are kept: `--keep-ended` deletes them, with their
//! logs and files, once they have ended that long ago; `silo job run --rm` at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use predicates::prelude::*;
use silo_proto::v1::workflow_service_client::WorkflowServiceClient;
use silo_proto::v1::{GetJobRequest, GetWorkflowRequest, RunWorkflowRequest, WorkflowState};

/// Whether the job `id` is still known to the server.
async fn job_exists(server: &TestServer, id: &str) -> bool {
    let mut c = server.admin().await;
    match c.get_job(GetJobRequest { id: id.into() }).await {
        Ok(_) => true,
        Err(status) if status.code() == tonic::Code::NotFound => false,
        Err(status) => panic!("{status:?}"),
    }
}

/// Waits up to 30 s for `done`.
async fn eventually<F, Fut>(what: &str, server: &TestServer, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done().await {
        assert!(Instant::now() < deadline, "{what}\n{}", server.server_log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn ended_jobs_and_workflows_are_deleted_once_kept_long_enough_and_nothing_else_is() {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(&["--keep-ended", "2s"]);
    let mut jobs = server.admin().await;
    let ended = run(&mut jobs, &["true"]).await;
    let ended = wait_end(&mut jobs, &ended.id).await;
    let running = run(&mut jobs, &["sleep", "60"]).await;
    let mut workflows = WorkflowServiceClient::new(server.channel("admin").await);
    let yaml = "name: kept\njobs:\n  first:\n    command: \"true\"\n  second:\n    command: sleep\n    args: [\"12\"]\n    needs: [first]\n";
    let workflow = workflows
        .run_workflow(RunWorkflowRequest {
            yaml: yaml.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let get_workflow = |id: String| {
        let mut c = workflows.clone();
        async move { c.get_workflow(GetWorkflowRequest { id }).await }
    };

    // The ended job goes, with its directory; the running one stays.
    let gone = |id: String| {
        let server = &server;
        move || {
            let id = id.clone();
            async move { !job_exists(server, &id).await }
        }
    };
    eventually("the ended job is deleted", &server, gone(ended.id.clone())).await;
    assert!(!server.state().join("jobs").join(&ended.id).exists());
    assert!(job_exists(&server, &running.id).await);

    // A running workflow's ended job stays with it, past --keep-ended.
    let first = loop {
        let w = get_workflow(workflow.id.clone())
            .await
            .unwrap()
            .into_inner();
        if let Some(id) = w.jobs[0].job_ids.first()
            && !w.jobs[1].job_ids.is_empty()
        {
            break id.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let w = get_workflow(workflow.id.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.state(), WorkflowState::Running, "{w:#?}");
    assert!(
        job_exists(&server, &first).await,
        "a running workflow's job was deleted"
    );

    // Ended and kept for 2 s, the workflow goes with its jobs and its directory.
    eventually("the workflow is deleted", &server, || {
        let get = get_workflow(workflow.id.clone());
        async move { get.await.is_err_and(|s| s.code() == tonic::Code::NotFound) }
    })
    .await;
    assert!(
        !job_exists(&server, &first).await,
        "a job outlived its workflow"
    );
    assert!(!server.state().join("workflows").join(&workflow.id).exists());
    assert!(job_exists(&server, &running.id).await);
    assert!(server.server_log().contains("--keep-ended"));
}

#[test]
fn run_rm_deletes_the_job_once_its_output_is_written() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    server
        .cli()
        .args([
            "job",
            "run",
            "--rm",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .assert()
        .code(3)
        .stdout("out\n")
        .stderr(predicate::str::contains("err"));
    server
        .cli()
        .args(["job", "list", "--json"])
        .assert()
        .success()
        .stdout(predicate::str::contains("\"id\"").not());
    server
        .cli()
        .args(["job", "run", "--rm", "-d", "--", "true"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
}

#[tokio::test]
async fn a_schedules_firings_are_deleted_like_any_job() {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(&["--keep-ended", "2s"]);
    let schedule = server
        .cli()
        .args(["job", "run", "--cron", "* * * * * *", "--", "true"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let schedule = String::from_utf8(schedule).unwrap().trim().to_owned();
    // The first firings, once they have ended.
    let mut c = server.admin().await;
    let mut first = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while first.len() < 2 {
        assert!(Instant::now() < deadline, "{}", server.server_log());
        tokio::time::sleep(Duration::from_millis(300)).await;
        first = c
            .list_jobs(silo_proto::v1::ListJobsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .jobs
            .into_iter()
            .filter(|j| j.ended_at.is_some())
            .map(|j| j.id)
            .collect();
    }
    for id in &first {
        let (server, id) = (&server, id.clone());
        eventually("a firing is deleted", server, move || {
            let id = id.clone();
            async move { !job_exists(server, &id).await }
        })
        .await;
    }
    // The schedule goes on firing.
    server
        .cli()
        .args(["schedule", "status", &schedule])
        .assert()
        .success();
    let fired_later = c
        .list_jobs(silo_proto::v1::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(!fired_later.is_empty());
    server
        .cli()
        .args(["schedule", "delete", &schedule])
        .assert()
        .success();
}

#[tokio::test]
async fn a_job_that_cannot_be_deleted_is_named_once_and_the_others_go() {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(&["--keep-ended", "1s"]);
    let mut c = server.admin().await;
    let stuck = run(&mut c, &["true"]).await;
    let stuck = wait_end(&mut c, &stuck.id).await;
    // An immutable file keeps its directory from being removed, as a broken disk might.
    let pin = server.state().join("jobs").join(&stuck.id).join("pinned");
    std::fs::write(&pin, "").unwrap();
    let pinned = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&pin)
        .status()
        .is_ok_and(|s| s.success());
    if !needs(pinned, "chattr +i on the state directory's filesystem") {
        return;
    }
    let other = run(&mut c, &["true"]).await;
    let other = wait_end(&mut c, &other.id).await;
    let gone = {
        let (server, id) = (&server, other.id.clone());
        move || {
            let id = id.clone();
            async move { !job_exists(server, &id).await }
        }
    };
    eventually("the other job is deleted", &server, gone).await;
    // Several sweeps later (one every 250 ms), the stuck one was named once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = std::process::Command::new("chattr")
        .arg("-i")
        .arg(&pin)
        .status();
    let log = server.server_log();
    let named = log
        .lines()
        .filter(|l| l.contains("cannot delete the ended job") && l.contains(&stuck.id))
        .count();
    assert_eq!(named, 1, "{log}");
}
