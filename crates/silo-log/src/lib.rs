//! The job log: one append-only file per job holding framed records
//! `(sequence, timestamp, stream, bytes)`.
//!
//! The init process of a job is the only writer ([`LogWriter`]); any number of readers
//! ([`LogReader`]) read by sequence from the same file while it grows. A reader never sees
//! a half-written record: it stops before a record whose bytes are not all on disk yet and
//! picks it up on its next call. History and live output are therefore the same cursor.
//!
//! File layout: the 8-byte magic [`MAGIC`], then records, each a 21-byte little-endian
//! header `sequence: u64, timestamp_unix_nanos: i64, stream: u8, length: u32` followed by
//! `length` bytes of data. Sequences start at 0 and increase by one per record.

mod reader;
mod record;
mod writer;

pub use reader::LogReader;
pub use record::{HEADER_LEN, MAGIC, Record, Stream};
pub use writer::LogWriter;

use std::io;
use std::path::PathBuf;

/// What can go wrong reading or writing a job log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O operation on the log file failed.
    #[error("cannot {op} log {path}: {source}")]
    Io {
        /// What was being done ("read", "append to", "open").
        op: &'static str,
        /// The log file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not a silo log or is damaged.
    #[error("log {path} is corrupt at byte {offset}: {what}")]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// Where the damage starts.
        offset: u64,
        /// What is wrong.
        what: String,
    },
}
