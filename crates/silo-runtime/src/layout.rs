//! One installed runtime version: `<state>/runtimes/<name>/<version>/` holding `rootfs/`,
//! `runtime.yml`, `manifest` and `manifest.sig`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::manifest::{KeyError, Manifest, ManifestError, PublicKey, Signature, verify_signature};
use crate::spec::{RuntimeSpec, SpecError};

/// Why an installed version could not be read or trusted.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A file of the version could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's reason.
        source: io::Error,
    },
    /// `runtime.yml` is not a valid spec.
    #[error("{}: {source}", path.display())]
    Spec {
        /// The spec file.
        path: PathBuf,
        /// Why it was refused.
        source: SpecError,
    },
    /// `manifest.sig` is malformed.
    #[error("{}: {source}", path.display())]
    Signature {
        /// The signature file.
        path: PathBuf,
        /// Why it was refused.
        source: KeyError,
    },
    /// The manifest is not signed by a trusted key, or is malformed.
    #[error("{}: {source}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// Why it was refused.
        source: ManifestError,
    },
    /// The spec and the manifest name different runtimes.
    #[error("{}: the spec is {spec} but the manifest is {manifest}", path.display())]
    Mismatch {
        /// The version directory.
        path: PathBuf,
        /// `name@version` of the spec.
        spec: String,
        /// `name@version` of the manifest.
        manifest: String,
    },
}

/// The directory of one installed runtime version; the paths of its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionDir(pub PathBuf);

impl VersionDir {
    /// The version directory `<runtimes>/<name>/<version>`. Safe for any `name` that
    /// passes [`crate::spec::check_name`] (one path component), which the caller checks.
    pub fn under(runtimes: &Path, name: &str, version: &semver::Version) -> VersionDir {
        VersionDir(runtimes.join(name).join(version.to_string()))
    }

    /// `rootfs/`: the runtime's root filesystem.
    pub fn rootfs(&self) -> PathBuf {
        self.0.join("rootfs")
    }

    /// `runtime.yml`: the spec the runtime was built from.
    pub fn spec(&self) -> PathBuf {
        self.0.join("runtime.yml")
    }

    /// `manifest`: the manifest's bytes ([`Manifest::to_bytes`]).
    pub fn manifest(&self) -> PathBuf {
        self.0.join("manifest")
    }

    /// `manifest.sig`: the signature over the manifest's bytes ([`Signature::to_text`]).
    pub fn signature(&self) -> PathBuf {
        self.0.join("manifest.sig")
    }

    /// Reads the spec, manifest and signature, and returns them only if the signature is
    /// by a key in `trusted` over exactly the manifest's bytes and the spec names the
    /// same runtime and version as the manifest. The rootfs is not checked (see
    /// [`crate::manifest::verify_tree`]).
    pub fn read(
        &self,
        trusted: &[PublicKey],
    ) -> Result<(RuntimeSpec, Manifest, Signature), LayoutError> {
        let read =
            |path: PathBuf| fs::read(&path).map_err(|source| LayoutError::Io { path, source });
        let manifest_bytes = read(self.manifest())?;
        let signature_bytes = read(self.signature())?;
        let spec_bytes = read(self.spec())?;

        let signature = std::str::from_utf8(&signature_bytes)
            .map_err(|_| KeyError::BadSignatureText {
                reason: "the file is not text",
            })
            .and_then(Signature::from_text)
            .map_err(|source| LayoutError::Signature {
                path: self.signature(),
                source,
            })?;
        let manifest =
            verify_signature(&manifest_bytes, &signature, trusted).map_err(|source| {
                LayoutError::Manifest {
                    path: self.manifest(),
                    source,
                }
            })?;
        let spec = std::str::from_utf8(&spec_bytes)
            .map_err(|_| SpecError::Yaml {
                line: None,
                column: None,
                message: "the file is not UTF-8".to_owned(),
            })
            .and_then(RuntimeSpec::parse)
            .map_err(|source| LayoutError::Spec {
                path: self.spec(),
                source,
            })?;
        check_same_runtime(&spec, &manifest).map_err(|(spec, manifest)| LayoutError::Mismatch {
            path: self.0.clone(),
            spec,
            manifest,
        })?;
        Ok((spec, manifest, signature))
    }
}

/// Checks that a spec and a manifest name the same runtime and version; on a mismatch
/// gives both as `name@version`.
pub(crate) fn check_same_runtime(
    spec: &RuntimeSpec,
    manifest: &Manifest,
) -> Result<(), (String, String)> {
    if spec.name == manifest.name && spec.version == manifest.version {
        Ok(())
    } else {
        Err((
            format!("{}@{}", spec.name, spec.version),
            format!("{}@{}", manifest.name, manifest.version),
        ))
    }
}
