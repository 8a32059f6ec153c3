//! Runtimes: self-contained root filesystems that jobs run in, built from a spec on the
//! server, signed, verified, stored once by content, moved between servers as one archive.
//!
//! The spec, manifest, object store and archive format are `silo-runtime`'s; this module is
//! the server's part: the catalog of installed versions ([`catalog`]), builds ([`build`]),
//! and the gRPC service ([`service`]). Jobs know nothing of runtimes: a job's start asks
//! the catalog for a [`crate::jobs::JobRoot`] and hands that to the job manager.

mod build;
pub mod catalog;
mod packages;
mod progress;
pub mod service;

use std::path::{Path, PathBuf};

pub use catalog::{Catalog, CatalogSettings, RuntimeError};

/// A staging directory of the catalog, removed (off the async workers) when dropped unless
/// kept: a failed or abandoned build or install leaves nothing.
struct Staging(Option<PathBuf>);

impl Staging {
    fn new(path: PathBuf) -> Staging {
        Staging(Some(path))
    }

    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new("/nonexistent"))
    }

    fn keep(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            std::thread::spawn(move || {
                if let Err(e) = crate::tree::remove_dir_all(&path) {
                    tracing::warn!("cannot remove {}: {e}", path.display());
                }
            });
        }
    }
}
