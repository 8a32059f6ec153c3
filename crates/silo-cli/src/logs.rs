//! Reading a job's output: a cursor over the server's log stream that resumes after a
//! dropped connection, and the writer that puts each record where it belongs.

use std::io::{self, Write};
use std::time::Duration;

use silo_proto::v1::{LogChunk, LogRecord, LogStream, StreamLogsRequest};
use tonic::Streaming;

use crate::session::{CallError, Session};
use crate::view::LogRecordView;

/// How often a dropped stream is reopened before giving up.
const MAX_RESUMES: u32 = 5;

/// A position in a job's log. Every record is returned once, in sequence order, even
/// when the connection drops and the stream is reopened.
pub struct LogCursor {
    session: Session,
    id: String,
    follow: bool,
    next: u64,
    stream: Option<Streaming<LogChunk>>,
    resumes: u32,
}

impl LogCursor {
    /// A cursor at sequence `from` of job `id`; with `follow` it waits for new output
    /// until the job has ended.
    pub fn new(session: Session, id: &str, from: u64, follow: bool) -> Self {
        LogCursor {
            session,
            id: id.to_owned(),
            follow,
            next: from,
            stream: None,
            resumes: 0,
        }
    }

    /// The next records, or `None` when the log has been read to its end.
    pub async fn next_records(&mut self) -> Result<Option<Vec<LogRecord>>, CallError> {
        loop {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    let request = StreamLogsRequest {
                        id: self.id.clone(),
                        from_sequence: self.next,
                        follow: self.follow,
                    };
                    match self.session.client.stream_logs(request).await {
                        Ok(response) => self.stream.insert(response.into_inner()),
                        Err(status) => {
                            self.retry_or_fail(&status).await?;
                            continue;
                        }
                    }
                }
            };
            match stream.message().await {
                Ok(Some(chunk)) => {
                    let records: Vec<LogRecord> = chunk
                        .records
                        .into_iter()
                        .filter(|record| record.sequence >= self.next)
                        .collect();
                    if let Some(last) = records.last() {
                        self.next = last.sequence.saturating_add(1);
                        self.resumes = 0;
                    }
                    return Ok(Some(records));
                }
                Ok(None) => return Ok(None),
                Err(status) => {
                    self.stream = None;
                    self.retry_or_fail(&status).await?;
                }
            }
        }
    }

    /// Waits before reopening a dropped stream; fails for any other error, or when the
    /// connection keeps dropping.
    async fn retry_or_fail(&mut self, status: &tonic::Status) -> Result<(), CallError> {
        if status.code() != tonic::Code::Unavailable || self.resumes >= MAX_RESUMES {
            return Err(self.session.error(status));
        }
        self.resumes += 1;
        tokio::time::sleep(Duration::from_millis(200) * self.resumes).await;
        Ok(())
    }
}

/// Where records go: raw bytes to stdout and stderr (silo's own messages to stderr,
/// prefixed with "silo: "), or one JSON object per line on stdout.
pub struct RecordWriter {
    json: bool,
}

impl RecordWriter {
    /// A writer of raw output, or of JSON lines when `json`.
    pub fn new(json: bool) -> Self {
        RecordWriter { json }
    }

    /// Writes and flushes `records`, so output appears as the job produces it.
    pub fn write(&mut self, records: &[LogRecord]) -> io::Result<()> {
        if self.json {
            let mut out = io::stdout().lock();
            for record in records {
                serde_json::to_writer(&mut out, &LogRecordView::from(record))?;
                out.write_all(b"\n")?;
            }
            return out.flush();
        }
        for record in records {
            match LogStream::try_from(record.stream) {
                Ok(LogStream::Stderr) => write_flush(&mut io::stderr().lock(), &record.data)?,
                Ok(LogStream::System) => {
                    write_flush(&mut io::stderr().lock(), &system_message(&record.data))?
                }
                _ => write_flush(&mut io::stdout().lock(), &record.data)?,
            }
        }
        Ok(())
    }
}

fn write_flush(out: &mut impl Write, data: &[u8]) -> io::Result<()> {
    out.write_all(data)?;
    out.flush()
}

/// A message from silo itself as printed on stderr: every line prefixed with "silo: ",
/// ending in a newline.
pub fn system_message(data: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(data);
    let mut out = Vec::with_capacity(data.len() + 8);
    for line in text.trim_end_matches('\n').split('\n') {
        out.extend_from_slice(b"silo: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_messages_are_prefixed_line_by_line() {
        assert_eq!(
            system_message(b"output truncated at 1 GiB\n"),
            b"silo: output truncated at 1 GiB\n"
        );
        assert_eq!(system_message(b"a\nb"), b"silo: a\nsilo: b\n");
    }
}
