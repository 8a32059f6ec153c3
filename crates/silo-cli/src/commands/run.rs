//! `silo job run`: start a job, show its output live, and end with its exit status.

use silo_proto::v1::run_job_event::Event;
use silo_proto::v1::{
    DeleteJobRequest, EnvVar, Job, JobNetwork, JobSpec, JobState, Limits, RunJobEvent,
    RunJobRequest, SecretVar, StopJobRequest,
};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{GlobalOptions, RunArgs};
use crate::exit::{EXIT_INTERRUPTED, end_message, job_exit_code};
use crate::format::{job_state, short_id};
use crate::logs::{LogCursor, RecordWriter};
use crate::output::{print, say, write_failure};
use crate::session::Session;
use crate::uploads::collect_uploads;

/// Runs the job. Attached: streams its output until it ends and returns its exit status
/// (see `exit::job_exit_code`); the first Ctrl-C stops the job, a second one stops
/// waiting (130). Detached: prints the full job id and returns 0 at once, or, when the
/// job failed to start, prints the reason and returns 125, 126 or 127.
pub async fn run(global: &GlobalOptions, args: RunArgs) -> anyhow::Result<i32> {
    let request = build_request(&args)?;
    let mut session = Session::open(global).await?;
    if let Some(cron) = &args.cron {
        return super::schedule::create(&mut session, &args, cron, request).await;
    }
    // A server older than runtimes would ignore the field and run the job on its own tree.
    if let Some(runtime) = &args.runtime
        && !session.offers_runtimes().await?
    {
        anyhow::bail!(
            "cannot run in runtime {runtime}: the server at {} does not offer runtimes (its features do not name \"runtimes\")",
            session.address
        );
    }
    let scheduled = request.start_at.is_some();
    let request = match scheduled || args.detach {
        true => request,
        false => match run_attached(&session, request).await? {
            Some((id, code)) => return Ok(remove_if_asked(&session, &args, &id, code).await),
            // A server without RunJobAttached: RunJob with the request made again (the
            // call consumed it; cloning it would copy every upload on every run).
            None => build_request(&args)?,
        },
    };
    let job = match session.client.run_job(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(session.error(&status).into()),
    };
    if scheduled {
        let at = super::schedule::local_time(job.scheduled_at.as_ref());
        say(format_args!("job {} scheduled for {at}", short_id(&job.id)));
        return print(&format!("{}\n", job.id));
    }
    if args.detach {
        let printed = print(&format!("{}\n", job.id))?;
        if failed_to_start(&job) {
            say(&job.reason);
            return Ok(job_exit_code(&job));
        }
        return Ok(printed);
    }
    let id = job.id;
    let code = attach(session.clone(), &id, follow_to_end(session.clone(), &id, 0)).await?;
    Ok(remove_if_asked(&session, &args, &id, code).await)
}

/// With `--rm`, deletes the job once it has ended and its output has been written (a job
/// left running by a second Ctrl-C is not); returns `code`, the run's exit status.
async fn remove_if_asked(session: &Session, args: &RunArgs, id: &str, code: i32) -> i32 {
    if !args.rm {
        return code;
    }
    let mut session = session.clone();
    let request = DeleteJobRequest { id: id.to_owned() };
    match session.client.delete_job(request).await {
        Ok(_) => {}
        Err(status) if status.code() == tonic::Code::FailedPrecondition => say(format_args!(
            "job {} has not ended: it is kept (--rm deletes only an ended job)",
            short_id(id)
        )),
        Err(status) => say(format_args!(
            "cannot delete job {} (--rm): {}",
            short_id(id),
            session.error(&status)
        )),
    }
    code
}

/// Runs the job and follows it on one stream (RunJobAttached): its output, then its
/// final state; returns its exit status. `None` from a server without that call: the
/// caller runs the job with RunJob and follows it the usual way.
async fn run_attached(
    session: &Session,
    request: RunJobRequest,
) -> anyhow::Result<Option<(String, i32)>> {
    let mut session = session.clone();
    let mut stream = match session.client.run_job_attached(request).await {
        Ok(response) => response.into_inner(),
        Err(status) if status.code() == tonic::Code::Unimplemented => return Ok(None),
        Err(status) => return Err(session.error(&status).into()),
    };
    let job = match stream.message().await {
        Ok(Some(RunJobEvent {
            event: Some(Event::Job(job)),
        })) => job,
        Ok(_) => anyhow::bail!("the server's answer to the run did not begin with the job"),
        Err(status) => return Err(session.error(&status).into()),
    };
    let id = job.id.clone();
    let code = attach(session.clone(), &id, follow_stream(session, stream, job)).await?;
    Ok(Some((id, code)))
}

