//! `silo workflow …` against a fake workflow service over real mutual TLS: a run sends the
//! file and its uploads and exits 0 only when the workflow completed; a bad file is
//! refused before any connection; every other command shows the server's answer or its
//! sentence.

mod support;

use std::path::{Path, PathBuf};

use silo_cli::{
    ClientCommand, GlobalOptions, GraphArgs, GraphFormat, ValidateArgs, WorkflowArgs,
    WorkflowCommand, WorkflowIdArgs, WorkflowListArgs, WorkflowLogsArgs, WorkflowRunArgs,
    WorkflowStatusArgs, error_message,
};
use support::workflows::{COMPLETES_ID, FAILS_ID, READ_ONLY_ID};
use support::{FakeServer, JOB_ID};

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    server: FakeServer,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki(&dir.path().join("pki"));
    let server = support::start(&pki);
    let config = support::client_config(dir.path(), &server.address, &pki, &pki, None);
    Setup {
        dir,
        config,
        server,
    }
}

fn workflow(config: &Path, command: WorkflowCommand) -> anyhow::Result<i32> {
    silo_cli::run(ClientCommand::Workflow(WorkflowArgs {
        global: GlobalOptions {
            config: Some(config.to_path_buf()),
            server: None,
        },
        command,
    }))
}

/// A workflow file in `dir/flow/`: `fetch` uploads `data/` and `train` runs `command`.
fn write_workflow(dir: &Path, command: &str) -> PathBuf {
    let flow = dir.join("flow");
    std::fs::create_dir_all(flow.join("data")).unwrap();
    std::fs::write(flow.join("data/input.csv"), "1,2\n").unwrap();
    let path = flow.join("pipeline.yml");
    std::fs::write(
        &path,
        format!(
            "name: pipeline\njobs:\n  fetch:\n    command: ls\n    uploads:\n      files: [data]\n  train:\n    command: sh\n    args: [-c, \"{command}\"]\n    needs: [fetch]\n"
        ),
    )
    .unwrap();
    path
}

fn run(setup: &Setup, file: PathBuf, detach: bool) -> anyhow::Result<i32> {
    workflow(
        &setup.config,
        WorkflowCommand::Run(WorkflowRunArgs {
            file,
            name: Some("renamed".into()),
            detach,
        }),
    )
}

#[test]
fn a_run_sends_the_file_with_its_uploads_and_exits_0_when_the_workflow_completed() {
    let setup = setup();
    let file = write_workflow(setup.dir.path(), "exit 0");
    assert_eq!(run(&setup, file.clone(), false).unwrap(), 0);
    let calls = setup.server.calls.lock().unwrap();
    let sent = calls.workflow_runs.last().unwrap();
    assert_eq!(sent.yaml, std::fs::read_to_string(&file).unwrap());
    assert_eq!(sent.name, "renamed");
    let files: Vec<(&str, bool)> = sent
        .files
        .iter()
        .map(|file| (file.path.as_str(), file.directory))
        .collect();
    assert_eq!(files, [("data", true), ("data/input.csv", false)]);
    assert_eq!(sent.files[1].content, b"1,2\n");
    assert!(
        calls
            .workflow_calls
            .contains(&format!("watch {COMPLETES_ID}")),
        "{:?}",
        calls.workflow_calls
    );
    assert!(calls.logs.is_empty(), "a completed run reads no output");
}

#[test]
fn a_run_exits_1_when_a_job_failed_after_reading_that_jobs_output() {
    let setup = setup();
    let file = write_workflow(setup.dir.path(), "exit 1");
    assert_eq!(run(&setup, file, false).unwrap(), 1);
    let calls = setup.server.calls.lock().unwrap();
    assert!(calls.workflow_calls.contains(&format!("watch {FAILS_ID}")));
    let read = calls.logs.last().expect("the failed job's output was read");
    assert_eq!(
        (read.id.as_str(), read.from_sequence, read.follow),
        (JOB_ID, 0, false)
    );
}

#[test]
fn a_detached_run_returns_at_once_without_following() {
    let setup = setup();
    let file = write_workflow(setup.dir.path(), "exit 1");
    assert_eq!(run(&setup, file, true).unwrap(), 0);
    let calls = setup.server.calls.lock().unwrap();
    assert_eq!(calls.workflow_runs.len(), 1);
    assert!(
        calls.workflow_calls.is_empty(),
        "{:?}",
        calls.workflow_calls
    );
}

#[test]
fn a_bad_file_is_refused_with_its_line_and_column_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: a connection attempt would be the error instead.
    let config = dir.path().join("client.toml");
    std::fs::write(
        &config,
        "[servers.none]\naddress = \"127.0.0.1:1\"\nca = \"/nonexistent/ca.pem\"\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n",
    )
    .unwrap();
    let file = dir.path().join("bad.yml");
    std::fs::write(
        &file,
        "name: bad\njobs:\n  train:\n    command: sh\n    needs: [fetch]\n",
    )
    .unwrap();
    for command in [
        WorkflowCommand::Run(WorkflowRunArgs {
            file: file.clone(),
            name: None,
            detach: false,
        }),
        WorkflowCommand::Validate(ValidateArgs { file: file.clone() }),
    ] {
        let err = error_message(&workflow(&config, command).unwrap_err());
        assert!(
            err.starts_with(&format!("{}: line 5, column ", file.display())),
            "{err}"
        );
        assert!(err.contains("`fetch`"), "{err}");
    }

    let missing_upload = dir.path().join("upload.yml");
    std::fs::write(
        &missing_upload,
        "name: up\njobs:\n  fetch:\n    command: ls\n    uploads:\n      files: [nothere]\n",
    )
    .unwrap();
    let err = workflow(
        &config,
        WorkflowCommand::Run(WorkflowRunArgs {
            file: missing_upload,
            name: None,
            detach: true,
        }),
    )
    .unwrap_err();
    assert!(
        error_message(&err).starts_with("job fetch: cannot upload "),
        "{}",
        error_message(&err)
    );
}

