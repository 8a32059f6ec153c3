//! `silo certs issue`, `silo certs init` and `silo certs revoke`: certificates for silo's
//! mutual TLS, written by silo-tls; these commands say what was written.

use silo_tls::{CertPaths, Role};

use crate::cli::{CertsCommand, InitArgs, IssueArgs, RevokeArgs};
use crate::output::print;

/// Runs a `silo certs` command.
pub fn certs(command: CertsCommand) -> anyhow::Result<i32> {
    match command {
        CertsCommand::Issue(args) => issue(args),
        CertsCommand::Init(args) => init(args),
        CertsCommand::Revoke(args) => revoke(args),
    }
}

/// Issues a client certificate signed by the CA in `--ca-dir`.
fn issue(args: IssueArgs) -> anyhow::Result<i32> {
    let ca = CertPaths::new(&args.ca_dir);
    let role = Role::from(args.role);
    let (cert, key) = silo_tls::issue_client_cert(
        &ca.ca(),
        &ca.ca_key(),
        role,
        &args.name,
        &args.out,
        args.valid_for,
    )
    .map_err(|err| anyhow::anyhow!("{err}"))?;
    let ends = silo_tls::certificate_end(&cert).map_err(|err| anyhow::anyhow!("{err}"))?;
    let serial = std::fs::read(&cert)
        .map_err(anyhow::Error::from)
        .and_then(|pem| silo_tls::certificate_serial(&pem).map_err(|e| anyhow::anyhow!("{e}")))?;
    print(&format!(
        "issued a {role} certificate for {name}, signed by {ca}, valid until {ends}:\n  certificate: {cert}\n  key:         {key}\n  serial:      {serial} (`silo certs revoke --serial` takes it)\n",
        name = args.name,
        ca = ca.ca().display(),
        ends = crate::format::rfc3339_seconds(ends.into()),
        cert = cert.display(),
        key = key.display(),
        serial = silo_tls::hex(&serial),
    ))
}

/// Adds a client certificate to the revocation list of the CA in `--ca-dir`.
fn revoke(args: RevokeArgs) -> anyhow::Result<i32> {
    let err = |err: silo_tls::TlsError| anyhow::anyhow!("{err}");
    let (serial, who) = match (&args.cert, &args.serial) {
        (Some(cert), _) => {
            let pem = silo_tls::read_pem_file(cert).map_err(err)?;
            let identity = silo_tls::issued_client(&args.ca_dir, &pem)
                .map_err(|e| anyhow::anyhow!("cannot revoke {}: {e}", cert.display()))?;
            let role = identity.role.map_or("no role", |r| r.as_str());
            let who = format!(
                "{} ({role}, serial {})",
                identity.common_name,
                silo_tls::hex(&identity.serial)
            );
            (identity.serial, who)
        }
        (None, Some(serial)) => {
            let serial = silo_tls::parse_serial(serial).map_err(err)?;
            let who = format!("serial {}", silo_tls::hex(&serial));
            (serial, who)
        }
        (None, None) => anyhow::bail!("name the certificate to revoke, or give --serial"),
    };
    let revoked = silo_tls::revoke(&args.ca_dir, &serial).map_err(err)?;
    if !revoked.newly {
        let plural = if revoked.listed == 1 { "" } else { "s" };
        return print(&format!(
            "{who} was revoked already ({} lists {} certificate{plural})\n",
            revoked.crl.display(),
            revoked.listed
        ));
    }
    print(&format!(
        "revoked {who} in {}: a running server refuses it within 2 seconds, on new \
         connections and on every call of open ones\n",
        revoked.crl.display()
    ))
}

/// Writes a fresh CA, server certificate and admin and viewer client certificates.
fn init(args: InitArgs) -> anyhow::Result<i32> {
    silo_tls::init_pki(&args.out, &args.san, args.valid_for)
        .map_err(|err| anyhow::anyhow!("{err}"))?;
    let paths = CertPaths::new(&args.out);
    let mut text = format!(
        "created a new CA and certificates in {}:\n",
        args.out.display()
    );
    let names = ["CA", "server", "admin client", "viewer client"];
    for (name, (cert, key)) in names.iter().zip(paths.pairs()) {
        text.push_str(&format!(
            "  {name:<14} {}  {}\n",
            cert.display(),
            key.display()
        ));
    }
    print(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::RoleArg;

    #[test]
    fn init_then_issue_writes_a_signed_client_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = tmp.path().join("pki");
        let code = init(InitArgs {
            out: pki.clone(),
            san: vec!["silo.example".into()],
            valid_for: silo_tls::LEAF_VALIDITY,
        })
        .unwrap();
        assert_eq!(code, 0);
        assert!(pki.join("ca.pem").exists() && pki.join("viewer-key.pem").exists());

        let out = tmp.path().join("clients");
        let issue_args = || IssueArgs {
            role: RoleArg::Viewer,
            name: "alice".into(),
            out: out.clone(),
            ca_dir: pki.clone(),
            valid_for: time::Duration::days(30),
        };
        assert_eq!(issue(issue_args()).unwrap(), 0);
        assert!(out.join("alice.pem").exists() && out.join("alice-key.pem").exists());

        let again = issue(issue_args()).unwrap_err().to_string();
        assert!(again.contains("refusing to overwrite"), "{again}");
        let ends = silo_tls::certificate_end(&out.join("alice.pem")).unwrap();
        let days = (ends - time::OffsetDateTime::now_utc()).whole_days();
        assert!((29..=30).contains(&days), "{days}");

        let revoke_args = || RevokeArgs {
            cert: Some(out.join("alice.pem")),
            serial: None,
            ca_dir: pki.clone(),
        };
        assert_eq!(revoke(revoke_args()).unwrap(), 0);
        assert_eq!(revoke(revoke_args()).unwrap(), 0);
        let serial =
            silo_tls::certificate_serial(&std::fs::read(out.join("alice.pem")).unwrap()).unwrap();
        let list = std::fs::read_to_string(pki.join("crl.pem")).unwrap();
        assert!(list.starts_with("-----BEGIN X509 CRL-----"), "{list}");
        let tls = silo_tls::ServerTls::load(CertPaths::new(&pki)).unwrap();
        assert!(tls.is_revoked(&serial));

        // Only client certificates of this CA.
        let server = revoke(RevokeArgs {
            cert: Some(pki.join("server.pem")),
            ..revoke_args()
        });
        let server = server.unwrap_err().to_string();
        assert!(server.contains("not a client certificate"), "{server}");
        let other = tmp.path().join("other");
        init(InitArgs {
            out: other.clone(),
            san: vec![],
            valid_for: silo_tls::LEAF_VALIDITY,
        })
        .unwrap();
        let foreign = revoke(RevokeArgs {
            cert: Some(other.join("admin.pem")),
            ..revoke_args()
        });
        let foreign = foreign.unwrap_err().to_string();
        assert!(foreign.contains("not by the CA in"), "{foreign}");
    }
}