/// Writes the output RunJobAttached streams and returns the job's exit status at its
/// final state. A stream that breaks first leaves the job running: it is followed on
/// from the first record not yet written, the usual way.
async fn follow_stream(
    session: Session,
    mut stream: tonic::Streaming<RunJobEvent>,
    job: Job,
) -> anyhow::Result<i32> {
    let mut next = 0u64;
    let mut writer = RecordWriter::new(false);
    let mut last = job;
    loop {
        if job_state(&last).is_final() {
            if let Some(message) = end_message(&last) {
                say(message);
            }
            return Ok(job_exit_code(&last));
        }
        match stream.message().await {
            Ok(Some(RunJobEvent {
                event: Some(Event::Output(chunk)),
            })) => {
                let records: Vec<_> = chunk
                    .records
                    .into_iter()
                    .filter(|record| record.sequence >= next)
                    .collect();
                if let Some(record) = records.last() {
                    next = record.sequence.saturating_add(1);
                }
                if let Err(err) = writer.write(&records) {
                    return write_failure(&err);
                }
            }
            Ok(Some(RunJobEvent {
                event: Some(Event::Job(job)),
            })) => last = job,
            Ok(Some(RunJobEvent { event: None })) => {}
            Ok(None) | Err(_) => return follow_to_end(session, &last.id, next).await,
        }
    }
}

/// The secret variables of `args`: its --secret-env-file files, then its --secret-env
/// values (a later one of a name replaces an earlier one); none may also be in `env`.
/// No error repeats a value.
fn secret_env(args: &RunArgs, env: &[EnvVar]) -> anyhow::Result<Vec<SecretVar>> {
    let mut settings: Vec<crate::parse::SecretSetting> = Vec::new();
    for file in &args.secret_env_file {
        let text = std::fs::read_to_string(file).map_err(|e| {
            anyhow::anyhow!("--secret-env-file: cannot read {}: {e}", file.display())
        })?;
        settings.extend(
            crate::parse::parse_dotenv(&file.display().to_string(), &text)
                .map_err(anyhow::Error::msg)?,
        );
    }
    for arg in &args.secret_env {
        settings.push(
            crate::parse::parse_secret_env(&arg.0, |name| std::env::var_os(name))
                .map_err(anyhow::Error::msg)?,
        );
    }
    let mut vars: Vec<SecretVar> = Vec::new();
    for setting in settings {
        if env.iter().any(|var| var.name == setting.name) {
            anyhow::bail!(
                "{} is given both as --env and as a secret; give it once (secret if it is one)",
                setting.name
            );
        }
        vars.retain(|var| var.name != setting.name);
        vars.push(SecretVar {
            name: setting.name,
            value: setting.value,
        });
    }
    Ok(vars)
}

/// The request for `args`: command, environment, limits and uploads, all checked.
pub fn build_request(args: &RunArgs) -> anyhow::Result<RunJobRequest> {
    match args.command.first() {
        None => anyhow::bail!("the command is empty: give it after `--`"),
        Some(program) if program.is_empty() => {
            anyhow::bail!("the command is empty: the program name is \"\"")
        }
        Some(_) => {}
    }
    if args.command.iter().any(|arg| arg.contains('\0')) {
        anyhow::bail!("the command contains a NUL byte");
    }
    let env: Vec<EnvVar> = args
        .env
        .iter()
        .filter_map(|arg| arg.0.as_ref())
        .map(|setting| EnvVar {
            name: setting.name.clone(),
            value: setting.value.clone(),
        })
        .collect();
    let secret_env = secret_env(args, &env)?;
    let uploads = collect_uploads(&args.upload)?;
    let limits = Limits {
        cpu_percent: args.cpu,
        cpus: args.cpus.clone(),
        memory_bytes: args.memory,
        io_bps: args.io_bps,
        pids: args.pids,
        disk_bytes: args.disk,
    };
    Ok(RunJobRequest {
        spec: Some(JobSpec {
            command: args.command.clone(),
            env,
            secret_env,
            secret_env_names: Vec::new(),
            workdir: args.workdir.clone().unwrap_or_default(),
            timeout_ms: args.timeout.unwrap_or(0),
            name: args.name.clone().unwrap_or_default(),
            limits: (limits != Limits::default()).then_some(limits),
            stop_grace_ms: args.grace.unwrap_or(0),
            uid: args.user.map(|(uid, _)| uid),
            gid: args.user.and_then(|(_, gid)| gid),
            network: match args.network.as_deref() {
                Some("host") => JobNetwork::Host as i32,
                Some(_) => JobNetwork::None as i32,
                None => JobNetwork::Unspecified as i32,
            },
            runtime: args
                .runtime
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        }),
        uploads,
        start_at: start_at(args).map(|at| prost_types::Timestamp {
            seconds: at.as_second(),
            nanos: at.subsec_nanosecond(),
        }),
    })
}

