//! Serving job logs: one cursor over the log file for history and live output alike.
//!
//! A reader reads complete records from the file by sequence; when it reaches the end
//! while the job runs, it waits for the file to grow (inotify) or the job to end, then
//! reads on. Every record is therefore sent once, in order, whenever the reader attached;
//! a slow reader only slows itself, because the job writes to the file, not to readers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use inotify::{Inotify, WatchDescriptor, WatchMask, Watches};
use silo_log::{LogReader, Record, Stream};
use silo_proto::v1::{LogChunk, LogRecord, LogStream};
use tokio::sync::{mpsc, watch};
use tonic::Status;

use crate::jobs::live::LiveJob;

/// Bytes of records per message sent to a client.
const BATCH_BYTES: usize = 1 << 20;

/// Tells live jobs when their log files grow.
pub struct LogWatcher {
    watches: Mutex<Watches>,
    senders: Arc<Mutex<HashMap<WatchDescriptor, watch::Sender<u64>>>>,
}

impl LogWatcher {
    /// Starts watching; must be called inside the tokio runtime.
    pub fn start() -> std::io::Result<Arc<LogWatcher>> {
        let inotify = Inotify::init()?;
        let watches = inotify.watches();
        let mut events = inotify.into_event_stream(vec![0u8; 64 * 1024])?;
        let senders: Arc<Mutex<HashMap<WatchDescriptor, watch::Sender<u64>>>> = Arc::default();
        let routes = senders.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let Ok(event) = event else { continue };
                if let Ok(map) = routes.lock()
                    && let Some(tx) = map.get(&event.wd)
                {
                    tx.send_modify(|g| *g += 1);
                }
            }
        });
        Ok(Arc::new(LogWatcher {
            watches: Mutex::new(watches),
            senders,
        }))
    }

    /// Bumps `progress` whenever the file at `path` is written, until [`Self::unwatch`].
    pub fn watch(
        &self,
        path: &Path,
        progress: watch::Sender<u64>,
    ) -> std::io::Result<WatchDescriptor> {
        let mut w = self
            .watches
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        let wd = w.add(path, WatchMask::MODIFY)?;
        if let Ok(mut m) = self.senders.lock() {
            m.insert(wd.clone(), progress);
        }
        Ok(wd)
    }

    /// Stops watching a file.
    pub fn unwatch(&self, wd: WatchDescriptor) {
        if let Ok(mut m) = self.senders.lock() {
            m.remove(&wd);
        }
        if let Ok(mut w) = self.watches.lock() {
            let _ = w.remove(wd);
        }
    }
}

/// Streams the log at `path` from `from` into `tx`. With `follow`, waits for new records
/// until `live` (the job, while it runs) has ended and everything is sent.
pub async fn stream_log(
    path: PathBuf,
    from: u64,
    follow: bool,
    live: Option<Arc<LiveJob>>,
    tx: mpsc::Sender<Result<LogChunk, Status>>,
) {
    let mut progress = live.as_ref().map(|l| l.progress.subscribe());
    let opened = tokio::task::spawn_blocking(move || {
        let mut reader = LogReader::open(&path)?;
        reader.seek_to(from)?;
        Ok::<_, silo_log::LogError>(reader)
    })
    .await;
    let mut reader = match opened {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let _ = tx.send(Err(Status::internal(e.to_string()))).await;
            return;
        }
        Err(e) => {
            let _ = tx.send(Err(Status::internal(e.to_string()))).await;
            return;
        }
    };
    loop {
        // Look at the job's state (and mark the progress seen) before reading, so an end
        // of file after an ended job really is the end, and a write after the read wakes us.
        let ended = live.as_ref().is_none_or(|l| l.has_ended());
        if let Some(p) = progress.as_mut() {
            p.borrow_and_update();
        }
        let read = tokio::task::spawn_blocking(move || {
            let batch = reader.read_batch(BATCH_BYTES);
            (reader, batch)
        })
        .await;
        let batch = match read {
            Ok((r, Ok(batch))) => {
                reader = r;
                batch
            }
            Ok((_, Err(e))) => {
                let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                return;
            }
        };
        if batch.is_empty() {
            if !follow || ended {
                return;
            }
            match progress.as_mut() {
                Some(p) => {
                    if p.changed().await.is_err() {
                        // The job's handle is gone: it has ended; read what is left.
                        progress = None;
                    }
                }
                None => return,
            }
            continue;
        }
        let records: Vec<LogRecord> = batch.into_iter().filter_map(to_proto).collect();
        if records.is_empty() {
            continue;
        }
        if tx.send(Ok(LogChunk { records })).await.is_err() {
            return; // The client went away.
        }
    }
}

fn to_proto(r: Record) -> Option<LogRecord> {
    let stream = match r.stream {
        Stream::Stdout => LogStream::Stdout,
        Stream::Stderr => LogStream::Stderr,
        Stream::System => LogStream::System,
        Stream::Exit => return None,
    };
    Some(LogRecord {
        sequence: r.sequence,
        timestamp_unix_nanos: r.timestamp_unix_nanos,
        stream: stream as i32,
        data: r.data,
    })
}

/// The exit record of a finished log, if the init wrote one.
pub fn read_exit(path: &Path) -> Option<silo_sandbox::protocol::ExitStatus> {
    let mut reader = LogReader::open(path).ok()?;
    let mut exit = None;
    loop {
        let batch = reader.read_batch(BATCH_BYTES).ok()?;
        if batch.is_empty() {
            return exit;
        }
        for r in batch {
            if r.stream == Stream::Exit {
                exit = serde_json::from_slice(&r.data).ok();
            }
        }
    }
}
