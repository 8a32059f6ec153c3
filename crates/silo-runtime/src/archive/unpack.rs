//! Reading an archive into a staging directory, trusting nothing in it until the signed
//! manifest says so.

use std::collections::{HashMap, HashSet};
use std::fs::{self, DirBuilder, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::EntryType;

use super::{ArchiveError, MANIFEST_ENTRY, ROOTFS_PREFIX, Refusal, SIGNATURE_ENTRY, SPEC_ENTRY};
use crate::hash::FileHasher;
use crate::layout::{VersionDir, check_same_runtime};
use crate::manifest::{
    EntryKind, Manifest, PublicKey, Signature, check_path, parent, verify_signature,
};
use crate::spec::RuntimeSpec;

/// The largest manifest accepted (about half a million entries).
const MANIFEST_LIMIT: u64 = 64 << 20;
/// The largest signature file accepted.
const SIGNATURE_LIMIT: u64 = 4 << 10;
/// The largest spec accepted.
const SPEC_LIMIT: u64 = 1 << 20;
/// The longest GNU long name or long link accepted (Linux's PATH_MAX is 4096).
const LONG_NAME_LIMIT: u64 = 64 << 10;

/// How far an [`unpack`] has come. Entries count the three metadata entries too; bytes
/// count file contents only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackProgress {
    /// Entries unpacked so far.
    pub entries_done: u64,
    /// Entries the archive holds (known once the manifest is read; 0 before).
    pub entries_total: u64,
    /// Bytes of file content written so far.
    pub bytes_done: u64,
    /// Bytes of file content in all (the manifest's total size).
    pub bytes_total: u64,
}

/// Unpacks an archive into `staging`, an empty directory made by the caller, which then
/// holds a complete [`VersionDir`]: `manifest`, `manifest.sig`, `runtime.yml` and
/// `rootfs/`. Returns the spec and the manifest.
///
/// The archive is streamed, never held in memory, and trusted only through its manifest:
/// - the first three entries must be `manifest`, `manifest.sig` and `runtime.yml`; the
///   signature must be by a key in `trusted`, and the spec must name the manifest's
///   runtime and version, before anything under `rootfs/` is written;
/// - every later entry must be `rootfs/<path>` for a path of the manifest, once, of the
///   manifest's type; absolute paths, `..`, hard links, device nodes, fifos and any other
///   entry type are refused;
/// - no symlink is ever followed: an entry's parent must be a directory this unpack
///   created; a symlink is created with the manifest's target; files are created with
///   `O_CREAT|O_EXCL|O_NOFOLLOW` and hashed as they are written, and a size or SHA-256
///   other than the manifest's is refused;
/// - owners and modes come from the manifest; setuid and setgid are dropped; directory
///   modes are applied last;
/// - every manifest entry must be present;
/// - the manifest's files must add up to at most `room` bytes (checked before any of them
///   is written; the archive's sizes must then match the manifest's).
///
/// Each refusal names the entry. On any error only `staging` has been written to, and
/// the caller deletes it. Creating files owned by others needs root (CAP_CHOWN).
pub fn unpack(
    input: impl Read,
    staging: &Path,
    trusted: &[PublicKey],
    room: u64,
    mut progress: impl FnMut(UnpackProgress),
) -> Result<(RuntimeSpec, Manifest), ArchiveError> {
    check_empty_dir(staging)?;
    let version = VersionDir(staging.to_owned());
    // tar reads 512-byte headers one by one; batch them into large reads.
    let decoder = zstd::stream::read::Decoder::new(input).map_err(ArchiveError::Read)?;
    let mut archive = tar::Archive::new(io::BufReader::with_capacity(1 << 20, decoder));
    let mut entries = archive.entries().map_err(ArchiveError::Read)?.raw(true);

    let manifest_bytes = read_metadata(&mut entries, MANIFEST_ENTRY, MANIFEST_LIMIT)?;
    let signature_bytes = read_metadata(&mut entries, SIGNATURE_ENTRY, SIGNATURE_LIMIT)?;
    let spec_bytes = read_metadata(&mut entries, SPEC_ENTRY, SPEC_LIMIT)?;
    let (spec, manifest) = trust(&manifest_bytes, &signature_bytes, &spec_bytes, trusted)?;
    let need = manifest.total_size();
    if need > room {
        return Err(ArchiveError::NoRoom { need, room });
    }

    for (path, bytes) in [
        (version.manifest(), &manifest_bytes),
        (version.signature(), &signature_bytes),
        (version.spec(), &spec_bytes),
    ] {
        write_new(&path, bytes)?;
    }
    let rootfs = version.rootfs();
    make_dir(&rootfs, 0o755)?;
    fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755))
        .map_err(io_error("set the mode of", &rootfs))?;

    let mut state = Progress {
        done: UnpackProgress {
            entries_done: 3,
            entries_total: manifest.entries.len() as u64 + 3,
            bytes_done: 0,
            bytes_total: manifest.total_size(),
        },
        report: &mut progress,
    };
    state.report();
    let mut tree = Tree::new(&manifest, rootfs);
    let mut hasher = FileHasher::new();
    while let Some((name, mut entry)) = next_entry(&mut entries)? {
        tree.unpack_entry(&name, &mut entry, &mut hasher, &mut state)?;
        state.done.entries_done += 1;
        state.report();
    }
    tree.finish()?;
    Ok((spec, manifest))
}

