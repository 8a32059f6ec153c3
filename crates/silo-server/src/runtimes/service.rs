//! The gRPC RuntimeService.

use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use silo_proto::v1::runtime_difference::Kind;
use silo_proto::v1::runtime_service_server::RuntimeService;
use silo_proto::v1::{
    BuildRuntimeRequest, EnvVar, ExportRuntimeChunk, ExportRuntimeRequest, GetRuntimeRequest,
    InstallRuntimeChunk, ListRuntimesRequest, ListRuntimesResponse, RemoveRuntimeRequest,
    RemoveRuntimeResponse, Runtime, RuntimeDifference, RuntimeProgress, VerifyRuntimeRequest,
    VerifyRuntimeResponse,
};
use silo_runtime::manifest::{DifferenceKind, EntryKind};
use silo_runtime::spec::RuntimeSpec;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::build;
use super::catalog::{Catalog, Installed};
use super::packages;
use super::progress::Progress;
use crate::auth::{Access, authorize};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The largest chunk of an archive a client may send at once.
const MAX_CHUNK: usize = 1 << 20;
/// The size of the chunks an export sends.
const EXPORT_CHUNK: usize = 256 << 10;

/// The runtime service over a catalog.
#[derive(Clone)]
pub struct RuntimeApi {
    catalog: Catalog,
    /// Permits for exports running at once ([`EXPORTS_AT_ONCE`]).
    exports: Arc<tokio::sync::Semaphore>,
    /// Permits for verifications running at once ([`VERIFIES_AT_ONCE`]).
    verifies: Arc<tokio::sync::Semaphore>,
}

/// How many verifications run at once: each reads and hashes the whole tree (a viewer
/// may ask for as many as it likes); more wait for a permit.
const VERIFIES_AT_ONCE: usize = 2;

/// How many exports run at once: each holds a blocking thread and a core for compression
/// while its client reads; more wait for a permit.
const EXPORTS_AT_ONCE: usize = 4;

/// How long an export waits for its client to take the next chunk before it gives up, so
/// that a client that stops reading does not hold its thread and permit for good.
const EXPORT_STALL: std::time::Duration = std::time::Duration::from_secs(60);

impl RuntimeApi {
    /// The service over `catalog`.
    pub fn new(catalog: Catalog) -> RuntimeApi {
        RuntimeApi {
            catalog,
            exports: Arc::new(tokio::sync::Semaphore::new(EXPORTS_AT_ONCE)),
            verifies: Arc::new(tokio::sync::Semaphore::new(VERIFIES_AT_ONCE)),
        }
    }
}

