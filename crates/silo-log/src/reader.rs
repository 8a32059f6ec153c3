//! Reading a job log by sequence while its writer may still be appending.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::record::{MAGIC, Record, Stream, decode_header};
use crate::{HEADER_LEN, LogError};

/// A cursor over a log. Each call returns the complete records written since the last
/// call; a record still being written is left for a later call.
pub struct LogReader {
    file: File,
    path: PathBuf,
    offset: u64,
    next_sequence: u64,
}

impl LogReader {
    /// Opens the log at `path` positioned at its first record.
    pub fn open(path: &Path) -> Result<LogReader, LogError> {
        let file = File::open(path).map_err(|source| LogError::Io {
            op: "open",
            path: path.to_owned(),
            source,
        })?;
        let mut magic = [0u8; 8];
        let n = read_full_at(&file, &mut magic, 0).map_err(|source| LogError::Io {
            op: "read",
            path: path.to_owned(),
            source,
        })?;
        if n == magic.len() && &magic != MAGIC {
            return Err(LogError::Corrupt {
                path: path.to_owned(),
                offset: 0,
                what: "not a silo log (bad magic)".into(),
            });
        }
        Ok(LogReader {
            file,
            path: path.to_owned(),
            offset: MAGIC.len() as u64,
            next_sequence: 0,
        })
    }

    /// The sequence number of the next record this reader will return.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Skips forward (reading headers only) until the next record is `sequence` or the
    /// end of what is written so far. Returns whether `sequence` was reached.
    pub fn seek_to(&mut self, sequence: u64) -> Result<bool, LogError> {
        let mut header = [0u8; HEADER_LEN];
        while self.next_sequence < sequence {
            let n = read_full_at(&self.file, &mut header, self.offset).map_err(|e| self.io(e))?;
            if n < HEADER_LEN {
                return Ok(false);
            }
            let (seq, _, _, len) = decode_header(&header);
            self.check_sequence(seq)?;
            self.offset += (HEADER_LEN as u64) + u64::from(len);
            self.next_sequence += 1;
        }
        Ok(true)
    }

    /// Reads the complete records available now, about `max_bytes` of them (always at
    /// least one when one is complete). An empty result means nothing new yet.
    pub fn read_batch(&mut self, max_bytes: usize) -> Result<Vec<Record>, LogError> {
        let want = max_bytes.max(HEADER_LEN);
        // A fresh buffer per batch: the records returned are slices of it, not copies.
        let mut buf = vec![0u8; want];
        let mut n = read_full_at(&self.file, &mut buf, self.offset).map_err(|e| self.io(e))?;
        let mut spans = Vec::new();
        let mut pos = 0usize;
        loop {
            if n - pos < HEADER_LEN {
                break;
            }
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(&buf[pos..pos + HEADER_LEN]);
            let (seq, ts, stream, len) = decode_header(&header);
            self.check_sequence(seq)?;
            let stream = Stream::from_byte(stream).ok_or_else(|| LogError::Corrupt {
                path: self.path.clone(),
                offset: self.offset,
                what: format!("unknown stream {stream}"),
            })?;
            let end = pos + HEADER_LEN + len as usize;
            if end > n {
                if spans.is_empty() && n == want {
                    // A single record larger than the batch: read exactly that record.
                    buf.resize(end, 0);
                    let got = read_full_at(&self.file, &mut buf[..end], self.offset)
                        .map_err(|e| self.io(e))?;
                    if got < end {
                        break;
                    }
                    n = got;
                    continue;
                }
                break;
            }
            spans.push((seq, ts, stream, pos + HEADER_LEN, end));
            self.offset += (end - pos) as u64;
            self.next_sequence += 1;
            pos = end;
        }
        buf.truncate(pos);
        let buf = bytes::Bytes::from(buf);
        Ok(spans
            .into_iter()
            .map(|(sequence, ts, stream, start, end)| Record {
                sequence,
                timestamp_unix_nanos: ts,
                stream,
                data: buf.slice(start..end),
            })
            .collect())
    }

    fn check_sequence(&self, seq: u64) -> Result<(), LogError> {
        if seq != self.next_sequence {
            return Err(LogError::Corrupt {
                path: self.path.clone(),
                offset: self.offset,
                what: format!("expected record {} but found {seq}", self.next_sequence),
            });
        }
        Ok(())
    }

    fn io(&self, source: io::Error) -> LogError {
        LogError::Io {
            op: "read",
            path: self.path.clone(),
            source,
        }
    }
}

