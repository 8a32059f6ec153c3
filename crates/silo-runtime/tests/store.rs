//! The object store: each content is kept once, and objects nobody uses are collected.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use silo_runtime::manifest::{Manifest, verify_tree};
use silo_runtime::store::{InternStats, ObjectStore};

fn tree(root: &Path, name: &str, extra: &[u8]) -> (std::path::PathBuf, Manifest) {
    let rootfs = root.join(name);
    fs::create_dir(&rootfs).unwrap();
    common::make_tree(&rootfs);
    common::write(&rootfs.join("own"), extra, 0o644);
    let m = Manifest::scan(&rootfs, common::NAME, &common::version()).unwrap();
    (rootfs, m)
}

fn ino(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().ino()
}

#[test]
fn two_trees_sharing_a_file_end_up_with_one_inode() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(&tmp.path().join("objects")).unwrap();
    assert_eq!(fs::metadata(store.dir()).unwrap().mode() & 0o777, 0o700);
    let (a, ma) = tree(tmp.path(), "a", b"only in a\n");
    let (b, mb) = tree(tmp.path(), "b", b"only in b!\n");
    assert_ne!(ino(&a.join("bin/busybox")), ino(&b.join("bin/busybox")));

    let first = store.intern(&a, &ma).unwrap();
    // busybox (23) + odd (4) + user (14) + empty (0) + own (10)
    assert_eq!(
        first,
        InternStats {
            files: 5,
            new_bytes: 51,
            shared_bytes: 0
        }
    );
    let second = store.intern(&b, &mb).unwrap();
    assert_eq!(
        second,
        InternStats {
            files: 5,
            new_bytes: 11,
            shared_bytes: 41
        }
    );
    assert_eq!(ino(&a.join("bin/busybox")), ino(&b.join("bin/busybox")));
    assert_ne!(ino(&a.join("own")), ino(&b.join("own")));
    assert_eq!(
        fs::symlink_metadata(a.join("bin/busybox")).unwrap().nlink(),
        3
    );
    assert_eq!(store.shared_bytes(&a, &ma).unwrap(), 41);
    assert_eq!(
        verify_tree(&ma, &a).unwrap(),
        [],
        "interning changes nothing visible"
    );
    assert_eq!(verify_tree(&mb, &b).unwrap(), []);

    let again = store.intern(&a, &ma).unwrap();
    assert_eq!(
        (again.new_bytes, again.shared_bytes),
        (0, 0),
        "interning twice does nothing"
    );
}

#[test]
fn the_same_content_with_another_owner_or_mode_is_another_object() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(&tmp.path().join("objects")).unwrap();
    let (a, ma) = tree(tmp.path(), "a", b"same\n");
    let (b, _) = tree(tmp.path(), "b", b"same\n");
    std::os::unix::fs::chown(b.join("own"), Some(1), Some(1)).unwrap();
    let mb = Manifest::scan(&b, common::NAME, &common::version()).unwrap();
    store.intern(&a, &ma).unwrap();
    store.intern(&b, &mb).unwrap();
    assert_ne!(ino(&a.join("own")), ino(&b.join("own")));
    assert_eq!(fs::symlink_metadata(b.join("own")).unwrap().uid(), 1);
}

#[test]
fn collect_garbage_removes_objects_of_a_deleted_tree_only() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(&tmp.path().join("objects")).unwrap();
    let (a, ma) = tree(tmp.path(), "a", b"only in a\n");
    let (b, mb) = tree(tmp.path(), "b", b"only in b!\n");
    store.intern(&a, &ma).unwrap();
    store.intern(&b, &mb).unwrap();
    assert_eq!(
        store.collect_garbage().unwrap(),
        0,
        "every object is in use"
    );

    fs::remove_dir_all(&a).unwrap();
    assert_eq!(
        store.collect_garbage().unwrap(),
        10,
        "only a's own file is freed"
    );
    assert_eq!(store.shared_bytes(&b, &mb).unwrap(), 0);
    assert_eq!(verify_tree(&mb, &b).unwrap(), []);

    fs::remove_dir_all(&b).unwrap();
    assert_eq!(store.collect_garbage().unwrap(), 41 + 11);
    let left: usize = fs::read_dir(store.dir())
        .unwrap()
        .map(|shard| fs::read_dir(shard.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(left, 0);
}

#[test]
fn a_file_that_does_not_match_its_manifest_is_not_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ObjectStore::open(&tmp.path().join("objects")).unwrap();
    let (a, ma) = tree(tmp.path(), "a", b"x\n");
    fs::write(a.join("own"), b"longer now\n").unwrap();
    let error = store.intern(&a, &ma).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("/a/own does not match the manifest"),
        "{error}"
    );
}
