//! A fake runtime service: canned runtimes and progress, chosen by the names and specs the
//! tests send.

use std::sync::{Arc, Mutex};

use silo_proto::v1::runtime_difference::Kind;
use silo_proto::v1::runtime_service_server::RuntimeService;
use silo_proto::v1::{
    BuildRuntimeRequest, ExportRuntimeChunk, ExportRuntimeRequest, GetRuntimeRequest,
    InstallRuntimeChunk, ListRuntimesRequest, ListRuntimesResponse, RemoveRuntimeRequest,
    RemoveRuntimeResponse, Runtime, RuntimeDifference, RuntimeProgress, VerifyRuntimeRequest,
    VerifyRuntimeResponse,
};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Calls;

/// The one runtime the fake has installed.
pub fn python() -> Runtime {
    Runtime {
        name: "python-3.11".into(),
        version: "1.0.0".into(),
        size_bytes: 149_212_365,
        entries: 5123,
        manifest_digest: "sha256:9f86d081".into(),
        signer: "3f2a1b2c".into(),
        signed_here: true,
        ..Runtime::default()
    }
}

/// The archive `python-3.11` exports, in chunks.
pub const EXPORTED: [&[u8]; 3] = [b"abc", b"def", b"g"];

pub struct FakeRuntimes {
    pub calls: Arc<Mutex<Calls>>,
}

type Progress = ReceiverStream<Result<RuntimeProgress, Status>>;

fn progress(phase: &str, log_line: &str, done: u64, total: u64, unit: &str) -> RuntimeProgress {
    RuntimeProgress {
        phase: phase.into(),
        log_line: log_line.into(),
        done,
        total,
        unit: unit.into(),
        runtime: None,
    }
}

/// A stream of `messages`, already complete.
fn stream_of<T: Send + 'static>(
    messages: Vec<Result<T, Status>>,
) -> ReceiverStream<Result<T, Status>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(messages.len().max(1));
    for message in messages {
        let _ = sender.try_send(message);
    }
    ReceiverStream::new(receiver)
}

fn find(name: &str) -> Result<Runtime, Status> {
    match name {
        "python-3.11" | "python-3.11@1.0.0" | "broken" => Ok(python()),
        other => Err(Status::not_found(format!(
            "runtime {other} not found; installed: python-3.11@1.0.0"
        ))),
    }
}

#[tonic::async_trait]
impl RuntimeService for FakeRuntimes {
    type BuildRuntimeStream = Progress;

    /// A spec holding `bad` fails in its `pip` phase; one holding `noresult` ends without
    /// a runtime; any other builds `python-3.11@1.0.0`.
    async fn build_runtime(
        &self,
        request: Request<BuildRuntimeRequest>,
    ) -> Result<Response<Progress>, Status> {
        let request = request.into_inner();
        let spec = request.spec_yaml.clone();
        self.calls.lock().unwrap().builds.push(request);
        let mut messages = vec![
            Ok(progress("base", "", 0, 0, "")),
            Ok(progress("base", "I: retrieving Packages", 0, 0, "")),
            Ok(progress("pip", "", 10, 100, "bytes")),
        ];
        if spec.contains("bad") {
            messages.push(Err(Status::invalid_argument(
                "pip: no matching distribution found for numpy==0.0",
            )));
        } else if !spec.contains("noresult") {
            messages.push(Ok(RuntimeProgress {
                runtime: Some(python()),
                ..progress("sign", "", 0, 0, "")
            }));
        }
        Ok(Response::new(stream_of(messages)))
    }

    type InstallRuntimeStream = Progress;

    /// Records each chunk's size and replace flag; an archive under 8 bytes is refused,
    /// any other installs `python-3.11@1.0.0` with its size.
    async fn install_runtime(
        &self,
        request: Request<Streaming<InstallRuntimeChunk>>,
    ) -> Result<Response<Progress>, Status> {
        let mut chunks = request.into_inner();
        let mut received = Vec::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            received.push((chunk.data.len(), chunk.replace));
        }
        let total: u64 = received.iter().map(|(len, _)| *len as u64).sum();
        self.calls.lock().unwrap().installs.push(received);
        if total < 8 {
            return Ok(Response::new(stream_of(vec![Err(
                Status::invalid_argument("archive: not a runtime archive (no manifest)"),
            )])));
        }
        Ok(Response::new(stream_of(vec![
            Ok(progress("unpack", "", total, total, "bytes")),
            Ok(RuntimeProgress {
                runtime: Some(Runtime {
                    size_bytes: total,
                    ..python()
                }),
                ..progress("verify", "", 5123, 5123, "entries")
            }),
        ])))
    }

    async fn list_runtimes(
        &self,
        _: Request<ListRuntimesRequest>,
    ) -> Result<Response<ListRuntimesResponse>, Status> {
        Ok(Response::new(ListRuntimesResponse {
            runtimes: vec![python()],
        }))
    }

    async fn get_runtime(
        &self,
        request: Request<GetRuntimeRequest>,
    ) -> Result<Response<Runtime>, Status> {
        Ok(Response::new(find(&request.get_ref().runtime)?))
    }

    /// `broken` has one changed file; `python-3.11` matches its manifest.
    async fn verify_runtime(
        &self,
        request: Request<VerifyRuntimeRequest>,
    ) -> Result<Response<VerifyRuntimeResponse>, Status> {
        let name = request.into_inner().runtime;
        let runtime = find(&name)?;
        let differences = if name == "broken" {
            vec![RuntimeDifference {
                path: "usr/bin/python3.11".into(),
                kind: Kind::Changed as i32,
                detail: "content differs".into(),
            }]
        } else {
            Vec::new()
        };
        Ok(Response::new(VerifyRuntimeResponse {
            runtime: Some(runtime),
            differences,
            files: 5123,
            bytes: 147_010_355,
        }))
    }

    type ExportRuntimeStream = ReceiverStream<Result<ExportRuntimeChunk, Status>>;

    /// `python-3.11` is [`EXPORTED`]; `broken` announces more bytes than it sends.
    async fn export_runtime(
        &self,
        request: Request<ExportRuntimeRequest>,
    ) -> Result<Response<Self::ExportRuntimeStream>, Status> {
        let name = request.into_inner().runtime;
        find(&name)?;
        let length: usize = EXPORTED.iter().map(|part| part.len()).sum();
        let announced = if name == "broken" { 100 } else { length as u64 };
        let chunks = EXPORTED
            .iter()
            .enumerate()
            .map(|(n, part)| {
                Ok(ExportRuntimeChunk {
                    data: part.to_vec(),
                    total_bytes: if n == 0 { announced } else { 0 },
                })
            })
            .collect();
        Ok(Response::new(stream_of(chunks)))
    }

    /// `busy@1.0.0` is in use; the installed runtime is removed.
    async fn remove_runtime(
        &self,
        request: Request<RemoveRuntimeRequest>,
    ) -> Result<Response<RemoveRuntimeResponse>, Status> {
        let name = request.into_inner().runtime;
        if name == "busy@1.0.0" {
            return Err(Status::failed_precondition(
                "runtime busy@1.0.0 is used by job 3f2a1b2c",
            ));
        }
        Ok(Response::new(RemoveRuntimeResponse {
            runtime: Some(find(&name)?),
            freed_bytes: 1 << 20,
        }))
    }
}
