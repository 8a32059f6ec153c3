//! The object store: every runtime file kept once by content, as OSTree does.
//!
//! An object is a hard link named `<dir>/<first 2 hex>/<sha256 hex>.<mode>.<uid>.<gid>`
//! (mode as four octal digits). Interning a runtime replaces each of its files by a hard
//! link to the object with the same content, mode and owner; the mode and owner are part
//! of the name because hard links share one inode, and so its mode and owner. An object
//! whose link count is 1 is used by no runtime and can be collected.
//!
//! The store and the runtimes must be on one filesystem. Interning and collecting must
//! not run at the same time (the caller holds a lock); several interns may.

use std::collections::HashMap;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::manifest::{Entry, EntryKind, Manifest};

/// Why the store could not be opened, filled or collected.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed on a path.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "hard-link into the store".
        action: &'static str,
        /// The path it failed on.
        path: PathBuf,
        /// The system's reason (EXDEV: the store and the runtime are on different
        /// filesystems).
        source: io::Error,
    },
    /// A file in the rootfs does not match its manifest entry, so it cannot be stored
    /// under the entry's name (verify the tree first).
    #[error("{} does not match the manifest: {reason}", path.display())]
    Mismatch {
        /// The file in the rootfs.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
}

/// What one [`ObjectStore::intern`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InternStats {
    /// File entries of the manifest, each now a link to its object (files that already
    /// were count here and in neither byte count).
    pub files: u64,
    /// Bytes of files that became new objects (content the store did not have).
    pub new_bytes: u64,
    /// Bytes of files replaced by a link to an object the store already had.
    pub shared_bytes: u64,
}

/// A directory of objects, each a file shared by hard links with every runtime that
/// holds the same content, mode and owner.
#[derive(Debug, Clone)]
pub struct ObjectStore {
    dir: PathBuf,
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

impl ObjectStore {
    /// Opens the store in `dir`, creating it (mode 0700, with missing parents) if absent.
    pub fn open(dir: &Path) -> Result<ObjectStore, StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error("create the object store", dir))?;
        Ok(ObjectStore {
            dir: dir.to_owned(),
        })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the object for a file entry lives (whether or not it exists); `None` for a
    /// directory or symlink. The mode in the name is the installed mode (without setuid
    /// and setgid).
    pub fn object_path(&self, entry: &Entry) -> Option<PathBuf> {
        let EntryKind::File { sha256, .. } = &entry.kind else {
            return None;
        };
        let mode = entry.kind.installed_mode()?;
        let hex = hex::encode(sha256);
        Some(
            self.dir
                .join(&hex[..2])
                .join(format!("{hex}.{mode:04o}.{}.{}", entry.uid, entry.gid)),
        )
    }

    /// Makes every file of `rootfs` a hard link to its object: a file whose object
    /// exists is replaced by a link to it (atomically, by renaming a link over it); a file
    /// whose object does not exist becomes the object.
    ///
    /// The tree must already match the manifest (see [`crate::manifest::verify_tree`]);
    /// each file's type, mode, owner and size are checked again and a mismatch is an
    /// error, but its content is not re-hashed.
    pub fn intern(&self, rootfs: &Path, manifest: &Manifest) -> Result<InternStats, StoreError> {
        let mut stats = InternStats::default();
        for entry in &manifest.entries {
            let (Some(object), EntryKind::File { size, .. }) =
                (self.object_path(entry), &entry.kind)
            else {
                continue;
            };
            let path = rootfs.join(&entry.path);
            let file = checked_file(&path, entry)?;
            stats.files += 1;
            match self.intern_one(&path, &file, &object, *size)? {
                Interned::Already => {}
                Interned::New => stats.new_bytes += size,
                Interned::Shared => stats.shared_bytes += size,
            }
        }
        Ok(stats)
    }

