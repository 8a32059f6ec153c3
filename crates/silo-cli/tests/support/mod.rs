//! A fake job service, runtime service and workflow service behind silo's real mutual
//! TLS, so the client's connection handling, streaming and exit statuses can be tested
//! without the real server.

#![allow(dead_code)]

pub mod runtimes;
pub mod workflows;

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use silo_proto::v1::job_service_server::{JobService, JobServiceServer};
use silo_proto::v1::runtime_service_server::RuntimeServiceServer;
use silo_proto::v1::workflow_service_server::WorkflowServiceServer;
use silo_proto::v1::{
    DeleteJobRequest, DeleteJobResponse, GetJobRequest, GetServerInfoRequest, Job, JobSpec,
    JobState, ListJobsRequest, ListJobsResponse, LogChunk, LogRecord, LogStream, RunJobRequest,
    ServerInfo, StopJobRequest, StreamLogsRequest, StreamStatsRequest, Usage, WatchJobRequest,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// The id of every job the fake starts.
pub const JOB_ID: &str = "3f2a1b2c-0000-4000-8000-000000000001";

/// Creates a fresh PKI (CA, server, admin, viewer) in `dir`.
pub fn pki(dir: &Path) -> PathBuf {
    silo_tls::init_pki(dir, &[], silo_tls::LEAF_VALIDITY).unwrap();
    dir.to_path_buf()
}

/// Writes a client configuration for `address` using `ca_dir`'s CA and `client_dir`'s
/// admin certificate; returns its path.
pub fn client_config(
    dir: &Path,
    address: &str,
    ca_dir: &Path,
    client_dir: &Path,
    server_name: Option<&str>,
) -> PathBuf {
    let mut text = format!(
        "[servers.test]\naddress = \"{address}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        ca_dir.join("ca.pem").display(),
        client_dir.join("admin.pem").display(),
        client_dir.join("admin-key.pem").display(),
    );
    if let Some(name) = server_name {
        text.push_str(&format!("server_name = \"{name}\"\n"));
    }
    let path = dir.join("client.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// What the fake has been asked.
#[derive(Default)]
pub struct Calls {
    pub runs: Vec<RunJobRequest>,
    /// How many of `runs` came by RunJobAttached.
    pub attached_runs: usize,
    pub stops: Vec<StopJobRequest>,
    pub lists: Vec<ListJobsRequest>,
    pub builds: Vec<silo_proto::v1::BuildRuntimeRequest>,
    /// Per install, each chunk's size and replace flag.
    pub installs: Vec<Vec<(usize, bool)>>,
    /// Every StreamLogs request.
    pub logs: Vec<StreamLogsRequest>,
    pub workflow_runs: Vec<silo_proto::v1::RunWorkflowRequest>,
    /// Every other workflow call: "list 5", "watch <id>", "cancel <id>", ….
    pub workflow_calls: Vec<String>,
}

/// How many jobs the fake lists, and the most it sends in one page (whatever the page size
/// asked, as a server may).
pub const LISTED_JOBS: usize = 5;
pub const LIST_PAGE: usize = 2;

/// A running fake server.
pub struct FakeServer {
    pub address: String,
    pub calls: Arc<Mutex<Calls>>,
}

/// Starts the fake on a loopback port, presenting `pki_dir`'s server certificate and
/// requiring client certificates from its CA.
pub fn start(pki_dir: &Path) -> FakeServer {
    let read = |name: &str| std::fs::read(pki_dir.join(name)).unwrap();
    let tls = silo_tls::server_config(
        &read("ca.pem"),
        &read("server.pem"),
        &read("server-key.pem"),
        None,
    )
    .unwrap();
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let calls = Arc::new(Mutex::new(Calls::default()));
    let service = Fake {
        calls: calls.clone(),
    };
    let runtimes = runtimes::FakeRuntimes {
        calls: calls.clone(),
    };
    let workflows = workflows::FakeWorkflows {
        calls: calls.clone(),
    };
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(serve(listener, tls, service, runtimes, workflows));
    });
    FakeServer { address, calls }
}

async fn serve(
    listener: StdListener,
    tls: Arc<rustls::ServerConfig>,
    service: Fake,
    runtimes: runtimes::FakeRuntimes,
    workflows: workflows::FakeWorkflows,
) {
    let listener = TcpListener::from_std(listener).unwrap();
    let acceptor = TlsAcceptor::from(tls);
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let sender = sender.clone();
            tokio::spawn(async move {
                // A refused handshake sends its alert and ends here, as silo's server
                // does.
                let mut stream = match acceptor.accept(tcp).into_fallible().await {
                    Ok(stream) => stream,
                    Err((_, tcp)) => return silo_tls::linger_after_refusal(tcp).await,
                };
                // tonic serves a DuplexStream; pump the TLS stream through one.
                let (mut near, far) = tokio::io::duplex(64 * 1024);
                if sender.send(Ok::<_, std::io::Error>(far)).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut near).await;
                }
            });
        }
    });
    tonic::transport::Server::builder()
        .add_service(JobServiceServer::new(service))
        .add_service(RuntimeServiceServer::new(runtimes))
        .add_service(WorkflowServiceServer::new(workflows))
        .serve_with_incoming(ReceiverStream::new(receiver))
        .await
        .unwrap();
}

