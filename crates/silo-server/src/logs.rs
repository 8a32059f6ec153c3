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
use silo_log::{LogError, LogReader, Record, RecordSpan, Stream};
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

/// Records of at least this many bytes on average (in the batch before) are sent by
/// reference to the file, when the stream may ([`LogRequest::spawn_batches`]): below it,
/// one read per record costs more than the copy it saves.
const BY_REFERENCE_FROM: usize = 32 * 1024;

/// The most records one batch by reference names: each costs two reads (its header, its
/// bytes), so a job that turns to tiny records after large ones cannot make one batch a
/// million reads on the server's async thread.
const BY_REFERENCE_RECORDS: usize = 64;

/// A batch of records for a client: in memory, or named by where their bytes lie in the
/// log file, for the StreamLogs encoder to copy them from the file straight into the
/// message (one copy of each byte fewer; see `log_codec`).
pub enum LogBatch {
    /// Records read into memory, encoded as any message.
    Chunk(LogChunk),
    /// Records of the log `file` (never an exit record), complete in it.
    File {
        /// The log, open for reading.
        file: Arc<std::fs::File>,
        /// The records, in order.
        spans: Vec<RecordSpan>,
    },
}

impl LogBatch {
    /// The batch as a message of records in memory: a `File` batch is read now.
    pub fn into_chunk(self) -> Result<LogChunk, Status> {
        let (file, spans) = match self {
            LogBatch::Chunk(chunk) => return Ok(chunk),
            LogBatch::File { file, spans } => (file, spans),
        };
        let mut records = Vec::with_capacity(spans.len());
        for span in spans {
            let mut data = vec![0u8; span.len as usize];
            std::os::unix::fs::FileExt::read_exact_at(&*file, &mut data, span.offset)
                .map_err(|e| Status::internal(format!("cannot read the job's log: {e}")))?;
            records.extend(to_proto(Record {
                sequence: span.sequence,
                timestamp_unix_nanos: span.timestamp_unix_nanos,
                stream: span.stream,
                data: data.into(),
            }));
        }
        Ok(LogChunk { records })
    }
}

/// Where [`stream_records`] sends what it reads.
enum Out {
    /// Messages of records in memory.
    Chunks(mpsc::Sender<Result<LogChunk, Status>>),
    /// Batches, large records by reference to the file.
    Batches(mpsc::Sender<Result<LogBatch, Status>>),
}

impl Out {
    /// Sends `item`; false once the client has gone away.
    async fn send(&self, item: Result<LogBatch, Status>) -> bool {
        match self {
            Out::Chunks(tx) => tx.send(item.and_then(LogBatch::into_chunk)).await.is_ok(),
            Out::Batches(tx) => tx.send(item).await.is_ok(),
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
    stream_records(path, from, follow, live, Out::Chunks(tx)).await;
}

/// A StreamLogs request, checked: the caller may read, and the job exists.
pub struct LogRequest {
    path: PathBuf,
    from: u64,
    follow: bool,
    live: Option<Arc<LiveJob>>,
}

impl LogRequest {
    /// Checks `request` against `jobs` (the caller's role, the job's id or prefix).
    pub async fn check(
        jobs: &crate::jobs::JobManager,
        request: tonic::Request<silo_proto::v1::StreamLogsRequest>,
    ) -> Result<LogRequest, Status> {
        crate::auth::authorize(&request, crate::auth::Access::Read, "StreamLogs")?;
        let req = request.into_inner();
        let id = jobs.resolve(&req.id).await?;
        Ok(LogRequest {
            path: jobs.log_path(&id),
            from: req.from_sequence,
            follow: req.follow,
            live: jobs.live(&id),
        })
    }

    /// Streams the log as messages of records in memory, on a task of its own.
    pub fn spawn_chunks(self) -> mpsc::Receiver<Result<LogChunk, Status>> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(self.stream(Out::Chunks(tx)));
        rx
    }

    /// Streams the log with a running job's large records by reference to the log file
    /// ([`LogBatch::File`]), for an encoder that copies them from the file.
    pub fn spawn_batches(self) -> mpsc::Receiver<Result<LogBatch, Status>> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(self.stream(Out::Batches(tx)));
        rx
    }

    async fn stream(self, out: Out) {
        stream_records(self.path, self.from, self.follow, self.live, out).await;
    }
}

