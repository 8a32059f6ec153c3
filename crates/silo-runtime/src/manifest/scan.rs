//! Building a manifest from a tree on disk.

use std::fs::{self, File};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{Entry, EntryKind, Manifest, ManifestError};
use crate::hash::FileHasher;
use crate::spec::check_name;

/// The most entries a runtime's tree may hold: a manifest of that many lines is about the
/// most an archive's manifest may be (64 MiB), and the scan keeps each in memory. Python
/// with a scientific stack holds tens of thousands.
pub const MAX_ENTRIES: usize = 400_000;

impl Manifest {
    /// Describes every path under `rootfs` (not `rootfs` itself), hashing every file; at
    /// most [`MAX_ENTRIES`] of them.
    ///
    /// Symlinks are recorded, never followed. Modes are `st_mode & 0o7777`. A device
    /// node, fifo or socket is an error naming its path, and so is a name or symlink
    /// target that is not UTF-8. The result is sorted as [`Manifest`] promises.
    pub fn scan(
        rootfs: &Path,
        name: &str,
        version: &semver::Version,
    ) -> Result<Manifest, ManifestError> {
        check_name(name)?;
        let root = fs::symlink_metadata(rootfs).map_err(io_error(rootfs))?;
        if !root.is_dir() {
            return Err(ManifestError::NotADirectory {
                path: rootfs.to_owned(),
            });
        }
        let mut hasher = FileHasher::new();
        let mut entries = Vec::new();
        // Directories still to read, as paths relative to the rootfs ("" is the rootfs).
        let mut pending = vec![String::new()];
        while let Some(dir) = pending.pop() {
            let dir_path = rootfs.join(&dir);
            for dirent in fs::read_dir(&dir_path).map_err(io_error(&dir_path))? {
                let dirent = dirent.map_err(io_error(&dir_path))?;
                let file_name = dirent.file_name();
                let path = dir_path.join(&file_name);
                let Some(name) = file_name.to_str() else {
                    return Err(ManifestError::NotUtf8 { path });
                };
                let relative = if dir.is_empty() {
                    name.to_owned()
                } else {
                    format!("{dir}/{name}")
                };
                if entries.len() >= MAX_ENTRIES {
                    return Err(ManifestError::TooManyEntries {
                        path: rootfs.to_owned(),
                        limit: MAX_ENTRIES,
                    });
                }
                let entry = scan_one(&path, relative, &mut hasher)?;
                if matches!(entry.kind, EntryKind::Dir { .. }) {
                    pending.push(entry.path.clone());
                }
                entries.push(entry);
            }
        }
        entries.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        Ok(Manifest {
            name: name.to_owned(),
            version: version.clone(),
            entries,
        })
    }
}

/// Describes one path, which is not followed if it is a symlink.
fn scan_one(
    path: &Path,
    relative: String,
    hasher: &mut FileHasher,
) -> Result<Entry, ManifestError> {
    let meta = fs::symlink_metadata(path).map_err(io_error(path))?;
    let file_type = meta.file_type();
    let (meta, kind) = if file_type.is_dir() {
        let mode = meta.mode() & 0o7777;
        (meta, EntryKind::Dir { mode })
    } else if file_type.is_file() {
        let mut file = open_regular(path)?;
        // Describe what was opened, in case the path changed since the stat above.
        let meta = file.metadata().map_err(io_error(path))?;
        let (size, sha256) = hasher.hash(&mut file).map_err(io_error(path))?;
        let mode = meta.mode() & 0o7777;
        (meta, EntryKind::File { mode, size, sha256 })
    } else if file_type.is_symlink() {
        let target = fs::read_link(path).map_err(io_error(path))?;
        let target = target
            .into_os_string()
            .into_string()
            .map_err(|_| ManifestError::NotUtf8 {
                path: path.to_owned(),
            })?;
        (meta, EntryKind::Symlink { target })
    } else {
        return Err(ManifestError::UnsupportedFile {
            path: path.to_owned(),
            kind: file_kind(&file_type),
        });
    };
    Ok(Entry {
        path: relative,
        uid: meta.uid(),
        gid: meta.gid(),
        kind,
    })
}

/// Opens a path for reading only if it is a regular file, never through a symlink at its
/// last component, and without blocking should it have become a fifo.
pub(crate) fn open_regular(path: &Path) -> Result<File, ManifestError> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_error(path))?;
    let file_type = file.metadata().map_err(io_error(path))?.file_type();
    if !file_type.is_file() {
        return Err(ManifestError::UnsupportedFile {
            path: path.to_owned(),
            kind: file_kind(&file_type),
        });
    }
    Ok(file)
}

/// A word for a file type, in the words of [`EntryKind::name`] for those a runtime holds.
pub(crate) fn file_kind(file_type: &fs::FileType) -> &'static str {
    if file_type.is_fifo() {
        "fifo"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_dir() {
        "directory"
    } else if file_type.is_file() {
        "file"
    } else if file_type.is_symlink() {
        "symlink"
    } else {
        "special file"
    }
}

pub(crate) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> ManifestError + '_ {
    move |source| ManifestError::Io {
        path: PathBuf::from(path),
        source,
    }
}
