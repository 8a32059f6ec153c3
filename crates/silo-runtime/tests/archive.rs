//! The archive: a runtime moves between servers intact, and a hostile archive writes
//! nothing outside the staging directory and is refused naming the offending entry.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use silo_runtime::archive::{ArchiveError, Refusal, UnpackProgress, export, unpack};
use silo_runtime::layout::VersionDir;
use silo_runtime::manifest::{
    BadPath, Entry, EntryKind, Manifest, ManifestError, SigningKey, verify_tree,
};
use tar::{EntryType, Header};

fn exported(version: &VersionDir) -> Vec<u8> {
    let mut out = Vec::new();
    let mut last = 0;
    export(version, &mut out, |written| {
        assert!(written >= last, "progress goes forward");
        last = written;
    })
    .unwrap();
    assert_eq!(
        last,
        zstd::decode_all(out.as_slice()).unwrap().len() as u64,
        "the last progress is the size of the tar stream"
    );
    out
}

#[test]
fn export_then_unpack_reproduces_the_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let key = common::key(tmp.path(), "key");
    let version = VersionDir(tmp.path().join("installed"));
    fs::create_dir_all(version.rootfs()).unwrap();
    common::make_tree(&version.rootfs());
    // Names and targets longer than a tar header holds.
    let long_dir = version.rootfs().join("d".repeat(120));
    fs::create_dir(&long_dir).unwrap();
    common::write(&long_dir.join("f".repeat(150)), b"long\n", 0o644);
    symlink("t".repeat(200), version.rootfs().join("long-link")).unwrap();
    let manifest = Manifest::scan(&version.rootfs(), common::NAME, &common::version()).unwrap();
    common::sign_into(&version, &manifest, &key);

    let archive = exported(&version);
    assert_eq!(archive, exported(&version), "export is deterministic");

    let staging = tmp.path().join("staging");
    fs::create_dir(&staging).unwrap();
    let mut reports = Vec::new();
    // Exactly the room the files need is enough.
    let room = manifest.total_size();
    let (spec, unpacked) = unpack(
        archive.as_slice(),
        &staging,
        &[key.public_key()],
        room,
        |p| reports.push(p),
    )
    .unwrap();
    assert_eq!(spec, common::spec());
    assert_eq!(unpacked, manifest);
    // A byte less is refused before anything is written.
    let cramped = tmp.path().join("cramped");
    fs::create_dir(&cramped).unwrap();
    let error = unpack(
        archive.as_slice(),
        &cramped,
        &[key.public_key()],
        room - 1,
        |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(error, ArchiveError::NoRoom { need, room: r } if need == room && r == room - 1),
        "{error}"
    );
    assert_eq!(fs::read_dir(&cramped).unwrap().count(), 0);
    let staged = VersionDir(staging);
    assert_eq!(verify_tree(&manifest, &staged.rootfs()).unwrap(), []);
    assert_eq!(fs::read(staged.manifest()).unwrap(), manifest.to_bytes());
    staged.read(&[key.public_key()]).unwrap();
    assert_eq!(
        reports.last(),
        Some(&UnpackProgress {
            entries_done: manifest.entries.len() as u64 + 3,
            entries_total: manifest.entries.len() as u64 + 3,
            bytes_done: manifest.total_size(),
            bytes_total: manifest.total_size(),
        })
    );
}

#[test]
fn unpack_needs_an_empty_staging_directory() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("junk"), b"").unwrap();
    let error = unpack(&b""[..], tmp.path(), &[], u64::MAX, |_| {}).unwrap_err();
    assert!(
        matches!(error, ArchiveError::StagingNotEmpty { .. }),
        "{error}"
    );
}