/// The wire form of an installed runtime; with `details`, its packages too (they are
/// read from the tree).
pub async fn to_proto(catalog: &Catalog, installed: &Installed, details: bool) -> Runtime {
    let shared = catalog.shared_bytes(installed).await;
    let packages = if details {
        let rootfs = installed.version_dir().rootfs();
        catalog
            .read_tree(move || packages::installed(&rootfs))
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let manifest = &installed.manifest;
    Runtime {
        name: manifest.name.clone(),
        version: manifest.version.to_string(),
        description: installed.spec.description.clone(),
        size_bytes: manifest.total_size(),
        shared_bytes: shared,
        entries: manifest.entries.len() as u64,
        manifest_digest: manifest.digest(),
        signer: installed.signature.signer.fingerprint(),
        signed_here: installed.signature.signer == catalog.public_key(),
        installed_at: crate::service::timestamp(Some(installed.installed_at)),
        used_by_jobs: catalog.users(&installed.label()) as u32,
        spec_yaml: if details {
            installed.spec.to_yaml()
        } else {
            String::new()
        },
        packages,
        env: installed
            .spec
            .env
            .iter()
            .map(|(name, value)| EnvVar {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl RuntimeService for RuntimeApi {
    type BuildRuntimeStream = BoxStream<RuntimeProgress>;

    async fn build_runtime(
        &self,
        request: Request<BuildRuntimeRequest>,
    ) -> Result<Response<Self::BuildRuntimeStream>, Status> {
        let owner = authorize(&request, Access::Write, "BuildRuntime")?;
        let req = request.into_inner();
        let spec = RuntimeSpec::parse(&req.spec_yaml)
            .map_err(|e| Status::invalid_argument(format!("the runtime spec: {e}")))?;
        let (tx, rx) = mpsc::channel(64);
        let progress = Progress::new(tx);
        let catalog = self.catalog.clone();
        // On a task of its own: a client that goes away does not cut a build in half.
        tokio::spawn(async move {
            let label = format!("{}@{}", spec.name, spec.version);
            let started = std::time::Instant::now();
            match build::build(&catalog, spec, req.replace, &owner, &progress).await {
                Ok(installed) => {
                    tracing::info!("built runtime {label} in {:?}", started.elapsed());
                    progress
                        .done(to_proto(&catalog, &installed, false).await)
                        .await;
                }
                Err(e) => {
                    tracing::warn!("building runtime {label} failed: {e}");
                    progress.failed(e.into()).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type InstallRuntimeStream = BoxStream<RuntimeProgress>;

    async fn install_runtime(
        &self,
        request: Request<Streaming<InstallRuntimeChunk>>,
    ) -> Result<Response<Self::InstallRuntimeStream>, Status> {
        authorize(&request, Access::Write, "InstallRuntime")?;
        let mut incoming = request.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let progress = Progress::new(tx);
        let catalog = self.catalog.clone();
        tokio::spawn(async move {
            match install(&catalog, &mut incoming, &progress).await {
                Ok(installed) => {
                    tracing::info!("installed runtime {}", installed.label());
                    progress
                        .done(to_proto(&catalog, &installed, false).await)
                        .await;
                }
                Err(status) => progress.failed(status).await,
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_runtimes(
        &self,
        request: Request<ListRuntimesRequest>,
    ) -> Result<Response<ListRuntimesResponse>, Status> {
        authorize(&request, Access::Read, "ListRuntimes")?;
        let mut runtimes = Vec::new();
        for installed in self.catalog.list() {
            runtimes.push(to_proto(&self.catalog, &installed, false).await);
        }
        Ok(Response::new(ListRuntimesResponse { runtimes }))
    }

    async fn get_runtime(
        &self,
        request: Request<GetRuntimeRequest>,
    ) -> Result<Response<Runtime>, Status> {
        authorize(&request, Access::Read, "GetRuntime")?;
        let installed = self.catalog.get(&request.get_ref().runtime)?;
        Ok(Response::new(
            to_proto(&self.catalog, &installed, true).await,
        ))
    }

    async fn verify_runtime(
        &self,
        request: Request<VerifyRuntimeRequest>,
    ) -> Result<Response<VerifyRuntimeResponse>, Status> {
        authorize(&request, Access::Read, "VerifyRuntime")?;
        let installed = self.catalog.get(&request.get_ref().runtime)?;
        let (manifest, rootfs) = (installed.manifest.clone(), installed.version_dir().rootfs());
        let _permit = self
            .verifies
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the server is shutting down"))?;
        let differences = tokio::task::spawn_blocking(move || {
            silo_runtime::manifest::verify_tree(&manifest, &rootfs)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))?;
        let files = installed
            .manifest
            .entries
            .iter()
            .filter(|e| matches!(e.kind, EntryKind::File { .. }))
            .count() as u64;
        Ok(Response::new(VerifyRuntimeResponse {
            runtime: Some(to_proto(&self.catalog, &installed, false).await),
            differences: differences
                .into_iter()
                .map(|d| {
                    let (kind, detail) = match d.what {
                        DifferenceKind::Changed(detail) => (Kind::Changed, detail),
                        DifferenceKind::Missing => (Kind::Missing, String::new()),
                        DifferenceKind::Extra => (Kind::Extra, String::new()),
                    };
                    RuntimeDifference {
                        path: d.path,
                        kind: kind as i32,
                        detail,
                    }
                })
                .collect(),
            files,
            bytes: installed.manifest.total_size(),
        }))
    }

    type ExportRuntimeStream = BoxStream<ExportRuntimeChunk>;

    async fn export_runtime(
        &self,
        request: Request<ExportRuntimeRequest>,
    ) -> Result<Response<Self::ExportRuntimeStream>, Status> {
        authorize(&request, Access::Read, "ExportRuntime")?;
        let installed = self.catalog.get(&request.get_ref().runtime)?;
        let permit = self
            .exports
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the server is shutting down"))?;
        let (tx, rx) = mpsc::channel(8);
        let handle = tokio::runtime::Handle::current();
        // An export's failure ends its stream after the chunks before it, even when the
        // client was too slow to leave room for it in the channel.
        let failure: Arc<std::sync::Mutex<Option<Status>>> = Arc::default();
        let failed = failure.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut out = ChunkWriter {
                tx: tx.clone(),
                handle,
                buffer: Vec::with_capacity(EXPORT_CHUNK),
                // The compressed size is known only at the end.
                total: Some(0),
            };
            let exported =
                silo_runtime::archive::export(&installed.version_dir(), &mut out, |_| {})
                    .map_err(|e| e.to_string())
                    .and_then(|()| out.flush().map_err(|e| e.to_string()));
            if let Err(e) = exported
                && let Ok(mut failed) = failed.lock()
            {
                *failed = Some(Status::internal(format!(
                    "cannot export {}: {e}",
                    installed.label()
                )));
            }
        });
        let end = futures::stream::once(async move {
            failure.lock().ok().and_then(|mut f| f.take()).map(Err)
        })
        .filter_map(std::future::ready);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).chain(end))))
    }

    async fn remove_runtime(
        &self,
        request: Request<RemoveRuntimeRequest>,
    ) -> Result<Response<RemoveRuntimeResponse>, Status> {
        authorize(&request, Access::Write, "RemoveRuntime")?;
        let (installed, freed) = self.catalog.remove(&request.get_ref().runtime).await?;
        tracing::info!("removed runtime {}", installed.label());
        let mut runtime = to_proto(&self.catalog, &installed, false).await;
        runtime.used_by_jobs = 0;
        Ok(Response::new(RemoveRuntimeResponse {
            runtime: Some(runtime),
            freed_bytes: freed,
        }))
    }
}

/// Receives an archive from `incoming`, unpacks and verifies it into a staging directory,
/// then commits it.
async fn install(
    catalog: &Catalog,
    incoming: &mut Streaming<InstallRuntimeChunk>,
    progress: &Progress,
) -> Result<Installed, Status> {
    let first = incoming
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("the archive is empty"))?;
    let replace = first.replace;
    let staging = super::Staging::new(catalog.new_staging()?);
    let (tx, rx) = mpsc::channel::<std::io::Result<bytes::Bytes>>(8);
    let path = staging.path().to_path_buf();
    let trusted = catalog.trusted().to_vec();
    let room = catalog.jobs().state_room(&path);
    let unpack_progress = progress.clone();
    progress.phase("unpack").await;
    let unpacking = tokio::task::spawn_blocking(move || {
        let reader = ChunkReader {
            rx,
            current: bytes::Bytes::new(),
        };
        silo_runtime::archive::unpack(reader, &path, &trusted, room, |p| {
            unpack_progress.count_now("unpack", p.entries_done, p.entries_total, "entries")
        })
    });
    let mut chunk = Some(first);
    while let Some(message) = chunk {
        if message.data.len() > MAX_CHUNK {
            let _ = tx
                .send(Err(std::io::Error::other("a chunk is larger than 1 MiB")))
                .await;
            break;
        }
        if tx.send(Ok(message.data.into())).await.is_err() {
            // The unpack stopped reading: it failed, and says why below.
            break;
        }
        chunk = match incoming.message().await {
            Ok(next) => next,
            Err(status) => {
                let _ = tx
                    .send(Err(std::io::Error::other(format!(
                        "the client's stream failed: {}",
                        status.message()
                    ))))
                    .await;
                break;
            }
        };
    }
    drop(tx);
    let unpacked = unpacking
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    unpacked.map_err(|e| match e {
        silo_runtime::archive::ArchiveError::NoRoom { .. } => {
            Status::resource_exhausted(format!("the runtime cannot be installed: {e}"))
        }
        e => Status::invalid_argument(format!("the archive is refused: {e}")),
    })?;
    progress.phase("install").await;
    Ok(catalog.commit(staging.keep(), replace).await?)
}

/// An archive's bytes arriving from the client, read by the (blocking) unpack.
struct ChunkReader {
    rx: mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// An export's bytes, sent to the client in chunks.
struct ChunkWriter {
    tx: mpsc::Sender<Result<ExportRuntimeChunk, Status>>,
    /// The runtime, to wait for the client with a deadline from this blocking thread.
    handle: tokio::runtime::Handle,
    buffer: Vec<u8>,
    /// Sent with the first chunk.
    total: Option<u64>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= EXPORT_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() && self.total.is_none() {
            return Ok(());
        }
        let chunk = ExportRuntimeChunk {
            data: std::mem::replace(&mut self.buffer, Vec::with_capacity(EXPORT_CHUNK)),
            total_bytes: self.total.take().unwrap_or(0),
        };
        let sent = self
            .handle
            .block_on(tokio::time::timeout(EXPORT_STALL, self.tx.send(Ok(chunk))));
        match sent {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the client went away",
            )),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client took no data for {EXPORT_STALL:?}"),
            )),
        }
    }
}
