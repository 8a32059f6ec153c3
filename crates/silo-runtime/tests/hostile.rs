//! Hostile input never panics: damaged archives, random manifests and random YAML are
//! refused with an error, and a damaged archive writes nothing outside staging.

mod common;

use std::fs;

use proptest::prelude::*;
use silo_runtime::archive::{export, unpack};
use silo_runtime::manifest::{Manifest, verify_tree};
use silo_runtime::spec::RuntimeSpec;

fn honest_archive() -> (
    tempfile::TempDir,
    Vec<u8>,
    silo_runtime::manifest::PublicKey,
) {
    let tmp = tempfile::tempdir().unwrap();
    let key = common::key(tmp.path(), "key");
    let (version, _) = common::make_version(&tmp.path().join("v"), &key);
    let mut archive = Vec::new();
    export(&version, &mut archive, |_| {}).unwrap();
    // Damage goes into the tar stream itself (damaged zstd frames are refused by zstd's
    // own checks, which would test little of the unpack).
    let tar = zstd::decode_all(archive.as_slice()).unwrap();
    (tmp, tar, key.public_key())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_damaged_archive_is_refused_or_unpacks_to_a_matching_tree(
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let (tmp, mut archive, key) = honest_archive();
        for (at, byte) in damage {
            let i = at.index(archive.len());
            archive[i] = byte;
        }
        if truncate {
            archive.truncate(cut.index(archive.len()));
        }
        let archive = zstd::encode_all(archive.as_slice(), 3).unwrap();
        let work = tempfile::tempdir_in(tmp.path()).unwrap();
        let staging = work.path().join("staging");
        fs::create_dir(&staging).unwrap();
        if let Ok((_, manifest)) = unpack(archive.as_slice(), &staging, &[key], u64::MAX, |_| {}) {
            // Damage that tar or the manifest does not see (padding, header fields the
            // manifest overrides) leaves a tree that still matches.
            prop_assert_eq!(verify_tree(&manifest, &staging.join("rootfs")).unwrap(), []);
        }
        let beside: Vec<_> = fs::read_dir(work.path()).unwrap().collect();
        prop_assert_eq!(beside.len(), 1, "only staging was written");
    }

    #[test]
    fn random_manifest_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut text = b"silo-runtime-manifest 1\nname tiny\nversion 1.2.3\n".to_vec();
        text.extend_from_slice(&bytes);
        let _ = Manifest::from_bytes(&text);
        let _ = Manifest::from_bytes(&bytes);
    }

    #[test]
    fn random_yaml_never_panics(yaml in "[a-z:{}\\[\\]\\-,'\" \n&*!|>#%@0-9.~]{0,200}") {
        let _ = RuntimeSpec::parse(&yaml);
        let _ = RuntimeSpec::parse(&format!("name: a\nversion: 1.0.0\nbase:\n  {yaml}"));
    }
}
