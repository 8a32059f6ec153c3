//! `silo certs issue`, `silo certs init` and `silo certs revoke`: certificates for silo's
//! mutual TLS, written by silo-tls; these commands say what was written.

use silo_tls::{CertPaths, Role};

use crate::cli::{CertsCommand, CertsListArgs, InitArgs, IssueArgs, RevokeArgs};
use crate::output::print;

/// Runs a `silo certs` command.
pub fn certs(command: CertsCommand) -> anyhow::Result<i32> {
    match command {
        CertsCommand::Issue(args) => issue(args),
        CertsCommand::Init(args) => init(args),
        CertsCommand::Revoke(args) => revoke(args),
        CertsCommand::List(args) => list(args),
    }
}

/// The certificates the CA in `--ca-dir` has recorded as issued.
fn list(args: CertsListArgs) -> anyhow::Result<i32> {
    let issued = silo_tls::list_issued(&args.ca_dir).map_err(|err| anyhow::anyhow!("{err}"))?;
    let now = time::OffsetDateTime::now_utc();
    if args.json {
        let rows: Vec<serde_json::Value> = issued
            .iter()
            .map(|i| {
                serde_json::json!({
                    "name": i.common_name,
                    "role": role_text(i),
                    "serial": i.serial,
                    "valid_until": crate::format::rfc3339_seconds(i.valid_until.into()),
                    "state": state_text(i, now),
                    "path": i.path,
                })
            })
            .collect();
        return crate::output::print_json(&rows);
    }
    print(&render_list(&issued, now))
}

/// NAME, ROLE, SERIAL, VALID UNTIL, STATE, as a borderless table.
fn render_list(issued: &[silo_tls::Issued], now: time::OffsetDateTime) -> String {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(["NAME", "ROLE", "SERIAL", "VALID UNTIL", "STATE"]);
    for i in issued {
        table.add_row([
            crate::format::single_line(&i.common_name),
            role_text(i).to_owned(),
            i.serial.clone(),
            crate::format::rfc3339_seconds(i.valid_until.into()),
            state_text(i, now),
        ]);
    }
    crate::format::table_text(table)
}

fn role_text(issued: &silo_tls::Issued) -> &'static str {
    issued.role.map_or("server", |role| role.as_str())
}

/// revoked, ended, ends in N days (within 30), or valid.
fn state_text(issued: &silo_tls::Issued, now: time::OffsetDateTime) -> String {
    let left = issued.valid_until - now;
    if issued.revoked {
        "revoked".to_owned()
    } else if left.is_negative() {
        "ended".to_owned()
    } else if left <= silo_tls::RENEW_BEFORE {
        format!("ends in {} days", left.whole_days())
    } else {
        "valid".to_owned()
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
        let crl = std::fs::read_to_string(pki.join("crl.pem")).unwrap();
        assert!(crl.starts_with("-----BEGIN X509 CRL-----"), "{crl}");
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

        // The record: the three made by init and alice's, revoked.
        let issued = silo_tls::list_issued(&pki).unwrap();
        let table = render_list(&issued, time::OffsetDateTime::now_utc());
        let rows: Vec<Vec<&str>> = table
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows[0],
            ["NAME", "ROLE", "SERIAL", "VALID", "UNTIL", "STATE"]
        );
        let states: Vec<(&str, &str, &str)> = rows[1..]
            .iter()
            .map(|r| (r[0], r[1], *r.last().unwrap()))
            .collect();
        assert_eq!(
            states,
            [
                ("admin", "admin", "valid"),
                ("alice", "viewer", "revoked"),
                ("silo", "server", "valid"),
                ("viewer", "viewer", "valid"),
            ]
        );
        assert_eq!(
            list(CertsListArgs {
                ca_dir: pki.clone(),
                json: true
            })
            .unwrap(),
            0
        );
    }
}
