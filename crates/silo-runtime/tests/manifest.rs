//! The manifest: what a scan records, its text form, and its signature.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use proptest::prelude::*;
use silo_runtime::manifest::{
    Entry, EntryKind, KeyError, Manifest, ManifestError, PublicKey, Signature, SigningKey,
    verify_signature,
};

fn sha256(bytes: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .unwrap()
}

fn dir(path: &str) -> Entry {
    Entry {
        path: path.into(),
        uid: 0,
        gid: 0,
        kind: EntryKind::Dir { mode: 0o755 },
    }
}

fn file(path: &str, content: &[u8]) -> Entry {
    Entry {
        path: path.into(),
        uid: 0,
        gid: 0,
        kind: EntryKind::File {
            mode: 0o644,
            size: content.len() as u64,
            sha256: sha256(content),
        },
    }
}

fn manifest(entries: Vec<Entry>) -> Manifest {
    Manifest {
        name: common::NAME.into(),
        version: common::version(),
        entries,
    }
}

#[test]
fn scan_records_dirs_files_symlinks_and_empty_files_sorted() {
    let tmp = tempfile::tempdir().unwrap();
    common::make_tree(tmp.path());
    let m = Manifest::scan(tmp.path(), common::NAME, &common::version()).unwrap();
    let paths: Vec<&str> = m.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "bin",
            "bin/busybox",
            "bin/sh",
            "etc",
            "etc/a name\nwith 100% odd bytes",
            "etc/conf.d",
            "etc/conf.d/user",
            "etc/empty"
        ]
    );
    let by_path = |p: &str| m.entries.iter().find(|e| e.path == p).unwrap();
    assert_eq!(
        by_path("bin/busybox").kind,
        EntryKind::File {
            mode: 0o755,
            size: 23,
            sha256: sha256(b"#!/bin/sh\necho busybox\n")
        }
    );
    assert_eq!(
        by_path("bin/sh").kind,
        EntryKind::Symlink {
            target: "busybox".into()
        }
    );
    assert_eq!(by_path("etc/conf.d").kind, EntryKind::Dir { mode: 0o750 });
    assert_eq!(
        by_path("etc/empty").kind,
        EntryKind::File {
            mode: 0o644,
            size: 0,
            sha256: sha256(b"")
        }
    );
    assert_eq!(
        (
            by_path("etc/conf.d/user").uid,
            by_path("etc/conf.d/user").gid
        ),
        (1000, 1000)
    );
    assert_eq!(m.total_size(), 23 + 4 + 14);
}

#[test]
fn scan_refuses_a_fifo_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    common::make_tree(tmp.path());
    let fifo = tmp.path().join("etc/pipe");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let error = Manifest::scan(tmp.path(), common::NAME, &common::version()).unwrap_err();
    assert!(
        matches!(&error, ManifestError::UnsupportedFile { path, kind: "fifo" } if *path == fifo),
        "{error}"
    );
    assert!(error.to_string().contains("etc/pipe"));
}

#[test]
fn scan_refuses_a_tree_of_more_entries_than_a_runtime_may_hold() {
    // Hard links to a few files: as many entries, few inodes (ext4 allows 65,000 links
    // to a file).
    let tmp = tempfile::tempdir().unwrap();
    let many = tmp.path().join("many");
    fs::create_dir(&many).unwrap();
    for i in 0..=silo_runtime::manifest::MAX_ENTRIES {
        let source = many.join(format!("s{}", i / 50_000));
        if i % 50_000 == 0 {
            fs::write(&source, "x").unwrap();
        } else {
            fs::hard_link(&source, many.join(i.to_string())).unwrap();
        }
    }
    let error = Manifest::scan(tmp.path(), common::NAME, &common::version()).unwrap_err();
    assert!(
        matches!(&error, ManifestError::TooManyEntries { limit, .. } if *limit == 400_000),
        "{error}"
    );
    assert!(
        error.to_string().contains("more than 400000 entries"),
        "{error}"
    );
}

#[test]
fn scan_refuses_a_name_that_is_not_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    fs::write(&bad, b"x").unwrap();
    let error = Manifest::scan(tmp.path(), common::NAME, &common::version()).unwrap_err();
    assert!(
        matches!(&error, ManifestError::NotUtf8 { path } if *path == bad),
        "{error}"
    );
}