/// A small signed runtime for hostile archives: `d/`, `d/f` ("hello\n"), `link` (a
/// symlink to a directory outside), `suid` (mode 04755).
struct Fixture {
    tmp: tempfile::TempDir,
    key: SigningKey,
    manifest: Manifest,
    outside: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let key = common::key(tmp.path(), "key");
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let entry = |path: &str, kind| Entry {
            path: path.into(),
            uid: 0,
            gid: 0,
            kind,
        };
        let file = |path: &str, mode, content: &[u8]| {
            entry(
                path,
                EntryKind::File {
                    mode,
                    size: content.len() as u64,
                    sha256: ring::digest::digest(&ring::digest::SHA256, content)
                        .as_ref()
                        .try_into()
                        .unwrap(),
                },
            )
        };
        let manifest = Manifest {
            name: common::NAME.into(),
            version: common::version(),
            entries: vec![
                entry("d", EntryKind::Dir { mode: 0o755 }),
                file("d/f", 0o644, b"hello\n"),
                entry(
                    "link",
                    EntryKind::Symlink {
                        target: outside.to_str().unwrap().into(),
                    },
                ),
                file("suid", 0o4755, b"#!/bin/sh\n"),
            ],
        };
        fs::create_dir(tmp.path().join("staging")).unwrap();
        Fixture {
            tmp,
            key,
            manifest,
            outside,
        }
    }

    fn staging(&self) -> PathBuf {
        self.tmp.path().join("staging")
    }

    /// An archive whose first three entries are right, signed by `key`.
    fn archive_signed_by(&self, key: &SigningKey) -> Evil {
        let mut evil = Evil::default();
        evil.file(b"manifest", &self.manifest.to_bytes());
        evil.file(
            b"manifest.sig",
            key.sign(&self.manifest).to_text().as_bytes(),
        );
        evil.file(b"runtime.yml", common::spec().to_yaml().as_bytes());
        evil
    }

    fn archive(&self) -> Evil {
        self.archive_signed_by(&self.key)
    }

    /// The rootfs entries of an honest archive, in order.
    fn honest(&self, evil: &mut Evil) {
        evil.entry(b"rootfs/d/", EntryType::Directory, b"", b"");
        evil.file(b"rootfs/d/f", b"hello\n");
        evil.entry(
            b"rootfs/link",
            EntryType::Symlink,
            b"",
            self.outside.to_str().unwrap().as_bytes(),
        );
        evil.file(b"rootfs/suid", b"#!/bin/sh\n");
    }

    fn unpack(&self, evil: Evil) -> Result<(), ArchiveError> {
        let archive = evil.finish();
        let result = unpack(
            archive.as_slice(),
            &self.staging(),
            &[self.key.public_key()],
            u64::MAX,
            |_| {},
        );
        self.assert_nothing_outside_staging();
        result.map(|_| ())
    }

    /// Only the key, the empty outside directory and staging exist in the temp dir.
    fn assert_nothing_outside_staging(&self) {
        let staging = self.staging();
        let stray: Vec<PathBuf> = common::listing(self.tmp.path())
            .into_iter()
            .filter(|p| !p.starts_with(&staging) && *p != self.outside && !p.ends_with("key"))
            .collect();
        assert_eq!(stray, Vec::<PathBuf>::new());
        assert_eq!(fs::read_dir(&self.outside).unwrap().count(), 0);
        assert!(!Path::new("/escape").exists() && !Path::new("/abs").exists());
    }
}

/// Builds tar streams by hand, with any name and type (the tar crate's safe setters
/// refuse `..` and absolute paths, so names are written into the header directly).
#[derive(Default)]
struct Evil {
    bytes: Vec<u8>,
}

impl Evil {
    fn entry(&mut self, name: &[u8], kind: EntryType, data: &[u8], link: &[u8]) {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
        header.set_cksum();
        self.bytes.extend_from_slice(header.as_bytes());
        self.bytes.extend_from_slice(data);
        let padding = (512 - data.len() % 512) % 512;
        self.bytes.resize(self.bytes.len() + padding, 0);
    }

    fn file(&mut self, name: &[u8], data: &[u8]) {
        self.entry(name, EntryType::Regular, data, b"");
    }

    /// The archive as exports write it: the tar stream, zstd-compressed.
    fn finish(mut self) -> Vec<u8> {
        self.bytes.extend_from_slice(&[0; 1024]);
        zstd::encode_all(self.bytes.as_slice(), 3).unwrap()
    }
}

