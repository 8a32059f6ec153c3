//! `silo certs issue` and `silo certs init`: certificates for silo's mutual TLS, written
//! by silo-tls; these commands say what was written.

use silo_tls::{CertPaths, Role};

use crate::cli::{CertsCommand, InitArgs, IssueArgs};
use crate::output::print;

/// Runs a `silo certs` command.
pub fn certs(command: CertsCommand) -> anyhow::Result<i32> {
    match command {
        CertsCommand::Issue(args) => issue(args),
        CertsCommand::Init(args) => init(args),
    }
}

/// Issues a client certificate signed by the CA in `--ca-dir`.
fn issue(args: IssueArgs) -> anyhow::Result<i32> {
    let ca = CertPaths::new(&args.ca_dir);
    let role = Role::from(args.role);
    let (cert, key) =
        silo_tls::issue_client_cert(&ca.ca(), &ca.ca_key(), role, &args.name, &args.out)
            .map_err(|err| anyhow::anyhow!("{err}"))?;
    print(&format!(
        "issued a {role} certificate for {name}, signed by {ca}:\n  certificate: {cert}\n  key:         {key}\n",
        name = args.name,
        ca = ca.ca().display(),
        cert = cert.display(),
        key = key.display(),
    ))
}

/// Writes a fresh CA, server certificate and admin and viewer client certificates.
fn init(args: InitArgs) -> anyhow::Result<i32> {
    silo_tls::init_pki(&args.out, &args.san).map_err(|err| anyhow::anyhow!("{err}"))?;
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
        };
        assert_eq!(issue(issue_args()).unwrap(), 0);
        assert!(out.join("alice.pem").exists() && out.join("alice-key.pem").exists());

        let again = issue(issue_args()).unwrap_err().to_string();
        assert!(again.contains("refusing to overwrite"), "{again}");
    }
}