#[test]
fn the_text_form_has_one_line_per_entry_and_escapes_separators() {
    let m = manifest(vec![
        dir("a b"),
        file("a b/c%d\ne", b""),
        Entry {
            path: "l".into(),
            uid: 5,
            gid: 6,
            kind: EntryKind::Symlink {
                target: "/x y".into(),
            },
        },
    ]);
    let text = String::from_utf8(m.to_bytes()).unwrap();
    let expected = format!(
        "silo-runtime-manifest 1\nname tiny\nversion 1.2.3\nd 0755 0 0 a%20b\nf 0644 0 0 0 {} a%20b/c%25d%0Ae\nl 5 6 l /x%20y\n",
        hex::encode(sha256(b""))
    );
    assert_eq!(text, expected);
    assert_eq!(Manifest::from_bytes(text.as_bytes()).unwrap(), m);
    assert!(m.digest().starts_with("sha256:") && m.digest().len() == 7 + 64);
}

fn refused(entries: &str) -> String {
    let text = format!("silo-runtime-manifest 1\nname tiny\nversion 1.2.3\n{entries}");
    match Manifest::from_bytes(text.as_bytes()) {
        Err(e @ ManifestError::Syntax { .. }) => e.to_string(),
        other => panic!("{entries:?} was not refused as syntax: {other:?}"),
    }
}

#[test]
fn from_bytes_refuses_paths_that_could_escape_or_repeat() {
    assert!(refused("d 0755 0 0 ..\n").contains("`..` component"));
    assert!(refused("d 0755 0 0 a\nd 0755 0 0 a/..\n").contains("`..`"));
    assert!(refused("d 0755 0 0 /etc\n").contains("absolute"));
    assert!(refused("d 0755 0 0 .\n").contains("`.` component"));
    assert!(refused("d 0755 0 0 a\nd 0755 0 0 a//b\n").contains("empty component"));
    assert!(refused("d 0755 0 0 a\nd 0755 0 0 a\n").contains("appears twice"));
    assert!(refused("d 0755 0 0 b\nd 0755 0 0 a\n").contains("out of order"));
    assert!(refused("l 0 0 a x\nd 0755 0 0 a/b\n").contains("parent of `a/b` is not a directory"));
    assert!(refused("d 0755 0 0 a/b\n").contains("parent"));
    assert!(refused("d 0755 0 0 a%2Fb\n").contains("parent"));
}

#[test]
fn from_bytes_refuses_anything_but_the_canonical_form() {
    assert!(refused("d 755 0 0 a\n").contains("four octal digits"));
    assert!(refused("d 0755 00 0 a\n").contains("canonical"));
    assert!(refused("d 0755 0 0 a%2a\n").contains("canonical"));
    assert!(refused("d 0755 0 0 a%61\n").contains("canonical"));
    assert!(refused("d 0755 0 0 a \n").contains("fields"));
    assert!(refused("x 0755 0 0 a\n").contains("starts with"));
    assert!(Manifest::from_bytes(b"silo-runtime-manifest 1\nname tiny\nversion 1.2.3").is_err());
    assert!(Manifest::from_bytes(b"silo-runtime-manifest 1\nname Tiny\nversion 1.2.3\n").is_err());
    assert!(Manifest::from_bytes(b"").is_err());
}

/// Any tree of paths whose names hold any character but `/` and NUL.
fn arbitrary_manifest() -> impl Strategy<Value = Manifest> {
    let component = "[^/\0]{1,8}".prop_filter("not . or ..", |c| c != "." && c != "..");
    let leaf = prop_oneof![
        (any::<u16>(), any::<u64>(), any::<[u8; 32]>()).prop_map(|(mode, size, sha256)| {
            EntryKind::File {
                mode: u32::from(mode) & 0o7777,
                size,
                sha256,
            }
        }),
        "[^\0]{1,20}".prop_map(|target| EntryKind::Symlink { target }),
        any::<u16>().prop_map(|mode| EntryKind::Dir {
            mode: u32::from(mode) & 0o7777
        }),
    ];
    let item = (
        prop::collection::vec(component, 1..4),
        leaf,
        any::<u32>(),
        any::<u32>(),
    );
    prop::collection::vec(item, 0..12).prop_map(|items| {
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        for (components, kind, uid, gid) in items {
            let mut path = String::new();
            for (i, component) in components.iter().enumerate() {
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(component);
                let last = i + 1 == components.len();
                match entries.get(&path) {
                    Some(existing) if !matches!(existing.kind, EntryKind::Dir { .. }) => break,
                    Some(_) if !last => continue,
                    Some(_) => break,
                    None => {}
                }
                let kind = if last {
                    kind.clone()
                } else {
                    EntryKind::Dir { mode: 0o755 }
                };
                entries.insert(
                    path.clone(),
                    Entry {
                        path: path.clone(),
                        uid,
                        gid,
                        kind,
                    },
                );
            }
        }
        manifest(entries.into_values().collect())
    })
}

