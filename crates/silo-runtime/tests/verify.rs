//! Checking a tree against its manifest: every kind of drift is found and named.

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::time::Instant;

use silo_runtime::manifest::{Difference, DifferenceKind, Manifest, verify_tree};

fn scanned() -> (tempfile::TempDir, Manifest) {
    let tmp = tempfile::tempdir().unwrap();
    common::make_tree(tmp.path());
    let m = Manifest::scan(tmp.path(), common::NAME, &common::version()).unwrap();
    (tmp, m)
}

fn one(differences: Vec<Difference>) -> Difference {
    assert_eq!(differences.len(), 1, "{differences:?}");
    differences.into_iter().next().unwrap()
}

#[test]
fn an_untouched_tree_has_no_differences() {
    let (tmp, m) = scanned();
    assert_eq!(verify_tree(&m, tmp.path()).unwrap(), []);
}

#[test]
fn one_changed_byte_names_the_file() {
    let (tmp, m) = scanned();
    fs::write(tmp.path().join("bin/busybox"), b"#!/bin/sh\necho busyboX\n").unwrap();
    let d = one(verify_tree(&m, tmp.path()).unwrap());
    assert_eq!(d.path, "bin/busybox");
    assert!(
        matches!(&d.what, DifferenceKind::Changed(how) if how.starts_with("content differs (sha256 ")),
        "{d}"
    );
}

#[test]
fn a_deleted_file_is_missing() {
    let (tmp, m) = scanned();
    fs::remove_file(tmp.path().join("etc/empty")).unwrap();
    let d = one(verify_tree(&m, tmp.path()).unwrap());
    assert_eq!(
        (d.path.as_str(), d.what),
        ("etc/empty", DifferenceKind::Missing)
    );
}

#[test]
fn a_new_file_is_extra() {
    let (tmp, m) = scanned();
    fs::write(tmp.path().join("etc/conf.d/new"), b"").unwrap();
    let d = one(verify_tree(&m, tmp.path()).unwrap());
    assert_eq!(
        (d.path.as_str(), d.what),
        ("etc/conf.d/new", DifferenceKind::Extra)
    );
}

#[test]
fn a_chmod_is_a_change_saying_both_modes() {
    let (tmp, m) = scanned();
    fs::set_permissions(
        tmp.path().join("etc/empty"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let d = one(verify_tree(&m, tmp.path()).unwrap());
    assert_eq!(d.path, "etc/empty");
    assert_eq!(
        d.what,
        DifferenceKind::Changed("mode 0755, manifest says 0644".into())
    );
}

#[test]
fn a_chown_a_new_symlink_target_and_a_changed_type_are_changes() {
    let (tmp, m) = scanned();
    std::os::unix::fs::lchown(tmp.path().join("etc/empty"), Some(7), Some(8)).unwrap();
    fs::remove_file(tmp.path().join("bin/sh")).unwrap();
    symlink("/bin/bash", tmp.path().join("bin/sh")).unwrap();
    fs::remove_file(tmp.path().join("etc/a name\nwith 100% odd bytes")).unwrap();
    fs::create_dir(tmp.path().join("etc/a name\nwith 100% odd bytes")).unwrap();
    let differences = verify_tree(&m, tmp.path()).unwrap();
    let hows: Vec<String> = differences.iter().map(ToString::to_string).collect();
    assert_eq!(
        hows,
        [
            "bin/sh: target `/bin/bash`, manifest says `busybox`",
            "etc/a name\nwith 100% odd bytes: is a directory, manifest says file",
            "etc/empty: owner 7:8, manifest says 0:0",
        ]
    );
}

#[test]
fn a_directory_replaced_by_a_symlink_is_not_followed() {
    let (tmp, m) = scanned();
    let elsewhere = tempfile::tempdir().unwrap();
    fs::rename(tmp.path().join("etc"), elsewhere.path().join("etc")).unwrap();
    symlink(elsewhere.path().join("etc"), tmp.path().join("etc")).unwrap();
    let differences = verify_tree(&m, tmp.path()).unwrap();
    assert_eq!(differences[0].path, "etc");
    assert!(
        matches!(&differences[0].what, DifferenceKind::Changed(how) if how == "is a symlink, manifest says directory")
    );
    assert!(
        differences[1..]
            .iter()
            .all(|d| d.what == DifferenceKind::Missing && d.path.starts_with("etc/"))
    );
}

#[test]
fn a_150_mb_tree_verifies_quickly() {
    let tmp = tempfile::tempdir().unwrap();
    let big = vec![0x5au8; 5 << 20];
    for i in 0..30 {
        fs::write(tmp.path().join(format!("file{i}")), &big).unwrap();
    }
    let m = Manifest::scan(tmp.path(), common::NAME, &common::version()).unwrap();
    assert_eq!(m.total_size(), 150 << 20);
    let start = Instant::now();
    assert_eq!(verify_tree(&m, tmp.path()).unwrap(), []);
    let took = start.elapsed();
    eprintln!("verify_tree of 150 MB took {took:?}");
    assert!(took.as_secs_f64() < 2.0, "took {took:?}");
}
