//! An installed version directory is trusted only through its signed manifest.

mod common;

use std::fs;

use silo_runtime::layout::{LayoutError, VersionDir};
use silo_runtime::manifest::ManifestError;

#[test]
fn the_parts_of_a_version_directory_have_fixed_names() {
    let v = VersionDir::under(
        "/state/runtimes".as_ref(),
        "python-3.11",
        &common::version(),
    );
    assert_eq!(
        v.0,
        std::path::Path::new("/state/runtimes/python-3.11/1.2.3")
    );
    assert!(v.rootfs().ends_with("1.2.3/rootfs"));
    assert!(v.spec().ends_with("1.2.3/runtime.yml"));
    assert!(v.manifest().ends_with("1.2.3/manifest"));
    assert!(v.signature().ends_with("1.2.3/manifest.sig"));
}

#[test]
fn read_gives_spec_manifest_and_signature_when_signed_by_a_trusted_key() {
    let tmp = tempfile::tempdir().unwrap();
    let key = common::key(tmp.path(), "key");
    let (version, manifest) = common::make_version(&tmp.path().join("v"), &key);
    let (spec, read, signature) = version.read(&[key.public_key()]).unwrap();
    assert_eq!(spec, common::spec());
    assert_eq!(read, manifest);
    assert_eq!(signature.signer, key.public_key());
}

#[test]
fn read_refuses_an_untrusted_signer_and_an_edited_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let key = common::key(tmp.path(), "key");
    let other = common::key(tmp.path(), "other");
    let (version, _) = common::make_version(&tmp.path().join("v"), &key);
    let error = version.read(&[other.public_key()]).unwrap_err();
    assert!(
        matches!(
            &error,
            LayoutError::Manifest {
                source: ManifestError::UntrustedSigner { .. },
                ..
            }
        ),
        "{error}"
    );

    let edited = fs::read_to_string(version.manifest())
        .unwrap()
        .replace("0755", "0777");
    fs::write(version.manifest(), edited).unwrap();
    let error = version.read(&[key.public_key()]).unwrap_err();
    assert!(
        matches!(
            &error,
            LayoutError::Manifest {
                source: ManifestError::BadSignature { .. },
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn read_refuses_a_spec_for_another_version() {
    let tmp = tempfile::tempdir().unwrap();
    let key = common::key(tmp.path(), "key");
    let (version, _) = common::make_version(&tmp.path().join("v"), &key);
    let mut spec = common::spec();
    spec.version = semver::Version::new(2, 0, 0);
    fs::write(version.spec(), spec.to_yaml()).unwrap();
    let error = version.read(&[key.public_key()]).unwrap_err();
    assert!(matches!(error, LayoutError::Mismatch { .. }), "{error}");
    assert!(error.to_string().contains("tiny@2.0.0") && error.to_string().contains("tiny@1.2.3"));
}
