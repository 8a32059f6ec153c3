//! Reading and writing cgroup interface files, with errors that name the file, the cgroup
//! and the errno.
//!
//! Files are never created: a missing interface file means the kernel does not offer it here,
//! and callers turn that into [`CgroupError::Unsupported`] or "not measured".

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{CgroupError, Result};

/// Writes `value` to `dir/file` in one `write(2)`, as the kernel wants.
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let fail = |cause| CgroupError::Write {
        file: file.to_owned(),
        dir: dir.to_owned(),
        value: value.to_owned(),
        cause,
    };
    let mut handle = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(dir.join(file))
        .map_err(fail)?;
    handle.write_all(value.as_bytes()).map_err(fail)
}

/// Reads `dir/file` whole.
pub(crate) fn read(dir: &Path, file: &str) -> Result<String> {
    read_whole(&dir.join(file)).map_err(|cause| CgroupError::read(dir, file, cause))
}

/// Reads `dir/file`, or `None` when the kernel does not offer it.
pub(crate) fn read_optional(dir: &Path, file: &str) -> Result<Option<String>> {
    match read_whole(&dir.join(file)) {
        Ok(text) => Ok(Some(text)),
        Err(cause) if cause.kind() == ErrorKind::NotFound => Ok(None),
        Err(cause) => Err(CgroupError::read(dir, file, cause)),
    }
}

/// The text of an interface file: open, read into a stack buffer until end of file, close.
/// `std::fs::read_to_string` asks for the file's size first (a cgroup file says 0) and
/// then grows its buffer from 32 bytes: five to seven system calls for a one-line file,
/// where this makes four.
fn read_whole(path: &Path) -> std::io::Result<String> {
    read_from_start(&File::open(path)?)
}

/// The interface files of one cgroup that are read again and again (its usage), each
/// opened the first time it is read and kept open: opening a cgroup file walks its path and,
/// the first time in a new cgroup, makes the file's dentry and inode, while reading an open
/// one again from offset 0 makes the kernel generate its text anew (seq_file). A job's
/// usage, read when it ends, then costs one `pread` per file. A file the kernel does not
/// offer is remembered as missing.
#[derive(Debug, Default)]
pub(crate) struct HeldFiles {
    files: Mutex<Vec<(PathBuf, Option<Arc<File>>)>>,
}

impl HeldFiles {
    /// Reads `dir/file`, or `None` when the kernel does not offer it.
    pub(crate) fn read_optional(&self, dir: &Path, file: &str) -> Result<Option<String>> {
        let failed = |cause| CgroupError::read(dir, file, cause);
        let path = dir.join(file);
        let held = self.files.lock().ok().and_then(|files| {
            files
                .iter()
                .find(|(held, _)| *held == path)
                .map(|(_, open)| open.clone())
        });
        let open = match held {
            Some(open) => open,
            None => {
                let open = match File::open(&path) {
                    Ok(opened) => Some(Arc::new(opened)),
                    Err(cause) if cause.kind() == ErrorKind::NotFound => None,
                    Err(cause) => return Err(failed(cause)),
                };
                if let Ok(mut files) = self.files.lock() {
                    files.push((path, open.clone()));
                }
                open
            }
        };
        match open {
            Some(open) => read_from_start(&open).map(Some).map_err(failed),
            None => Ok(None),
        }
    }

    /// A number of what is in use now (memory, processes): 0 without reading, once
    /// `ended` (nothing of the job runs any more), else as [`HeldFiles::read_number`].
    pub(crate) fn read_now(&self, dir: &Path, file: &str, ended: bool) -> Result<Option<u64>> {
        match ended {
            true => Ok(Some(0)),
            false => self.read_number(dir, file),
        }
    }

    /// Reads a file holding one number, or `None` when it is missing (see [`read_number`]).
    pub(crate) fn read_number(&self, dir: &Path, file: &str) -> Result<Option<u64>> {
        match self.read_optional(dir, file)? {
            Some(text) => number_in(&text, dir, file).map(Some),
            None => Ok(None),
        }
    }

