use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::{first_cert, fresh_pki, read};
use crate::pki::{certificate_sans, server_sans};
use crate::{
    CertPaths, LEAF_VALIDITY, Role, TlsError, ensure_server_pki, init_pki, issue_client_cert,
    peer_identity, read_pem_file,
};

fn all_files(paths: &CertPaths) -> Vec<PathBuf> {
    paths
        .pairs()
        .into_iter()
        .flat_map(|(cert, key)| [cert, key])
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

/// Content, inode and modification time of every file: a rewrite changes at least one.
fn snapshot(paths: &CertPaths) -> BTreeMap<PathBuf, (Vec<u8>, u64, SystemTime)> {
    all_files(paths)
        .into_iter()
        .map(|path| {
            let meta = fs::metadata(&path).expect("metadata");
            let modified = meta.modified().expect("mtime");
            (path.clone(), (read(&path), meta.ino(), modified))
        })
        .collect()
}

#[test]
fn ensure_server_pki_creates_eight_files_with_private_modes() {
    let temp = tempfile::tempdir().expect("temp dir");
    let paths = CertPaths::new(temp.path().join("state/certs"));

    let report = ensure_server_pki(&paths.dir, &[]).expect("ensure_server_pki");

    let mut created = report.created.clone();
    created.sort();
    let mut expected = all_files(&paths);
    expected.sort();
    assert_eq!(created, expected);
    assert!(report.server_missing_sans.is_empty());
    assert_eq!(mode(&paths.dir), 0o700);
    for (cert, key) in paths.pairs() {
        assert_eq!(mode(&key), 0o600, "{}", key.display());
        assert!(read(&cert).starts_with(b"-----BEGIN CERTIFICATE-----"));
        assert!(read(&key).starts_with(b"-----BEGIN PRIVATE KEY-----"));
    }
    let leftovers: Vec<_> = fs::read_dir(&paths.dir)
        .expect("read_dir")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn ensure_server_pki_twice_rewrites_nothing() {
    let (_temp, paths) = fresh_pki();
    let before = snapshot(&paths);

    let report = ensure_server_pki(&paths.dir, &[]).expect("second ensure_server_pki");

    assert!(report.created.is_empty(), "{:?}", report.created);
    assert!(report.server_missing_sans.is_empty());
    assert_eq!(snapshot(&paths), before);
}

#[test]
fn ensure_server_pki_signs_a_missing_pair_with_the_existing_ca() {
    let (_temp, paths) = fresh_pki();
    let (viewer, viewer_key) = paths.client(Role::Viewer);
    fs::remove_file(&viewer).expect("remove");
    fs::remove_file(&viewer_key).expect("remove");
    let ca_before = read(&paths.ca());

    let report = ensure_server_pki(&paths.dir, &[]).expect("ensure_server_pki");

    assert_eq!(report.created, vec![viewer_key.clone(), viewer.clone()]);
    assert_eq!(read(&paths.ca()), ca_before);
    let server = crate::server_config(
        &read(&paths.ca()),
        &read(&paths.server()),
        &read(&paths.server_key()),
        None,
    )
    .expect("server config");
    let client = crate::client_config(&read(&paths.ca()), &read(&viewer), &read(&viewer_key))
        .expect("client config");
    super::handshake::handshake(client, server, "localhost").expect("handshake");
}

#[test]
fn ensure_server_pki_refuses_half_a_pair() {
    let (_temp, paths) = fresh_pki();
    fs::remove_file(paths.server_key()).expect("remove");

    let err = ensure_server_pki(&paths.dir, &[]).unwrap_err();

    assert!(
        matches!(&err, TlsError::IncompletePair { present, missing }
            if *present == paths.server() && *missing == paths.server_key()),
        "{err}"
    );
    assert!(!paths.server_key().exists());
}

#[test]
fn ensure_server_pki_refuses_a_new_ca_under_existing_certificates() {
    let (_temp, paths) = fresh_pki();
    fs::remove_file(paths.ca()).expect("remove");
    fs::remove_file(paths.ca_key()).expect("remove");

    let err = ensure_server_pki(&paths.dir, &[]).unwrap_err();

    assert!(matches!(err, TlsError::MissingCa { .. }), "{err}");
    assert!(!paths.ca().exists());
}

#[test]
fn ensure_server_pki_reports_names_the_existing_server_cert_lacks() {
    let (_temp, paths) = fresh_pki();
    let before = snapshot(&paths);

    let report =
        ensure_server_pki(&paths.dir, &["silo.example.com".to_owned()]).expect("ensure_server_pki");

    assert!(report.created.is_empty());
    assert_eq!(report.server_missing_sans, vec!["silo.example.com"]);
    assert_eq!(snapshot(&paths), before);
}

#[test]
fn ensure_server_pki_rejects_a_san_that_is_no_name() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("certs");

    let err = ensure_server_pki(&dir, &["not a name!".to_owned()]).unwrap_err();

    assert!(matches!(err, TlsError::InvalidSan { .. }), "{err}");
    assert!(!dir.exists());
}

#[test]
fn server_cert_names_localhost_loopback_hostname_and_extra_sans() {
    let temp = tempfile::tempdir().expect("temp dir");
    let paths = CertPaths::new(temp.path());
    let extra = [
        "Silo.Example.com".to_owned(),
        "10.1.2.3".to_owned(),
        "fe80::1".to_owned(),
    ];

    ensure_server_pki(&paths.dir, &extra).expect("ensure_server_pki");

    let sans = certificate_sans(&first_cert(&paths.server())).expect("sans");
    for expected in [
        "localhost",
        "127.0.0.1",
        "::1",
        "silo.example.com",
        "10.1.2.3",
        "fe80::1",
    ] {
        assert!(
            sans.iter().any(|san| san == expected),
            "{expected} not in {sans:?}"
        );
    }
    if let Ok(hostname) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let hostname = hostname.trim().to_ascii_lowercase();
        assert!(sans.contains(&hostname), "{hostname} not in {sans:?}");
    }
    assert_eq!(sans, server_sans(&extra).expect("server_sans"));
}

