//! Renewal of the server's own certificates and revocation of client certificates.

use std::fs;
use std::path::Path;

use time::{Duration, OffsetDateTime};

use super::handshake::{Failure, handshake};
use super::{first_cert, fresh_pki, read};
use crate::pki::certificate_sans;
use crate::{
    CertPaths, LEAF_VALIDITY, RENEW_BEFORE, Role, ServerTls, Why, certificate_end,
    certificate_serial, client_config, ensure_server_pki, init_pki, issue_client_cert, list_issued,
    next_renewal, parse_serial, peer_identity, renew_due, revoke,
};

fn client(paths: &CertPaths, cert: &Path, key: &Path) -> std::sync::Arc<rustls::ClientConfig> {
    client_config(&read(&paths.ca()), &read(cert), &read(key)).expect("client config")
}

/// An admin certificate for "alice" from the CA in `paths`, written under `dir`.
fn issue_alice(dir: &Path, paths: &CertPaths) -> (std::path::PathBuf, std::path::PathBuf) {
    let out = dir.join("issued-to-alice");
    issue_client_cert(
        &paths.ca(),
        &paths.ca_key(),
        Role::Admin,
        "alice",
        &out,
        LEAF_VALIDITY,
    )
    .unwrap()
}

fn days_left(path: &Path) -> i64 {
    (certificate_end(path).unwrap() - OffsetDateTime::now_utc()).whole_days()
}

#[test]
fn certificates_near_their_end_are_issued_anew_with_their_names_by_the_same_ca() {
    let temp = tempfile::tempdir().unwrap();
    let paths = CertPaths::new(temp.path().join("certs"));
    init_pki(&paths.dir, &["build.example".into()], Duration::days(10)).unwrap();
    let ca_before = read(&paths.ca());
    let server_key_before = read(&paths.server_key());
    let sans_before = certificate_sans(&first_cert(&paths.server())).unwrap();
    assert!(days_left(&paths.server()) < 11);
    let due = next_renewal(&paths.dir).unwrap().unwrap();
    assert!(due < OffsetDateTime::now_utc(), "{due}");

    let report = renew_due(
        &paths.dir,
        &["ci.example".into()],
        OffsetDateTime::now_utc(),
    )
    .unwrap();

    let (admin, admin_key) = paths.client(Role::Admin);
    let (viewer, _) = paths.client(Role::Viewer);
    let renewed: Vec<_> = report.renewed.iter().map(|r| r.cert.clone()).collect();
    assert_eq!(renewed, [paths.server(), admin.clone(), viewer.clone()]);
    assert_eq!(report.ca_ends, None);
    for path in [&paths.server(), &admin, &viewer] {
        assert!((364..=365).contains(&days_left(path)), "{}", path.display());
    }
    assert_eq!(read(&paths.ca()), ca_before);
    assert_ne!(read(&paths.server_key()), server_key_before);
    let sans = certificate_sans(&first_cert(&paths.server())).unwrap();
    for san in sans_before.iter().chain(&["ci.example".to_owned()]) {
        assert!(sans.contains(san), "{san} missing from {sans:?}");
    }
    let viewer_id = peer_identity(&first_cert(&viewer)).unwrap();
    assert_eq!(
        (viewer_id.common_name.as_str(), viewer_id.role),
        ("viewer", Some(Role::Viewer))
    );
    // No file is left behind, and the renewed pair serves a handshake.
    let names: Vec<_> = fs::read_dir(&paths.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".new") || n.starts_with(".silo-tls-")),
        "{names:?}"
    );
    let tls = ServerTls::load(paths.clone()).unwrap();
    handshake(
        client(&paths, &admin, &admin_key),
        tls.config(),
        "ci.example",
    )
    .expect("handshake");
}

#[test]
fn certificates_far_from_their_end_are_left_alone() {
    let (_temp, paths) = fresh_pki();
    let before = read(&paths.server());

    let report = renew_due(&paths.dir, &[], OffsetDateTime::now_utc()).unwrap();

    assert!(
        report.renewed.is_empty() && report.ca_ends.is_none(),
        "{report:?}"
    );
    assert_eq!(read(&paths.server()), before);
    let due = next_renewal(&paths.dir).unwrap().unwrap();
    let expected = OffsetDateTime::now_utc() + LEAF_VALIDITY - RENEW_BEFORE;
    assert!(
        (due - expected).abs() < Duration::hours(2),
        "{due} vs {expected}"
    );
}

