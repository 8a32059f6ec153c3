//! The single writer of a job log (the job's init process).

use std::fs::File;
use std::io::{self, IoSlice, Write};
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
}

impl LogWriter {
    /// Starts a new, empty log in `file` (which must be empty and opened for writing),
    /// keeping at most `cap` bytes of output.
    pub fn create(mut file: File, path: &Path, cap: u64) -> Result<LogWriter, LogError> {
        file.write_all(MAGIC).map_err(|source| LogError::Io {
            op: "write header of",
            path: path.to_owned(),
            source,
        })?;
        Ok(LogWriter {
            file,
            path: path.to_owned(),
            next_sequence: 0,
            bytes: MAGIC.len() as u64,
            cap,
            truncated: false,
        })
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
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
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

    /// Header and data in one writev where possible, so a reader rarely sees a partial
    /// record; partial writes are finished with positioned writes at the known offset.
    fn write_all_vectored(&mut self, header: &[u8], data: &[u8]) -> io::Result<()> {
        let start = self.bytes;
        let total = header.len() + data.len();
        let mut done = loop {
            match self
                .file
                .write_vectored(&[IoSlice::new(header), IoSlice::new(data)])
            {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
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
