//! The record frame shared by the writer and the reader.

/// First bytes of every log file; the digit is the format version.
pub const MAGIC: &[u8; 8] = b"SILOLOG1";

/// Size of a record header in bytes.
pub const HEADER_LEN: usize = 8 + 8 + 1 + 4;

/// The most data bytes one record holds. The writer splits longer output into several
/// records, and a reader treats a header claiming more as corruption, so a damaged or
/// forged length never makes it allocate more than this (plus its read buffer).
///
/// Far above what the init appends at once (its 128 KiB read chunks).
pub const MAX_RECORD_LEN: usize = 1 << 20;

/// Where a record's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stream {
    /// The command's standard output.
    Stdout = 1,
    /// The command's standard error.
    Stderr = 2,
    /// A message from silo itself, such as a truncation notice.
    System = 3,
    /// The job's exit status, written once as the last record (JSON). Not user output.
    Exit = 4,
}

impl Stream {
    /// The stream for a header byte, or `None` for an unknown value.
    pub fn from_byte(b: u8) -> Option<Stream> {
        match b {
            1 => Some(Stream::Stdout),
            2 => Some(Stream::Stderr),
            3 => Some(Stream::System),
            4 => Some(Stream::Exit),
            _ => None,
        }
    }
}

/// One record read back from a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the log, from 0, without gaps.
    pub sequence: u64,
    /// When the bytes were read from the command, nanoseconds since the Unix epoch.
    pub timestamp_unix_nanos: i64,
    /// Which stream the bytes came from.
    pub stream: Stream,
    /// The bytes, exactly as the command wrote them (a slice of the reader's buffer).
    pub data: bytes::Bytes,
}

pub(crate) fn encode_header(seq: u64, ts: i64, stream: Stream, len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..8].copy_from_slice(&seq.to_le_bytes());
    h[8..16].copy_from_slice(&ts.to_le_bytes());
    h[16] = stream as u8;
    h[17..21].copy_from_slice(&len.to_le_bytes());
    h
}

pub(crate) fn decode_header(h: &[u8; HEADER_LEN]) -> (u64, i64, u8, u32) {
    let mut u = [0u8; 8];
    u.copy_from_slice(&h[0..8]);
    let seq = u64::from_le_bytes(u);
    u.copy_from_slice(&h[8..16]);
    let ts = i64::from_le_bytes(u);
    let mut l = [0u8; 4];
    l.copy_from_slice(&h[17..21]);
    (seq, ts, h[16], u32::from_le_bytes(l))
}
