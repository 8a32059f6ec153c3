//! The client against a fake job service over real mutual TLS: connection errors read as
//! sentences, and `silo job run` ends with the job's exit status.

mod support;

use std::path::{Path, PathBuf};

use silo_cli::{
    ClientCommand, DeleteArgs, GlobalOptions, JobCommand, ListArgs, LogsArgs, RunArgs, StatusArgs,
    error_message,
};
use support::{FakeServer, JOB_ID};

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    server: FakeServer,
}

/// A fake server and a configuration that trusts it with a valid admin certificate.
fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki(&dir.path().join("pki"));
    let server = support::start(&pki);
    let config = support::client_config(dir.path(), &server.address, &pki, &pki, None);
    Setup {
        _dir: dir,
        config,
        server,
    }
}

fn global(config: &Path) -> GlobalOptions {
    GlobalOptions {
        config: Some(config.to_path_buf()),
        server: None,
    }
}

fn run_args(command: &[&str]) -> RunArgs {
    RunArgs {
        detach: false,
        rm: false,
        at: None,
        in_: None,
        cron: None,
        tz: None,
        missed: None,
        overlap: None,
        name: None,
        env: Vec::new(),
        secret_env: Vec::new(),
        secret_env_file: Vec::new(),
        workdir: None,
        timeout: None,
        grace: None,
        upload: Vec::new(),
        cpu: None,
        cpus: None,
        memory: None,
        io_bps: None,
        pids: None,
        disk: None,
        user: None,
        network: None,
        runtime: None,
        command: command.iter().map(|s| s.to_string()).collect(),
    }
}

fn job(config: &Path, command: JobCommand) -> anyhow::Result<i32> {
    silo_cli::run(ClientCommand::Job(silo_cli::JobArgs {
        global: global(config),
        command,
    }))
}

#[test]
fn run_exits_with_the_jobs_exit_status() {
    let setup = setup();
    let run = |command: &[&str]| {
        job(&setup.config, JobCommand::Run(Box::new(run_args(command)))).unwrap()
    };
    assert_eq!(run(&["true"]), 0);
    assert_eq!(run(&["exit3"]), 3);
    assert_eq!(run(&["killed"]), 137);
    assert_eq!(run(&["nosuch"]), 127);
}

#[test]
fn run_follows_one_attached_stream_and_falls_back_for_an_older_server() {
    let setup = setup();
    let run = |command: &[&str]| {
        job(&setup.config, JobCommand::Run(Box::new(run_args(command)))).unwrap()
    };
    assert_eq!(run(&["exit3"]), 3);
    {
        let calls = setup.server.calls.lock().unwrap();
        assert_eq!((calls.runs.len(), calls.attached_runs), (1, 1));
        assert!(calls.logs.is_empty(), "an attached run reads no StreamLogs");
    }
    // A server without RunJobAttached: RunJob, then StreamLogs from the first record.
    assert_eq!(run(&["legacy"]), 0);
    let calls = setup.server.calls.lock().unwrap();
    assert_eq!((calls.runs.len(), calls.attached_runs), (2, 1));
    assert_eq!(calls.logs.len(), 1);
    assert_eq!(calls.logs[0].from_sequence, 0);
    assert!(calls.logs[0].follow);
}

#[test]
fn run_sends_the_spec_and_uploads() {
    let setup = setup();
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("input.txt"), "data").unwrap();
    let mut args = run_args(&["cat", "input.txt"]);
    args.upload = vec![files.path().join("input.txt")];
    args.memory = Some(64 << 20);
    assert_eq!(
        job(&setup.config, JobCommand::Run(Box::new(args))).unwrap(),
        0
    );
    let calls = setup.server.calls.lock().unwrap();
    let request = calls.runs.last().unwrap();
    assert_eq!(request.uploads.len(), 1);
    assert_eq!(request.uploads[0].path, "input.txt");
    assert_eq!(request.uploads[0].content, b"data");
    let limits = request.spec.as_ref().unwrap().limits.clone().unwrap();
    assert_eq!(limits.memory_bytes, Some(64 << 20));
}

#[test]
fn a_runtime_is_not_sent_to_a_server_that_does_not_offer_runtimes() {
    let setup = setup();
    let mut args = run_args(&["python3"]);
    args.runtime = Some(silo_cli::parse::parse_runtime_ref("python-3.11").unwrap());
    let err = job(&setup.config, JobCommand::Run(Box::new(args))).unwrap_err();
    let message = error_message(&err);
    assert!(
        message.starts_with("cannot run in runtime python-3.11: the server at ")
            && message.contains("does not offer runtimes"),
        "{message}"
    );
    assert!(setup.server.calls.lock().unwrap().runs.is_empty());
}

#[test]
fn detached_run_returns_at_once_and_reports_a_failed_start() {
    let setup = setup();
    let mut args = run_args(&["sleep", "100"]);
    args.detach = true;
    assert_eq!(
        job(&setup.config, JobCommand::Run(Box::new(args))).unwrap(),
        0
    );
    let mut args = run_args(&["nosuch"]);
    args.detach = true;
    assert_eq!(
        job(&setup.config, JobCommand::Run(Box::new(args))).unwrap(),
        127
    );
}

