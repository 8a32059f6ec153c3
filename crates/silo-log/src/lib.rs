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
//! `length` bytes of data, at most [`MAX_RECORD_LEN`]. Sequences start at 0 and increase by
//! one per record. A reader reports anything else as [`LogError::Corrupt`], never by
//! panicking or by allocating what a damaged header claims.

mod reader;
mod record;
mod writer;

pub use reader::{LogReader, RecordSpan};
pub use record::{HEADER_LEN, MAGIC, MAX_RECORD_LEN, Record, Stream};
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
    /// The file is not a silo log or is damaged. Records before the damage have been
    /// returned; nothing after it can be.
    #[error("log {path} is corrupt at byte {offset} (record {sequence}): {kind}")]
    Corrupt {
        /// The log file.
        path: PathBuf,
        /// Where the damage starts: the first byte of the bad header (or of the file).
        offset: u64,
        /// The sequence number the damaged record should have had.
        sequence: u64,
        /// What is wrong.
        kind: Corruption,
    },
    /// A record was to be written with more than [`MAX_RECORD_LEN`] bytes of data in one
    /// piece (only the exit record cannot be split).
    #[error("cannot append to log {path}: a record of {len} bytes exceeds the {max} bytes one record may hold", max = MAX_RECORD_LEN)]
    RecordTooLong {
        /// The log file.
        path: PathBuf,
        /// The record's length.
        len: usize,
    },
}

/// How a log is damaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    /// The file does not start with [`MAGIC`].
    #[error("not a silo log (bad magic)")]
    BadMagic,
    /// A header's sequence number is not the one after the previous record's.
    #[error("expected record {expected} but found {found}")]
    OutOfSequence {
        /// The sequence that should come next.
        expected: u64,
        /// The sequence the header holds.
        found: u64,
    },
    /// A header claims more than [`MAX_RECORD_LEN`] bytes of data.
    #[error("a record claims {len} bytes, more than the {max} one record may hold", max = MAX_RECORD_LEN)]
    TooLong {
        /// The length the header holds.
        len: u32,
    },
    /// A header's stream byte is not a known [`Stream`].
    #[error("unknown stream {0}")]
    UnknownStream(u8),
}