/// Reads the signature, the manifest it signs and the spec, trusting them only if the
/// signer is trusted and they name the same runtime.
fn trust(
    manifest_bytes: &[u8],
    signature_bytes: &[u8],
    spec_bytes: &[u8],
    trusted: &[PublicKey],
) -> Result<(RuntimeSpec, Manifest), ArchiveError> {
    let signature = std::str::from_utf8(signature_bytes)
        .map_err(|_| crate::manifest::KeyError::BadSignatureText {
            reason: "it is not text",
        })
        .and_then(Signature::from_text)
        .map_err(ArchiveError::Signature)?;
    let manifest =
        verify_signature(manifest_bytes, &signature, trusted).map_err(ArchiveError::Manifest)?;
    let spec = std::str::from_utf8(spec_bytes)
        .map_err(|_| crate::spec::SpecError::Yaml {
            line: None,
            column: None,
            message: "the file is not UTF-8".to_owned(),
        })
        .and_then(RuntimeSpec::parse)
        .map_err(ArchiveError::Spec)?;
    check_same_runtime(&spec, &manifest)
        .map_err(|(spec, manifest)| ArchiveError::Mismatch { spec, manifest })?;
    Ok((spec, manifest))
}

struct Progress<'a, F> {
    done: UnpackProgress,
    report: &'a mut F,
}

impl<F: FnMut(UnpackProgress)> Progress<'_, F> {
    fn report(&mut self) {
        (self.report)(self.done);
    }
}

/// The rootfs being built, and what the archive has given of the manifest so far.
struct Tree<'m> {
    manifest: &'m Manifest,
    rootfs: PathBuf,
    /// Manifest index of every path.
    index: HashMap<&'m str, usize>,
    /// Whether each manifest entry has been unpacked.
    seen: Vec<bool>,
    /// Directories this unpack created: the only parents an entry may have.
    created_dirs: HashSet<&'m str>,
}