proptest! {
    #[test]
    fn to_bytes_reads_back_equal_whatever_the_names(m in arbitrary_manifest()) {
        let bytes = m.to_bytes();
        prop_assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), m.entries.len() + 3);
        let back = Manifest::from_bytes(&bytes);
        prop_assert!(back.is_ok(), "{:?}", back);
        prop_assert_eq!(back.unwrap(), m);
    }
}

#[test]
fn a_signature_by_a_trusted_key_verifies_and_gives_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let key = common::key(tmp.path(), "key");
    let m = manifest(vec![dir("a"), file("a/b", b"hello")]);
    let signature = key.sign(&m);
    let read = Signature::from_text(&signature.to_text()).unwrap();
    assert_eq!(read, signature);
    let verified = verify_signature(&m.to_bytes(), &read, &[key.public_key()]).unwrap();
    assert_eq!(verified, m);
}

#[test]
fn a_signature_by_an_untrusted_key_is_refused_naming_its_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let trusted = common::key(tmp.path(), "trusted");
    let stranger = common::key(tmp.path(), "stranger");
    let m = manifest(vec![dir("a")]);
    let error =
        verify_signature(&m.to_bytes(), &stranger.sign(&m), &[trusted.public_key()]).unwrap_err();
    let fingerprint = stranger.public_key().fingerprint();
    assert!(
        matches!(&error, ManifestError::UntrustedSigner { fingerprint: f } if *f == fingerprint)
    );
    assert!(error.to_string().contains(&fingerprint));
}

#[test]
fn one_flipped_byte_in_the_manifest_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let key = common::key(tmp.path(), "key");
    let m = manifest(vec![dir("a"), file("a/b", b"hello")]);
    let signature = key.sign(&m);
    let mut bytes = m.to_bytes();
    let last = bytes.len() - 2;
    bytes[last] ^= 0x01;
    let error = verify_signature(&bytes, &signature, &[key.public_key()]).unwrap_err();
    assert!(
        matches!(error, ManifestError::BadSignature { .. }),
        "{error}"
    );
}

#[test]
fn a_key_file_is_created_private_once_and_loaded_after() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("signing.key");
    let first = SigningKey::load_or_create(&path).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        fs::read_to_string(&path)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----\n")
    );
    let again = SigningKey::load_or_create(&path).unwrap();
    assert_eq!(first.public_key(), again.public_key());
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "no temporary left behind"
    );
}

#[test]
fn a_key_file_that_is_not_a_key_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("signing.key");
    fs::write(&path, "not a key").unwrap();
    let error = SigningKey::load_or_create(&path).unwrap_err();
    assert!(matches!(error, KeyError::BadKeyFile { .. }));
    assert!(error.to_string().contains("signing.key"));
}

#[test]
fn public_keys_are_one_line_of_text_with_a_short_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let key = common::key(tmp.path(), "key").public_key();
    let text = key.to_text();
    assert!(text.starts_with("silo-runtime-key ed25519 ") && !text.contains('\n'));
    assert_eq!(PublicKey::from_text(&format!("  {text}\n")).unwrap(), key);
    let fingerprint = key.fingerprint();
    assert!(fingerprint.starts_with("sha256:") && fingerprint.len() == 7 + 16);
    for bad in [
        "",
        "silo-runtime-key ed25519",
        "silo-runtime-key rsa AAAA",
        "silo-runtime-key ed25519 AAAA",
    ] {
        assert!(PublicKey::from_text(bad).is_err(), "{bad:?}");
    }
    assert!(Signature::from_text("silo-runtime-signature ed25519 x y").is_err());
}
