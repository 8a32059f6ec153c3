use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rustls_pki_types::CertificateDer;

use super::{first_cert, fresh_pki};
use crate::{Role, TlsError, peer_identity};

fn self_signed(subject: &[(DnType, &str)]) -> CertificateDer<'static> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    for (ty, value) in subject {
        name.push(ty.clone(), *value);
    }
    params.distinguished_name = name;
    let key = KeyPair::generate().expect("key");
    params.self_signed(&key).expect("certificate").der().clone()
}

#[test]
fn generated_client_certs_carry_their_role_and_name() {
    let (_temp, paths) = fresh_pki();
    for role in Role::ALL {
        let identity = peer_identity(&first_cert(&paths.client(role).0)).expect("identity");
        assert_eq!(identity.common_name, role.as_str());
        assert_eq!(identity.role, Some(role));
    }
}

#[test]
fn server_cert_has_no_role() {
    let (_temp, paths) = fresh_pki();
    let identity = peer_identity(&first_cert(&paths.server())).expect("identity");
    assert_eq!(identity.common_name, "silo server");
    assert_eq!(identity.role, None);
}

#[test]
fn unknown_ou_gives_no_role() {
    let cert = self_signed(&[
        (DnType::OrganizationalUnitName, "other"),
        (DnType::CommonName, "mallory"),
    ]);
    let identity = peer_identity(&cert).expect("identity");
    assert_eq!(identity.common_name, "mallory");
    assert_eq!(identity.role, None);
}

#[test]
fn missing_ou_gives_no_role() {
    let cert = self_signed(&[(DnType::CommonName, "nobody")]);
    assert_eq!(peer_identity(&cert).expect("identity").role, None);
}

#[test]
fn ou_is_case_sensitive() {
    let cert = self_signed(&[
        (DnType::OrganizationalUnitName, "Admin"),
        (DnType::CommonName, "shouty"),
    ]);
    assert_eq!(peer_identity(&cert).expect("identity").role, None);
}

/// rcgen keeps one value per attribute type, so the second OU is written under the same
/// OID (2.5.4.11) as a custom attribute type.
const OU_OID: [u64; 4] = [2, 5, 4, 11];

#[test]
fn conflicting_ous_give_no_role() {
    let cert = self_signed(&[
        (DnType::OrganizationalUnitName, "viewer"),
        (DnType::CustomDnType(OU_OID.to_vec()), "admin"),
        (DnType::CommonName, "both"),
    ]);
    let identity = peer_identity(&cert).expect("identity");
    assert_eq!(identity.common_name, "both");
    assert_eq!(identity.role, None);
}

#[test]
fn agreeing_ous_give_that_role() {
    let cert = self_signed(&[
        (DnType::OrganizationalUnitName, "viewer"),
        (DnType::CustomDnType(OU_OID.to_vec()), "viewer"),
        (DnType::CommonName, "twice"),
    ]);
    assert_eq!(
        peer_identity(&cert).expect("identity").role,
        Some(Role::Viewer)
    );
}

#[test]
fn certificate_without_common_name_is_rejected() {
    let cert = self_signed(&[(DnType::OrganizationalUnitName, "admin")]);
    assert!(matches!(
        peer_identity(&cert),
        Err(TlsError::MissingCommonName)
    ));
}

#[test]
fn garbage_is_not_a_certificate() {
    let err = peer_identity(&CertificateDer::from(vec![1, 2, 3])).unwrap_err();
    assert!(matches!(err, TlsError::InvalidCertificate { .. }), "{err}");
}

#[test]
fn role_names_round_trip() {
    for role in Role::ALL {
        assert_eq!(role.to_string().parse::<Role>(), Ok(role));
    }
    assert_eq!("admin".parse::<Role>(), Ok(Role::Admin));
    assert_eq!("viewer".parse::<Role>(), Ok(Role::Viewer));
    let err = "root".parse::<Role>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown role \"root\": expected \"admin\" or \"viewer\""
    );
}
