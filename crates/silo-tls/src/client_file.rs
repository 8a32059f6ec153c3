//! The client configuration file: which silo servers exist, how to reach each one and which
//! certificate to present there. `silo server` writes one per role next to its state
//! (`client-admin.toml`, `client-viewer.toml`), the client reads it, and people write it by
//! hand. [`ClientFile`] is the format's only definition.
//!
//! ```toml
//! current = "local"            # optional; which server to use when none is asked for
//! [servers.local]
//! address = "127.0.0.1:50051"   # host:port ([::1]:50051 for IPv6)
//! ca = "/var/lib/silo/certs/ca.pem"
//! cert = "/var/lib/silo/certs/admin.pem"
//! key = "/var/lib/silo/certs/admin-key.pem"
//! # server_name = "localhost"   # optional TLS name; default: the address's host
//! ```
//!
//! Relative `ca`, `cert` and `key` paths are taken from the file's directory. Unknown keys
//! are refused, so a typo is an error rather than a silently ignored setting.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{CertPaths, Role};

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientFile {
    /// The server used when none is asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Every known server by name.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerEntry>,
}

/// How to reach one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerEntry {
    /// `host:port`; an IPv6 host in brackets.
    pub address: String,
    /// The CA certificate the server's certificate must chain to (PEM).
    pub ca: PathBuf,
    /// This client's certificate (PEM).
    pub cert: PathBuf,
    /// This client's private key (PEM).
    pub key: PathBuf,
    /// The name the server's certificate must carry; default: the address's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl ServerEntry {
    /// The server at `address` reached as `role`, with the CA and the role's client
    /// certificate and key of `certs`.
    pub fn for_role(address: impl Into<String>, certs: &CertPaths, role: Role) -> ServerEntry {
        let (cert, key) = certs.client(role);
        ServerEntry {
            address: address.into(),
            ca: certs.ca(),
            cert,
            key,
            server_name: None,
        }
    }
}

impl ClientFile {
    /// A file that knows one server, `name`, which is also the current one.
    pub fn single(name: &str, entry: ServerEntry) -> ClientFile {
        ClientFile {
            current: Some(name.to_owned()),
            servers: BTreeMap::from([(name.to_owned(), entry)]),
        }
    }

    /// Reads the TOML text of a file; unknown keys and missing required ones are errors.
    pub fn from_toml(text: &str) -> Result<ClientFile, toml::de::Error> {
        toml::from_str(text)
    }

    /// The file as TOML text, which [`ClientFile::from_toml`] reads back as this file.
    /// Fails only for a path that is not UTF-8.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_is_reached_with_the_ca_and_its_own_certificate() {
        let certs = CertPaths::new("/s/certs");
        let entry = ServerEntry::for_role("127.0.0.1:50051", &certs, Role::Viewer);
        assert_eq!(entry.ca, PathBuf::from("/s/certs/ca.pem"));
        assert_eq!(entry.cert, PathBuf::from("/s/certs/viewer.pem"));
        assert_eq!(entry.key, PathBuf::from("/s/certs/viewer-key.pem"));
        assert_eq!(entry.server_name, None);
    }

    #[test]
    fn a_written_file_reads_back_as_itself_in_the_documented_layout() {
        let certs = CertPaths::new("/var/lib/silo/certs");
        let file = ClientFile::single(
            "local",
            ServerEntry::for_role("127.0.0.1:50051", &certs, Role::Admin),
        );
        let text = file.to_toml().unwrap();
        assert_eq!(
            text,
            "current = \"local\"\n\n\
             [servers.local]\n\
             address = \"127.0.0.1:50051\"\n\
             ca = \"/var/lib/silo/certs/ca.pem\"\n\
             cert = \"/var/lib/silo/certs/admin.pem\"\n\
             key = \"/var/lib/silo/certs/admin-key.pem\"\n"
        );
        assert_eq!(ClientFile::from_toml(&text).unwrap(), file);

        let mut two = file.clone();
        let mut other = ServerEntry::for_role("b:1", &CertPaths::new("rel"), Role::Viewer);
        other.server_name = Some("b.example".into());
        two.servers.insert("b".into(), other);
        assert_eq!(ClientFile::from_toml(&two.to_toml().unwrap()).unwrap(), two);
    }

    #[test]
    fn unknown_and_missing_keys_are_refused() {
        let typo = "[servers.a]\nadress = \"a:1\"\nca = \"ca\"\ncert = \"c\"\nkey = \"k\"\n";
        assert!(ClientFile::from_toml(typo).is_err());
        let no_key = "[servers.a]\naddress = \"a:1\"\nca = \"ca\"\ncert = \"c\"\n";
        assert!(ClientFile::from_toml(no_key).is_err());
        assert_eq!(ClientFile::from_toml("").unwrap(), ClientFile::default());
    }
}