struct Fake {
    calls: Arc<Mutex<Calls>>,
}

fn job(command: &[String], state: JobState) -> Job {
    Job {
        id: JOB_ID.to_owned(),
        spec: Some(JobSpec {
            command: command.to_vec(),
            ..JobSpec::default()
        }),
        state: state as i32,
        owner: "admin".to_owned(),
        ..Job::default()
    }
}

/// How a job of the fake ends, by its program name: `exit3` exits 3, `killed` is killed
/// by SIGKILL, `nosuch` is not found, anything else completes.
fn final_job(command: &[String]) -> Job {
    match command.first().map(String::as_str) {
        Some("exit3") => Job {
            exit_code: Some(3),
            reason: "exited with code 3".to_owned(),
            ..job(command, JobState::Failed)
        },
        Some("killed") => Job {
            signal: Some(9),
            reason: "killed by SIGKILL".to_owned(),
            ..job(command, JobState::Failed)
        },
        Some("nosuch") => Job {
            reason: "command not found: nosuch".to_owned(),
            end_cause: silo_proto::v1::EndCause::StartFailed as i32,
            start_failure: silo_proto::v1::StartFailure::CommandNotFound as i32,
            failed_step: "exec".to_owned(),
            errno: Some(2),
            ..job(command, JobState::Failed)
        },
        _ => Job {
            exit_code: Some(0),
            ..job(command, JobState::Completed)
        },
    }
}

/// Every job's output in the fake, from record `from` on.
fn fake_records(from: u64) -> Vec<LogRecord> {
    let record = |sequence, stream: LogStream, data: &str| LogRecord {
        sequence,
        timestamp_unix_nanos: 1_700_000_000_000_000_000,
        stream: stream as i32,
        data: data.as_bytes().to_vec().into(),
    };
    [
        record(0, LogStream::Stdout, "fake stdout\n"),
        record(1, LogStream::Stderr, "fake stderr\n"),
        record(2, LogStream::System, "fake system message"),
    ]
    .into_iter()
    .filter(|record| record.sequence >= from)
    .collect()
}

impl Fake {
    fn last_command(&self) -> Vec<String> {
        let calls = self.calls.lock().unwrap();
        calls
            .runs
            .last()
            .and_then(|run| run.spec.as_ref())
            .map(|spec| spec.command.clone())
            .unwrap_or_default()
    }

    fn check_id(id: &str) -> Result<(), Status> {
        if JOB_ID.starts_with(id) {
            Ok(())
        } else {
            Err(Status::not_found(format!("job {id} not found")))
        }
    }
}