#[test]
fn a_ca_near_its_own_end_renews_nothing_and_says_when_it_ends() {
    let (_temp, paths) = fresh_pki();
    let before = read(&paths.server());
    // Seen from nine years and 350 days on, every leaf is due and the CA ends in 15 days.
    let later = OffsetDateTime::now_utc() + Duration::days(3635);

    let report = renew_due(&paths.dir, &[], later).unwrap();

    assert!(report.renewed.is_empty(), "{report:?}");
    let ends = report.ca_ends.expect("the CA's end");
    assert!(
        (ends - later - Duration::days(15)).abs() < Duration::days(1),
        "{ends}"
    );
    assert_eq!(read(&paths.server()), before);
}

#[test]
fn a_replacement_cut_short_by_a_crash_is_finished_at_the_next_start() {
    let (_temp, paths) = fresh_pki();
    let (_other_temp, other) = fresh_pki();
    // The crash came after the key's rename, before the certificate's.
    fs::copy(other.server_key(), paths.server_key()).unwrap();
    fs::copy(other.server(), paths.dir.join("server.pem.new")).unwrap();
    // And a new admin key whose certificate was never written.
    fs::write(paths.dir.join("admin-key.pem.new"), "half").unwrap();
    let admin_key_before = read(&paths.client(Role::Admin).1);

    ensure_server_pki(&paths.dir, &[]).unwrap();

    assert_eq!(read(&paths.server()), read(&other.server()));
    assert_eq!(read(&paths.client(Role::Admin).1), admin_key_before);
    assert!(!paths.dir.join("server.pem.new").exists());
    assert!(!paths.dir.join("admin-key.pem.new").exists());
    // The pair matches again.
    ServerTls::load(paths.clone()).expect("the server's pair loads");
}

#[test]
fn a_revoked_client_certificate_fails_the_handshake_and_the_others_pass() {
    let (temp, paths) = fresh_pki();
    let (alice, alice_key) = issue_alice(temp.path(), &paths);
    let (admin, admin_key) = paths.client(Role::Admin);
    let tls = ServerTls::load(paths.clone()).unwrap();
    let serial = certificate_serial(&read(&alice)).unwrap();
    assert!(!tls.is_revoked(&serial));
    handshake(
        client(&paths, &alice, &alice_key),
        tls.config(),
        "localhost",
    )
    .expect("before");

    let revoked = revoke(&paths.dir, &serial).unwrap();

    assert!(revoked.newly);
    assert_eq!(revoked.listed, 1);
    assert_eq!(revoked.crl, paths.crl());
    assert!(tls.reload_if_changed().unwrap(), "the list is read again");
    assert!(
        !tls.reload_if_changed().unwrap(),
        "and only when it changes"
    );
    assert!(tls.is_revoked(&serial));
    match handshake(
        client(&paths, &alice, &alice_key),
        tls.config(),
        "localhost",
    ) {
        Err(Failure::Server(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Revoked,
        ))) => {}
        Err(other) => panic!("refused for another reason: {other:?}"),
        Ok(_) => panic!("a revoked certificate was accepted"),
    }
    handshake(
        client(&paths, &admin, &admin_key),
        tls.config(),
        "localhost",
    )
    .expect("admin");

    // Again: nothing changes. Another: both are listed.
    let again = revoke(&paths.dir, &serial).unwrap();
    assert!(!again.newly && again.listed == 1, "{again:?}");
    let viewer = certificate_serial(&read(&paths.client(Role::Viewer).0)).unwrap();
    assert_eq!(revoke(&paths.dir, &viewer).unwrap().listed, 2);
    tls.reload_if_changed().unwrap();
    assert!(tls.is_revoked(&serial) && tls.is_revoked(&viewer));
    assert!(!tls.is_revoked(&certificate_serial(&read(&admin)).unwrap()));
}

