//! `silo runtime export NAME[@VERSION] -o FILE`: the runtime as one archive (its tree and
//! signed manifest), to install on another server.

use std::ffi::OsString;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};

use silo_proto::v1::{ExportRuntimeChunk, ExportRuntimeRequest};
use tokio_stream::{Stream, StreamExt};

use super::progress::TransferBar;
use crate::cli::{ExportArgs, GlobalOptions};
use crate::connect::describe_io;
use crate::format::human_size;
use crate::output::{print, write_failure};
use crate::session::{CallError, Session};

/// Why an export did not give a complete archive.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    /// The call failed.
    #[error("{0}")]
    Call(#[from] CallError),
    /// The archive could not be written (the caller names where).
    #[error("{}", describe_io(.0))]
    Write(io::Error),
    /// The server said how long the archive is and sent less.
    #[error("the server ended the export after {received} of {expected} bytes")]
    Short {
        /// Bytes received.
        received: u64,
        /// Bytes announced on the first chunk.
        expected: u64,
    },
    /// The server sent nothing at all.
    #[error("the server ended the export without sending the archive")]
    Empty,
}

/// Writes the archive to `--output`: to `FILE.partial`, renamed to `FILE` once complete
/// (and removed when not), or to standard output for `-`.
pub async fn export(global: &GlobalOptions, args: ExportArgs) -> anyhow::Result<i32> {
    let to_stdout = args.output == Path::new("-");
    if to_stdout && io::stdout().is_terminal() {
        anyhow::bail!(
            "refusing to write a runtime archive to a terminal: redirect standard output or give -o FILE"
        );
    }
    let mut session = Session::open(global).await?;
    let request = ExportRuntimeRequest {
        runtime: args.runtime.to_string(),
    };
    let stream = match session.runtimes.export_runtime(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(session.runtime_error(&status).into()),
    };
    let describe = |status: &tonic::Status| session.runtime_error(status);
    let label = args.runtime.to_string();
    if to_stdout {
        return match copy_archive(stream, &mut io::stdout(), &label, describe).await {
            Ok(_) => Ok(0),
            Err(ExportError::Write(err)) => write_failure(&err),
            Err(err) => Err(err.into()),
        };
    }
    let bytes = write_file(stream, &args.output, &label, describe).await?;
    print(&format!(
        "exported {label} to {}: {}\n",
        args.output.display(),
        human_size(bytes)
    ))
}

/// `path` with `.partial` added to its name.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".partial");
    PathBuf::from(name)
}

/// Writes the archive to `path` through `path.partial`; returns its size. Nothing is left
/// at either path when it fails.
async fn write_file(
    stream: impl Stream<Item = Result<ExportRuntimeChunk, tonic::Status>>,
    path: &Path,
    label: &str,
    describe: impl Fn(&tonic::Status) -> CallError,
) -> anyhow::Result<u64> {
    let partial = partial_path(path);
    let cannot_write = |err: &io::Error| {
        anyhow::anyhow!("cannot write {}: {}", partial.display(), describe_io(err))
    };
    let file = std::fs::File::create(&partial).map_err(|err| cannot_write(&err))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let written = match copy_archive(stream, &mut out, label, describe).await {
        Ok(bytes) => out
            .flush()
            .and_then(|()| out.get_ref().sync_all())
            .map(|()| bytes)
            .map_err(|err| cannot_write(&err)),
        Err(ExportError::Write(err)) => Err(cannot_write(&err)),
        Err(err) => Err(err.into()),
    };
    drop(out);
    let renamed = written.and_then(|bytes| {
        std::fs::rename(&partial, path)
            .map(|()| bytes)
            .map_err(|err| {
                anyhow::anyhow!(
                    "cannot rename {} to {}: {}",
                    partial.display(),
                    path.display(),
                    describe_io(&err)
                )
            })
    });
    if renamed.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    renamed
}