#[test]
fn a_file_is_graphed_here_and_an_id_by_the_server() {
    let setup = setup();
    let file = write_workflow(setup.dir.path(), "exit 0");
    for format in [GraphFormat::Text, GraphFormat::Mermaid, GraphFormat::Dot] {
        let graph = GraphArgs {
            target: file.display().to_string(),
            format,
        };
        assert_eq!(
            workflow(&setup.config, WorkflowCommand::Graph(graph)).unwrap(),
            0
        );
    }
    assert!(setup.server.calls.lock().unwrap().workflow_calls.is_empty());
    let graph = GraphArgs {
        target: "fa11".into(),
        format: GraphFormat::Mermaid,
    };
    assert_eq!(
        workflow(&setup.config, WorkflowCommand::Graph(graph)).unwrap(),
        0
    );
    assert_eq!(
        setup.server.calls.lock().unwrap().workflow_calls,
        [format!("graph {FAILS_ID} mermaid")]
    );
}

#[test]
fn validate_asks_the_server_after_the_local_checks() {
    let setup = setup();
    let file = write_workflow(setup.dir.path(), "exit 0");
    let validate = |file: PathBuf| {
        workflow(
            &setup.config,
            WorkflowCommand::Validate(ValidateArgs { file }),
        )
    };
    assert_eq!(validate(file).unwrap(), 0);
    let refused = setup.dir.path().join("runtime.yml");
    std::fs::write(
        &refused,
        "name: r\njobs:\n  fetch:\n    command: ls\n    runtime: nosuch\n",
    )
    .unwrap();
    assert_eq!(
        error_message(&validate(refused).unwrap_err()),
        "line 5, column 14: runtime nosuch is not installed"
    );
}

#[test]
fn list_forwards_the_limit_and_prints_a_table_or_json() {
    let setup = setup();
    for (limit, json) in [(None, false), (Some(1), true)] {
        let list = WorkflowListArgs { limit, json };
        assert_eq!(
            workflow(&setup.config, WorkflowCommand::List(list)).unwrap(),
            0
        );
    }
    assert_eq!(
        setup.server.calls.lock().unwrap().workflow_calls,
        ["list 0", "list 1"]
    );
}

#[test]
fn status_shows_a_workflow_once_or_until_it_ends() {
    let setup = setup();
    for (watch, json) in [(false, false), (false, true), (true, false), (true, true)] {
        let status = WorkflowStatusArgs {
            id: "c0ff".into(),
            watch,
            json,
        };
        assert_eq!(
            workflow(&setup.config, WorkflowCommand::Status(status)).unwrap(),
            0
        );
    }
    let status = WorkflowStatusArgs {
        id: "dead".into(),
        watch: false,
        json: false,
    };
    let err = workflow(&setup.config, WorkflowCommand::Status(status)).unwrap_err();
    assert_eq!(error_message(&err), "workflow dead not found");
}

#[test]
fn logs_read_every_attempt_once_or_follow_them_to_the_end() {
    let setup = setup();
    for (job, follow) in [(None, false), (Some("train"), true)] {
        let logs = WorkflowLogsArgs {
            id: "fa11".into(),
            job: job.map(str::to_owned),
            follow,
        };
        assert_eq!(
            workflow(&setup.config, WorkflowCommand::Logs(logs)).unwrap(),
            0
        );
    }
    let calls = setup.server.calls.lock().unwrap();
    let reads: Vec<bool> = calls.logs.iter().map(|read| read.follow).collect();
    // fetch and train once each, then train's one attempt followed.
    assert_eq!(reads, [false, false, true]);
    drop(calls);
    let logs = WorkflowLogsArgs {
        id: "fa11".into(),
        job: Some("trian".into()),
        follow: false,
    };
    let err = workflow(&setup.config, WorkflowCommand::Logs(logs)).unwrap_err();
    assert_eq!(
        error_message(&err),
        "workflow pipeline (fa11ed000000) has no job named \"trian\"; its jobs: fetch, train"
    );
}

#[test]
fn cancel_retry_and_delete_answer_or_pass_on_the_servers_refusal() {
    let setup = setup();
    let id = || WorkflowIdArgs { id: "c0ff".into() };
    for command in [
        WorkflowCommand::Cancel(id()),
        WorkflowCommand::Retry(id()),
        WorkflowCommand::Delete(id()),
    ] {
        assert_eq!(workflow(&setup.config, command).unwrap(), 0);
    }
    assert_eq!(
        setup.server.calls.lock().unwrap().workflow_calls,
        [
            format!("cancel {COMPLETES_ID}"),
            format!("retry {COMPLETES_ID}"),
            format!("delete {COMPLETES_ID}"),
        ]
    );
    let read_only = || WorkflowIdArgs {
        id: READ_ONLY_ID.into(),
    };
    for command in [
        WorkflowCommand::Cancel(read_only()),
        WorkflowCommand::Retry(read_only()),
        WorkflowCommand::Delete(read_only()),
    ] {
        let err = workflow(&setup.config, command).unwrap_err();
        assert_eq!(
            error_message(&err),
            "permission denied: this client's role (viewer) may only read workflows"
        );
    }
}