#[test]
fn read_commands_succeed_and_server_messages_are_shown_as_is() {
    let setup = setup();
    let config = &setup.config;
    let list = ListArgs {
        state: Vec::new(),
        limit: None,
        all: false,
        schedule: None,
        json: true,
    };
    assert_eq!(job(config, JobCommand::List(list)).unwrap(), 0);
    let status = |id: &str| {
        job(
            config,
            JobCommand::Status(StatusArgs {
                id: id.to_owned(),
                json: false,
            }),
        )
    };
    assert_eq!(status("3f2a").unwrap(), 0);
    let err = status("zzzz").unwrap_err();
    assert_eq!(error_message(&err), "job zzzz not found");
    let logs = LogsArgs {
        id: JOB_ID[..8].to_owned(),
        follow: true,
        from: 1,
        json: true,
    };
    assert_eq!(job(config, JobCommand::Logs(logs)).unwrap(), 0);
    let delete = DeleteArgs {
        id: "3f2a".to_owned(),
        json: false,
    };
    assert_eq!(job(config, JobCommand::Delete(delete)).unwrap(), 0);
}

#[test]
fn list_pages_through_the_jobs_until_its_limit() {
    let setup = setup();
    let list = |limit, all, json| {
        let args = ListArgs {
            state: vec![silo_cli::StateArg::Completed],
            limit,
            all,
            schedule: None,
            json,
        };
        assert_eq!(job(&setup.config, JobCommand::List(args)).unwrap(), 0);
        std::mem::take(&mut setup.server.calls.lock().unwrap().lists)
    };
    let pages = |requests: &[silo_proto::v1::ListJobsRequest]| {
        requests
            .iter()
            .map(|r| (r.page_token.clone(), r.page_size))
            .collect::<Vec<_>>()
    };
    // The default (100) outlasts the fake's five jobs: every page is asked for.
    let requests = list(None, false, false);
    assert_eq!(
        pages(&requests),
        [
            (String::new(), 100),
            ("2".to_owned(), 98),
            ("4".to_owned(), 96)
        ]
    );
    assert!(requests.iter().all(|r| {
        r.view() == silo_proto::v1::JobView::Summary
            && r.states == [silo_proto::v1::JobState::Completed as i32]
    }));
    // Three rows: the second page asks for one job, and no third page follows.
    let requests = list(Some(3), false, true);
    assert_eq!(pages(&requests), [(String::new(), 3), ("2".to_owned(), 1)]);
    assert!(
        requests
            .iter()
            .all(|r| r.view() == silo_proto::v1::JobView::Full),
        "--json prints whole jobs"
    );
    let requests = list(None, true, false);
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].page_size, 1000);
}

fn list_error(config: &Path) -> String {
    let list = ListArgs {
        state: Vec::new(),
        limit: None,
        all: false,
        schedule: None,
        json: false,
    };
    error_message(&job(config, JobCommand::List(list)).unwrap_err())
}

#[test]
fn a_closed_port_reads_connection_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki(&dir.path().join("pki"));
    let address = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let config = support::client_config(dir.path(), &address, &pki, &pki, None);
    assert_eq!(
        list_error(&config),
        format!("cannot connect to {address}: connection refused")
    );
}

#[test]
fn a_client_certificate_from_another_ca_is_reported_as_rejected() {
    let setup = setup();
    let dir = tempfile::tempdir().unwrap();
    let other = support::pki(&dir.path().join("other"));
    let server_pki = setup.config.parent().unwrap().join("pki");
    let config =
        support::client_config(dir.path(), &setup.server.address, &server_pki, &other, None);
    // The client's first request follows its certificate without waiting; the refusal
    // must still arrive as the alert each time, not as a reset.
    for _ in 0..5 {
        let err = list_error(&config);
        assert!(
            err.starts_with("the server rejected this client's certificate"),
            "{err}"
        );
    }
}

#[test]
fn a_server_certificate_from_another_ca_is_not_trusted() {
    let setup = setup();
    let dir = tempfile::tempdir().unwrap();
    let other = support::pki(&dir.path().join("other"));
    let server_pki = setup.config.parent().unwrap().join("pki");
    let config =
        support::client_config(dir.path(), &setup.server.address, &other, &server_pki, None);
    let err = list_error(&config);
    assert!(
        err.starts_with("cannot verify the server's certificate"),
        "{err}"
    );
}

#[test]
fn a_server_name_the_certificate_lacks_is_named() {
    let setup = setup();
    let dir = tempfile::tempdir().unwrap();
    let server_pki = setup.config.parent().unwrap().join("pki");
    let config = support::client_config(
        dir.path(),
        &setup.server.address,
        &server_pki,
        &server_pki,
        Some("wrong.example"),
    );
    let err = list_error(&config);
    assert!(
        err.contains("not valid for \"wrong.example\"") && err.contains("server_name"),
        "{err}"
    );
}