#[tonic::async_trait]
impl JobService for Fake {
    async fn run_job(&self, request: Request<RunJobRequest>) -> Result<Response<Job>, Status> {
        let request = request.into_inner();
        let command = request.spec.clone().unwrap_or_default().command;
        self.calls.lock().unwrap().runs.push(request);
        let job = if command.first().map(String::as_str) == Some("nosuch") {
            final_job(&command)
        } else {
            job(&command, JobState::Running)
        };
        Ok(Response::new(job))
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> Result<Response<Job>, Status> {
        Self::check_id(&request.get_ref().id)?;
        Ok(Response::new(final_job(&self.last_command())))
    }

    /// Jobs "0", "1", … as pages of at most `LIST_PAGE`; a page token is the next index.
    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let request = request.into_inner();
        let start: usize = match request.page_token.as_str() {
            "" => 0,
            token => token
                .parse()
                .map_err(|_| Status::invalid_argument("bad page token"))?,
        };
        let size = (request.page_size as usize).clamp(1, LIST_PAGE);
        let end = LISTED_JOBS.min(start + size);
        self.calls.lock().unwrap().lists.push(request);
        Ok(Response::new(ListJobsResponse {
            jobs: (start..end)
                .map(|n| Job {
                    id: n.to_string(),
                    ..final_job(&["true".to_owned()])
                })
                .collect(),
            next_page_token: if end < LISTED_JOBS {
                end.to_string()
            } else {
                String::new()
            },
        }))
    }

    async fn stop_job(&self, request: Request<StopJobRequest>) -> Result<Response<Job>, Status> {
        Self::check_id(&request.get_ref().id)?;
        self.calls.lock().unwrap().stops.push(request.into_inner());
        Ok(Response::new(Job {
            signal: Some(15),
            ..job(&self.last_command(), JobState::Stopped)
        }))
    }

    async fn delete_job(
        &self,
        request: Request<DeleteJobRequest>,
    ) -> Result<Response<DeleteJobResponse>, Status> {
        Self::check_id(&request.get_ref().id)?;
        Ok(Response::new(DeleteJobResponse {
            id: JOB_ID.to_owned(),
        }))
    }

    type RunJobAttachedStream = ReceiverStream<Result<silo_proto::v1::RunJobEvent, Status>>;

    /// The job, the fake's three records and the final job on one stream; a command
    /// starting with "legacy" is answered as a server without the call would answer it.
    async fn run_job_attached(
        &self,
        request: Request<RunJobRequest>,
    ) -> Result<Response<Self::RunJobAttachedStream>, Status> {
        use silo_proto::v1::RunJobEvent;
        use silo_proto::v1::run_job_event::Event;
        let request = request.into_inner();
        let command = request.spec.clone().unwrap_or_default().command;
        if command.first().is_some_and(|c| c.starts_with("legacy")) {
            return Err(Status::unimplemented("unknown method RunJobAttached"));
        }
        {
            let mut calls = self.calls.lock().unwrap();
            calls.runs.push(request);
            calls.attached_runs += 1;
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(8);
        let event = |event| Ok(RunJobEvent { event: Some(event) });
        if command.first().map(String::as_str) == Some("nosuch") {
            let _ = sender.try_send(event(Event::Job(final_job(&command))));
        } else {
            let _ = sender.try_send(event(Event::Job(job(&command, JobState::Running))));
            let _ = sender.try_send(event(Event::Output(LogChunk {
                records: fake_records(0),
            })));
            let _ = sender.try_send(event(Event::Job(final_job(&command))));
        }
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    type StreamLogsStream = ReceiverStream<Result<LogChunk, Status>>;

    async fn stream_logs(
        &self,
        request: Request<StreamLogsRequest>,
    ) -> Result<Response<Self::StreamLogsStream>, Status> {
        let request = request.into_inner();
        Self::check_id(&request.id)?;
        self.calls.lock().unwrap().logs.push(request.clone());
        let records = fake_records(request.from_sequence);
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let _ = sender.try_send(Ok(LogChunk { records }));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    type StreamStatsStream = ReceiverStream<Result<Usage, Status>>;

    async fn stream_stats(
        &self,
        _: Request<StreamStatsRequest>,
    ) -> Result<Response<Self::StreamStatsStream>, Status> {
        Err(Status::unimplemented("the fake has no statistics"))
    }

    type WatchJobStream = ReceiverStream<Result<Job, Status>>;

    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        Self::check_id(&request.get_ref().id)?;
        let command = self.last_command();
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let _ = sender.try_send(Ok(job(&command, JobState::Running)));
        let _ = sender.try_send(Ok(final_job(&command)));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn get_server_info(
        &self,
        _: Request<GetServerInfoRequest>,
    ) -> Result<Response<ServerInfo>, Status> {
        Err(Status::unimplemented("the fake has no server information"))
    }
}
