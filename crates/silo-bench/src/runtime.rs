//! A runtime's life on one server, timed: build from a spec, export, remove, install of the
//! export, verify; and the disk that installed runtimes take, files stored once.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::{Map, Value, json};
use silo_proto::v1::{
    BuildRuntimeRequest, ExportRuntimeRequest, InstallRuntimeChunk, ListRuntimesRequest,
    RemoveRuntimeRequest, Runtime, RuntimeProgress, VerifyRuntimeRequest,
};
use tonic::Streaming;

use crate::{client, disk};

/// The largest chunk InstallRuntime accepts.
const INSTALL_CHUNK: usize = 1 << 20;

/// What [`lifecycle`] does after the build.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Steps {
    /// Build only.
    Build,
    /// Build, export, remove, install the export, verify.
    All,
}

/// One RPC's failure as a sentence: the call, the status code and the server's message.
pub fn rpc(call: &str, status: tonic::Status) -> anyhow::Error {
    anyhow!("{call}: {:?}: {}", status.code(), status.message())
}

fn secs(since: Instant) -> f64 {
    (since.elapsed().as_secs_f64() * 1000.0).round() / 1000.0
}

/// Builds the runtime of the spec at `spec_path` (replacing an installed one of the same
/// version) and, with [`Steps::All`], exports it, removes it, installs the export and
/// verifies it. Each step's result goes into `fields` as soon as it is known, so a failure
/// later on keeps what was measured before it.
pub async fn lifecycle(
    config: &Path,
    spec_path: &Path,
    steps: Steps,
    fields: &mut Map<String, Value>,
) -> Result<()> {
    let spec_yaml = std::fs::read_to_string(spec_path)
        .with_context(|| format!("reading {}", spec_path.display()))?;
    let mut client = client::runtime_client(config).await?;

    let start = Instant::now();
    let answer = client
        .build_runtime(BuildRuntimeRequest {
            spec_yaml,
            replace: true,
        })
        .await
        .map_err(|s| rpc("BuildRuntime", s))?
        .into_inner();
    let (built, phases) = until_done("BuildRuntime", answer, start).await?;
    fields.insert("build_s".into(), json!(secs(start)));
    fields.insert("build_phases_s".into(), phases);
    let label = format!("{}@{}", built.name, built.version);
    fields.insert("runtime".into(), json!(label));
    fields.insert("size_bytes".into(), json!(built.size_bytes));
    fields.insert("entries".into(), json!(built.entries));
    if steps == Steps::Build {
        return Ok(());
    }

    let start = Instant::now();
    let mut export = client
        .export_runtime(ExportRuntimeRequest {
            runtime: label.clone(),
        })
        .await
        .map_err(|s| rpc("ExportRuntime", s))?
        .into_inner();
    let mut archive = Vec::new();
    while let Some(chunk) = export
        .message()
        .await
        .map_err(|s| rpc("ExportRuntime", s))?
    {
        archive.extend_from_slice(&chunk.data);
    }
    fields.insert("export_s".into(), json!(secs(start)));
    fields.insert("archive_bytes".into(), json!(archive.len()));
    // A plain tar is about the tree's size; say which it is, from its first bytes.
    fields.insert("archive_format".into(), json!(archive_format(&archive)));

    let start = Instant::now();
    let removed = client
        .remove_runtime(RemoveRuntimeRequest {
            runtime: label.clone(),
        })
        .await
        .map_err(|s| rpc("RemoveRuntime", s))?
        .into_inner();
    fields.insert("remove_s".into(), json!(secs(start)));
    fields.insert("freed_bytes".into(), json!(removed.freed_bytes));

    // The chunks are cut before the clock starts: the install is the RPC.
    let chunks: Vec<InstallRuntimeChunk> = archive
        .chunks(INSTALL_CHUNK)
        .map(|data| InstallRuntimeChunk {
            data: data.to_vec(),
            replace: false,
        })
        .collect();
    drop(archive);
    let start = Instant::now();
    let answer = client
        .install_runtime(tokio_stream::iter(chunks))
        .await
        .map_err(|s| rpc("InstallRuntime", s))?
        .into_inner();
    let (installed, _) = until_done("InstallRuntime", answer, start).await?;
    fields.insert("install_s".into(), json!(secs(start)));
    ensure!(
        installed.manifest_digest == built.manifest_digest,
        "the installed manifest {} is not the built one {}",
        installed.manifest_digest,
        built.manifest_digest
    );

    let start = Instant::now();
    let verified = client
        .verify_runtime(VerifyRuntimeRequest {
            runtime: label.clone(),
        })
        .await
        .map_err(|s| rpc("VerifyRuntime", s))?
        .into_inner();
    fields.insert("verify_s".into(), json!(secs(start)));
    fields.insert("verify_files".into(), json!(verified.files));
    fields.insert("verify_bytes".into(), json!(verified.bytes));
    fields.insert(
        "verify_differences".into(),
        json!(verified.differences.len()),
    );
    if let Some(first) = verified.differences.first() {
        bail!(
            "VerifyRuntime of {label} found {} differences after the install, the first {}: {:?} {}",
            verified.differences.len(),
            first.path,
            first.kind(),
            first.detail
        );
    }
    Ok(())
}