#[test]
fn init_pki_writes_a_complete_directory() {
    let temp = tempfile::tempdir().expect("temp dir");
    let paths = CertPaths::new(temp.path().join("out"));

    init_pki(&paths.dir, &[], LEAF_VALIDITY).expect("init_pki");

    for path in all_files(&paths) {
        assert!(path.is_file(), "{}", path.display());
    }
    assert_eq!(mode(&paths.dir), 0o700);
    assert_eq!(mode(&paths.ca_key()), 0o600);
    let identity = peer_identity(&first_cert(&paths.client(Role::Admin).0)).expect("identity");
    assert_eq!(identity.role, Some(Role::Admin));
}

#[test]
fn init_pki_refuses_to_overwrite_and_names_the_file() {
    let temp = tempfile::tempdir().expect("temp dir");
    let paths = CertPaths::new(temp.path());
    let (viewer, _) = paths.client(Role::Viewer);
    fs::write(&viewer, b"keep me").expect("write");

    let err = init_pki(&paths.dir, &[], LEAF_VALIDITY).unwrap_err();

    assert_eq!(
        err.to_string(),
        format!(
            "refusing to overwrite {}: the file already exists",
            viewer.display()
        )
    );
    assert_eq!(read(&viewer), b"keep me");
    assert!(!paths.ca().exists(), "nothing else may be written");
}

#[test]
fn issue_client_cert_writes_a_named_cert_with_its_role() {
    let (temp, paths) = fresh_pki();
    let out = temp.path().join("issued");

    let (cert, key) = issue_client_cert(
        &paths.ca(),
        &paths.ca_key(),
        Role::Viewer,
        "ci-bot",
        &out,
        LEAF_VALIDITY,
    )
    .expect("issue_client_cert");

    assert_eq!(cert, out.join("ci-bot.pem"));
    assert_eq!(key, out.join("ci-bot-key.pem"));
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&out), 0o700);
    let identity = peer_identity(&first_cert(&cert)).expect("identity");
    assert_eq!(identity.common_name, "ci-bot");
    assert_eq!(identity.role, Some(Role::Viewer));
}

#[test]
fn issue_client_cert_refuses_to_overwrite() {
    let (temp, paths) = fresh_pki();
    let out = temp.path();
    fs::write(out.join("alice-key.pem"), b"old key").expect("write");

    let err = issue_client_cert(
        &paths.ca(),
        &paths.ca_key(),
        Role::Admin,
        "alice",
        out,
        LEAF_VALIDITY,
    )
    .unwrap_err();

    assert!(
        matches!(&err, TlsError::AlreadyExists { path } if *path == out.join("alice-key.pem")),
        "{err}"
    );
    assert!(!out.join("alice.pem").exists());
    assert_eq!(read(&out.join("alice-key.pem")), b"old key");
}

#[test]
fn issue_client_cert_rejects_names_that_are_not_plain_file_names() {
    let (temp, paths) = fresh_pki();
    for name in [
        "",
        "../evil",
        "a/b",
        ".hidden",
        "-rf",
        "sp ace",
        &"x".repeat(65),
    ] {
        let err = issue_client_cert(
            &paths.ca(),
            &paths.ca_key(),
            Role::Admin,
            name,
            temp.path(),
            LEAF_VALIDITY,
        )
        .unwrap_err();
        assert!(
            matches!(err, TlsError::InvalidClientName { .. }),
            "{name:?}: {err}"
        );
    }
}

#[test]
fn issue_client_cert_refuses_a_key_that_is_not_the_cas() {
    let (temp, paths) = fresh_pki();
    let (_other_temp, other) = fresh_pki();

    let err = issue_client_cert(
        &paths.ca(),
        &other.ca_key(),
        Role::Admin,
        "alice",
        temp.path(),
        LEAF_VALIDITY,
    )
    .unwrap_err();

    assert!(
        matches!(&err, TlsError::InvalidFile { path, .. } if *path == other.ca_key()),
        "{err}"
    );
}

#[test]
fn issue_client_cert_refuses_a_leaf_as_ca() {
    let (temp, paths) = fresh_pki();

    let err = issue_client_cert(
        &paths.server(),
        &paths.server_key(),
        Role::Admin,
        "alice",
        temp.path(),
        LEAF_VALIDITY,
    )
    .unwrap_err();

    assert!(err.to_string().contains("not a CA"), "{err}");
}

#[test]
fn read_errors_name_the_file_and_the_reason() {
    let temp = tempfile::tempdir().expect("temp dir");
    let missing = temp.path().join("ca.pem");

    let err = read_pem_file(&missing).unwrap_err();

    assert_eq!(
        err.to_string(),
        format!(
            "cannot read {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
}
