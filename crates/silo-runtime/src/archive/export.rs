//! Writing a version directory as an archive.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::{ArchiveError, MANIFEST_ENTRY, ROOTFS_PREFIX, SIGNATURE_ENTRY, SPEC_ENTRY};
use crate::layout::VersionDir;
use crate::manifest::{EntryKind, Manifest, ManifestError};

/// Writes the version directory as an archive (see [the module](super)) to `out`,
/// streaming: memory use does not grow with the runtime's size. `progress` is called
/// with the number of tar bytes produced so far (before compression), many times along
/// the way.
///
/// The files are written as stored and not re-hashed: the receiver checks them against
/// the signed manifest. A file whose type or size no longer matches the manifest is an
/// error naming it.
pub fn export(
    version: &VersionDir,
    out: impl Write,
    progress: impl FnMut(u64),
) -> Result<(), ArchiveError> {
    let read = |path: PathBuf| {
        fs::read(&path).map_err(|source| ArchiveError::Io {
            action: "read",
            path,
            source,
        })
    };
    let manifest_bytes = read(version.manifest())?;
    let signature = read(version.signature())?;
    let spec = read(version.spec())?;
    let manifest = Manifest::from_bytes(&manifest_bytes).map_err(ArchiveError::Manifest)?;

    let encoder =
        zstd::stream::write::Encoder::new(out, super::ZSTD_LEVEL).map_err(ArchiveError::Write)?;
    let mut builder = tar::Builder::new(CountingWriter {
        // tar writes 512-byte headers one by one; batch them into large writes.
        inner: io::BufWriter::with_capacity(1 << 20, encoder),
        written: 0,
        failed: false,
        progress,
    });
    for (name, bytes) in [
        (MANIFEST_ENTRY, &manifest_bytes),
        (SIGNATURE_ENTRY, &signature),
        (SPEC_ENTRY, &spec),
    ] {
        let mut header = header(EntryType::Regular, 0o644, 0, 0);
        header.set_size(bytes.len() as u64);
        let result = builder.append_data(&mut header, name, bytes.as_slice());
        check(&builder, result, Path::new(name))?;
    }

    let rootfs = version.rootfs();
    for entry in &manifest.entries {
        let name = format!("{ROOTFS_PREFIX}{}", entry.path);
        let path = rootfs.join(&entry.path);
        let result = match &entry.kind {
            EntryKind::Dir { mode } => {
                let mut header = header(EntryType::Directory, *mode, entry.uid, entry.gid);
                builder.append_data(&mut header, format!("{name}/"), io::empty())
            }
            EntryKind::File { mode, size, .. } => {
                let file = open_file(&path, *size)?;
                let mut header = header(EntryType::Regular, *mode, entry.uid, entry.gid);
                header.set_size(*size);
                let reader = ExactReader {
                    file,
                    remaining: *size,
                };
                builder.append_data(&mut header, &name, reader)
            }
            EntryKind::Symlink { target } => {
                let mut header = header(EntryType::Symlink, 0o777, entry.uid, entry.gid);
                builder.append_link(&mut header, &name, target)
            }
        };
        check(&builder, result, &path)?;
    }
    let result = builder.finish();
    check(&builder, result, &rootfs)?;
    let out = builder.into_inner().map_err(ArchiveError::Write)?;
    let encoder = out
        .inner
        .into_inner()
        .map_err(|e| ArchiveError::Write(e.into_error()))?;
    let mut out = encoder.finish().map_err(ArchiveError::Write)?;
    out.flush().map_err(ArchiveError::Write)
}

fn header(kind: EntryType, mode: u32, uid: u32, gid: u32) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(uid.into());
    header.set_gid(gid.into());
    header.set_mtime(0);
    header.set_size(0);
    header
}

/// Opens a rootfs file for export, checking that it still is a file of its manifest size.
fn open_file(path: &Path, size: u64) -> Result<File, ArchiveError> {
    let changed = |reason: String| ArchiveError::TreeChanged {
        path: path.to_owned(),
        reason,
    };
    let file = crate::manifest::open_regular(path).map_err(|e| match e {
        ManifestError::Io { path, source } => ArchiveError::Io {
            action: "open",
            path,
            source,
        },
        other => changed(other.to_string()),
    })?;
    let actual = file
        .metadata()
        .map_err(|source| ArchiveError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        })?
        .len();
    if actual != size {
        return Err(changed(format!("size {actual}, the manifest says {size}")));
    }
    Ok(file)
}

/// Turns a builder error into the archive's error: the writer's failure, or the file's.
fn check<W: Write, F: FnMut(u64)>(
    builder: &tar::Builder<CountingWriter<W, F>>,
    result: io::Result<()>,
    path: &Path,
) -> Result<(), ArchiveError> {
    result.map_err(|source| {
        if builder.get_ref().failed {
            ArchiveError::Write(source)
        } else {
            ArchiveError::Io {
                action: "archive",
                path: path.to_owned(),
                source,
            }
        }
    })
}

/// Counts the bytes written (into its buffer) and reports them; remembers whether writing failed, to tell
/// a failed output from a failed input.
struct CountingWriter<W: Write, F> {
    inner: io::BufWriter<W>,
    written: u64,
    failed: bool,
    progress: F,
}

impl<W: Write, F: FnMut(u64)> Write for CountingWriter<W, F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.inner.write(buf) {
            Ok(n) => {
                self.written += n as u64;
                (self.progress)(self.written);
                Ok(n)
            }
            Err(e) => {
                self.failed = e.kind() != io::ErrorKind::Interrupted;
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

/// Reads exactly `remaining` bytes of a file: a file that shrank since it was measured is
/// an error, one that grew is cut (its hash will not match at the receiver).
struct ExactReader {
    file: File,
    remaining: u64,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let limit = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..limit])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank since its manifest was made",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}