impl<'m> Tree<'m> {
    fn new(manifest: &'m Manifest, rootfs: PathBuf) -> Tree<'m> {
        Tree {
            manifest,
            rootfs,
            index: manifest
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.path.as_str(), i))
                .collect(),
            seen: vec![false; manifest.entries.len()],
            created_dirs: HashSet::new(),
        }
    }

    fn unpack_entry<R: Read, F: FnMut(UnpackProgress)>(
        &mut self,
        name: &[u8],
        entry: &mut tar::Entry<'_, R>,
        hasher: &mut FileHasher,
        progress: &mut Progress<'_, F>,
    ) -> Result<(), ArchiveError> {
        let lossy = String::from_utf8_lossy(name).into_owned();
        let refuse = |why| ArchiveError::Refused {
            entry: lossy.clone(),
            why,
        };
        let name = std::str::from_utf8(name).map_err(|_| refuse(Refusal::NotUtf8))?;
        let kind = archive_kind(entry.header().entry_type()).map_err(refuse)?;
        let clean = if kind == "directory" {
            name.strip_suffix('/').unwrap_or(name)
        } else {
            name
        };
        check_path(clean).map_err(|bad| refuse(Refusal::BadPath(bad)))?;
        let path = clean
            .strip_prefix(ROOTFS_PREFIX)
            .ok_or_else(|| refuse(Refusal::OutsideRootfs))?;
        let &i = self
            .index
            .get(path)
            .ok_or_else(|| refuse(Refusal::NotInManifest))?;
        if self.seen[i] {
            return Err(refuse(Refusal::Duplicate));
        }
        let expected = &self.manifest.entries[i];
        if kind != expected.kind.name() {
            return Err(refuse(Refusal::KindMismatch {
                archive: kind,
                manifest: expected.kind.name(),
            }));
        }
        if let Some(parent) = parent(path)
            && !self.created_dirs.contains(parent)
        {
            return Err(refuse(Refusal::ParentNotUnpacked));
        }

        let target = self.rootfs.join(path);
        let (uid, gid) = (expected.uid, expected.gid);
        match &expected.kind {
            EntryKind::Dir { .. } => {
                // Its mode is applied last, so that it can be filled first.
                make_dir(&target, 0o700)?;
                std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
                    .map_err(io_error("chown", &target))?;
                self.created_dirs.insert(&expected.path);
            }
            EntryKind::File { size, sha256, .. } => {
                if entry.size() != *size {
                    return Err(refuse(Refusal::SizeMismatch {
                        archive: entry.size(),
                        manifest: *size,
                    }));
                }
                let mut file = File::options()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&target)
                    .map_err(io_error("create", &target))?;
                let (written, actual) = hasher
                    .copy(entry, &mut file, |n| {
                        progress.done.bytes_done += n;
                        progress.report();
                    })
                    .map_err(ArchiveError::Read)?;
                if written != *size {
                    return Err(refuse(Refusal::SizeMismatch {
                        archive: written,
                        manifest: *size,
                    }));
                }
                if actual != *sha256 {
                    return Err(refuse(Refusal::HashMismatch {
                        archive: actual,
                        manifest: *sha256,
                    }));
                }
                std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                    .map_err(io_error("chown", &target))?;
                // After the chown, which may clear setuid bits itself; silo drops them.
                let mode = expected.kind.installed_mode().unwrap_or(0o644);
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io_error("set the mode of", &target))?;
            }
            EntryKind::Symlink { target: link } => {
                std::os::unix::fs::symlink(link, &target)
                    .map_err(io_error("create the symlink", &target))?;
                std::os::unix::fs::lchown(&target, Some(uid), Some(gid))
                    .map_err(io_error("chown", &target))?;
            }
        }
        self.seen[i] = true;
        Ok(())
    }

    /// Checks that every entry came, then gives the directories their modes, deepest
    /// first so that a directory closed to writing is never needed open again.
    fn finish(self) -> Result<(), ArchiveError> {
        let missing: Vec<String> = self
            .manifest
            .entries
            .iter()
            .zip(&self.seen)
            .filter(|(_, seen)| !**seen)
            .map(|(e, _)| e.path.clone())
            .collect();
        if !missing.is_empty() {
            return Err(ArchiveError::Missing { paths: missing });
        }
        for entry in self.manifest.entries.iter().rev() {
            if let (EntryKind::Dir { .. }, Some(mode)) = (&entry.kind, entry.kind.installed_mode())
            {
                // Every component is a directory this unpack created: nothing to follow.
                let path = self.rootfs.join(&entry.path);
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                    .map_err(io_error("set the mode of", &path))?;
            }
        }
        Ok(())
    }
}