#[test]
fn serial_numbers_are_read_as_openssl_prints_them() {
    assert_eq!(parse_serial("0x1A:2b").unwrap(), [0x1a, 0x2b]);
    assert_eq!(parse_serial("00ab").unwrap(), [0xab]);
    assert_eq!(parse_serial("serial=170E38").unwrap(), [0x17, 0x0e, 0x38]);
    assert_eq!(parse_serial("abc").unwrap(), [0x0a, 0xbc]);
    for bad in ["", "zz", "0x", &"a".repeat(41)] {
        assert!(parse_serial(bad).is_err(), "{bad:?}");
    }
    assert!(revoke(Path::new("/nonexistent"), &[0]).is_err());
}

#[test]
fn a_revoked_admin_certificate_of_the_servers_directory_is_issued_anew_at_once() {
    let (_temp, paths) = fresh_pki();
    let (admin, admin_key) = paths.client(Role::Admin);
    let leaked = certificate_serial(&read(&admin)).unwrap();
    revoke(&paths.dir, &leaked).unwrap();
    assert!(next_renewal(&paths.dir).unwrap().unwrap() < OffsetDateTime::now_utc());

    let report = renew_due(&paths.dir, &[], OffsetDateTime::now_utc()).unwrap();

    let renewed: Vec<_> = report.renewed.iter().map(|r| r.cert.clone()).collect();
    assert_eq!(renewed, std::slice::from_ref(&admin));
    assert_ne!(certificate_serial(&read(&admin)).unwrap(), leaked);
    let tls = ServerTls::load(paths.clone()).unwrap();
    assert!(tls.is_revoked(&leaked), "the leaked copies stay refused");
    handshake(
        client(&paths, &admin, &admin_key),
        tls.config(),
        "localhost",
    )
    .expect("new admin");
    assert!(next_renewal(&paths.dir).unwrap().unwrap() > OffsetDateTime::now_utc());
}

#[test]
fn a_server_certificate_without_a_new_name_is_issued_anew_with_it() {
    let (_temp, paths) = fresh_pki();
    let before = certificate_sans(&first_cert(&paths.server())).unwrap();

    let report = renew_due(
        &paths.dir,
        &["silo.example.com".into()],
        OffsetDateTime::now_utc(),
    );

    let report = report.unwrap();
    assert_eq!(report.renewed.len(), 1, "{report:?}");
    assert_eq!(report.renewed[0].cert, paths.server());
    assert_eq!(
        report.renewed[0].why,
        Why::NamesMissing(vec!["silo.example.com".into()])
    );
    let after = certificate_sans(&first_cert(&paths.server())).unwrap();
    assert!(after.contains(&"silo.example.com".to_owned()), "{after:?}");
    assert!(before.iter().all(|san| after.contains(san)), "{after:?}");
    // Once it has the name, nothing more is done.
    let again = renew_due(
        &paths.dir,
        &["silo.example.com".into()],
        OffsetDateTime::now_utc(),
    );
    assert!(again.unwrap().renewed.is_empty());
}

#[test]
fn the_ca_directory_records_what_it_issued_and_what_is_revoked() {
    let (temp, paths) = fresh_pki();
    let (alice, _) = issue_alice(temp.path(), &paths);
    revoke(&paths.dir, &certificate_serial(&read(&alice)).unwrap()).unwrap();
    // A renewal is recorded too: the old certificate stays listed beside the new one.
    let viewer_before =
        crate::hex(&certificate_serial(&read(&paths.client(Role::Viewer).0)).unwrap());
    let later = OffsetDateTime::now_utc() + Duration::days(340);
    assert_eq!(renew_due(&paths.dir, &[], later).unwrap().renewed.len(), 3);

    let listed = list_issued(&paths.dir).unwrap();

    let rows: Vec<(&str, Option<Role>, bool)> = listed
        .iter()
        .map(|i| (i.common_name.as_str(), i.role, i.revoked))
        .collect();
    assert_eq!(
        rows,
        [
            ("admin", Some(Role::Admin), false),
            ("admin", Some(Role::Admin), false),
            ("alice", Some(Role::Admin), true),
            ("silo server", None, false),
            ("silo server", None, false),
            ("viewer", Some(Role::Viewer), false),
            ("viewer", Some(Role::Viewer), false),
        ]
    );
    let viewers: Vec<&str> = listed[5..].iter().map(|i| i.serial.as_str()).collect();
    assert!(viewers.contains(&viewer_before.as_str()), "{viewers:?}");
    assert!(!listed.iter().any(|i| i.common_name.starts_with("silo CA")));
}
