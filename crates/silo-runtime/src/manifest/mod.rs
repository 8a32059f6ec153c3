//! The manifest: every path of a runtime's root filesystem with its type, owner, mode and
//! (for files) size and SHA-256, signed with an ed25519 key.
//!
//! A manifest is what a server trusts about a runtime: a tree is installed only when it
//! matches a manifest signed by a trusted key, and checked against it later.

mod key;
mod scan;
mod text;
mod verify;

use std::path::PathBuf;

pub use key::{KeyError, PublicKey, Signature, SigningKey, verify_signature};
pub use scan::MAX_ENTRIES;
pub use verify::{Difference, DifferenceKind, verify_tree};

pub(crate) use scan::open_regular;

use crate::spec::SpecError;

/// Why a manifest could not be read, written, scanned or trusted.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// The tree holds something a runtime cannot: a device node, fifo or socket.
    #[error("{} is a {kind}; a runtime holds only directories, files and symlinks", path.display())]
    UnsupportedFile {
        /// The offending path.
        path: PathBuf,
        /// What it is, e.g. "fifo".
        kind: &'static str,
    },
    /// A file name or symlink target in the tree is not UTF-8.
    #[error("{} is not valid UTF-8; runtime paths and symlink targets must be", path.display())]
    NotUtf8 {
        /// The offending path (lossily shown).
        path: PathBuf,
    },
    /// The tree holds more entries than a runtime may.
    #[error(
        "{} holds more than {limit} entries; a runtime may hold at most that many files, \
         directories and links",
        path.display()
    )]
    TooManyEntries {
        /// The tree's root.
        path: PathBuf,
        /// The most entries a runtime may hold.
        limit: usize,
    },
    /// The root of the tree is not a directory.
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The offending path.
        path: PathBuf,
    },
    /// The manifest text is malformed at one line.
    #[error("manifest line {line}: {reason}")]
    Syntax {
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The manifest's name or version is not valid.
    #[error("manifest header: {0}")]
    Header(#[from] SpecError),
    /// The signer's key is not among the trusted keys.
    #[error("the manifest is signed by key {fingerprint}, which is not trusted")]
    UntrustedSigner {
        /// The signer's fingerprint ([`PublicKey::fingerprint`]).
        fingerprint: String,
    },
    /// The signature does not match the manifest bytes.
    #[error(
        "the signature by key {fingerprint} does not match the manifest (it was altered or signed for another one)"
    )]
    BadSignature {
        /// The claimed signer's fingerprint.
        fingerprint: String,
    },
}

/// A runtime's manifest: its name, version and one entry for every path of its rootfs.
///
/// A manifest read by [`Manifest::from_bytes`] or made by [`Manifest::scan`] has its
/// entries sorted by path (byte order, so every parent comes before its children), each
/// path once, each path valid (see [`Entry::path`]) and each entry's parent a
/// directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The runtime's name; passes [`crate::spec::check_name`].
    pub name: String,
    /// The runtime's version.
    pub version: semver::Version,
    /// Every path of the rootfs except the rootfs directory itself.
    pub entries: Vec<Entry>,
}

/// One path of a rootfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path relative to the rootfs: `/`-separated, no leading `/`, never empty, no
    /// empty, `.` or `..` component, no NUL.
    pub path: String,
    /// The owner's user id.
    pub uid: u32,
    /// The owner's group id.
    pub gid: u32,
    /// What the path is.
    pub kind: EntryKind,
}

/// What a path is, with the properties a check compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory with its permission bits (`st_mode & 0o7777`).
    Dir {
        /// Permission bits including setuid, setgid and sticky.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Permission bits including setuid, setgid and sticky.
        mode: u32,
        /// The size in bytes.
        size: u64,
        /// The SHA-256 of the content.
        sha256: [u8; 32],
    },
    /// A symbolic link; its target is never followed by silo.
    Symlink {
        /// The link's target, as stored (may be absolute or dangling).
        target: String,
    },
}

/// The permission bits silo installs: setuid and setgid are always dropped, so that no
/// runtime brings a privilege-raising binary into a sandbox. Unpacking writes and
/// verification expects `mode & INSTALLED_MODE_BITS`.
pub const INSTALLED_MODE_BITS: u32 = 0o1777;

impl EntryKind {
    /// A word for the kind in messages: "directory", "file" or "symlink".
    pub fn name(&self) -> &'static str {
        match self {
            EntryKind::Dir { .. } => "directory",
            EntryKind::File { .. } => "file",
            EntryKind::Symlink { .. } => "symlink",
        }
    }

    /// The permission bits an installed copy has: the manifest's mode without setuid and
    /// setgid; `None` for a symlink, whose mode means nothing on Linux.
    pub fn installed_mode(&self) -> Option<u32> {
        match self {
            EntryKind::Dir { mode } | EntryKind::File { mode, .. } => {
                Some(mode & INSTALLED_MODE_BITS)
            }
            EntryKind::Symlink { .. } => None,
        }
    }
}

impl Manifest {
    /// The manifest's canonical text: the same manifest always gives the same bytes, and
    /// [`Manifest::from_bytes`] reads them back equal. Any byte in a path or target is
    /// safe: space, control bytes, `%` and DEL are percent-escaped.
    pub fn to_bytes(&self) -> Vec<u8> {
        text::encode(self)
    }

    /// Reads a manifest's text strictly: it must be in canonical form (exactly what
    /// [`Manifest::to_bytes`] writes), every path valid, sorted, unique, and every parent
    /// a directory entry. The error names the line.
    pub fn from_bytes(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        text::decode(bytes)
    }

    /// `sha256:<hex>` of [`Manifest::to_bytes`]: the manifest's identity.
    pub fn digest(&self) -> String {
        format!(
            "sha256:{}",
            hex::encode(crate::hash::sha256(&self.to_bytes()))
        )
    }

    /// The sum of the sizes of all files, in bytes.
    pub fn total_size(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size, .. } => size,
                _ => 0,
            })
            .fold(0, u64::saturating_add)
    }
}

/// Why a path cannot be an entry's path; the one rule for manifests and archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadPath {
    /// The path is empty.
    Empty,
    /// The path starts with `/`.
    Absolute,
    /// The path has an empty component (`a//b`, or a trailing `/`).
    EmptyComponent,
    /// The path has a `.` component.
    Dot,
    /// The path has a `..` component.
    DotDot,
    /// The path holds a NUL byte.
    Nul,
}

impl std::fmt::Display for BadPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BadPath::Empty => "the path is empty",
            BadPath::Absolute => "the path is absolute",
            BadPath::EmptyComponent => "the path has an empty component (`//` or a trailing `/`)",
            BadPath::Dot => "the path has a `.` component",
            BadPath::DotDot => "the path has a `..` component",
            BadPath::Nul => "the path holds a NUL byte",
        })
    }
}

/// Checks an entry path: relative, `/`-separated, no empty, `.` or `..` component, no
/// NUL. A path that passes stays inside the directory it is joined to, unless a component
/// is a symlink.
pub fn check_path(path: &str) -> Result<(), BadPath> {
    if path.is_empty() {
        return Err(BadPath::Empty);
    }
    if path.starts_with('/') {
        return Err(BadPath::Absolute);
    }
    if path.contains('\0') {
        return Err(BadPath::Nul);
    }
    for component in path.split('/') {
        match component {
            "" => return Err(BadPath::EmptyComponent),
            "." => return Err(BadPath::Dot),
            ".." => return Err(BadPath::DotDot),
            _ => {}
        }
    }
    Ok(())
}

/// The parent of an entry path, `None` for a top-level entry.
pub(crate) fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(parent, _)| parent)
}