/// The manifest's word for an archive entry type, or why the type is refused.
fn archive_kind(kind: EntryType) -> Result<&'static str, Refusal> {
    match kind {
        EntryType::Regular => Ok("file"),
        EntryType::Directory => Ok("directory"),
        EntryType::Symlink => Ok("symlink"),
        EntryType::Link => Err(Refusal::HardLink),
        EntryType::Char => Err(Refusal::Special("character device")),
        EntryType::Block => Err(Refusal::Special("block device")),
        EntryType::Fifo => Err(Refusal::Special("fifo")),
        other => Err(Refusal::UnsupportedType(other.as_byte())),
    }
}

/// An archive entry with its full name (long names resolved).
type NamedEntry<'a, R> = (Vec<u8>, tar::Entry<'a, R>);

/// The next entry with its full name, reading GNU long-name entries (bounded) on the way.
/// Long links are read and dropped: a symlink's target comes from the manifest.
fn next_entry<'a, R: Read>(
    entries: &mut tar::Entries<'a, R>,
) -> Result<Option<NamedEntry<'a, R>>, ArchiveError> {
    let mut long_name: Option<Vec<u8>> = None;
    loop {
        let Some(entry) = entries.next() else {
            return match long_name {
                Some(name) => Err(ArchiveError::Read(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the archive ends after a long name (`{}`) without its entry",
                        String::from_utf8_lossy(&name)
                    ),
                ))),
                None => Ok(None),
            };
        };
        let mut entry = entry.map_err(ArchiveError::Read)?;
        let kind = entry.header().entry_type();
        if !(kind.is_gnu_longname() || kind.is_gnu_longlink()) {
            let name = match long_name {
                Some(name) => name,
                None => entry.header().path_bytes().into_owned(),
            };
            return Ok(Some((name, entry)));
        }
        let what = if kind.is_gnu_longname() {
            "(GNU long name)"
        } else {
            "(GNU long link)"
        };
        let bytes = read_bounded(&mut entry, what, LONG_NAME_LIMIT)?;
        if kind.is_gnu_longname() {
            if long_name.is_some() {
                return Err(ArchiveError::Refused {
                    entry: what.to_owned(),
                    why: Refusal::LongNameTwice,
                });
            }
            let name = bytes.strip_suffix(b"\0").unwrap_or(&bytes);
            long_name = Some(name.to_vec());
        }
    }
}

/// Reads one of the first three entries, which must be a regular file named `expected`
/// of at most `limit` bytes.
fn read_metadata<R: Read>(
    entries: &mut tar::Entries<'_, R>,
    expected: &'static str,
    limit: u64,
) -> Result<Vec<u8>, ArchiveError> {
    let Some((name, mut entry)) = next_entry(entries)? else {
        return Err(ArchiveError::Incomplete { expected });
    };
    let name = String::from_utf8_lossy(&name).into_owned();
    if name != expected || entry.header().entry_type() != EntryType::Regular {
        return Err(ArchiveError::Refused {
            entry: name,
            why: Refusal::Unexpected { expected },
        });
    }
    read_bounded(&mut entry, expected, limit)
}

fn read_bounded(entry: &mut impl Read, name: &str, limit: u64) -> Result<Vec<u8>, ArchiveError> {
    let mut bytes = Vec::new();
    entry
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(ArchiveError::Read)?;
    if bytes.len() as u64 > limit {
        return Err(ArchiveError::Refused {
            entry: name.to_owned(),
            why: Refusal::TooLarge { limit },
        });
    }
    Ok(bytes)
}

fn check_empty_dir(path: &Path) -> Result<(), ArchiveError> {
    let meta = fs::symlink_metadata(path).map_err(io_error("look up", path))?;
    let empty = meta.is_dir()
        && fs::read_dir(path)
            .map_err(io_error("read", path))?
            .next()
            .is_none();
    if empty {
        Ok(())
    } else {
        Err(ArchiveError::StagingNotEmpty {
            path: path.to_owned(),
        })
    }
}

fn make_dir(path: &Path, mode: u32) -> Result<(), ArchiveError> {
    DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(io_error("create", path))
}

/// Creates a file that must not exist yet, mode 0644, with `bytes`.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), ArchiveError> {
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_error("create", path))?;
    io::Write::write_all(&mut file, bytes).map_err(io_error("write", path))
}

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> ArchiveError + 'a {
    move |source| ArchiveError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}
