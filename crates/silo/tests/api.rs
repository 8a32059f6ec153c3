//! The job API end to end: a real server, a tonic client over mutual TLS.

mod common;

use std::time::{Duration, Instant};

use common::*;
use silo_proto::v1::{
    DeleteJobRequest, EnvVar, JobState, Limits, ListJobsRequest, LogStream, RunJobRequest,
    StopJobRequest, StreamLogsRequest, Upload,
};
use tonic::Code;

#[tokio::test]
async fn a_job_runs_to_completion_and_its_output_and_exit_are_kept() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let job = run(&mut c, &["sh", "-c", "echo hello; echo oops >&2; exit 0"]).await;
    assert_eq!(job.owner, "admin");
    let end = wait_end(&mut c, &job.id).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?}");
    assert_eq!(end.exit_code, Some(0));
    assert!(end.started_at.is_some() && end.ended_at.is_some());
    assert_eq!(stdout_of(&mut c, &job.id).await, b"hello\n");
    // Not following: the whole history, then the end.
    let mut s = c
        .stream_logs(StreamLogsRequest {
            id: job.id[..8].into(),
            from_sequence: 0,
            follow: false,
        })
        .await
        .unwrap()
        .into_inner();
    let mut streams = Vec::new();
    while let Some(chunk) = s.message().await.unwrap() {
        streams.extend(chunk.records.iter().map(|r| (r.stream(), r.data.clone())));
    }
    assert!(streams.contains(&(LogStream::Stderr, bytes_of(b"oops\n"))));
}

/// Signals the server's processes ignore (Rust ignores SIGPIPE; a server started in a
/// shell's background ignores SIGINT and SIGQUIT) are not ignored in the job: `yes | head`
/// ends quietly, as in a shell.
#[tokio::test]
async fn a_job_starts_with_every_signal_at_its_default_action() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let (job, out, err) = sh(&mut c, "grep SigIgn /proc/self/status; yes | head -c 2").await;
    assert_eq!(job.state(), JobState::Completed, "{job:?}");
    assert_eq!(out, "SigIgn:\t0000000000000000\ny\n");
    assert_eq!(err, "", "yes met a broken pipe instead of SIGPIPE");
}

#[tokio::test]
async fn exit_codes_and_signals_are_reported() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let job = run(&mut c, &["sh", "-c", "exit 3"]).await;
    let end = wait_end(&mut c, &job.id).await;
    assert_eq!(end.state(), JobState::Failed);
    assert_eq!(end.exit_code, Some(3));
    assert_eq!(end.reason, "exited with code 3");

    let job = run(&mut c, &["sh", "-c", "kill -9 $$"]).await;
    let end = wait_end(&mut c, &job.id).await;
    assert_eq!(end.state(), JobState::Failed);
    assert_eq!(end.signal, Some(9));
    assert_eq!(end.exit_code, None);
    assert_eq!(end.reason, "killed by signal SIGKILL");

    // A real-time signal (SIGRTMIN is 34 with glibc) ends the job like any other.
    let job = run(&mut c, &["sh", "-c", "kill -34 $$"]).await;
    let end = wait_end(&mut c, &job.id).await;
    assert_eq!(end.state(), JobState::Failed);
    assert_eq!(end.signal, Some(34));
    assert_eq!(end.reason, "killed by signal SIG34");
}

#[tokio::test]
async fn failures_to_start_are_failed_jobs_with_a_clear_reason() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let job = run(&mut c, &["no-such-command-xyz"]).await;
    assert_eq!(job.state(), JobState::Failed);
    assert_eq!(job.reason, "command not found: no-such-command-xyz");

    let job = c
        .run_job(RunJobRequest {
            spec: Some(spec(&["./data.txt"])),
            uploads: vec![Upload {
                path: "data.txt".into(),
                content: b"x".to_vec(),
                mode: 0o644,
                directory: false,
            }],
            start_at: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.state(), JobState::Failed);
    assert!(job.reason.contains("permission denied"), "{}", job.reason);

    let mut s = spec(&["true"]);
    s.workdir = "does/not/exist".into();
    let job = run_spec(&mut c, s).await;
    assert_eq!(job.state(), JobState::Failed);
    assert!(job.reason.contains("working directory"), "{}", job.reason);
    // Stored as such.
    assert_eq!(get(&mut c, &job.id).await.reason, job.reason);
}

#[tokio::test]
async fn a_timeout_stops_the_job() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let mut s = spec(&["sleep", "30"]);
    s.timeout_ms = 300;
    let t0 = Instant::now();
    let job = run_spec(&mut c, s).await;
    let end = wait_end(&mut c, &job.id).await;
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(end.state(), JobState::Failed);
    assert_eq!(end.reason, "timed out after 300ms");
    assert_eq!(end.end_cause(), silo_proto::v1::EndCause::TimedOut);
}

fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .count()
}

#[tokio::test]
async fn stop_ends_everything_the_job_started_even_daemons() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let job = run(
        &mut c,
        &[
            "sh",
            "-c",
            "trap '' TERM; (setsid sh -c 'sleep 987651' &); sleep 987652",
        ],
    )
    .await;
    assert_eq!(job.state(), JobState::Running);
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes_with("987651") == 0 {
        assert!(Instant::now() < deadline, "daemon never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped = c
        .stop_job(StopJobRequest {
            id: job.id.clone(),
            grace_ms: 200,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.state(), JobState::Stopped);
    assert_eq!(stopped.reason, "stopped by request");
    assert_eq!(stopped.end_cause(), silo_proto::v1::EndCause::Stopped);
    assert_eq!(
        stopped.signal,
        Some(9),
        "SIGTERM was ignored, so SIGKILL ended it"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(processes_with("98765"), 0, "something survived the stop");
}

#[tokio::test]
async fn stop_with_a_cooperative_command_reports_sigterm() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let job = run(&mut c, &["sleep", "30"]).await;
    let t0 = Instant::now();
    let stopped = c
        .stop_job(StopJobRequest {
            id: job.id[..8].into(),
            grace_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(stopped.state(), JobState::Stopped);
    assert_eq!(stopped.signal, Some(15));
}

#[tokio::test]
async fn uploads_land_in_the_work_directory() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let job = c
        .run_job(RunJobRequest {
            spec: Some(spec(&["sh", "-c", "cat data/in.txt && ./data/run.sh"])),
            uploads: vec![
                Upload {
                    path: "data".into(),
                    directory: true,
                    ..Default::default()
                },
                Upload {
                    path: "data/in.txt".into(),
                    content: b"uploaded\n".to_vec(),
                    ..Default::default()
                },
                Upload {
                    path: "data/run.sh".into(),
                    content: b"#!/bin/sh\necho script ran\n".to_vec(),
                    mode: 0o755,
                    directory: false,
                },
            ],
            start_at: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.uploads, ["data", "data/in.txt", "data/run.sh"]);
    let end = wait_end(&mut c, &job.id).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?}");
    assert_eq!(stdout_of(&mut c, &job.id).await, b"uploaded\nscript ran\n");
}

#[tokio::test]
async fn env_and_workdir_reach_the_command() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let mut s = spec(&["sh", "-c", "echo $GREETING; pwd"]);
    s.env.push(EnvVar {
        name: "GREETING".into(),
        value: "hi there".into(),
    });
    let job = run_spec(&mut c, s).await;
    wait_end(&mut c, &job.id).await;
    let out = String::from_utf8(stdout_of(&mut c, &job.id).await).unwrap();
    assert!(out.starts_with("hi there\n"), "{out}");
    assert!(out.trim_end().ends_with("work"), "{out}");
}

#[tokio::test]
async fn list_get_and_delete() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let a = run(&mut c, &["true"]).await;
    wait_end(&mut c, &a.id).await;
    let b = run(&mut c, &["sleep", "30"]).await;
    let list = c
        .list_jobs(ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(
        list.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        [b.id.clone(), a.id.clone()]
    );
    let running = c
        .list_jobs(ListJobsRequest {
            states: vec![JobState::Running as i32],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].id, b.id);

    let err = c
        .delete_job(DeleteJobRequest { id: b.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    c.stop_job(StopJobRequest {
        id: b.id.clone(),
        grace_ms: 0,
    })
    .await
    .unwrap();
    // Four deletes at once: one deletes, the others find nothing.
    let deletes: Vec<_> = (0..4)
        .map(|_| {
            let mut c = c.clone();
            let id = b.id.clone();
            tokio::spawn(async move { c.delete_job(DeleteJobRequest { id }).await })
        })
        .collect();
    let mut deleted = 0;
    for delete in deletes {
        match delete.await.unwrap() {
            Ok(_) => deleted += 1,
            Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
        }
    }
    assert_eq!(deleted, 1);
    assert!(!server.state().join("jobs").join(&b.id).exists());
    let err = c
        .get_job(silo_proto::v1::GetJobRequest { id: b.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), format!("job {} not found", b.id));
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let nul = spec(&["echo", "a\0b"]);
    let mut bad_env = spec(&["true"]);
    bad_env.env.push(EnvVar {
        name: "A=B".into(),
        value: "x".into(),
    });
    let mut zero_mem = spec(&["true"]);
    zero_mem.limits = Some(Limits {
        memory_bytes: Some(0),
        ..Default::default()
    });
    let mut huge_cpu = spec(&["true"]);
    huge_cpu.limits = Some(Limits {
        cpu_percent: Some(1_000_000),
        ..Default::default()
    });
    let mut zero_pids = spec(&["true"]);
    zero_pids.limits = Some(Limits {
        pids: Some(0),
        ..Default::default()
    });
    let cases = vec![
        (spec(&[]), vec![], "command is empty"),
        (nul, vec![], "NUL"),
        (bad_env, vec![], "'='"),
        (zero_mem, vec![], "too small"),
        (huge_cpu, vec![], "more than this host"),
        (zero_pids, vec![], "positive"),
        (
            spec(&["true"]),
            vec![Upload {
                path: "../x".into(),
                ..Default::default()
            }],
            "escapes",
        ),
        (
            spec(&["true"]),
            vec![Upload {
                path: "/etc/x".into(),
                ..Default::default()
            }],
            "absolute",
        ),
    ];
    for (s, uploads, want) in cases {
        let err = c
            .run_job(RunJobRequest {
                spec: Some(s.clone()),
                uploads,
                start_at: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{s:?}");
        assert!(err.message().contains(want), "{s:?}: {}", err.message());
    }
    let list = c
        .list_jobs(ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(list.is_empty(), "a refused request left a job: {list:?}");
    // Ready inits keep directories for their future jobs; a job's own files start with
    // its work directory.
    let jobs_dir = server.state().join("jobs");
    let work_dirs = std::fs::read_dir(jobs_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("work").exists())
        .count();
    assert_eq!(work_dirs, 0);
    for id in ["ffffffff", "zz", ""] {
        let err = c
            .get_job(silo_proto::v1::GetJobRequest { id: id.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{id:?}");
    }
}

#[tokio::test]
async fn viewers_read_and_only_admins_change() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut admin = server.admin().await;
    let mut viewer = server.client("viewer").await;
    let job = run(&mut admin, &["echo", "x"]).await;
    wait_end(&mut admin, &job.id).await;

    let err = viewer
        .run_job(RunJobRequest {
            spec: Some(spec(&["true"])),
            uploads: vec![],
            start_at: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("viewer"), "{}", err.message());
    let err = viewer
        .stop_job(StopJobRequest {
            id: job.id.clone(),
            grace_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = viewer
        .delete_job(DeleteJobRequest { id: job.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    assert_eq!(get(&mut viewer, &job.id).await.id, job.id);
    assert_eq!(
        viewer
            .list_jobs(ListJobsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .jobs
            .len(),
        1
    );
    assert_eq!(stdout_of(&mut viewer, &job.id).await, b"x\n");
    wait_end(&mut viewer, &job.id).await;
}

#[tokio::test]
async fn clients_without_a_valid_certificate_or_tls13_are_refused() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let certs = server.state().join("certs");
    let ca = std::fs::read(certs.join("ca.pem")).unwrap();

    // A certificate from another CA.
    let other = tempfile::tempdir().unwrap();
    silo_tls::init_pki(other.path(), &[], silo_tls::LEAF_VALIDITY).unwrap();
    let foreign = silo_tls::client_config(
        &ca,
        &std::fs::read(other.path().join("admin.pem")).unwrap(),
        &std::fs::read(other.path().join("admin-key.pem")).unwrap(),
    )
    .unwrap();
    assert!(
        call_fails(&server.addr, foreign).await,
        "foreign CA accepted"
    );

    // No client certificate at all.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut anonymous = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
    anonymous.alpn_protocols = vec![b"h2".to_vec()];
    assert!(
        call_fails(&server.addr, std::sync::Arc::new(anonymous)).await,
        "anonymous client accepted"
    );

    // A TLS 1.2 client with a valid certificate.
    use rustls_pki_types::pem::PemObject;
    let cert = rustls_pki_types::CertificateDer::pem_file_iter(certs.join("admin.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(certs.join("admin-key.pem")).unwrap();
    let mut tls12 = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(cert, key)
        .unwrap();
    tls12.alpn_protocols = vec![b"h2".to_vec()];
    assert!(
        call_fails(&server.addr, std::sync::Arc::new(tls12)).await,
        "TLS 1.2 accepted"
    );
}

async fn call_fails(addr: &str, config: std::sync::Arc<rustls::ClientConfig>) -> bool {
    let Ok(channel) = connect(addr, config).await else {
        return true;
    };
    let mut c = silo_proto::v1::job_service_client::JobServiceClient::new(channel);
    c.list_jobs(ListJobsRequest::default()).await.is_err()
}

#[tokio::test]
async fn past_the_job_cap_run_is_resource_exhausted() {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(&["--max-jobs", "1"]);
    let mut c = server.admin().await;
    let a = run(&mut c, &["sleep", "30"]).await;
    let err = c
        .run_job(RunJobRequest {
            spec: Some(spec(&["true"])),
            uploads: vec![],
            start_at: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    c.stop_job(StopJobRequest {
        id: a.id,
        grace_ms: 0,
    })
    .await
    .unwrap();
    let b = run(&mut c, &["true"]).await;
    wait_end(&mut c, &b.id).await;
}

#[tokio::test]
async fn output_past_the_log_cap_ends_with_a_truncation_record() {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(&["--log-cap", "4096"]);
    let mut c = server.admin().await;
    let job = run(&mut c, &["sh", "-c", "yes | head -c 100000; echo done"]).await;
    let end = wait_end(&mut c, &job.id).await;
    assert_eq!(end.state(), JobState::Completed);
    let mut s = c
        .stream_logs(StreamLogsRequest {
            id: job.id.clone(),
            from_sequence: 0,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut records = Vec::new();
    while let Some(chunk) = s.message().await.unwrap() {
        records.extend(chunk.records);
    }
    let last = records.last().unwrap();
    assert_eq!(last.stream(), LogStream::System);
    assert!(String::from_utf8_lossy(&last.data).contains("truncated"));
    let kept: usize = records
        .iter()
        .filter(|r| r.stream() == LogStream::Stdout)
        .map(|r| r.data.len())
        .sum();
    assert!(kept < 4096, "{kept}");
}

#[tokio::test]
async fn jobs_survive_a_server_restart_and_running_ones_are_adopted() {
    if !privileged() {
        return;
    }
    let mut server = TestServer::start();
    let mut c = server.admin().await;
    let done = run(&mut c, &["echo", "before"]).await;
    wait_end(&mut c, &done.id).await;
    let running = run(&mut c, &["sh", "-c", "echo start; sleep 1.5; echo end"]).await;
    assert_eq!(running.state(), JobState::Running);

    server.crash_and_restart();
    let mut c = server.admin().await;
    let again = get(&mut c, &done.id).await;
    assert_eq!(again.state(), JobState::Completed);
    assert_eq!(stdout_of(&mut c, &done.id).await, b"before\n");

    let adopted = get(&mut c, &running.id).await;
    assert_eq!(
        adopted.state(),
        JobState::Running,
        "not adopted: {adopted:?}"
    );
    let end = wait_end(&mut c, &running.id).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?}");
    assert_eq!(stdout_of(&mut c, &running.id).await, b"start\nend\n");
}

/// A job's end is told as soon as it is known, even while the store's write of its RUNNING
/// state is still under way; the store's writes land in order all the same, and a crash
/// right after the end was told loses nothing of it (the restarted server finds the end in
/// the job's log).
#[tokio::test]
async fn an_end_is_told_before_the_running_write_lands_and_survives_a_crash() {
    if !privileged() {
        return;
    }
    // Held far longer than a launch takes: an end that waited for this write would come
    // seconds late.
    let mut server =
        TestServer::start_with_env(&[], &[("SILO_TEST_DELAY_RUNNING_WRITE_MS", "20000")]);
    let mut c = server.admin().await;
    let told = Instant::now();
    let job = run(&mut c, &["sh", "-c", "echo told; exit 3"]).await;
    let end = wait_end(&mut c, &job.id).await;
    assert!(
        told.elapsed() < Duration::from_secs(10),
        "the end waited for the RUNNING write: {:?}",
        told.elapsed()
    );
    assert_eq!(end.state(), JobState::Failed, "{end:?}");
    assert_eq!(end.exit_code, Some(3));
    // Neither the RUNNING write nor the end's is in the store yet.
    server.crash_and_restart();
    let mut c = server.admin().await;
    let again = get(&mut c, &job.id).await;
    assert_eq!(again.state(), JobState::Failed, "{again:?}");
    assert_eq!(again.exit_code, Some(3), "{again:?}");
    assert_eq!(stdout_of(&mut c, &job.id).await, b"told\n");
}

/// A job deleted after its end was told but before that end was stored (its RUNNING write
/// held back, which the end's write waits for) is gone at once: GetJob and ListJobs do not
/// find it, and the end's write that lands later brings nothing back.
#[tokio::test]
async fn a_job_deleted_before_its_end_is_stored_is_gone_at_once() {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with_env(&[], &[("SILO_TEST_DELAY_RUNNING_WRITE_MS", "1500")]);
    let mut c = server.admin().await;
    let job = run(&mut c, &["true"]).await;
    let end = wait_end(&mut c, &job.id).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?}");
    c.delete_job(DeleteJobRequest { id: job.id.clone() })
        .await
        .unwrap();
    let gone = |c: &mut silo_proto::v1::job_service_client::JobServiceClient<
        tonic::transport::Channel,
    >| {
        let mut c = c.clone();
        let id = job.id.clone();
        async move {
            let err = c
                .get_job(silo_proto::v1::GetJobRequest { id: id.clone() })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::NotFound, "{err:?}");
            let listed = c
                .list_jobs(ListJobsRequest::default())
                .await
                .unwrap()
                .into_inner()
                .jobs;
            assert!(listed.iter().all(|j| j.id != id), "{listed:?}");
        }
    };
    gone(&mut c).await;
    // After the held writes have landed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    gone(&mut c).await;
}

/// A fast writer's output comes in large records, which StreamLogs sends by reference to
/// the log file (copied from it into each message): every byte arrives, in order, for a
/// reader that follows from the start and for one that attaches midway and resumes.
#[tokio::test]
async fn large_records_streamed_from_the_log_file_arrive_whole_and_in_order() {
    if !privileged() {
        return;
    }
    const BYTES: usize = 24 << 20;
    let server = TestServer::start();
    let mut c = server.admin().await;
    let job = run(
        &mut c,
        &[
            "sh",
            "-c",
            // Written 1 MiB at a time, so that the log's records are large whatever the
            // pace of the init that reads them.
            &format!(
                "yes 0123456789abcdef | head -c {BYTES} | dd bs=1M iflag=fullblock status=none"
            ),
        ],
    )
    .await;
    let expected: Vec<u8> = b"0123456789abcdef\n"
        .iter()
        .copied()
        .cycle()
        .take(BYTES)
        .collect();
    let follow = |from: u64| {
        let server_config = server.admin();
        let id = job.id.clone();
        async move {
            let mut client = server_config.await;
            let mut s = client
                .stream_logs(StreamLogsRequest {
                    id,
                    from_sequence: from,
                    follow: true,
                })
                .await
                .unwrap()
                .into_inner();
            let (mut next, mut out, mut large) = (from, Vec::new(), 0usize);
            while let Some(chunk) = s.message().await.unwrap() {
                for r in chunk.records {
                    assert_eq!(r.sequence, next, "a gap or a repeat in the sequence");
                    next += 1;
                    large += usize::from(r.data.len() >= 32 * 1024);
                    out.extend_from_slice(&r.data);
                }
            }
            (next, out, large)
        }
    };
    let (records, whole, large) = follow(0).await;
    assert_eq!(whole.len(), BYTES);
    assert!(
        whole == expected,
        "the bytes differ from what the job wrote"
    );
    assert!(
        large > 0,
        "no record of 32 KiB or more: the path was not exercised"
    );
    // From the middle on: the same bytes as the whole stream's tail.
    let (end, tail, _) = follow(records / 2).await;
    assert_eq!(end, records);
    let skipped = BYTES - tail.len();
    assert!(
        tail == expected[skipped..],
        "the resumed stream's bytes differ"
    );
}

#[tokio::test]
async fn every_reader_sees_every_line_once_in_order_whenever_it_attaches() {
    if !privileged() {
        return;
    }
    const LINES: u64 = 200_000;
    let server = TestServer::start();
    let mut c = server.admin().await;
    let job = run(&mut c, &["seq", "1", &LINES.to_string()]).await;
    let mut readers = Vec::new();
    for i in 0..8u64 {
        let mut client = server.admin().await;
        let id = job.id.clone();
        readers.push(tokio::spawn(async move {
            // Attach at scattered moments: before, during and after the output.
            tokio::time::sleep(Duration::from_millis(i * i * 7)).await;
            let out = stdout_of(&mut client, &id).await;
            (i, out)
        }));
    }
    // One reader that disconnects midway and resumes from the next sequence number.
    let mut client = server.admin().await;
    let mut seen = Vec::new();
    let mut next = 0;
    for _ in 0..2 {
        let mut s = client
            .stream_logs(StreamLogsRequest {
                id: job.id.clone(),
                from_sequence: next,
                follow: true,
            })
            .await
            .unwrap()
            .into_inner();
        let mut taken = 0;
        while let Some(chunk) = s.message().await.unwrap() {
            for r in chunk.records {
                assert_eq!(r.sequence, next, "gap or duplicate at the hand-over");
                next += 1;
                seen.extend(r.data);
            }
            taken += 1;
            if taken == 2 && next > 0 {
                break;
            }
        }
    }
    let mut s = client
        .stream_logs(StreamLogsRequest {
            id: job.id.clone(),
            from_sequence: next,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(chunk) = s.message().await.unwrap() {
        for r in chunk.records {
            assert_eq!(r.sequence, next);
            next += 1;
            seen.extend(r.data);
        }
    }
    let expected: Vec<u8> = (1..=LINES)
        .flat_map(|n| format!("{n}\n").into_bytes())
        .collect();
    assert_eq!(seen.len(), expected.len());
    assert!(seen == expected, "the resumed reader's output differs");
    for r in readers {
        let (i, out) = r.await.unwrap();
        assert_eq!(out.len(), expected.len(), "reader {i}");
        assert!(
            out == expected,
            "reader {i} saw lines out of order, twice or not at all"
        );
    }
    assert_eq!(wait_end(&mut c, &job.id).await.state(), JobState::Completed);
}

fn bytes_of(b: &[u8]) -> tonic::codegen::Bytes {
    tonic::codegen::Bytes::copy_from_slice(b)
}

#[tokio::test]
async fn the_standard_health_service_answers_over_mutual_tls() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let c = server.state().join("certs");
    let config = silo_tls::client_config(
        &std::fs::read(c.join("ca.pem")).unwrap(),
        &std::fs::read(c.join("viewer.pem")).unwrap(),
        &std::fs::read(c.join("viewer-key.pem")).unwrap(),
    )
    .unwrap();
    let channel = connect(&server.addr, config).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "silo.v1.JobService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
}

#[tokio::test]
async fn uploads_the_work_directory_cannot_hold_are_refused_naming_no_host_path() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let file = |path: &str| Upload {
        path: path.into(),
        content: b"x".to_vec(),
        ..Default::default()
    };
    let dot_dir = Upload {
        path: ".".into(),
        directory: true,
        ..Default::default()
    };
    let cases = vec![
        (vec![file("a"), file("a/b")], "uploads[1].path"),
        (vec![file(".")], "uploads[0].path"),
        (vec![dot_dir], "uploads[0].path"),
        (vec![file(&"n".repeat(300))], "uploads[0].path"),
    ];
    let state = server.state().display().to_string();
    for (uploads, field) in cases {
        let err = c
            .run_job(RunJobRequest {
                spec: Some(spec(&["true"])),
                uploads,
                start_at: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains(field), "{}", err.message());
        assert!(!err.message().contains(&state), "{}", err.message());
    }
    let list = c
        .list_jobs(ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(list.is_empty(), "a refused request left a job: {list:?}");
    // Ready inits keep directories for their future jobs; a job's own files start with
    // its work directory.
    let work_dirs = std::fs::read_dir(server.state().join("jobs"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("work").exists())
        .count();
    assert_eq!(work_dirs, 0);
}

#[tokio::test]
async fn jobs_with_megabytes_of_arguments_list_within_the_default_message_size() {
    if !privileged() {
        return;
    }
    use silo_proto::v1::JobView;
    let server = TestServer::start();
    let mut admin = server.admin().await;
    // Three jobs of about 1.9 MiB of argv each (the kernel takes arguments of at most
    // 128 KiB): together more than the 4 MiB a gRPC client accepts by default.
    let arg = "x".repeat((128 << 10) - 1);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut s = spec(&["true"]);
        s.command.extend(std::iter::repeat_n(arg.clone(), 15));
        let job = run_spec(&mut admin, s).await;
        wait_end(&mut admin, &job.id).await;
        ids.insert(0, job.id);
    }
    // gRPC's default limit on a received message.
    let c = server.admin().await.max_decoding_message_size(4 << 20);
    let list = |request: ListJobsRequest| {
        let mut c = c.clone();
        async move { c.list_jobs(request).await.map(|r| r.into_inner()) }
    };
    let ids_of =
        |jobs: &[silo_proto::v1::Job]| jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>();

    // An older client's request (no page size, no view) gets summaries, all in one page.
    let page = list(ListJobsRequest::default()).await.unwrap();
    assert_eq!(ids_of(&page.jobs), ids);
    assert_eq!(page.next_page_token, "");
    for job in &page.jobs {
        let command = &job.spec.as_ref().unwrap().command;
        assert_eq!(command.len(), 16, "the program and 15 cut arguments");
        assert_eq!(command[0], "true");
        assert!(command[1..].iter().all(|a| a.len() == 256));
    }

    // Pages of one, newest first, each job once, until an empty token.
    let mut walked = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(ListJobsRequest {
            page_size: 1,
            page_token: token.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(page.jobs.len(), 1);
        walked.extend(ids_of(&page.jobs));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
        assert!(walked.len() < 3, "a token after the last job");
    }
    assert_eq!(walked, ids);

    // Whole jobs too: the server ends each page before it outgrows the client's limit.
    let mut walked = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(ListJobsRequest {
            page_size: 5000,
            page_token: token.clone(),
            view: JobView::Full as i32,
            ..Default::default()
        })
        .await
        .unwrap();
        for job in &page.jobs {
            let command = &job.spec.as_ref().unwrap().command;
            assert!(
                command.len() == 16 && command[1] == arg,
                "a full job is whole"
            );
        }
        walked.extend(ids_of(&page.jobs));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(walked, ids);

    // A token this server did not issue is refused.
    for token in ["nonsense", "01ff"] {
        let err = list(ListJobsRequest {
            page_token: token.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    }
}

#[tokio::test]
async fn concurrent_runs_never_exceed_the_job_cap() {
    if !privileged() {
        return;
    }
    let server = TestServer::start_with(&["--max-jobs", "2"]);
    let c = server.admin().await;
    // Eight requests at once: however they interleave, two jobs start and six are refused.
    let burst = || {
        futures::future::join_all((0..8).map(|_| {
            let mut c = c.clone();
            async move {
                c.run_job(RunJobRequest {
                    spec: Some(spec(&["sleep", "5"])),
                    uploads: vec![],
                    start_at: None,
                })
                .await
            }
        }))
    };
    for round in 0..2 {
        let (started, refused): (Vec<_>, Vec<_>) =
            burst().await.into_iter().partition(|r| r.is_ok());
        assert_eq!(started.len(), 2, "round {round}: {refused:?}");
        for err in refused {
            assert_eq!(err.unwrap_err().code(), Code::ResourceExhausted);
        }
        // Stopped jobs give their places back: the next round starts two again.
        for job in started {
            let mut c = c.clone();
            c.stop_job(StopJobRequest {
                id: job.unwrap().into_inner().id,
                grace_ms: 0,
            })
            .await
            .unwrap();
        }
    }
}

#[tokio::test]
async fn jobs_adopted_after_a_restart_count_against_the_job_cap() {
    if !privileged() {
        return;
    }
    let mut server = TestServer::start_with(&["--max-jobs", "1"]);
    let mut c = server.admin().await;
    let running = run(&mut c, &["sleep", "30"]).await;

    server.crash_and_restart();
    let mut c = server.admin().await;
    let err = c
        .run_job(RunJobRequest {
            spec: Some(spec(&["true"])),
            uploads: vec![],
            start_at: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    c.stop_job(StopJobRequest {
        id: running.id,
        grace_ms: 0,
    })
    .await
    .unwrap();
    let after = run(&mut c, &["true"]).await;
    wait_end(&mut c, &after.id).await;
}

/// Every event of a RunJobAttached stream: the jobs and the output records in order.
async fn attached_events(
    c: &mut silo_proto::v1::job_service_client::JobServiceClient<tonic::transport::Channel>,
    spec: silo_proto::v1::JobSpec,
) -> Vec<silo_proto::v1::run_job_event::Event> {
    let mut stream = c
        .run_job_attached(RunJobRequest {
            spec: Some(spec),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(event.event.expect("an event with a body"));
    }
    events
}

#[tokio::test]
async fn run_attached_streams_the_job_its_output_and_its_end_last_on_one_call() {
    use silo_proto::v1::run_job_event::Event;
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let script =
        "i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done; echo err >&2; exit 4";
    let events = attached_events(&mut c, spec(&["sh", "-c", script])).await;
    let Some(Event::Job(first)) = events.first() else {
        panic!("the first event is not the job: {:?}", events.first());
    };
    assert_eq!(first.state(), JobState::Running, "{first:?}");
    let Some(Event::Job(last)) = events.last() else {
        panic!("the last event is not the job");
    };
    assert_eq!(last.state(), JobState::Failed, "{last:?}");
    assert_eq!(last.exit_code, Some(4));
    assert_eq!(last.id, first.id);
    // Every record once, in sequence order, all of them before the final state.
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut next = 0;
    for event in &events[1..events.len() - 1] {
        match event {
            Event::Output(chunk) => {
                for record in &chunk.records {
                    assert_eq!(record.sequence, next, "records out of order or repeated");
                    next += 1;
                    match record.stream() {
                        LogStream::Stdout => stdout.extend_from_slice(&record.data),
                        LogStream::Stderr => stderr.extend_from_slice(&record.data),
                        other => panic!("unexpected {other:?} record"),
                    }
                }
            }
            Event::Job(job) => assert!(!job.state().is_final(), "a final state before the end"),
        }
    }
    let expected: String = (0..3000).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(String::from_utf8(stdout).unwrap(), expected);
    assert_eq!(stderr, b"err\n");
    // The same output as StreamLogs gives.
    assert_eq!(stdout_of(&mut c, &first.id).await, expected.as_bytes());
}

#[tokio::test]
async fn run_attached_of_a_job_that_cannot_start_is_one_failed_job() {
    use silo_proto::v1::run_job_event::Event;
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let events = attached_events(&mut c, spec(&["/no/such/program"])).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let Event::Job(job) = &events[0] else {
        panic!("{events:?}");
    };
    assert_eq!(job.state(), JobState::Failed, "{job:?}");
    assert!(job.reason.contains("/no/such/program"), "{}", job.reason);
}

#[tokio::test]
async fn run_attached_refuses_viewers_and_start_times_and_leaves_a_job_running_when_closed() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut viewer = server.client("viewer").await;
    let refused = viewer
        .run_job_attached(RunJobRequest {
            spec: Some(spec(&["true"])),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let mut c = server.admin().await;
    let refused = c
        .run_job_attached(RunJobRequest {
            spec: Some(spec(&["true"])),
            start_at: Some(prost_types::Timestamp {
                seconds: 4_000_000_000,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let listed = c
        .list_jobs(ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.is_empty(), "a refused call left {listed:?}");

    // The client goes away after the first event: the job runs on to its end.
    let mut stream = c
        .run_job_attached(RunJobRequest {
            spec: Some(spec(&["sh", "-c", "sleep 0.5; echo done"])),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let Some(silo_proto::v1::run_job_event::Event::Job(job)) =
        stream.message().await.unwrap().unwrap().event
    else {
        panic!("the first event is not the job");
    };
    drop(stream);
    let end = wait_end(&mut c, &job.id).await;
    assert_eq!(end.state(), JobState::Completed, "{end:?}");
    assert_eq!(stdout_of(&mut c, &job.id).await, b"done\n");
}

#[tokio::test]
async fn start_times_at_the_ends_of_the_timestamp_range_are_refused_clearly() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    for (seconds, needle) in [
        // Within range in microseconds, but so far back that "how long ago" overflowed.
        (-9_223_372_036_000, "in the past"),
        (i64::MIN, "out of range"),
        (i64::MAX, "out of range"),
    ] {
        let refused = c
            .run_job(RunJobRequest {
                spec: Some(spec(&["true"])),
                start_at: Some(prost_types::Timestamp { seconds, nanos: 0 }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(refused.message().contains(needle), "{refused:?}");
    }
}

#[tokio::test]
async fn an_init_that_lingers_after_its_exit_report_is_killed_and_its_job_released() {
    if !privileged() {
        return;
    }
    // Debug builds only (the tests'): each init sleeps ten minutes after its exit report,
    // as a broken init might.
    let server = TestServer::start_with_env(&[], &[("SILO_TEST_INIT_LINGER_MS", "600000")]);
    let mut c = server.admin().await;
    let t0 = std::time::Instant::now();
    let job = run(&mut c, &["true"]).await;
    let end = wait_end(&mut c, &job.id).await;
    // The end is told at the report, not at the init's exit.
    assert_eq!(end.state(), JobState::Completed, "{end:?}");
    assert!(
        !job_cgroups_after_cleanup(&server.cgroup_name, &[&job.id]).is_empty(),
        "the job was released before its init exited"
    );
    // The server kills the init after its grace (10 s) and releases the job's cgroup.
    let deadline = t0 + std::time::Duration::from_secs(40);
    while !job_cgroups_after_cleanup(&server.cgroup_name, &[&job.id]).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the job's cgroup is still there after {:?}",
            t0.elapsed()
        );
    }
    assert!(
        t0.elapsed() >= std::time::Duration::from_secs(9),
        "{:?}",
        t0.elapsed()
    );
    // The init was killed before it gave back the room kept ahead of its log's end: the
    // server gives it back.
    let log = server.state().join("jobs").join(&job.id).join("log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while allocated_beyond_end(&log) > 64 << 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} bytes allocated beyond the log's end",
            allocated_beyond_end(&log)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn at_most_1024_stats_streams_follow_jobs_and_a_closed_one_makes_room() {
    if !privileged() {
        return;
    }
    let server = TestServer::start();
    let mut c = server.admin().await;
    let job = run(&mut c, &["sleep", "60"]).await;
    let follow = silo_proto::v1::StreamStatsRequest {
        id: job.id.clone(),
        follow: true,
    };
    // Two connections: one carries at most 1,024 calls.
    let viewers = [
        server.channel("viewer").await,
        server.channel("viewer").await,
    ];
    let mut open = Vec::new();
    for i in 0..1024 {
        let mut viewer =
            silo_proto::v1::job_service_client::JobServiceClient::new(viewers[i % 2].clone());
        open.push(
            viewer
                .stream_stats(follow.clone())
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let mut viewer = silo_proto::v1::job_service_client::JobServiceClient::new(viewers[0].clone());
    let refused = viewer.stream_stats(follow.clone()).await.unwrap_err();
    assert_refused(
        &refused,
        Code::ResourceExhausted,
        "1024 StreamStats streams",
    );
    // Not following takes no place: one reading, then the end.
    let mut once = viewer
        .stream_stats(silo_proto::v1::StreamStatsRequest {
            id: job.id.clone(),
            follow: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(once.message().await.unwrap().is_some());
    // A stream closed by its client is noticed at its next send (within a second).
    drop(open.pop());
    once_there_is_room(|| {
        let mut viewer = viewer.clone();
        let follow = follow.clone();
        async move { viewer.stream_stats(follow).await }
    })
    .await;
    c.stop_job(StopJobRequest {
        id: job.id.clone(),
        grace_ms: 0,
    })
    .await
    .unwrap();
}