async fn stream_records(
    path: PathBuf,
    from: u64,
    follow: bool,
    live: Option<Arc<LiveJob>>,
    out: Out,
) {
    let by_reference_allowed = matches!(out, Out::Batches(_));
    // The log, shared with the batches that name its records (made at the first).
    let mut shared_file: Option<Arc<std::fs::File>> = None;
    let mut large_records = false;
    let mut progress = live.as_ref().map(|l| l.progress.subscribe());
    // What a running job has just written is in memory: reading it is a copy that takes
    // no longer than the encoding of what it read, so it runs here, without a trip to a
    // blocking thread. Older output (an ended job's, or the history of a long one before
    // the reader has caught up) may have to come from the disk, and goes to a blocking
    // thread. `hot` says which: a running job whose log is small, or whose reader has
    // reached the end of what was written.
    let mut hot =
        live.is_some() && std::fs::metadata(&path).is_ok_and(|m| m.len() <= BATCH_BYTES as u64);
    let open = move || {
        let mut reader = LogReader::open(&path)?;
        let reached = reader.seek_to(from)?;
        Ok::<_, LogError>((reader, reached))
    };
    let opened = if hot {
        Ok(open())
    } else {
        tokio::task::spawn_blocking(open).await
    };
    // `from` may not be written yet (a client resuming ahead of the job): until the reader
    // has reached it, it only seeks, so no record below `from` is ever sent.
    let (mut reader, mut reached) = match opened {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let _ = out.send(Err(read_failure(&e))).await;
            return;
        }
        Err(e) => {
            let _ = out.send(Err(Status::internal(e.to_string()))).await;
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
        // A running job's large records that are in memory (hot) go by reference: the
        // encoder copies them from the file, on the thread that encodes.
        let by_reference = by_reference_allowed && hot && reached && large_records;
        if by_reference && shared_file.is_none() {
            match reader.file().try_clone() {
                Ok(file) => shared_file = Some(Arc::new(file)),
                Err(e) => {
                    let _ = out
                        .send(Err(Status::internal(format!(
                            "cannot read the job's log: {e}"
                        ))))
                        .await;
                    return;
                }
            }
        }
        let next = move || {
            let batch = match (reached, by_reference) {
                (true, true) => reader
                    .read_spans(BATCH_BYTES, BY_REFERENCE_RECORDS)
                    .map(Read::Spans),
                (true, false) => reader.read_batch(BATCH_BYTES).map(Read::Records),
                (false, _) => reader.seek_to(from).and_then(|now| {
                    reached = now;
                    match now {
                        true => reader.read_batch(BATCH_BYTES).map(Read::Records),
                        false => Ok(Read::Records(Vec::new())),
                    }
                }),
            };
            (reader, reached, batch)
        };
        let read = if hot {
            Ok(next())
        } else {
            tokio::task::spawn_blocking(next).await
        };
        let batch = match read {
            Ok((r, now_reached, Ok(batch))) => {
                reader = r;
                reached = now_reached;
                let (count, bytes) = batch.size();
                hot = hot || (live.is_some() && bytes < BATCH_BYTES / 2);
                if let Some(mean) = bytes.checked_div(count) {
                    large_records = mean >= BY_REFERENCE_FROM;
                }
                batch
            }
            Ok((_, _, Err(e))) => {
                // The records before a damaged one have been sent; the stream ends here,
                // saying why.
                let _ = out.send(Err(read_failure(&e))).await;
                return;
            }
            Err(e) => {
                let _ = out.send(Err(Status::internal(e.to_string()))).await;
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
        let item = match batch {
            Read::Records(batch) => {
                let records: Vec<LogRecord> = batch.into_iter().filter_map(to_proto).collect();
                if records.is_empty() {
                    continue;
                }
                LogBatch::Chunk(LogChunk { records })
            }
            Read::Spans(mut spans) => {
                spans.retain(|s| s.stream != Stream::Exit);
                let Some(file) = shared_file.clone().filter(|_| !spans.is_empty()) else {
                    continue;
                };
                LogBatch::File { file, spans }
            }
        };
        if !out.send(Ok(item)).await {
            return; // The client went away.
        }
    }
}

/// What one read of the log gave.
enum Read {
    Records(Vec<Record>),
    Spans(Vec<RecordSpan>),
}

impl Read {
    fn is_empty(&self) -> bool {
        match self {
            Read::Records(r) => r.is_empty(),
            Read::Spans(s) => s.is_empty(),
        }
    }

    /// How many records, and how many bytes they hold.
    fn size(&self) -> (usize, usize) {
        match self {
            Read::Records(r) => (r.len(), r.iter().map(|r| r.data.len()).sum()),
            Read::Spans(s) => (s.len(), s.iter().map(|s| s.len as usize).sum()),
        }
    }
}

/// The stream of a record as the API names it; `None` for the exit record (not output).
pub fn proto_stream(stream: Stream) -> Option<LogStream> {
    match stream {
        Stream::Stdout => Some(LogStream::Stdout),
        Stream::Stderr => Some(LogStream::Stderr),
        Stream::System => Some(LogStream::System),
        Stream::Exit => None,
    }
}

/// The status that ends a log stream when reading the log fails: DataLoss for a damaged
/// log, naming the first record that cannot be read; Internal for an I/O failure.
fn read_failure(e: &LogError) -> Status {
    match e {
        LogError::Corrupt { sequence, kind, .. } => Status::data_loss(format!(
            "the job's log is corrupt at sequence {sequence}: {kind}"
        )),
        LogError::Io { .. } | LogError::RecordTooLong { .. } => Status::internal(e.to_string()),
    }
}

fn to_proto(r: Record) -> Option<LogRecord> {
    let stream = proto_stream(r.stream)?;
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[tokio::test]
    async fn a_corrupt_log_ends_the_stream_with_data_loss_after_the_good_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let file = std::fs::File::create(&path).unwrap();
        let mut writer = silo_log::LogWriter::create(file, &path, u64::MAX).unwrap();
        writer.append(Stream::Stdout, b"first\n").unwrap();
        writer.append(Stream::Stderr, b"second\n").unwrap();
        drop(writer);
        // A header for record 2 claiming 4 GiB.
        let mut bad = Vec::new();
        bad.extend_from_slice(&2u64.to_le_bytes());
        bad.extend_from_slice(&0i64.to_le_bytes());
        bad.push(Stream::Stdout as u8);
        bad.extend_from_slice(&u32::MAX.to_le_bytes());
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&bad)
            .unwrap();

        let (tx, mut rx) = mpsc::channel(8);
        stream_log(path, 0, false, None, tx).await;
        let mut records = Vec::new();
        let mut end = None;
        while let Some(message) = rx.recv().await {
            match message {
                Ok(chunk) => records.extend(chunk.records),
                Err(status) => end = Some(status),
            }
        }
        let data: Vec<&[u8]> = records.iter().map(|r| &r.data[..]).collect();
        assert_eq!(data, [&b"first\n"[..], b"second\n"]);
        let end = end.expect("the stream should end with an error");
        assert_eq!(end.code(), tonic::Code::DataLoss);
        assert!(
            end.message()
                .starts_with("the job's log is corrupt at sequence 2: "),
            "{}",
            end.message()
        );
    }

    #[tokio::test]
    async fn following_from_a_sequence_not_yet_written_sends_nothing_below_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let file = std::fs::File::create(&path).unwrap();
        let mut writer = silo_log::LogWriter::create(file, &path, u64::MAX).unwrap();
        for i in 0..2 {
            writer
                .append(Stream::Stdout, format!("{i}\n").as_bytes())
                .unwrap();
        }
        let live = Arc::new(LiveJob::new(crate::store::JobRow {
            id: "a".repeat(32),
            spec: Default::default(),
            owner: "admin".into(),
            uploads: Vec::new(),
            state: silo_proto::v1::JobState::Running,
            reason: String::new(),
            exit_code: None,
            signal: None,
            created_at: 0,
            started_at: None,
            ended_at: None,
            init: None,
            usage: None,
            host_id: None,
            ..Default::default()
        }));
        let (tx, mut rx) = mpsc::channel(64);
        let reader = tokio::spawn(stream_log(path, 5, true, Some(live.clone()), tx));
        // The job writes on past the client's resume point, then ends.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        for i in 2..8 {
            writer
                .append(Stream::Stdout, format!("{i}\n").as_bytes())
                .unwrap();
            live.progress.send_modify(|g| *g += 1);
        }
        live.update(|r| r.state = silo_proto::v1::JobState::Completed);
        reader.await.unwrap();
        let mut sequences = Vec::new();
        while let Some(Ok(chunk)) = rx.recv().await {
            sequences.extend(chunk.records.iter().map(|r| r.sequence));
        }
        assert_eq!(sequences, [5, 6, 7]);
    }
}
