//! Everything about silo's runtimes that is not the server: the build spec
//! ([`spec`]), the signed manifest of a root filesystem ([`manifest`]), the
//! content-addressed object store that keeps each file once ([`store`]), the layout of
//! an installed version ([`layout`]) and the archive that moves a runtime between
//! servers ([`archive`]).
//!
//! A runtime version lives in `<state>/runtimes/<name>/<version>/` with `rootfs/`,
//! `runtime.yml`, `manifest` and `manifest.sig`.

pub mod archive;
mod hash;
pub mod layout;
pub mod manifest;
pub mod spec;
pub mod store;

pub use layout::VersionDir;
pub use manifest::{Manifest, PublicKey, Signature, SigningKey};
pub use spec::{RuntimeRef, RuntimeSpec};
pub use store::ObjectStore;
