//! The single writer of a job log (the job's init process).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::record::{MAGIC, Stream, encode_header};
use crate::{HEADER_LEN, LogError, MAX_RECORD_LEN};

/// Appends records to a log file. Output beyond the byte cap is dropped after one
/// [`Stream::System`] record saying so; the exit record is always written. No record holds
/// more than [`MAX_RECORD_LEN`] bytes.
pub struct LogWriter {
    file: File,
    path: PathBuf,
    next_sequence: u64,
    bytes: u64,
    cap: u64,
    truncated: bool,
    /// Whether records may be spliced in from a pipe: the file is not in append mode
    /// (splice refuses such a file). Every write is at the offset `bytes` either way.
    splice: bool,
    /// The file's blocks are allocated up to here ([`Self::reserve`]); may be past its end.
    reserved_to: u64,
    /// The filesystem cannot allocate ahead (fallocate unsupported): writes find out.
    no_reserve: bool,
}

/// Blocks allocated beyond what [`LogWriter::reserve`] is asked for, so that the next
/// records rarely need another allocation.
const RESERVE_STEP: u64 = 256 << 10;

impl LogWriter {
    /// Starts a new, empty log in `file` (which must be empty and opened for writing),
    /// keeping at most `cap` bytes of output.
    pub fn create(file: File, path: &Path, cap: u64) -> Result<LogWriter, LogError> {
        file.write_all_at(MAGIC, 0).map_err(|source| LogError::Io {
            op: "write header of",
            path: path.to_owned(),
            source,
        })?;
        Ok(LogWriter {
            splice: without_append(&file),
            file,
            path: path.to_owned(),
            next_sequence: 0,
            bytes: MAGIC.len() as u64,
            cap,
            truncated: false,
            reserved_to: 0,
            no_reserve: false,
        })
    }

