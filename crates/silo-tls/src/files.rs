//! Reading and writing certificate files: private directories, keys readable only by
//! their owner, and never a partly written or overwritten file.

use std::fs::{self, DirBuilder, Permissions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::TlsError;

/// Mode of private key files.
pub(crate) const KEY_MODE: u32 = 0o600;
/// Mode of certificate files: public material.
pub(crate) const CERT_MODE: u32 = 0o644;
/// Mode of directories this crate creates.
const DIR_MODE: u32 = 0o700;

/// Reads a whole PEM (or any) file; the error names the file and the reason.
pub fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|err| TlsError::read(path, err))
}

/// Creates `dir` (and missing parents) with mode 0700. An existing directory is kept as it is.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|err| TlsError::write(dir, err))
}

/// Whether `path` exists; an error (other than "not found") names the path.
pub(crate) fn exists(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(|err| TlsError::read(path, err))
}

/// Fails with [`TlsError::AlreadyExists`] for the first of `paths` that exists.
pub(crate) fn refuse_existing<'a>(
    paths: impl IntoIterator<Item = &'a PathBuf>,
) -> Result<(), TlsError> {
    for path in paths {
        if exists(path)? {
            return Err(TlsError::AlreadyExists { path: path.clone() });
        }
    }
    Ok(())
}

/// Writes `contents` to the new file `path` with `mode`.
///
/// The file appears complete or not at all: the bytes go to a temporary file in the same
/// directory, created with `mode` (so a key is never readable by others, not even
/// briefly), are synced, and are then moved into place without replacing anything. If
/// `path` already exists it is left untouched and the result is
/// [`TlsError::AlreadyExists`].
pub(crate) fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let temp = synced_temp(path, contents, mode)?;
    temp.persist_noclobber(path).map_err(|err| {
        if err.error.kind() == ErrorKind::AlreadyExists {
            TlsError::AlreadyExists {
                path: path.to_path_buf(),
            }
        } else {
            TlsError::write(path, err.error)
        }
    })?;
    Ok(())
}

/// Writes `contents` to `path` with `mode`, replacing the file if it exists: readers see
/// the old file or the new one, whole, never a mix (a synced temporary file renamed over
/// it, then the directory synced).
pub(crate) fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    let temp = synced_temp(path, contents, mode)?;
    temp.persist(path)
        .map_err(|err| TlsError::write(path, err.error))?;
    sync_dir(parent_dir(path)).map_err(|err| TlsError::write(path, err))
}

/// `contents` in a new temporary file beside `path`, created with `mode` (so a key is
/// never readable by others, not even briefly) and synced.
fn synced_temp(
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<tempfile::NamedTempFile, TlsError> {
    let mut temp = tempfile::Builder::new()
        .prefix(".silo-tls-")
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(parent_dir(path))
        .map_err(|err| TlsError::write(path, err))?;
    temp.write_all(contents)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|err| TlsError::write(path, err))?;
    Ok(temp)
}

/// Renames `from` over `to`, then syncs their directory.
pub(crate) fn rename_over(from: &Path, to: &Path) -> Result<(), TlsError> {
    fs::rename(from, to).map_err(|err| TlsError::write(to, err))?;
    sync_dir(parent_dir(to)).map_err(|err| TlsError::write(to, err))
}

/// The directory `path` is in (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Makes the renames in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}
