//! `silo runtime install FILE`: streams an exported archive to the server, which checks
//! its signature and every file while unpacking it; the server's progress is shown live.

use std::io;
use std::path::Path;

use silo_proto::v1::InstallRuntimeChunk;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use super::progress::{self, Operation};
use crate::cli::{GlobalOptions, InstallArgs};
use crate::connect::describe_io;
use crate::output::print;
use crate::session::Session;

/// The most archive bytes in one message (the API's limit).
pub const CHUNK_BYTES: usize = 1 << 20;

/// How many chunks may wait to be sent while the file is read ahead.
const CHUNKS_AHEAD: usize = 4;

const TASK_FAILED: &str = "the reading task failed";

/// Sends the archive, shows the install's progress, and prints the installed runtime in
/// one line. `-` reads the archive from standard input.
pub async fn install(global: &GlobalOptions, args: InstallArgs) -> anyhow::Result<i32> {
    let archive = open_archive(&args.archive).await?;
    let mut session = Session::open(global).await?;
    let (chunks, mut reading) = send_chunks(archive, args.replace);
    let stream = match session.runtimes.install_runtime(chunks).await {
        Ok(response) => response.into_inner(),
        Err(status) => {
            return Err(read_failure(&args.archive, reading)
                .await
                .unwrap_or_else(|| session.runtime_error(&status).into()));
        }
    };
    let mut view = progress::for_stderr();
    let describe = |status: &tonic::Status| session.runtime_error(status);
    let follow = progress::follow(stream, Operation::Install, &mut *view, describe);
    let mut follow = std::pin::pin!(follow);
    let mut read_all = false;
    let outcome = tokio::select! {
        outcome = &mut follow => outcome,
        read = &mut reading => match read.unwrap_or_else(|_| Err(io::Error::other(TASK_FAILED))) {
            // Everything is sent: the server has the rest to say.
            Ok(()) => {
                read_all = true;
                follow.await
            }
            // The archive cannot be sent whole: the call is dropped. (A cut archive could
            // not be installed anyway: the server checks every file against the manifest.)
            Err(err) => Err(read_error(&args.archive, &err)),
        },
    };
    match outcome {
        Ok(runtime) => print(&progress::summary(Operation::Install, &runtime)),
        Err(err) if read_all => Err(err),
        // A server that saw the archive end early says so; the cause is the read error.
        Err(err) => Err(read_failure(&args.archive, reading).await.unwrap_or(err)),
    }
}

/// The archive at `path` (standard input for `-`), checked to be there before connecting.
async fn open_archive(path: &Path) -> anyhow::Result<Box<dyn AsyncRead + Send + Unpin>> {
    if path == Path::new("-") {
        return Ok(Box::new(tokio::io::stdin()));
    }
    let cannot = |err: io::Error| read_error(path, &err);
    let file = tokio::fs::File::open(path).await.map_err(cannot)?;
    let metadata = file.metadata().await.map_err(cannot)?;
    if metadata.is_dir() {
        anyhow::bail!(
            "cannot install {}: it is a directory, not an archive (write one with silo runtime export)",
            path.display()
        );
    }
    if metadata.is_file() && metadata.len() == 0 {
        anyhow::bail!(
            "cannot install {}: the file is empty, not an archive",
            path.display()
        );
    }
    Ok(Box::new(file))
}

fn read_error(path: &Path, err: &io::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot read {}: {}", display_name(path), describe_io(err))
}

fn display_name(path: &Path) -> String {
    if path == Path::new("-") {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    }
}

/// The reading task's error, when it has ended with one (a task still reading is
/// stopped).
async fn read_failure(path: &Path, reading: JoinHandle<io::Result<()>>) -> Option<anyhow::Error> {
    if !reading.is_finished() {
        reading.abort();
        return None;
    }
    match reading.await {
        Ok(Err(err)) => Some(read_error(path, &err)),
        _ => None,
    }
}

/// The archive as the request's stream of chunks: [`CHUNK_BYTES`] each but the last,
/// `replace` on the first. The task reads ahead while chunks are sent and ends with the
/// file's read error, if any; it stops early when the stream is dropped.
pub fn send_chunks(
    mut archive: impl AsyncRead + Send + Unpin + 'static,
    replace: bool,
) -> (
    ReceiverStream<InstallRuntimeChunk>,
    JoinHandle<io::Result<()>>,
) {
    let (sender, receiver) = mpsc::channel(CHUNKS_AHEAD);
    let reading = tokio::spawn(async move {
        let mut first = true;
        loop {
            let data = read_chunk(&mut archive).await?;
            if data.is_empty() && !first {
                return Ok(());
            }
            let last = data.len() < CHUNK_BYTES;
            let chunk = InstallRuntimeChunk {
                data,
                replace: replace && first,
            };
            first = false;
            if sender.send(chunk).await.is_err() || last {
                return Ok(());
            }
        }
    });
    (ReceiverStream::new(receiver), reading)
}

/// Up to [`CHUNK_BYTES`] bytes; fewer only at the end of the archive.
async fn read_chunk(archive: &mut (impl AsyncRead + Unpin)) -> io::Result<Vec<u8>> {
    let mut data = vec![0; CHUNK_BYTES];
    let mut filled = 0;
    while filled < CHUNK_BYTES {
        let read = archive.read(&mut data[filled..]).await?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    data.truncate(filled);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;

    #[tokio::test]
    async fn an_archive_goes_in_full_chunks_with_replace_on_the_first_only() {
        let archive: Vec<u8> = (0..(2 * CHUNK_BYTES + 100)).map(|i| i as u8).collect();
        let (chunks, reading) = send_chunks(std::io::Cursor::new(archive.clone()), true);
        let chunks: Vec<InstallRuntimeChunk> = chunks.collect().await;
        reading.await.unwrap().unwrap();
        let sizes: Vec<usize> = chunks.iter().map(|c| c.data.len()).collect();
        assert_eq!(sizes, [CHUNK_BYTES, CHUNK_BYTES, 100]);
        let flags: Vec<bool> = chunks.iter().map(|c| c.replace).collect();
        assert_eq!(flags, [true, false, false]);
        let sent: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(sent, archive);
    }

    #[tokio::test]
    async fn an_archive_of_whole_chunks_ends_without_an_empty_one() {
        let archive = vec![7u8; CHUNK_BYTES];
        let (chunks, _) = send_chunks(std::io::Cursor::new(archive), false);
        let chunks: Vec<InstallRuntimeChunk> = chunks.collect().await;
        let sizes: Vec<usize> = chunks.iter().map(|c| c.data.len()).collect();
        assert_eq!(sizes, [CHUNK_BYTES]);
        assert!(!chunks[0].replace);
    }

    #[tokio::test]
    async fn a_missing_empty_or_directory_archive_is_refused_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.tar");
        std::fs::write(&empty, b"").unwrap();
        for (path, reason) in [
            (dir.path().join("missing.tar"), "no such file or directory"),
            (empty, "the file is empty"),
            (dir.path().to_path_buf(), "it is a directory"),
        ] {
            let err = open_archive(&path).await.err().unwrap().to_string();
            assert!(err.contains(reason), "{}: {err}", path.display());
        }
    }
}