    /// Makes sure the next `len` bytes of records (headers included) can be written
    /// without the filesystem running out of space: allocates the file's blocks ahead of
    /// its end, 256 KiB more than asked, without changing its size (readers see only whole
    /// records written). Fails with the filesystem's error (ENOSPC, EDQUOT) when it has no
    /// room, having written and consumed nothing, so the caller can leave the output
    /// where it is (in the command's pipe, which then holds the command back) and try
    /// again later. Past the cap, or on a filesystem that cannot allocate ahead, it does
    /// nothing.
    pub fn reserve(&mut self, len: usize) -> io::Result<()> {
        let end = self.bytes.saturating_add(len as u64);
        if self.truncated || self.no_reserve || end <= self.reserved_to {
            return Ok(());
        }
        let from = self.reserved_to.max(self.bytes);
        let to = end.saturating_add(RESERVE_STEP);
        // SAFETY: fallocate on a descriptor this writer owns; it touches no memory.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                from as libc::off_t,
                (to - from) as libc::off_t,
            )
        };
        if rc == 0 {
            self.reserved_to = to;
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
                self.no_reserve = true;
                Ok(())
            }
            Some(libc::EINTR) => self.reserve(len),
            _ => Err(e),
        }
    }

    /// Gives back the blocks allocated past the log's end (the job has ended): a truncate to
    /// the size the log has frees them (a hole cannot be punched past the end on ext4).
    /// Best effort.
    pub fn release_reserve(&mut self) {
        if self.reserved_to > self.bytes {
            let _ = self.file.set_len(self.bytes);
        }
        self.reserved_to = 0;
    }

    /// Keeps at most `cap` bytes of output from now on: a writer can be created (its header
    /// written) before its cap is known.
    pub fn set_cap(&mut self, cap: u64) {
        self.cap = cap;
    }

    /// Appends `data` from `stream` as one record, or as several of at most
    /// [`MAX_RECORD_LEN`] bytes each if it is longer (nothing for empty data). Returns
    /// whether the bytes were kept (false once the cap has been reached).
    pub fn append(&mut self, stream: Stream, data: &[u8]) -> Result<bool, LogError> {
        for piece in data.chunks(MAX_RECORD_LEN) {
            if !self.append_record(stream, piece)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// [`Self::append`] for at most [`MAX_RECORD_LEN`] bytes.
    fn append_record(&mut self, stream: Stream, data: &[u8]) -> Result<bool, LogError> {
        if self.truncated {
            return Ok(false);
        }
        let room = self.cap.saturating_sub(self.bytes + HEADER_LEN as u64);
        if (data.len() as u64) > room {
            let keep = room as usize;
            if keep > 0 {
                self.write_record(stream, &data[..keep])?;
            }
            self.truncated = true;
            let note = format!(
                "silo: output truncated: the log reached its limit of {} bytes",
                self.cap
            );
            self.write_record(Stream::System, note.as_bytes())?;
            return Ok(false);
        }
        self.write_record(stream, data)?;
        Ok(true)
    }

    /// Moves `len` bytes waiting in the pipe `from` into the log as one record of `stream`
    /// without copying them through this process (splice). The caller knows that `len`
    /// bytes are in the pipe (FIONREAD) and that nothing else reads from it. Returns false,
    /// having moved nothing, when the record cannot be spliced: longer than
    /// [`MAX_RECORD_LEN`], past the cap (which [`Self::append`] handles), or a file that
    /// cannot take a splice; the caller then reads the bytes and appends them.
    ///
    /// An error may leave part of the record written (as a failed [`Self::append`] may):
    /// the log is then broken, and the rest of the bytes are still in the pipe.
    pub fn splice_from_pipe(
        &mut self,
        stream: Stream,
        from: BorrowedFd<'_>,
        len: usize,
    ) -> Result<bool, LogError> {
        let room = self.cap.saturating_sub(self.bytes + HEADER_LEN as u64);
        if !self.splice || self.truncated || len == 0 || len > MAX_RECORD_LEN || len as u64 > room {
            return Ok(false);
        }
        let failed = |source| LogError::Io {
            op: "append to",
            path: self.path.clone(),
            source,
        };
        let header = encode_header(self.next_sequence, now_nanos(), stream, len as u32);
        self.file
            .write_all_at(&header, self.bytes)
            .map_err(failed)?;
        let mut at = (self.bytes + HEADER_LEN as u64) as libc::loff_t;
        let end = at + len as libc::loff_t;
        while at < end {
            // SAFETY: splice between two descriptors this process holds open, with a
            // pointer to a local offset that outlives the call.
            let n = unsafe {
                libc::splice(
                    from.as_raw_fd(),
                    std::ptr::null_mut(),
                    self.file.as_raw_fd(),
                    &mut at,
                    (end - at) as usize,
                    libc::SPLICE_F_MOVE,
                )
            };
            match n {
                n if n > 0 => {}
                0 => return Err(failed(io::ErrorKind::UnexpectedEof.into())),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(failed(e));
                    }
                }
            }
        }
        self.next_sequence += 1;
        self.bytes += (HEADER_LEN + len) as u64;
        Ok(true)
    }

    /// Writes the final exit record (always, even past the cap). It is one record, so it
    /// may hold at most [`MAX_RECORD_LEN`] bytes; a longer one is refused with
    /// [`LogError::RecordTooLong`].
    pub fn append_exit(&mut self, status_json: &[u8]) -> Result<(), LogError> {
        self.write_record(Stream::Exit, status_json)
    }

    /// The sequence number the next record will get.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    fn write_record(&mut self, stream: Stream, data: &[u8]) -> Result<(), LogError> {
        let ts = now_nanos();
        // The one place that bounds a record: a reader refuses a longer one as corrupt.
        let len = match u32::try_from(data.len()) {
            Ok(len) if data.len() <= MAX_RECORD_LEN => len,
            _ => {
                return Err(LogError::RecordTooLong {
                    path: self.path.clone(),
                    len: data.len(),
                });
            }
        };
        let header = encode_header(self.next_sequence, ts, stream, len);
        self.write_all_vectored(&header, data)
            .map_err(|source| LogError::Io {
                op: "append to",
                path: self.path.clone(),
                source,
            })?;
        self.next_sequence += 1;
        self.bytes += (HEADER_LEN + data.len()) as u64;
        Ok(())
    }

    /// Header and data in one pwritev at the end of the log where possible, so a reader
    /// rarely sees a partial record; partial writes are finished at the known offset.
    fn write_all_vectored(&mut self, header: &[u8], data: &[u8]) -> io::Result<()> {
        let start = self.bytes;
        let total = header.len() + data.len();
        let iov = [
            libc::iovec {
                iov_base: header.as_ptr() as *mut libc::c_void,
                iov_len: header.len(),
            },
            libc::iovec {
                iov_base: data.as_ptr() as *mut libc::c_void,
                iov_len: data.len(),
            },
        ];
        let mut done = loop {
            // SAFETY: both iovecs point into slices borrowed for this call.
            let n = unsafe { libc::pwritev(self.file.as_raw_fd(), iov.as_ptr(), 2, start as i64) };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        while done < total {
            let rest: &[u8] = if done < header.len() {
                &header[done..]
            } else {
                &data[done - header.len()..]
            };
            let n = self.file.write_at(rest, start + done as u64)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            done += n;
        }
        Ok(())
    }
}

/// Nanoseconds since the Unix epoch now (0 before it).
fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Takes `file` out of append mode, which splice refuses; returns whether it is out. Each
/// write gives its offset, so the mode changes nothing else.
fn without_append(file: &File) -> bool {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl reading and setting the status flags of a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0
            && (flags & libc::O_APPEND == 0
                || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_APPEND) == 0)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::{LogReader, Record};

    #[test]
    fn room_is_allocated_ahead_without_growing_the_log_and_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let mut log = LogWriter::create(file, &path, u64::MAX).unwrap();
        log.reserve(3 << 20).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        // The file's size is what was written; its blocks are what was asked and more.
        assert_eq!(meta.len(), MAGIC.len() as u64);
        if log.no_reserve {
            return; // a filesystem without fallocate: nothing more to see
        }
        assert!(meta.blocks() * 512 >= 3 << 20, "{} blocks", meta.blocks());
        log.append(Stream::Stdout, b"hello\n").unwrap();
        log.append_exit(b"{\"code\":0}").unwrap();
        log.release_reserve();
        let meta = std::fs::metadata(&path).unwrap();
        assert!(meta.blocks() * 512 < 64 << 10, "{} blocks", meta.blocks());
        // Readers see the records and nothing of the room.
        let records: Vec<Record> = LogReader::open(&path).unwrap().read_batch(1 << 20).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(&records[0].data[..], b"hello\n");
    }
}