    fn intern_one(
        &self,
        path: &Path,
        file: &fs::Metadata,
        object: &Path,
        size: u64,
    ) -> Result<Interned, StoreError> {
        // Two tries: an object can appear between our look and our link (another intern).
        for _ in 0..2 {
            match fs::symlink_metadata(object) {
                Ok(existing) if (existing.dev(), existing.ino()) == (file.dev(), file.ino()) => {
                    return Ok(Interned::Already);
                }
                Ok(existing) if same_object(&existing, file, size) => {
                    replace_with_link(object, path)?;
                    return Ok(Interned::Shared);
                }
                Ok(_) => {
                    // Not what its name says (damaged by hand): this file takes its place;
                    // runtimes linked to the old inode keep their files.
                    replace_with_link(path, object)?;
                    return Ok(Interned::New);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(io_error("look up", object)(source)),
            }
            if let Some(shard) = object.parent() {
                DirBuilder::new()
                    .mode(0o700)
                    .recursive(true)
                    .create(shard)
                    .map_err(io_error("create", shard))?;
            }
            match fs::hard_link(path, object) {
                Ok(()) => return Ok(Interned::New),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(io_error("hard-link into the store", object)(source)),
            }
        }
        Err(io_error("hard-link into the store", object)(
            io::Error::from(io::ErrorKind::AlreadyExists),
        ))
    }

    /// Removes every object no runtime uses (link count 1) and returns the bytes freed.
    pub fn collect_garbage(&self) -> Result<u64, StoreError> {
        let mut freed = 0;
        for shard in fs::read_dir(&self.dir).map_err(io_error("read", &self.dir))? {
            let shard = shard.map_err(io_error("read", &self.dir))?.path();
            let is_shard = shard
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit()));
            if !is_shard || !shard.is_dir() {
                continue;
            }
            for object in fs::read_dir(&shard).map_err(io_error("read", &shard))? {
                let object = object.map_err(io_error("read", &shard))?.path();
                let meta = match fs::symlink_metadata(&object) {
                    Ok(meta) => meta,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => return Err(io_error("look up", &object)(source)),
                };
                if meta.is_file() && meta.nlink() == 1 {
                    match fs::remove_file(&object) {
                        Ok(()) => freed += meta.len(),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(source) => return Err(io_error("remove", &object)(source)),
                    }
                }
            }
        }
        Ok(freed)
    }

    /// Bytes of this runtime's files whose object another runtime also uses: what
    /// removing this runtime would not free. Files not (yet) interned count as not
    /// shared, and so do hard links between files of this runtime alone.
    pub fn shared_bytes(&self, rootfs: &Path, manifest: &Manifest) -> Result<u64, StoreError> {
        // (dev, ino) -> (link count, links from this runtime, bytes of those paths)
        let mut inodes: HashMap<(u64, u64), (u64, u64, u64)> = HashMap::new();
        for entry in &manifest.entries {
            let (Some(object), EntryKind::File { size, .. }) =
                (self.object_path(entry), &entry.kind)
            else {
                continue;
            };
            let path = rootfs.join(&entry.path);
            let file = fs::symlink_metadata(&path).map_err(io_error("look up", &path))?;
            let object = match fs::symlink_metadata(&object) {
                Ok(object) => object,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(io_error("look up", &object)(source)),
            };
            if (object.dev(), object.ino()) != (file.dev(), file.ino()) {
                continue;
            }
            let seen = inodes
                .entry((file.dev(), file.ino()))
                .or_insert((file.nlink(), 0, 0));
            seen.1 += 1;
            seen.2 = seen.2.saturating_add(*size);
        }
        Ok(inodes
            .values()
            .filter(|(nlink, ours, _)| *nlink > 1 + ours)
            .map(|(_, _, bytes)| *bytes)
            .fold(0, u64::saturating_add))
    }
}

enum Interned {
    /// The file already was the object.
    Already,
    /// The file became the object.
    New,
    /// The file was replaced by a link to the existing object.
    Shared,
}

/// The file's metadata, if it is a regular file matching its entry's installed mode,
/// owner and size.
fn checked_file(path: &Path, entry: &Entry) -> Result<fs::Metadata, StoreError> {
    let meta = fs::symlink_metadata(path).map_err(io_error("look up", path))?;
    let mismatch = |reason: String| StoreError::Mismatch {
        path: path.to_owned(),
        reason,
    };
    let EntryKind::File { size, .. } = entry.kind else {
        return Err(mismatch("the manifest says it is not a file".into()));
    };
    if !meta.is_file() {
        return Err(mismatch("it is not a regular file".into()));
    }
    let mode = entry.kind.installed_mode().unwrap_or_default();
    let actual = (meta.mode() & 0o7777, meta.uid(), meta.gid(), meta.len());
    if actual != (mode, entry.uid, entry.gid, size) {
        return Err(mismatch(format!(
            "mode {:04o}, owner {}:{}, size {}; manifest says mode {mode:04o}, owner {}:{}, size {size}",
            actual.0, actual.1, actual.2, actual.3, entry.uid, entry.gid
        )));
    }
    Ok(meta)
}

/// Whether an existing object can stand for a file: same mode, owner and size (the
/// content is named by the object's name).
fn same_object(object: &fs::Metadata, file: &fs::Metadata, size: u64) -> bool {
    object.is_file()
        && object.len() == size
        && (object.mode() & 0o7777, object.uid(), object.gid())
            == (file.mode() & 0o7777, file.uid(), file.gid())
}

/// Makes `path` a hard link to `source`'s inode, atomically: a link under a temporary
/// name in `path`'s directory is renamed over `path`.
fn replace_with_link(source: &Path, path: &Path) -> Result<(), StoreError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = path.with_file_name(format!(".{name}.silo-link-{}", std::process::id()));
    // A temporary left by a crashed process of the same pid is in the way.
    let _ = fs::remove_file(&temp);
    fs::hard_link(source, &temp).map_err(io_error("hard-link", &temp))?;
    fs::rename(&temp, path).map_err(|source| {
        let _ = fs::remove_file(&temp);
        StoreError::Io {
            action: "rename a link over",
            path: path.to_owned(),
            source,
        }
    })
}