/// Reads a build's or install's progress to its last message, which carries the runtime;
/// also when each phase began (seconds after `start`).
async fn until_done(
    call: &str,
    mut answer: Streaming<RuntimeProgress>,
    start: Instant,
) -> Result<(Runtime, Value)> {
    let mut phases = Map::new();
    while let Some(progress) = answer.message().await.map_err(|s| rpc(call, s))? {
        if let Some(runtime) = progress.runtime {
            return Ok((runtime, Value::Object(phases)));
        }
        if !progress.phase.is_empty() && !phases.contains_key(&progress.phase) {
            phases.insert(progress.phase, json!(secs(start)));
        }
    }
    bail!("{call} ended without the installed runtime")
}

/// "tar", "gzip", "zstd", "xz" or "unknown", from the archive's magic bytes.
fn archive_format(archive: &[u8]) -> &'static str {
    match archive {
        [0x1f, 0x8b, ..] => "gzip",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "zstd",
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => "xz",
        _ if archive.len() >= 262 && &archive[257..262] == b"ustar" => "tar",
        _ => "unknown",
    }
}

/// The disk that the installed runtimes `names` (each its highest version) take together
/// in `<state_dir>/runtimes`, every inode counted once, beside the sum of their trees'
/// sizes (`Runtime.size_bytes`).
pub async fn disk(config: &Path, state_dir: &Path, names: &[String]) -> Result<Value> {
    ensure!(!names.is_empty(), "no runtimes named");
    let mut client = client::runtime_client(config).await?;
    let installed = client
        .list_runtimes(ListRuntimesRequest {})
        .await
        .map_err(|s| rpc("ListRuntimes", s))?
        .into_inner()
        .runtimes;
    let dir = state_dir.join("runtimes");
    let mut trees = 0;
    let mut versions = Vec::new();
    let mut each = Map::new();
    for name in names {
        // Newest version first within a name.
        let runtime = installed
            .iter()
            .find(|r| &r.name == name)
            .with_context(|| {
                let all: Vec<_> = installed
                    .iter()
                    .map(|r| format!("{}@{}", r.name, r.version))
                    .collect();
                format!(
                    "{name} is not installed (installed: {})",
                    if all.is_empty() {
                        "none".into()
                    } else {
                        all.join(", ")
                    }
                )
            })?;
        trees += runtime.size_bytes;
        versions.push(dir.join(&runtime.name).join(&runtime.version));
        each.insert(
            format!("{}@{}", runtime.name, runtime.version),
            json!({"size_bytes": runtime.size_bytes, "shared_bytes": runtime.shared_bytes}),
        );
    }
    let (used, whole) = tokio::task::spawn_blocking(move || {
        Ok::<_, anyhow::Error>((disk::usage(&versions)?, disk::usage(&[dir])?))
    })
    .await
    .context("walking the runtimes")??;
    Ok(json!({
        "runtimes": each,
        "trees_bytes": trees,
        "disk_bytes": used.disk_bytes,
        "unique_file_bytes": used.file_bytes,
        "inodes": used.inodes,
        "runtimes_dir_disk_bytes": whole.disk_bytes,
    }))
}