/// The instant `--at` or `--in` asks for, if either.
fn start_at(args: &RunArgs) -> Option<jiff::Timestamp> {
    match (args.at, args.in_) {
        (Some(at), _) => Some(at),
        (None, Some(ms)) => {
            let span = jiff::SignedDuration::from_millis(i64::try_from(ms).unwrap_or(i64::MAX));
            jiff::Timestamp::now().checked_add(span).ok()
        }
        (None, None) => None,
    }
}

/// Whether the job never ran: failed with neither an exit code nor a signal.
fn failed_to_start(job: &Job) -> bool {
    job_state(job) == JobState::Failed && job.exit_code.is_none() && job.signal.is_none()
}

/// Runs `follow` (which streams job `id`'s output until it ends), handling Ctrl-C.
async fn attach(
    session: Session,
    id: &str,
    follow: impl std::future::Future<Output = anyhow::Result<i32>>,
) -> anyhow::Result<i32> {
    let id = id.to_owned();
    let mut interrupts = signal(SignalKind::interrupt())?;
    tokio::pin!(follow);
    let mut stopping = false;
    loop {
        tokio::select! {
            outcome = &mut follow => return outcome,
            _ = interrupts.recv() => {
                if stopping {
                    say(format_args!(
                        "stopped waiting for job {id}; it may still be running (silo job status {})",
                        short_id(&id)
                    ));
                    return Ok(EXIT_INTERRUPTED);
                }
                stopping = true;
                say(format_args!(
                    "stopping job {} (press Ctrl-C again to stop waiting)",
                    short_id(&id)
                ));
                tokio::spawn(stop_job(session.clone(), id.clone()));
            }
        }
    }
}

/// Asks the server to stop the job; a failure is reported and otherwise ignored (the
/// output keeps streaming).
async fn stop_job(mut session: Session, id: String) {
    let request = StopJobRequest { id, grace_ms: 0 };
    if let Err(status) = session.client.stop_job(request).await {
        say(format_args!(
            "cannot stop the job: {}",
            session.error(&status)
        ));
    }
}