/// Copies the archive's chunks to `out` in order and returns its size, showing a bar of
/// bytes when stderr is a terminal.
///
/// Guarantees: `Ok` only when the stream ended cleanly after at least one chunk and with
/// as many bytes as the first chunk announced (when it did).
async fn copy_archive(
    stream: impl Stream<Item = Result<ExportRuntimeChunk, tonic::Status>>,
    out: &mut impl Write,
    label: &str,
    describe: impl Fn(&tonic::Status) -> CallError,
) -> Result<u64, ExportError> {
    let mut stream = std::pin::pin!(stream);
    let mut received = 0u64;
    let mut expected = None;
    let mut bar: Option<TransferBar> = None;
    let outcome = loop {
        let chunk = match stream.next().await {
            None => break Ok(()),
            Some(Err(status)) => break Err(ExportError::Call(describe(&status))),
            Some(Ok(chunk)) => chunk,
        };
        if expected.is_none() {
            expected = Some(chunk.total_bytes);
            bar = Some(TransferBar::for_stderr(label, chunk.total_bytes));
        }
        if let Err(err) = out.write_all(&chunk.data) {
            break Err(ExportError::Write(err));
        }
        received += chunk.data.len() as u64;
        if let Some(bar) = &bar {
            bar.set(received);
        }
    };
    let outcome = outcome.and_then(|()| match expected {
        None => Err(ExportError::Empty),
        Some(expected) if expected > 0 && expected != received => {
            Err(ExportError::Short { received, expected })
        }
        Some(_) => out.flush().map_err(ExportError::Write),
    });
    match (outcome, bar) {
        (Ok(()), Some(bar)) => {
            bar.finish();
            Ok(received)
        }
        (Ok(()), None) => Ok(received),
        (Err(err), bar) => {
            if let Some(bar) = bar {
                bar.abandon();
            }
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(data: &[u8], total_bytes: u64) -> Result<ExportRuntimeChunk, tonic::Status> {
        Ok(ExportRuntimeChunk {
            data: data.to_vec(),
            total_bytes,
        })
    }

    fn describe(status: &tonic::Status) -> CallError {
        CallError {
            message: status.message().to_owned(),
            code: status.code(),
        }
    }

    #[tokio::test]
    async fn a_complete_archive_is_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("python.tar");
        let stream = tokio_stream::iter([chunk(b"abc", 5), chunk(b"de", 0)]);
        let bytes = write_file(stream, &path, "python", describe).await.unwrap();
        assert_eq!(bytes, 5);
        assert_eq!(std::fs::read(&path).unwrap(), b"abcde");
        assert!(!partial_path(&path).exists());
    }

    #[tokio::test]
    async fn a_cut_or_failed_archive_leaves_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("python.tar");
        std::fs::write(&path, b"an older export").unwrap();
        let cases = [
            (
                vec![chunk(b"abc", 10)],
                "the server ended the export after 3 of 10 bytes",
            ),
            (
                vec![
                    chunk(b"abc", 0),
                    Err(tonic::Status::not_found("runtime python not found")),
                ],
                "runtime python not found",
            ),
            (
                Vec::new(),
                "the server ended the export without sending the archive",
            ),
        ];
        for (chunks, message) in cases {
            let err = write_file(tokio_stream::iter(chunks), &path, "python", describe)
                .await
                .unwrap_err();
            assert_eq!(err.to_string(), message);
            assert!(!partial_path(&path).exists());
            assert_eq!(std::fs::read(&path).unwrap(), b"an older export");
        }
    }

    #[tokio::test]
    async fn an_unwritable_place_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/python.tar");
        let stream = tokio_stream::iter([chunk(b"abc", 3)]);
        let err = write_file(stream, &path, "python", describe)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot write ")
                && err.ends_with("python.tar.partial: no such file or directory"),
            "{err}"
        );
    }

    #[test]
    fn the_partial_file_is_beside_the_archive() {
        assert_eq!(
            partial_path(Path::new("/tmp/py.tar")),
            Path::new("/tmp/py.tar.partial")
        );
    }
}
