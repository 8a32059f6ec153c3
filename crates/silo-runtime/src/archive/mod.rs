//! The archive that moves a runtime version between servers: one tar stream, compressed
//! with zstd (level 3: a Debian Python tree of 130 MB becomes about 40 MB in well under a
//! second).
//!
//! Entries, in order: `manifest`, `manifest.sig`, `runtime.yml`, then `rootfs/<path>` for
//! every manifest entry in manifest order (directories with a trailing `/`). Headers are
//! GNU (long names as GNU long-name entries), mtime 0; regular files hold their content;
//! symlinks carry their target. The manifest, not the headers, is the authority on every
//! entry's type, mode, owner and target: unpacking reads only names and contents from
//! the headers.

mod export;
mod unpack;

use std::fmt;
use std::io;
use std::path::PathBuf;

pub use export::export;
pub use unpack::{UnpackProgress, unpack};

use crate::manifest::{BadPath, KeyError, ManifestError};
use crate::spec::SpecError;

/// The zstd level exports compress at.
const ZSTD_LEVEL: i32 = 3;

/// The name of the manifest entry (the archive's first).
pub const MANIFEST_ENTRY: &str = "manifest";
/// The name of the signature entry (the archive's second).
pub const SIGNATURE_ENTRY: &str = "manifest.sig";
/// The name of the spec entry (the archive's third).
pub const SPEC_ENTRY: &str = "runtime.yml";
/// The prefix of every rootfs entry.
pub const ROOTFS_PREFIX: &str = "rootfs/";

/// Why a runtime could not be exported or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A local file or directory could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. "create".
        action: &'static str,
        /// The path it failed on.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// The archive stream could not be read (truncated, or not tar).
    #[error("cannot read the archive: {0}")]
    Read(#[source] io::Error),
    /// The archive stream could not be written.
    #[error("cannot write the archive: {0}")]
    Write(#[source] io::Error),
    /// One entry of the archive is refused; nothing of it was written outside staging.
    #[error("archive entry `{entry}`: {why}")]
    Refused {
        /// The entry's name as the archive gives it (lossy if not UTF-8).
        entry: String,
        /// Why it is refused.
        why: Refusal,
    },
    /// The archive ends before one of its first three entries.
    #[error("the archive ends before its `{expected}` entry")]
    Incomplete {
        /// The entry that was expected next.
        expected: &'static str,
    },
    /// The manifest is malformed, or its signature is not by a trusted key.
    #[error("manifest: {0}")]
    Manifest(#[source] ManifestError),
    /// The signature entry is malformed.
    #[error("manifest.sig: {0}")]
    Signature(#[source] KeyError),
    /// The spec entry is not a valid spec.
    #[error("runtime.yml: {0}")]
    Spec(#[source] SpecError),
    /// The spec and the manifest name different runtimes or versions.
    #[error("runtime.yml is {spec} but the manifest is {manifest}")]
    Mismatch {
        /// `name@version` of the spec.
        spec: String,
        /// `name@version` of the manifest.
        manifest: String,
    },
    /// The runtime's files take more bytes than the caller has room for.
    #[error(
        "the runtime's files take {need} bytes and there is room for {room} (the free space \
         of the filesystem it is installed on, less what is kept free there)"
    )]
    NoRoom {
        /// What the manifest's files add up to.
        need: u64,
        /// What the caller had room for.
        room: u64,
    },
    /// The archive lacks entries the manifest lists.
    #[error("the archive lacks {} manifest entries: {}", paths.len(), Shortlist(paths))]
    Missing {
        /// Every missing path, relative to the rootfs.
        paths: Vec<String>,
    },
    /// The staging directory given to [`unpack`] is not an empty directory.
    #[error("{} is not an empty directory", path.display())]
    StagingNotEmpty {
        /// The staging directory.
        path: PathBuf,
    },
    /// While exporting, the tree no longer matches its manifest.
    #[error("{} changed since its manifest was made: {reason}", path.display())]
    TreeChanged {
        /// The path in the rootfs.
        path: PathBuf,
        /// What changed.
        reason: String,
    },
}

/// Why one archive entry is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The name is not UTF-8.
    NotUtf8,
    /// One of the first three entries is not the one expected at its place.
    Unexpected {
        /// The entry expected there.
        expected: &'static str,
    },
    /// The path is absolute, has `..` or is otherwise not a clean relative path.
    BadPath(BadPath),
    /// The entry is not under `rootfs/`.
    OutsideRootfs,
    /// The manifest does not list the path.
    NotInManifest,
    /// The path came before in the archive.
    Duplicate,
    /// The entry is a hard link, which could point anywhere.
    HardLink,
    /// The entry is a device node or fifo.
    Special(&'static str),
    /// The entry type is not one silo writes (pax headers, sparse files, …).
    UnsupportedType(u8),
    /// The entry's type differs from the manifest's.
    KindMismatch {
        /// The type in the archive.
        archive: &'static str,
        /// The type in the manifest.
        manifest: &'static str,
    },
    /// A file's size differs from the manifest's.
    SizeMismatch {
        /// The size in the archive.
        archive: u64,
        /// The size in the manifest.
        manifest: u64,
    },
    /// A file's content differs from the manifest's.
    HashMismatch {
        /// The SHA-256 of the archive's content.
        archive: [u8; 32],
        /// The SHA-256 in the manifest.
        manifest: [u8; 32],
    },
    /// The parent directory was not unpacked (as a real directory) before the entry.
    ParentNotUnpacked,
    /// The entry is larger than an entry of its kind can be.
    TooLarge {
        /// The most bytes allowed.
        limit: u64,
    },
    /// Two GNU long names precede one entry.
    LongNameTwice,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotUtf8 => f.write_str("the name is not UTF-8"),
            Refusal::Unexpected { expected } => write!(f, "expected `{expected}` here"),
            Refusal::BadPath(bad) => write!(f, "{bad}"),
            Refusal::OutsideRootfs => write!(f, "it is not under `{ROOTFS_PREFIX}`"),
            Refusal::NotInManifest => f.write_str("the manifest does not list it"),
            Refusal::Duplicate => f.write_str("it appears twice"),
            Refusal::HardLink => f.write_str("hard links are refused"),
            Refusal::Special(kind) => write!(f, "a {kind} is refused"),
            Refusal::UnsupportedType(byte) => write!(
                f,
                "entry type `{}` is not one silo archives use",
                byte.escape_ascii()
            ),
            Refusal::KindMismatch { archive, manifest } => {
                write!(f, "it is a {archive}, the manifest says {manifest}")
            }
            Refusal::SizeMismatch { archive, manifest } => {
                write!(f, "size {archive}, the manifest says {manifest}")
            }
            Refusal::HashMismatch { archive, manifest } => write!(
                f,
                "content differs from the manifest (sha256 {}, the manifest says {})",
                hex::encode(archive),
                hex::encode(manifest)
            ),
            Refusal::ParentNotUnpacked => {
                f.write_str("its parent directory was not unpacked before it")
            }
            Refusal::TooLarge { limit } => write!(f, "it is larger than {limit} bytes"),
            Refusal::LongNameTwice => f.write_str("two GNU long names precede one entry"),
        }
    }
}

/// The first few paths of a list, for a message.
struct Shortlist<'a>(&'a [String]);

impl fmt::Display for Shortlist<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 5;
        for (i, path) in self.0.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{path}`")?;
        }
        if self.0.len() > SHOWN {
            write!(f, " and {} more", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}