    /// Reads one key of a flat-keyed file (see [`read_key`]).
    pub(crate) fn read_key(&self, dir: &Path, file: &str, key: &str) -> Result<Option<u64>> {
        match self.read_optional(dir, file)? {
            Some(text) => key_in(&text, dir, file, key),
            None => Ok(None),
        }
    }
}

/// The text of an open interface file, read with `pread` from offset 0 to end of file.
fn read_from_start(file: &File) -> std::io::Result<String> {
    let mut chunk = [0u8; 4096];
    let mut bytes = Vec::new();
    loop {
        match file.read_at(&mut chunk, bytes.len() as u64) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))
}

/// Reads a file holding one number (e.g. `pids.current`), or `None` when it is missing.
pub(crate) fn read_number(dir: &Path, file: &str) -> Result<Option<u64>> {
    match read_optional(dir, file)? {
        Some(text) => number_in(&text, dir, file).map(Some),
        None => Ok(None),
    }
}

/// The number that is the whole `text` read from `dir/file`.
fn number_in(text: &str, dir: &Path, file: &str) -> Result<u64> {
    let text = text.trim();
    text.parse()
        .map_err(|_| CgroupError::parse(dir, file, format!("{text:?} is not a number")))
}

/// Reads one key of a flat-keyed file ("key value" per line, e.g. `cpu.stat`), or `None`
/// when the file or the key is missing.
pub(crate) fn read_key(dir: &Path, file: &str, key: &str) -> Result<Option<u64>> {
    let Some(text) = read_optional(dir, file)? else {
        return Ok(None);
    };
    key_in(&text, dir, file, key)
}

/// One key of the flat-keyed `text` read from `dir/file` (see [`read_key`]): for files
/// whose several keys are wanted, read once.
pub(crate) fn key_in(text: &str, dir: &Path, file: &str, key: &str) -> Result<Option<u64>> {
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some(key) {
            let value = words.next().unwrap_or("");
            return value.parse().map(Some).map_err(|_| {
                CgroupError::parse(
                    dir,
                    file,
                    format!("{key} has value {value:?}, not a number"),
                )
            });
        }
    }
    Ok(None)
}

/// The value of `key` in the text of a flat-keyed file, if present and a number.
pub(crate) fn parse_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(key)).then(|| words.next()?.parse().ok())?
    })
}

/// The processes listed in `dir/cgroup.procs`.
pub(crate) fn procs(dir: &Path) -> Result<Vec<i32>> {
    let text = read(dir, "cgroup.procs")?;
    text.split_whitespace()
        .map(|word| {
            word.parse().map_err(|_| {
                CgroupError::parse(dir, "cgroup.procs", format!("{word:?} is not a pid"))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writing_a_missing_file_fails_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = write(dir.path(), "memory.max", "1").unwrap_err();
        assert!(err.is_missing_file(), "{err}");
        assert!(!dir.path().join("memory.max").exists());
        assert!(
            err.to_string().starts_with("cannot write memory.max in "),
            "{err}"
        );
        assert!(err.to_string().contains("ENOENT"), "{err}");
    }

    #[test]
    fn a_key_is_read_from_a_flat_keyed_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n",
        )
        .unwrap();
        assert_eq!(
            read_key(dir.path(), "cpu.stat", "user_usec").unwrap(),
            Some(1000)
        );
        assert_eq!(
            read_key(dir.path(), "cpu.stat", "throttled_usec").unwrap(),
            None
        );
        assert_eq!(read_key(dir.path(), "missing.stat", "x").unwrap(), None);
    }

    #[test]
    fn garbage_in_a_number_file_is_a_parse_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pids.current"), "many\n").unwrap();
        let err = read_number(dir.path(), "pids.current").unwrap_err();
        assert!(matches!(err, CgroupError::Parse { .. }));
        assert!(err.to_string().contains("pids.current"), "{err}");
    }
}
