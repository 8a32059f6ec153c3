//! Checking a tree on disk against its manifest.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::scan::{file_kind, io_error, open_regular};
use super::{Entry, EntryKind, Manifest, ManifestError, parent};
use crate::hash::FileHasher;

/// One way a tree differs from its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The path relative to the rootfs (non-UTF-8 names of extra paths are shown lossily).
    pub path: String,
    /// How it differs.
    pub what: DifferenceKind,
}

/// How a path differs from its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DifferenceKind {
    /// The path exists but differs; the text says how, for people, e.g.
    /// "mode 0755, manifest says 0644" (several findings are joined by "; ").
    Changed(String),
    /// The manifest lists the path but the tree lacks it (or its parent is not a
    /// directory).
    Missing,
    /// The tree holds the path but the manifest does not list it; an extra directory is
    /// reported once, not with its contents.
    Extra,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.what {
            DifferenceKind::Changed(how) => write!(f, "{}: {how}", self.path),
            DifferenceKind::Missing => write!(f, "{}: missing", self.path),
            DifferenceKind::Extra => write!(f, "{}: not in the manifest", self.path),
        }
    }
}

/// Compares the tree under `rootfs` with `manifest`, re-hashing every file, and returns
/// every difference sorted by path; an empty list means the tree matches exactly.
///
/// Setuid and setgid bits are expected absent, since silo never installs them (see
/// [`super::INSTALLED_MODE_BITS`]). No symlink is followed: a path under a directory that
/// is not a real directory on disk is reported missing without being looked up.
pub fn verify_tree(manifest: &Manifest, rootfs: &Path) -> Result<Vec<Difference>, ManifestError> {
    let root = fs::symlink_metadata(rootfs).map_err(io_error(rootfs))?;
    if !root.is_dir() {
        return Err(ManifestError::NotADirectory {
            path: rootfs.to_owned(),
        });
    }
    let mut hasher = FileHasher::new();
    let mut differences = Vec::new();
    let mut difference = |path: &str, what| {
        differences.push(Difference {
            path: path.to_owned(),
            what,
        })
    };
    // Manifest directories that are real directories on disk: only their children are
    // looked up, so no lookup passes through a symlink.
    let mut real_dirs: HashSet<&str> = HashSet::new();
    for entry in &manifest.entries {
        if let Some(parent) = parent(&entry.path)
            && !real_dirs.contains(parent)
        {
            difference(&entry.path, DifferenceKind::Missing);
            continue;
        }
        let path = rootfs.join(&entry.path);
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                difference(&entry.path, DifferenceKind::Missing);
                continue;
            }
            Err(source) => return Err(io_error(&path)(source)),
        };
        if let Some(how) = compare(entry, &path, &meta, &mut hasher)? {
            difference(&entry.path, DifferenceKind::Changed(how));
        }
        if matches!(entry.kind, EntryKind::Dir { .. }) && meta.is_dir() {
            real_dirs.insert(&entry.path);
        }
    }

    let listed: HashSet<&str> = manifest.entries.iter().map(|e| e.path.as_str()).collect();
    for dir in std::iter::once("").chain(real_dirs.iter().copied()) {
        let dir_path = rootfs.join(dir);
        for dirent in fs::read_dir(&dir_path).map_err(io_error(&dir_path))? {
            let dirent = dirent.map_err(io_error(&dir_path))?;
            let name = dirent.file_name();
            let name = name.to_string_lossy();
            let relative = if dir.is_empty() {
                name.into_owned()
            } else {
                format!("{dir}/{name}")
            };
            if !listed.contains(relative.as_str()) {
                difference(&relative, DifferenceKind::Extra);
            }
        }
    }
    differences.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(differences)
}

/// How the path on disk differs from its entry, or `None` when it matches.
fn compare(
    entry: &Entry,
    path: &Path,
    meta: &fs::Metadata,
    hasher: &mut FileHasher,
) -> Result<Option<String>, ManifestError> {
    let file_type = meta.file_type();
    let actual_kind = file_kind(&file_type);
    if actual_kind != entry.kind.name() {
        return Ok(Some(format!(
            "is a {actual_kind}, manifest says {}",
            entry.kind.name()
        )));
    }
    let mut findings = Vec::new();
    if (meta.uid(), meta.gid()) != (entry.uid, entry.gid) {
        findings.push(format!(
            "owner {}:{}, manifest says {}:{}",
            meta.uid(),
            meta.gid(),
            entry.uid,
            entry.gid
        ));
    }
    if let Some(expected) = entry.kind.installed_mode() {
        let actual = meta.mode() & 0o7777;
        if actual != expected {
            findings.push(format!("mode {actual:04o}, manifest says {expected:04o}"));
        }
    }
    match &entry.kind {
        EntryKind::Dir { .. } => {}
        EntryKind::File { size, sha256, .. } => {
            if meta.len() != *size {
                findings.push(format!("size {}, manifest says {size}", meta.len()));
            } else {
                let mut file = open_regular(path)?;
                let (_, actual) = hasher.hash(&mut file).map_err(io_error(path))?;
                if actual != *sha256 {
                    findings.push(format!(
                        "content differs (sha256 {}, manifest says {})",
                        hex::encode(actual),
                        hex::encode(sha256)
                    ));
                }
            }
        }
        EntryKind::Symlink { target } => {
            let actual = fs::read_link(path).map_err(io_error(path))?;
            if actual.as_os_str().as_encoded_bytes() != target.as_bytes() {
                findings.push(format!(
                    "target `{}`, manifest says `{target}`",
                    actual.display()
                ));
            }
        }
    }
    Ok((!findings.is_empty()).then(|| findings.join("; ")))
}