/// Prints the job's output from record `from` on, then waits for its final state and
/// returns its exit status, saying why when it did not exit by itself.
async fn follow_to_end(session: Session, id: &str, from: u64) -> anyhow::Result<i32> {
    // The job's final state is watched while its output streams, so that the exit status
    // is at hand the moment the output ends (no extra round trip).
    let ended = {
        let mut session = session.clone();
        let id = id.to_owned();
        tokio::spawn(async move { session.wait_for_end(&id).await })
    };
    let mut cursor = LogCursor::new(session.clone(), id, from, true);
    let mut writer = RecordWriter::new(false);
    while let Some(records) = cursor.next_records().await? {
        if let Err(err) = writer.write(&records) {
            return write_failure(&err);
        }
    }
    let job = match ended.await {
        Ok(job) => job?,
        Err(_) => session.clone().wait_for_end(id).await?,
    };
    if let Some(message) = end_message(&job) {
        say(message);
    }
    Ok(job_exit_code(&job))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{ClientCommand, JobCommand};

    #[derive(Parser)]
    struct TestCli {
        #[command(subcommand)]
        command: ClientCommand,
    }

    fn request(args: &[&str]) -> anyhow::Result<RunJobRequest> {
        let cli = TestCli::try_parse_from(["silo", "job", "run"].iter().chain(args))?;
        let ClientCommand::Job(crate::JobArgs {
            command: JobCommand::Run(run),
            ..
        }) = cli.command
        else {
            anyhow::bail!("not run");
        };
        build_request(&run)
    }

    #[test]
    fn flags_become_the_job_spec() {
        let request = request(&[
            "--name",
            "n",
            "--env",
            "A=1",
            "--env",
            "SILO_TEST_SURELY_UNSET",
            "--workdir",
            "sub",
            "--timeout",
            "2m",
            "--grace",
            "1s",
            "--cpu",
            "50",
            "--cpus",
            "0-1",
            "--memory",
            "1G",
            "--io-bps",
            "10M",
            "--pids",
            "64",
            "--disk",
            "2G",
            "--runtime",
            "python-3.11@1.0.0",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .unwrap();
        let spec = request.spec.unwrap();
        assert_eq!(spec.command, ["sh", "-c", "exit 3"]);
        assert_eq!(spec.name, "n");
        assert_eq!(
            spec.env,
            [EnvVar {
                name: "A".into(),
                value: "1".into()
            }]
        );
        assert_eq!(spec.workdir, "sub");
        assert_eq!(spec.timeout_ms, 120_000);
        assert_eq!(spec.stop_grace_ms, 1000);
        assert_eq!(spec.runtime, "python-3.11@1.0.0");
        assert_eq!(
            spec.limits,
            Some(Limits {
                cpu_percent: Some(50),
                cpus: Some("0-1".into()),
                memory_bytes: Some(1 << 30),
                io_bps: Some(10 << 20),
                pids: Some(64),
                disk_bytes: Some(2 << 30),
            })
        );
        assert!(request.uploads.is_empty());
    }

    #[test]
    fn without_runtime_the_job_gets_the_hosts_tree_and_a_bad_runtime_is_refused() {
        let spec = request(&["--", "true"]).unwrap().spec.unwrap();
        assert_eq!(spec.runtime, "");
        let bare = request(&["--runtime", "node-20", "--", "node"]).unwrap();
        assert_eq!(bare.spec.unwrap().runtime, "node-20");
        let err = request(&["--runtime", "Node@20", "--", "node"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("'N' is not allowed in a name"), "{err}");
    }

    #[test]
    fn secrets_come_from_files_then_flags_and_never_clash_with_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.env");
        std::fs::write(&file, "# deploy\nexport A='from file'\nB=\"b\"\n").unwrap();
        let file = file.to_str().unwrap();
        let spec = request(&[
            "--secret-env-file",
            file,
            "--secret-env",
            "B=flag",
            "--secret-env",
            "C=c",
            "--env",
            "D=plain",
            "--",
            "true",
        ])
        .unwrap()
        .spec
        .unwrap();
        let got: Vec<(&str, &str)> = spec
            .secret_env
            .iter()
            .map(|v| (v.name.as_str(), v.value.as_str()))
            .collect();
        assert_eq!(got, [("A", "from file"), ("B", "flag"), ("C", "c")]);
        assert_eq!(spec.env.len(), 1);
        let err = request(&["--env", "A=1", "--secret-env", "A=s3cr3t", "--", "true"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("A is given both") && !err.contains("s3cr3t"),
            "{err}"
        );
        let err = request(&["--secret-env", "SILO_TEST_SURELY_UNSET", "--", "true"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("SILO_TEST_SURELY_UNSET is not set"), "{err}");
        std::fs::write(dir.path().join("bad.env"), "A=1\nB='s3cr3t\n").unwrap();
        let bad = dir.path().join("bad.env");
        let err = request(&["--secret-env-file", bad.to_str().unwrap(), "--", "true"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.env:2:") && !err.contains("s3cr3t"),
            "{err}"
        );
        // Clap never sees a secret as invalid, so its errors cannot repeat one either.
        let err = request(&["--secret-env", "1X=s3cr3t", "--", "true"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("1X") && !err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn an_empty_program_name_is_refused() {
        let err = request(&["--", ""]).unwrap_err().to_string();
        assert!(err.contains("the command is empty"), "{err}");
    }

    #[test]
    fn a_missing_upload_is_refused_before_connecting() {
        let err = request(&["--upload", "/surely/not/here", "--", "true"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot upload /surely/not/here"), "{err}");
    }
}