fn refused(result: Result<(), ArchiveError>) -> (String, Refusal) {
    match result {
        Err(ArchiveError::Refused { entry, why }) => (entry, why),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn an_honest_hand_made_archive_unpacks_and_setuid_is_dropped() {
    let f = Fixture::new();
    let mut evil = f.archive();
    f.honest(&mut evil);
    f.unpack(evil).unwrap();
    let rootfs = f.staging().join("rootfs");
    assert_eq!(fs::read(rootfs.join("d/f")).unwrap(), b"hello\n");
    assert_eq!(fs::read_link(rootfs.join("link")).unwrap(), f.outside);
    let mode = fs::metadata(rootfs.join("suid")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o755, "setuid is dropped, not refused");
    assert_eq!(verify_tree(&f.manifest, &rootfs).unwrap(), []);
}

#[test]
fn escaping_names_are_refused_naming_the_entry() {
    let cases: [(&[u8], BadPath); 4] = [
        (b"../escape", BadPath::DotDot),
        (b"/abs", BadPath::Absolute),
        (b"rootfs/../../x", BadPath::DotDot),
        (b"rootfs/d/./f", BadPath::Dot),
    ];
    for (name, bad) in cases {
        let f = Fixture::new();
        let mut evil = f.archive();
        evil.entry(b"rootfs/d/", EntryType::Directory, b"", b"");
        evil.file(name, b"gotcha\n");
        let (entry, why) = refused(f.unpack(evil));
        assert_eq!(entry.as_bytes(), name);
        assert_eq!(why, Refusal::BadPath(bad));
    }
}

#[test]
fn an_escaping_name_in_first_place_is_refused_naming_it() {
    let f = Fixture::new();
    let mut evil = Evil::default();
    evil.file(b"../escape", b"gotcha\n");
    let (entry, why) = refused(f.unpack(evil));
    assert_eq!(entry, "../escape");
    assert_eq!(
        why,
        Refusal::Unexpected {
            expected: "manifest"
        }
    );
    assert_eq!(fs::read_dir(f.staging()).unwrap().count(), 0);
}

#[test]
fn a_file_through_a_symlink_is_refused_and_nothing_lands_outside() {
    let f = Fixture::new();
    let mut evil = f.archive();
    evil.entry(
        b"rootfs/link",
        EntryType::Symlink,
        b"",
        f.outside.to_str().unwrap().as_bytes(),
    );
    evil.file(b"rootfs/link/evil", b"gotcha\n");
    let (entry, why) = refused(f.unpack(evil));
    assert_eq!(
        (entry.as_str(), why),
        ("rootfs/link/evil", Refusal::NotInManifest)
    );
}

#[test]
fn an_entry_before_its_parent_directory_is_refused() {
    let f = Fixture::new();
    let mut evil = f.archive();
    evil.file(b"rootfs/d/f", b"hello\n");
    let (entry, why) = refused(f.unpack(evil));
    assert_eq!(
        (entry.as_str(), why),
        ("rootfs/d/f", Refusal::ParentNotUnpacked)
    );
}

#[test]
fn a_directory_sent_as_a_symlink_is_refused() {
    let f = Fixture::new();
    let mut evil = f.archive();
    evil.entry(
        b"rootfs/d",
        EntryType::Symlink,
        b"",
        f.outside.to_str().unwrap().as_bytes(),
    );
    evil.file(b"rootfs/d/f", b"hello\n");
    let (entry, why) = refused(f.unpack(evil));
    assert_eq!(entry, "rootfs/d");
    assert_eq!(
        why,
        Refusal::KindMismatch {
            archive: "symlink",
            manifest: "directory"
        }
    );
}

#[test]
fn a_hard_link_is_refused() {
    let f = Fixture::new();
    let mut evil = f.archive();
    evil.entry(b"rootfs/d/", EntryType::Directory, b"", b"");
    evil.entry(b"rootfs/d/f", EntryType::Link, b"", b"/etc/passwd");
    let (entry, why) = refused(f.unpack(evil));
    assert_eq!((entry.as_str(), why), ("rootfs/d/f", Refusal::HardLink));
}

#[test]
fn a_device_node_is_refused() {
    let f = Fixture::new();
    let mut evil = f.archive();
    evil.entry(b"rootfs/d/", EntryType::Directory, b"", b"");
    evil.entry(b"rootfs/d/f", EntryType::Char, b"", b"");
    let (entry, why) = refused(f.unpack(evil));
    assert_eq!(
        (entry.as_str(), why),
        ("rootfs/d/f", Refusal::Special("character device"))
    );
}

#[test]
fn an_entry_the_manifest_does_not_list_is_refused() {
    let f = Fixture::new();
    let mut evil = f.archive();
    f.honest(&mut evil);
    evil.file(b"rootfs/d/extra", b"more\n");
    let (entry, why) = refused(f.unpack(evil));
    assert_eq!(
        (entry.as_str(), why),
        ("rootfs/d/extra", Refusal::NotInManifest)
    );
}

#[test]
fn an_entry_given_twice_is_refused() {
    let f = Fixture::new();
    let mut evil = f.archive();
    f.honest(&mut evil);
    evil.file(b"rootfs/d/f", b"hello\n");
    let (entry, why) = refused(f.unpack(evil));
    assert_eq!((entry.as_str(), why), ("rootfs/d/f", Refusal::Duplicate));
}

#[test]
fn a_file_one_byte_off_the_manifest_is_refused() {
    let f = Fixture::new();
    let mut evil = f.archive();
    evil.entry(b"rootfs/d/", EntryType::Directory, b"", b"");
    evil.file(b"rootfs/d/f", b"hellO\n");
    let (entry, why) = refused(f.unpack(evil));
    assert_eq!(entry, "rootfs/d/f");
    assert!(matches!(why, Refusal::HashMismatch { .. }), "{why}");
}

#[test]
fn a_file_of_another_size_is_refused_before_it_is_read() {
    let f = Fixture::new();
    let mut evil = f.archive();
    evil.entry(b"rootfs/d/", EntryType::Directory, b"", b"");
    evil.file(b"rootfs/d/f", b"hello world\n");
    let (entry, why) = refused(f.unpack(evil));
    assert_eq!(entry, "rootfs/d/f");
    assert_eq!(
        why,
        Refusal::SizeMismatch {
            archive: 12,
            manifest: 6
        }
    );
}

#[test]
fn a_manifest_signed_by_an_untrusted_key_is_refused_before_any_rootfs_entry() {
    let f = Fixture::new();
    let stranger = common::key(f.tmp.path(), "stranger");
    let mut evil = f.archive_signed_by(&stranger);
    f.honest(&mut evil);
    let archive = evil.finish();
    let error = unpack(
        archive.as_slice(),
        &f.staging(),
        &[f.key.public_key()],
        u64::MAX,
        |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(&error, ArchiveError::Manifest(ManifestError::UntrustedSigner { fingerprint }) if *fingerprint == stranger.public_key().fingerprint()),
        "{error}"
    );
    assert_eq!(
        fs::read_dir(f.staging()).unwrap().count(),
        0,
        "nothing was written"
    );
}

#[test]
fn a_spec_for_another_runtime_is_refused() {
    let f = Fixture::new();
    let mut evil = Evil::default();
    evil.file(b"manifest", &f.manifest.to_bytes());
    evil.file(
        b"manifest.sig",
        f.key.sign(&f.manifest).to_text().as_bytes(),
    );
    let mut other = common::spec();
    other.version = semver::Version::new(9, 9, 9);
    evil.file(b"runtime.yml", other.to_yaml().as_bytes());
    let error = f.unpack(evil).unwrap_err();
    assert!(matches!(error, ArchiveError::Mismatch { .. }), "{error}");
}

#[test]
fn an_archive_missing_entries_is_refused_naming_them() {
    let f = Fixture::new();
    let mut evil = f.archive();
    evil.entry(b"rootfs/d/", EntryType::Directory, b"", b"");
    let error = f.unpack(evil).unwrap_err();
    assert!(
        matches!(&error, ArchiveError::Missing { paths } if paths == &["d/f", "link", "suid"]),
        "{error}"
    );
    assert!(error.to_string().contains("`d/f`, `link`, `suid`"));
}

#[test]
fn a_truncated_archive_is_an_error() {
    let f = Fixture::new();
    let mut evil = f.archive();
    f.honest(&mut evil);
    let tar = zstd::decode_all(evil.finish().as_slice()).unwrap();
    let archive = zstd::encode_all(&tar[..tar.len() - 1024 - 600], 3).unwrap();
    let cut = archive.as_slice();
    let error = unpack(cut, &f.staging(), &[f.key.public_key()], u64::MAX, |_| {}).unwrap_err();
    assert!(
        matches!(error, ArchiveError::Read(_) | ArchiveError::Missing { .. }),
        "{error}"
    );
}

#[test]
fn a_directory_mode_is_applied_after_its_contents() {
    let f = Fixture::new();
    let mut manifest = f.manifest.clone();
    manifest.entries[0].kind = EntryKind::Dir { mode: 0o555 };
    let mut evil = Evil::default();
    evil.file(b"manifest", &manifest.to_bytes());
    evil.file(b"manifest.sig", f.key.sign(&manifest).to_text().as_bytes());
    evil.file(b"runtime.yml", common::spec().to_yaml().as_bytes());
    f.honest(&mut evil);
    f.unpack(evil).unwrap();
    let rootfs = f.staging().join("rootfs");
    assert_eq!(
        fs::metadata(rootfs.join("d")).unwrap().permissions().mode() & 0o7777,
        0o555
    );
    assert_eq!(verify_tree(&manifest, &rootfs).unwrap(), []);
}

#[test]
fn a_pax_header_is_refused() {
    let f = Fixture::new();
    let mut evil = f.archive();
    evil.entry(
        b"rootfs/pax",
        EntryType::XHeader,
        b"30 path=rootfs/../../escape\n",
        b"",
    );
    evil.file(b"rootfs/d/f", b"hello\n");
    let (entry, why) = refused(f.unpack(evil));
    assert_eq!(
        (entry.as_str(), why),
        ("rootfs/pax", Refusal::UnsupportedType(b'x'))
    );
}

#[test]
fn export_refuses_a_tree_that_changed_since_its_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let key = common::key(tmp.path(), "key");
    let (version, _) = common::make_version(&tmp.path().join("v"), &key);
    fs::write(version.rootfs().join("etc/empty"), b"not empty any more").unwrap();
    let error = export(&version, std::io::sink(), |_| {}).unwrap_err();
    assert!(
        matches!(&error, ArchiveError::TreeChanged { path, .. } if path.ends_with("etc/empty")),
        "{error}"
    );
}
