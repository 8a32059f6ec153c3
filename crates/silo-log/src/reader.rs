//! Reading a job log by sequence while its writer may still be appending.
//!
//! The file is untrusted input: a header is checked (sequence, length, stream) before
//! anything it claims is used, so damage surfaces as [`LogError::Corrupt`] and the reader
//! never allocates more than its read buffer or one record of [`MAX_RECORD_LEN`] bytes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::record::{MAGIC, Record, Stream, decode_header};
use crate::{Corruption, HEADER_LEN, LogError, MAX_RECORD_LEN};

/// A cursor over a log. Each call returns the complete records written since the last
/// call; a record still being written (or cut short on disk) is left for a later call.
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
                sequence: 0,
                kind: Corruption::BadMagic,
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
    /// end of what is written so far. Returns whether `sequence` was reached; a damaged
    /// header on the way is [`LogError::Corrupt`].
    pub fn seek_to(&mut self, sequence: u64) -> Result<bool, LogError> {
        let mut header = [0u8; HEADER_LEN];
        while self.next_sequence < sequence {
            let n = read_full_at(&self.file, &mut header, self.offset).map_err(|e| self.io(e))?;
            if n < HEADER_LEN {
                return Ok(false);
            }
            let (seq, _, stream, len) = decode_header(&header);
            self.check_header(seq, stream, len)?;
            self.offset += (HEADER_LEN as u64) + u64::from(len);
            self.next_sequence += 1;
        }
        Ok(true)
    }

    /// Reads the complete records available now, about `max_bytes` of them (always at
    /// least one when one is complete). An empty result means nothing new yet.
    ///
    /// Damage is [`LogError::Corrupt`]: the records before it are returned first, and the
    /// next call reports it (and so does every call after). Allocates at most
    /// `max_bytes` or one record of [`MAX_RECORD_LEN`] bytes and its header, whichever is
    /// more.
    pub fn read_batch(&mut self, max_bytes: usize) -> Result<Vec<Record>, LogError> {
        let want = max_bytes.max(HEADER_LEN);
        // A fresh buffer per batch: the records returned are slices of it, not copies. It
        // is not zeroed first: only what was read is ever part of it.
        let mut buf = read_at_most(&self.file, want, self.offset).map_err(|e| self.io(e))?;
        let mut n = buf.len();
        let mut spans = Vec::new();
        let mut pos = 0usize;
        loop {
            if n - pos < HEADER_LEN {
                break;
            }
            let mut header = [0u8; HEADER_LEN];
            header.copy_from_slice(&buf[pos..pos + HEADER_LEN]);
            let (seq, ts, stream, len) = decode_header(&header);
            let stream = match self.check_header(seq, stream, len) {
                Ok(stream) => stream,
                Err(e) if spans.is_empty() => return Err(e),
                // Hand out the good records first; the next call starts at the damage.
                Err(_) => break,
            };
            // At most HEADER_LEN + MAX_RECORD_LEN past `pos`, checked above.
            let end = pos + HEADER_LEN + len as usize;
            if end > n {
                if spans.is_empty() && n == want {
                    // A single record larger than the batch: read the rest of that record.
                    fill_to(&self.file, &mut buf, end, self.offset).map_err(|e| self.io(e))?;
                    if buf.len() < end {
                        break;
                    }
                    n = end;
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

    /// As [`Self::read_batch`], but reads only the records' headers: each record comes as
    /// where its bytes lie in the file ([`RecordSpan`]), for a caller that copies them
    /// straight from the file to where they go (see [`Self::file`]). One read per header,
    /// about `max_bytes` of the records' bytes and at most `max_records` records: meant for
    /// logs of large records. A record is returned once all of its bytes are in the file.
    pub fn read_spans(
        &mut self,
        max_bytes: usize,
        max_records: usize,
    ) -> Result<Vec<RecordSpan>, LogError> {
        let size = self.file.metadata().map_err(|e| self.io(e))?.len();
        let mut spans = Vec::new();
        let mut data = 0usize;
        let mut header = [0u8; HEADER_LEN];
        while data < max_bytes.max(1) && spans.len() < max_records.max(1) {
            let n = read_full_at(&self.file, &mut header, self.offset).map_err(|e| self.io(e))?;
            if n < HEADER_LEN {
                break;
            }
            let (seq, ts, stream, len) = decode_header(&header);
            let stream = match self.check_header(seq, stream, len) {
                Ok(stream) => stream,
                Err(e) if spans.is_empty() => return Err(e),
                // The good records first; the next call reports the damage.
                Err(_) => break,
            };
            let start = self.offset + HEADER_LEN as u64;
            let end = start + u64::from(len);
            if end > size {
                break;
            }
            spans.push(RecordSpan {
                sequence: seq,
                timestamp_unix_nanos: ts,
                stream,
                offset: start,
                len,
            });
            self.offset = end;
            self.next_sequence += 1;
            data += len as usize;
        }
        Ok(spans)
    }

    /// The log file this reader reads, for copying the bytes of [`RecordSpan`]s from it.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Checks the header of the record at the reader's position before anything it claims
    /// is used: the next sequence, a length a record may have, a known stream.
    fn check_header(&self, seq: u64, stream: u8, len: u32) -> Result<Stream, LogError> {
        let damage = if seq != self.next_sequence {
            Corruption::OutOfSequence {
                expected: self.next_sequence,
                found: seq,
            }
        } else if len as usize > MAX_RECORD_LEN {
            Corruption::TooLong { len }
        } else if let Some(stream) = Stream::from_byte(stream) {
            return Ok(stream);
        } else {
            Corruption::UnknownStream(stream)
        };
        Err(LogError::Corrupt {
            path: self.path.clone(),
            offset: self.offset,
            sequence: self.next_sequence,
            kind: damage,
        })
    }

    fn io(&self, source: io::Error) -> LogError {
        LogError::Io {
            op: "read",
            path: self.path.clone(),
            source,
        }
    }
}

/// A complete record of a log, by where its bytes lie in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSpan {
    /// Position in the log, from 0, without gaps.
    pub sequence: u64,
    /// When the bytes were read from the command, nanoseconds since the Unix epoch.
    pub timestamp_unix_nanos: i64,
    /// Which stream the bytes came from.
    pub stream: Stream,
    /// Where the record's bytes start in the file.
    pub offset: u64,
    /// How many bytes it holds (at most [`MAX_RECORD_LEN`]).
    pub len: u32,
}

/// Up to `len` bytes of `file` from `offset` (fewer at its end), in a buffer of capacity
/// `len` that is not zeroed before the read.
fn read_at_most(file: &File, len: usize, offset: u64) -> io::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    fill_to(file, &mut buf, len, offset)?;
    Ok(buf)
}

/// Reads on into `buf`, which holds the bytes of `file` from `offset`, until it holds `len`
/// (or the file ends); what it already holds is not read again, and the spare capacity is
/// not zeroed before the read.
fn fill_to(file: &File, buf: &mut Vec<u8>, len: usize, offset: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    buf.reserve_exact(len.saturating_sub(buf.len()));
    while buf.len() < len {
        let filled = buf.len();
        let at = offset + filled as u64;
        let spare = &mut buf.spare_capacity_mut()[..len - filled];
        let at = libc::off_t::try_from(at)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset out of range"))?;
        // SAFETY: pread writes at most `spare.len()` bytes into `spare`, memory this Vec owns
        // and does not read, and returns how many it wrote (or -1).
        let n =
            unsafe { libc::pread(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len(), at) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        // SAFETY: pread initialised the first `n` bytes of the spare capacity.
        unsafe { buf.set_len(buf.len() + n as usize) };
    }
    Ok(())
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
    use crate::record::encode_header;
    use proptest::strategy::{Just, Strategy};
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::fs::OpenOptions;

    /// The system allocator, noting the largest single allocation each thread makes, so a
    /// test can check what the reader allocates (tests run on threads of their own).
    struct LargestAllocation;

    thread_local! {
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    fn note(size: usize) {
        // try_with: a thread being torn down may still allocate.
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    }

    // SAFETY: every call is passed on unchanged to the system allocator; noting the size
    // touches only a const-initialised thread-local Cell, which never allocates.
    unsafe impl GlobalAlloc for LargestAllocation {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: the caller's guarantees for `layout` are System's.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: as for alloc.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            // SAFETY: `ptr` was allocated by System (every allocation here is), with `layout`.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: as for realloc.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: LargestAllocation = LargestAllocation;

    /// Runs `f` and returns its result with the largest single allocation it made.
    fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
        LARGEST.with(|l| l.set(0));
        let out = f();
        (out, LARGEST.with(Cell::get))
    }

    /// A log file holding the magic then `body`, byte for byte.
    fn raw_log(dir: &Path, body: &[u8]) -> PathBuf {
        let path = dir.join("log");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(body);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// One record's bytes, with whatever header fields the test wants.
    fn frame(seq: u64, stream: Stream, data: &[u8]) -> Vec<u8> {
        let mut out = encode_header(seq, 0, stream, data.len() as u32).to_vec();
        out.extend_from_slice(data);
        out
    }

    fn corruption(result: Result<Vec<Record>, LogError>) -> (u64, Corruption) {
        match result {
            Err(LogError::Corrupt { sequence, kind, .. }) => (sequence, kind),
            other => panic!("expected a corruption error, got {other:?}"),
        }
    }

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

    /// A pipe holding `data` (written whole: the pipe is made large enough).
    fn pipe_with(data: &[u8]) -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
        use std::io::Write;
        let (r, w) = std::io::pipe().unwrap();
        let (r, w) = (std::os::fd::OwnedFd::from(r), std::os::fd::OwnedFd::from(w));
        // SAFETY: F_SETPIPE_SZ on a pipe this test owns.
        unsafe {
            libc::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(&w),
                libc::F_SETPIPE_SZ,
                1 << 20,
            )
        };
        std::fs::File::from(w.try_clone().unwrap())
            .write_all(data)
            .unwrap();
        (r, w)
    }

    #[test]
    fn spliced_records_read_back_like_appended_ones_in_one_sequence() {
        use std::os::fd::AsFd;
        let dir = tempfile::tempdir().unwrap();
        // The writer's file is opened for appending, as the server opens a job's log.
        let (mut w, path) = writer(dir.path(), u64::MAX);
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (r, _w) = pipe_with(&big);
        w.append(Stream::Stdout, b"before\n").unwrap();
        assert!(
            w.splice_from_pipe(Stream::Stderr, r.as_fd(), 150_000)
                .unwrap()
        );
        assert!(
            w.splice_from_pipe(Stream::Stderr, r.as_fd(), 50_000)
                .unwrap()
        );
        w.append(Stream::Stdout, b"after\n").unwrap();
        let mut reader = LogReader::open(&path).unwrap();
        let records = reader.read_batch(1 << 20).unwrap();
        let got: Vec<(u64, Stream, Vec<u8>)> = records
            .iter()
            .map(|r| (r.sequence, r.stream, r.data.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, Stream::Stdout, b"before\n".to_vec()),
                (1, Stream::Stderr, big[..150_000].to_vec()),
                (2, Stream::Stderr, big[150_000..].to_vec()),
                (3, Stream::Stdout, b"after\n".to_vec()),
            ]
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            (MAGIC.len() + 4 * HEADER_LEN + 7 + 200_000 + 6) as u64
        );
    }

    #[test]
    fn a_splice_past_the_cap_or_a_record_moves_nothing() {
        use std::io::Read;
        use std::os::fd::AsFd;
        let dir = tempfile::tempdir().unwrap();
        let (mut w, path) = writer(dir.path(), 100_000);
        let data = vec![7u8; 120_000];
        let (r, w_end) = pipe_with(&data);
        // Past the cap: refused, for `append` to cut it and say so.
        assert!(
            !w.splice_from_pipe(Stream::Stdout, r.as_fd(), 120_000)
                .unwrap()
        );
        // Longer than a record may be: refused.
        assert!(
            !w.splice_from_pipe(Stream::Stdout, r.as_fd(), MAX_RECORD_LEN + 1)
                .unwrap()
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), MAGIC.len() as u64);
        drop(w_end);
        let mut left = Vec::new();
        std::fs::File::from(r).read_to_end(&mut left).unwrap();
        assert_eq!(left, data, "the pipe still holds every byte");
    }

    #[test]
    fn spans_name_the_same_records_as_batches_and_wait_for_a_partial_one() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, path) = writer(dir.path(), u64::MAX);
        for i in 0..40u32 {
            let data = vec![(i % 251) as u8; 1 + (i as usize * 7919) % 70_000];
            w.append(
                if i % 3 == 0 {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                },
                &data,
            )
            .unwrap();
        }
        let mut batches = LogReader::open(&path).unwrap();
        let mut want = Vec::new();
        loop {
            let b = batches.read_batch(100_000).unwrap();
            if b.is_empty() {
                break;
            }
            want.extend(b);
        }
        let mut spans = LogReader::open(&path).unwrap();
        let mut got = Vec::new();
        loop {
            let s = spans.read_spans(100_000, 1000).unwrap();
            if s.is_empty() {
                break;
            }
            for span in s {
                let mut data = vec![0u8; span.len as usize];
                spans.file().read_exact_at(&mut data, span.offset).unwrap();
                got.push(Record {
                    sequence: span.sequence,
                    timestamp_unix_nanos: span.timestamp_unix_nanos,
                    stream: span.stream,
                    data: data.into(),
                });
            }
        }
        assert_eq!(got, want);
        // A batch names at most the records it was allowed.
        let mut few = LogReader::open(&path).unwrap();
        assert_eq!(few.read_spans(usize::MAX, 3).unwrap().len(), 3);
        assert_eq!(few.next_sequence(), 3);
        // Half of a record's bytes: not returned until the rest is there.
        let mut half = frame(40, Stream::Stdout, &[9u8; 1000]);
        let rest = half.split_off(HEADER_LEN + 500);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut file, &half).unwrap();
        assert!(spans.read_spans(100_000, 1000).unwrap().is_empty());
        std::io::Write::write_all(&mut file, &rest).unwrap();
        let last = spans.read_spans(100_000, 1000).unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!((last[0].sequence, last[0].len), (40, 1000));
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
        // Bytes that differ by position: a record read from a wrong offset shows.
        let big: Vec<u8> = (0..100_000u32).map(|i| (i ^ (i >> 8)) as u8).collect();
        w.append(Stream::Stdout, &big).unwrap();
        w.append(Stream::Stdout, b"x").unwrap();
        let mut r = LogReader::open(&path).unwrap();
        let got = r.read_batch(1024).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].data[..], &big[..]);
        assert_eq!(&r.read_batch(1024).unwrap()[0].data[..], b"x");
    }

    #[test]
    fn a_record_larger_than_the_batch_still_being_written_comes_once_it_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = writer(dir.path(), u64::MAX);
        let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let header = crate::record::encode_header(0, 0, Stream::Stdout, big.len() as u32);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        use std::io::Write;
        f.write_all(&header).unwrap();
        f.write_all(&big[..60_000]).unwrap();
        let mut r = LogReader::open(&path).unwrap();
        assert!(r.read_batch(1024).unwrap().is_empty());
        f.write_all(&big[60_000..]).unwrap();
        let got = r.read_batch(1024).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].data[..], &big[..]);
        assert!(r.read_batch(1024).unwrap().is_empty());
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

    #[test]
    fn a_header_claiming_4_gib_is_corruption_and_is_never_allocated() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = frame(0, Stream::Stdout, b"fine");
        body.extend_from_slice(&encode_header(1, 0, Stream::Stdout, u32::MAX));
        body.extend_from_slice(&[0u8; 64]);
        let path = raw_log(dir.path(), &body);
        let mut r = LogReader::open(&path).unwrap();

        let (first, largest) = largest_allocation(|| r.read_batch(1024));
        assert_eq!(&first.unwrap()[0].data[..], b"fine");
        let (second, _) = largest_allocation(|| r.read_batch(1024));
        assert_eq!(
            corruption(second),
            (1, Corruption::TooLong { len: u32::MAX })
        );
        assert!(largest <= 1024, "the reader allocated {largest} bytes");

        // A batch that starts at the bad header, and a seek across it, fail the same way.
        let mut r = LogReader::open(&path).unwrap();
        r.seek_to(1).unwrap();
        let (again, largest) = largest_allocation(|| r.read_batch(16));
        assert_eq!(corruption(again).1, Corruption::TooLong { len: u32::MAX });
        assert!(
            largest <= HEADER_LEN,
            "the reader allocated {largest} bytes"
        );
        let mut r = LogReader::open(&path).unwrap();
        assert!(matches!(
            r.seek_to(5),
            Err(LogError::Corrupt {
                kind: Corruption::TooLong { .. },
                ..
            })
        ));
    }

    #[test]
    fn a_record_of_max_record_len_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = raw_log(
            dir.path(),
            &frame(0, Stream::Stdout, &vec![3u8; MAX_RECORD_LEN]),
        );
        let mut r = LogReader::open(&path).unwrap();
        let got = r.read_batch(4096).unwrap();
        assert_eq!(got[0].data.len(), MAX_RECORD_LEN);
    }

    #[test]
    fn a_sequence_that_does_not_follow_is_reported_after_the_good_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = frame(0, Stream::Stdout, b"a");
        body.extend(frame(1, Stream::Stderr, b"b"));
        body.extend(frame(7, Stream::Stdout, b"c"));
        let path = raw_log(dir.path(), &body);
        let mut r = LogReader::open(&path).unwrap();
        let got = r.read_batch(1 << 16).unwrap();
        assert_eq!(got.len(), 2);
        let expected = Corruption::OutOfSequence {
            expected: 2,
            found: 7,
        };
        assert_eq!(corruption(r.read_batch(1 << 16)), (2, expected.clone()));
        // The damage stays where it is: every later call reports it again.
        assert_eq!(corruption(r.read_batch(1 << 16)), (2, expected));
    }

    #[test]
    fn an_unknown_stream_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = encode_header(0, 0, Stream::Stdout, 1).to_vec();
        body[16] = 9;
        body.push(b'x');
        let path = raw_log(dir.path(), &body);
        let mut r = LogReader::open(&path).unwrap();
        assert_eq!(
            corruption(r.read_batch(1 << 16)),
            (0, Corruption::UnknownStream(9))
        );
    }

    #[test]
    fn a_file_that_is_not_a_log_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"#!/bin/sh\nexit 0\n").unwrap();
        assert!(matches!(
            LogReader::open(&path),
            Err(LogError::Corrupt {
                kind: Corruption::BadMagic,
                offset: 0,
                ..
            })
        ));
    }

    #[test]
    fn a_log_cut_short_mid_record_gives_the_complete_records_then_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = Vec::new();
        for i in 0..5u8 {
            body.extend(frame(u64::from(i), Stream::Stdout, &[i; 100]));
        }
        let whole = body.len();
        for cut in [whole - 1, whole - 100, whole - 101 - HEADER_LEN + 3] {
            let path = raw_log(dir.path(), &body[..cut]);
            let mut r = LogReader::open(&path).unwrap();
            let got = r.read_batch(1 << 16).unwrap();
            assert_eq!(got.len(), 4, "cut at {cut}");
            // Nothing more, however often it is asked (a writer may still finish it).
            for batch in [1, 50, 1 << 16] {
                assert!(r.read_batch(batch).unwrap().is_empty());
            }
            assert!(!r.seek_to(10).unwrap());
        }
    }

    #[test]
    fn garbage_after_the_records_is_reported_after_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut body = frame(0, Stream::Stdout, b"last good record");
        body.extend_from_slice(&[0xa5; 200]);
        let path = raw_log(dir.path(), &body);
        let mut r = LogReader::open(&path).unwrap();
        assert_eq!(r.read_batch(1 << 16).unwrap().len(), 1);
        assert_eq!(corruption(r.read_batch(1 << 16)).0, 1);
    }

    #[test]
    fn output_longer_than_a_record_is_split_into_several() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, path) = writer(dir.path(), u64::MAX);
        let big: Vec<u8> = (0..MAX_RECORD_LEN * 5 / 2).map(|i| i as u8).collect();
        assert!(w.append(Stream::Stdout, &big).unwrap());
        let mut r = LogReader::open(&path).unwrap();
        let mut got = Vec::new();
        loop {
            let batch = r.read_batch(1 << 16).unwrap();
            if batch.is_empty() {
                break;
            }
            got.extend(batch);
        }
        let lengths: Vec<usize> = got.iter().map(|r| r.data.len()).collect();
        assert_eq!(
            lengths,
            [MAX_RECORD_LEN, MAX_RECORD_LEN, MAX_RECORD_LEN / 2]
        );
        let joined: Vec<u8> = got.iter().flat_map(|r| r.data.to_vec()).collect();
        assert_eq!(joined, big);
    }

    #[test]
    fn an_exit_record_longer_than_a_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = writer(dir.path(), u64::MAX);
        let len = MAX_RECORD_LEN + 1;
        assert!(matches!(
            w.append_exit(&vec![b' '; len]),
            Err(LogError::RecordTooLong { len: l, .. }) if l == len
        ));
        assert_eq!(w.next_sequence(), 0);
    }

    /// Reads `path` to its end or its first error, as the server would, checking on the way
    /// that the records are in order and that no read allocates more than `batch` or one
    /// record. Returns the records read and the error, if any.
    fn read_all(path: &Path, batch: usize) -> (Vec<Record>, Option<LogError>) {
        let size = std::fs::metadata(path).unwrap().len() as usize;
        let mut r = LogReader::open(path).unwrap();
        let mut got: Vec<Record> = Vec::new();
        // Every non-empty batch consumes at least one header.
        for _ in 0..=size / HEADER_LEN + 1 {
            let (result, largest) = largest_allocation(|| r.read_batch(batch));
            assert!(
                largest <= batch.max(HEADER_LEN) + HEADER_LEN + MAX_RECORD_LEN,
                "a read allocated {largest} bytes"
            );
            match result {
                Ok(records) if records.is_empty() => return (got, None),
                Ok(records) => {
                    for rec in records {
                        assert_eq!(rec.sequence, got.len() as u64);
                        got.push(rec);
                    }
                }
                Err(e) => return (got, Some(e)),
            }
        }
        panic!("the reader kept returning records past the end of a {size}-byte file");
    }

    /// The log format's rules applied to a whole body in memory: the (stream, data) of each
    /// complete record in order, and whether a bad header ends them.
    fn parse_whole(mut body: &[u8]) -> (Vec<(u8, Vec<u8>)>, bool) {
        let mut records = Vec::new();
        while body.len() >= HEADER_LEN {
            let (seq, _, stream, len) = decode_header(body[..HEADER_LEN].try_into().unwrap());
            let len = len as usize;
            if seq != records.len() as u64
                || len > MAX_RECORD_LEN
                || Stream::from_byte(stream).is_none()
            {
                return (records, true);
            }
            let Some(data) = body.get(HEADER_LEN..HEADER_LEN + len) else {
                break;
            };
            records.push((stream, data.to_vec()));
            body = &body[HEADER_LEN + len..];
        }
        (records, false)
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_after_the_magic_give_records_or_corruption(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            batch in 1usize..4096,
            seek in 0u64..8,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = raw_log(dir.path(), &body);
            let (got, error) = read_all(&path, batch);
            proptest::prop_assert!(
                matches!(error, None | Some(LogError::Corrupt { .. })),
                "{:?}", error
            );
            let (expected, corrupt) = parse_whole(&body);
            proptest::prop_assert_eq!(got.len(), expected.len());
            proptest::prop_assert_eq!(error.is_some(), corrupt);
            let mut r = LogReader::open(&path).unwrap();
            let sought = r.seek_to(seek);
            proptest::prop_assert!(
                matches!(sought, Ok(_) | Err(LogError::Corrupt { .. })),
                "{:?}", sought
            );
        }

        #[test]
        fn damaged_records_give_the_good_ones_then_corruption(
            records in proptest::collection::vec(
                (
                    0u8..8,
                    0u8..6,
                    proptest::prop_oneof![
                        Just(None),
                        Just(Some(u32::MAX)),
                        (MAX_RECORD_LEN as u32 - 1..MAX_RECORD_LEN as u32 + 2).prop_map(Some),
                        (0u32..80).prop_map(Some),
                    ],
                    proptest::collection::vec(proptest::num::u8::ANY, 0..64),
                ),
                0..20,
            ),
            tail in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            batch in 1usize..512,
        ) {
            // Mostly well-formed records; some with a wrong sequence, an unknown stream, or
            // a length that does not match their data.
            let mut body = Vec::new();
            for (i, (wrong_seq, stream, claimed, data)) in records.iter().enumerate() {
                let seq = if *wrong_seq == 0 { i as u64 + 3 } else { i as u64 };
                let len = claimed.unwrap_or(data.len() as u32);
                let mut header = encode_header(seq, 0, Stream::Stdout, len);
                header[16] = *stream;
                body.extend_from_slice(&header);
                body.extend_from_slice(data);
            }
            body.extend_from_slice(&tail);
            let dir = tempfile::tempdir().unwrap();
            let path = raw_log(dir.path(), &body);
            let (got, error) = read_all(&path, batch);
            proptest::prop_assert!(
                matches!(error, None | Some(LogError::Corrupt { .. })),
                "{:?}", error
            );
            // The same records and the same verdict as the frame read naively, in one piece.
            let (expected, corrupt) = parse_whole(&body);
            let got: Vec<(u8, Vec<u8>)> =
                got.iter().map(|r| (r.stream as u8, r.data.to_vec())).collect();
            proptest::prop_assert_eq!(got, expected);
            proptest::prop_assert_eq!(error.is_some(), corrupt);
        }

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
