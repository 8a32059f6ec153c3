//! The disk that directory trees take, as `du` counts it: hard links to one inode count
//! once, whichever tree or path reaches it.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// What the trees hold, each inode counted once.
pub struct Usage {
    /// Allocated: the inodes' 512-byte blocks (`st_blocks * 512`).
    pub disk_bytes: u64,
    /// The regular files' sizes (`st_size`).
    pub file_bytes: u64,
    /// Distinct inodes (files, directories, links).
    pub inodes: u64,
}

/// Walks `roots` without following symbolic links and adds up every inode reached once.
pub fn usage(roots: &[PathBuf]) -> Result<Usage> {
    let mut seen = HashSet::new();
    let mut usage = Usage {
        disk_bytes: 0,
        file_bytes: 0,
        inodes: 0,
    };
    let mut pending: Vec<PathBuf> = roots.to_vec();
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path)
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if meta.is_dir() {
            pending.extend(children(&path)?);
        }
        if seen.insert((meta.dev(), meta.ino())) {
            usage.disk_bytes += meta.blocks() * 512;
            usage.inodes += 1;
            if meta.is_file() {
                usage.file_bytes += meta.len();
            }
        }
    }
    Ok(usage)
}

fn children(dir: &Path) -> Result<Vec<PathBuf>> {
    let read = |e| format!("cannot read the directory {}: {e}", dir.display());
    std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!(read(e)))?
        .map(|entry| {
            entry
                .map(|e| e.path())
                .map_err(|e| anyhow::anyhow!(read(e)))
        })
        .collect()
}
