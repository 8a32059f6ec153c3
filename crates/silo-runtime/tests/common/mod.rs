//! A small runtime tree, a key and an installed version directory, shared by the tests.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use silo_runtime::layout::VersionDir;
use silo_runtime::manifest::{Manifest, SigningKey};
use silo_runtime::spec::RuntimeSpec;

pub const NAME: &str = "tiny";

pub fn version() -> semver::Version {
    semver::Version::new(1, 2, 3)
}

pub fn spec() -> RuntimeSpec {
    RuntimeSpec::parse("name: tiny\nversion: 1.2.3\nbase:\n  busybox: /bin/busybox\n").unwrap()
}

pub fn write(path: &Path, content: &[u8], mode: u32) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with directories, files (one empty, one with an awkward name, one owned by
/// 1000:1000), and a symlink.
pub fn make_tree(rootfs: &Path) {
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::create_dir_all(rootfs.join("etc/conf.d")).unwrap();
    write(
        &rootfs.join("bin/busybox"),
        b"#!/bin/sh\necho busybox\n",
        0o755,
    );
    symlink("busybox", rootfs.join("bin/sh")).unwrap();
    write(&rootfs.join("etc/empty"), b"", 0o644);
    write(
        &rootfs.join("etc/a name\nwith 100% odd bytes"),
        b"odd\n",
        0o600,
    );
    write(&rootfs.join("etc/conf.d/user"), b"owned by 1000\n", 0o640);
    std::os::unix::fs::chown(rootfs.join("etc/conf.d/user"), Some(1000), Some(1000)).unwrap();
    fs::set_permissions(rootfs.join("etc/conf.d"), fs::Permissions::from_mode(0o750)).unwrap();
}

/// An installed version: the tree, its spec, its manifest signed by `key`.
pub fn make_version(dir: &Path, key: &SigningKey) -> (VersionDir, Manifest) {
    let version = VersionDir(dir.to_owned());
    fs::create_dir_all(&version.0).unwrap();
    fs::create_dir(version.rootfs()).unwrap();
    make_tree(&version.rootfs());
    let manifest = Manifest::scan(&version.rootfs(), NAME, &self::version()).unwrap();
    sign_into(&version, &manifest, key);
    (version, manifest)
}

/// Writes the spec, manifest and signature files of a version.
pub fn sign_into(version: &VersionDir, manifest: &Manifest, key: &SigningKey) {
    fs::write(version.spec(), spec().to_yaml()).unwrap();
    fs::write(version.manifest(), manifest.to_bytes()).unwrap();
    fs::write(version.signature(), key.sign(manifest).to_text()).unwrap();
}

pub fn key(dir: &Path, name: &str) -> SigningKey {
    SigningKey::load_or_create(&dir.join(name)).unwrap()
}

/// Every path under `dir`, for checking that nothing was written elsewhere.
pub fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                pending.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}