/// Reads until `buf` is full or the end of the file; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogWriter;
    use std::fs::OpenOptions;

    fn writer(dir: &Path, cap: u64) -> (LogWriter, PathBuf) {
        let path = dir.join("log");
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .unwrap();
        (LogWriter::create(file, &path, cap).unwrap(), path)
    }

    #[test]
    fn reader_sees_every_record_once_in_order_while_the_writer_appends() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, path) = writer(dir.path(), u64::MAX);
        let mut r = LogReader::open(&path).unwrap();
        let mut seen = Vec::new();
        for i in 0..1000u32 {
            w.append(Stream::Stdout, format!("line {i}\n").as_bytes())
                .unwrap();
            if i % 7 == 0 {
                seen.extend(r.read_batch(100).unwrap());
            }
        }
        loop {
            let batch = r.read_batch(4096).unwrap();
            if batch.is_empty() {
                break;
            }
            seen.extend(batch);
        }
        assert_eq!(seen.len(), 1000);
        for (i, rec) in seen.iter().enumerate() {
            assert_eq!(rec.sequence, i as u64);
            assert_eq!(&rec.data[..], format!("line {i}\n").as_bytes());
        }
    }

    #[test]
    fn a_partially_written_record_is_not_returned_until_complete() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, path) = writer(dir.path(), u64::MAX);
        w.append(Stream::Stdout, b"hello").unwrap();
        // Simulate a torn write: append half of a second record by hand.
        let whole = std::fs::read(&path).unwrap();
        let rec_len = whole.len() - MAGIC.len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        use std::io::Write;
        let second = crate::record::encode_header(1, 0, Stream::Stderr, 3);
        f.write_all(&second[..10]).unwrap();
        let mut r = LogReader::open(&path).unwrap();
        let got = r.read_batch(1 << 16).unwrap();
        assert_eq!(got.len(), 1);
        assert!(r.read_batch(1 << 16).unwrap().is_empty());
        f.write_all(&second[10..]).unwrap();
        f.write_all(b"abc").unwrap();
        let got = r.read_batch(1 << 16).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].data[..], b"abc");
        assert!(rec_len > HEADER_LEN);
    }

    #[test]
    fn a_record_larger_than_the_batch_is_still_returned() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, path) = writer(dir.path(), u64::MAX);
        let big = vec![7u8; 100_000];
        w.append(Stream::Stdout, &big).unwrap();
        w.append(Stream::Stdout, b"x").unwrap();
        let mut r = LogReader::open(&path).unwrap();
        let got = r.read_batch(1024).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].data[..], &big[..]);
        assert_eq!(&r.read_batch(1024).unwrap()[0].data[..], b"x");
    }

    #[test]
    fn seek_resumes_from_a_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, path) = writer(dir.path(), u64::MAX);
        for i in 0..50u8 {
            w.append(Stream::Stdout, &[i]).unwrap();
        }
        let mut r = LogReader::open(&path).unwrap();
        assert!(r.seek_to(42).unwrap());
        let got = r.read_batch(1 << 16).unwrap();
        assert_eq!(got.first().unwrap().sequence, 42);
        assert_eq!(&got.first().unwrap().data[..], [42]);
        assert_eq!(got.len(), 8);
        let mut r = LogReader::open(&path).unwrap();
        assert!(!r.seek_to(99).unwrap());
        assert_eq!(r.next_sequence(), 50);
    }

    #[test]
    fn output_past_the_cap_ends_with_one_truncation_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, path) = writer(dir.path(), 200);
        for _ in 0..20 {
            w.append(Stream::Stdout, &[b'a'; 30]).unwrap();
        }
        w.append_exit(br#"{"code":0}"#).unwrap();
        let mut r = LogReader::open(&path).unwrap();
        let got = r.read_batch(1 << 16).unwrap();
        let system: Vec<_> = got.iter().filter(|r| r.stream == Stream::System).collect();
        assert_eq!(system.len(), 1);
        assert!(String::from_utf8_lossy(&system[0].data).contains("truncated"));
        assert_eq!(got.last().unwrap().stream, Stream::Exit);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 200 + 200, "log is {size} bytes");
    }

    proptest::proptest! {
        #[test]
        fn any_sequence_of_writes_reads_back_identically(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..300), 0..60), batch in 1usize..2000) {
            let dir = tempfile::tempdir().unwrap();
            let (mut w, path) = writer(dir.path(), u64::MAX);
            for c in &chunks {
                w.append(Stream::Stderr, c).unwrap();
            }
            let mut r = LogReader::open(&path).unwrap();
            let mut got = Vec::new();
            loop {
                let b = r.read_batch(batch).unwrap();
                if b.is_empty() { break; }
                got.extend(b.into_iter().map(|r| r.data.to_vec()));
            }
            proptest::prop_assert_eq!(got, chunks);
        }
    }
}
