//! The client configuration: which servers exist, how to reach them and which certificate
//! to present.
//!
//! The file's format is [`silo_tls::ClientFile`], the one `silo server` writes as
//! `<state-dir>/client-admin.toml` and `client-viewer.toml`. This module finds the file
//! (`--config`, `SILO_CONFIG`, `~/.config/silo/config.toml`, [`SYSTEM_CONFIG`]) and picks
//! the server (`--server`, else `current`, else the only one), with relative `ca`, `cert`
//! and `key` paths taken from the file's directory.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

pub use silo_tls::{ClientFile, ServerEntry};

/// The system-wide fallback: the admin configuration `silo server` writes with its
/// default state directory.
pub const SYSTEM_CONFIG: &str = "/var/lib/silo/client-admin.toml";

/// A configuration problem, naming the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No configuration file was given and none of the default places holds one.
    #[error(
        "no client configuration found: pass --config FILE, set SILO_CONFIG, or create {}",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" or ")
    )]
    NotFound {
        /// The default places that were looked at, in order.
        searched: Vec<PathBuf>,
    },
    /// The file could not be read.
    #[error(
        "cannot read client configuration {} (from {origin}): {}",
        path.display(),
        crate::connect::describe_io(error)
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Where its name came from: "--config", "SILO_CONFIG" or "default".
        origin: &'static str,
        /// Why (described in the message).
        error: io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid client configuration {}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line when known.
        reason: String,
    },
    /// No server can be chosen.
    #[error("{reason} in {}", path.display())]
    Selection {
        /// The file.
        path: PathBuf,
        /// Why none could be chosen, with the known names.
        reason: String,
    },
}

/// The server chosen for this invocation, with absolute file paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTarget {
    /// The server's name in the configuration.
    pub name: String,
    /// Its entry, with `ca`, `cert` and `key` resolved against the file's directory.
    pub entry: ServerEntry,
}

/// Parses the TOML text of the configuration file `path` (used only in messages).
pub fn parse(text: &str, path: &Path) -> Result<ClientFile, ConfigError> {
    ClientFile::from_toml(text).map_err(|err| ConfigError::Parse {
        path: path.to_path_buf(),
        reason: err.to_string().trim_end().replace('\n', " "),
    })
}

/// Chooses the server of `config`: `requested` if given, else `current`, else the only
/// server. Relative paths of the result are taken from `base_dir`. `path` names the file
/// in errors, which list the known server names.
pub fn select(
    config: &ClientFile,
    requested: Option<&str>,
    path: &Path,
    base_dir: &Path,
) -> Result<ServerTarget, ConfigError> {
    let selection_error = |reason: String| ConfigError::Selection {
        path: path.to_path_buf(),
        reason,
    };
    let known = || {
        if config.servers.is_empty() {
            "no servers are configured".to_owned()
        } else {
            let names: Vec<&str> = config.servers.keys().map(String::as_str).collect();
            format!("known servers: {}", names.join(", "))
        }
    };
    let name = match (requested, &config.current) {
        (Some(name), _) => {
            if !config.servers.contains_key(name) {
                return Err(selection_error(format!(
                    "unknown server {name:?} ({})",
                    known()
                )));
            }
            name.to_owned()
        }
        (None, Some(current)) => {
            if !config.servers.contains_key(current) {
                return Err(selection_error(format!(
                    "current = {current:?} names no configured server ({})",
                    known()
                )));
            }
            current.clone()
        }
        (None, None) => match config.servers.keys().collect::<Vec<_>>().as_slice() {
            [only] => (*only).clone(),
            [] => return Err(selection_error("no servers are configured".to_owned())),
            _ => {
                return Err(selection_error(format!(
                    "several servers are configured and none is current: pick one with --server NAME ({})",
                    known()
                )));
            }
        },
    };
    let mut entry = config.servers[&name].clone();
    for file in [&mut entry.ca, &mut entry.cert, &mut entry.key] {
        if file.is_relative() {
            *file = base_dir.join(&*file);
        }
    }
    Ok(ServerTarget { name, entry })
}

/// Where to look for the configuration, in order of precedence. The inputs are explicit so
/// that the order can be tested without touching the process environment.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// `--config FILE`.
    pub flag: Option<PathBuf>,
    /// `$SILO_CONFIG`; an empty value counts as unset.
    pub env: Option<OsString>,
    /// `$HOME`, for `~/.config/silo/config.toml`.
    pub home: Option<PathBuf>,
    /// The system-wide fallback, normally [`SYSTEM_CONFIG`].
    pub system: PathBuf,
}

impl ConfigSources {
    /// The sources of this process: the flag, `SILO_CONFIG`, `HOME` and [`SYSTEM_CONFIG`].
    pub fn from_process(flag: Option<PathBuf>) -> Self {
        Self {
            flag,
            env: std::env::var_os("SILO_CONFIG"),
            home: std::env::var_os("HOME").map(PathBuf::from),
            system: PathBuf::from(SYSTEM_CONFIG),
        }
    }

    /// Finds and reads the configuration: `--config`, else `SILO_CONFIG`, else
    /// `~/.config/silo/config.toml`, else the system file; the first that exists wins. A
    /// file named by `--config` or `SILO_CONFIG` must exist.
    ///
    /// Returns the file's path and its parsed contents.
    pub fn load(&self) -> Result<(PathBuf, ClientFile), ConfigError> {
        let (path, origin) = self.locate()?;
        let text = std::fs::read_to_string(&path).map_err(|error| ConfigError::Read {
            path: path.clone(),
            origin,
            error,
        })?;
        let config = parse(&text, &path)?;
        Ok((path, config))
    }

    fn locate(&self) -> Result<(PathBuf, &'static str), ConfigError> {
        if let Some(flag) = &self.flag {
            return Ok((flag.clone(), "--config"));
        }
        if let Some(env) = self.env.as_ref().filter(|env| !env.is_empty()) {
            return Ok((PathBuf::from(env), "SILO_CONFIG"));
        }
        let mut searched = Vec::new();
        if let Some(home) = &self.home {
            searched.push(home.join(".config/silo/config.toml"));
        }
        searched.push(self.system.clone());
        match searched.iter().find(|path| path.exists()) {
            Some(found) => Ok((found.clone(), "default")),
            None => Err(ConfigError::NotFound { searched }),
        }
    }
}

/// Loads the configuration from `sources` and selects the server (see
/// [`select`]).
pub fn resolve_server(
    sources: &ConfigSources,
    requested: Option<&str>,
) -> Result<ServerTarget, ConfigError> {
    let (path, config) = sources.load()?;
    let base_dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    select(&config, requested, &path, &base_dir)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const ONE_SERVER: &str = r#"
[servers.local]
address = "127.0.0.1:50051"
ca = "certs/ca.pem"
cert = "/abs/admin.pem"
key = "admin-key.pem"
"#;

    const TWO_SERVERS: &str = r#"
[servers.a]
address = "a:1"
ca = "ca"
cert = "c"
key = "k"

[servers.b]
address = "b:1"
ca = "ca"
cert = "c"
key = "k"
server_name = "b.example"
"#;

    fn write(dir: &Path, relative: &str, text: &str) -> PathBuf {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(&path, text).unwrap();
        path
    }

    fn sources(dir: &Path) -> ConfigSources {
        ConfigSources {
            flag: None,
            env: None,
            home: Some(dir.join("home")),
            system: dir.join("system.toml"),
        }
    }

    fn loaded_address(sources: &ConfigSources) -> String {
        resolve_server(sources, None).unwrap().entry.address
    }

    fn config_for(address: &str) -> String {
        format!("[servers.s]\naddress = \"{address}\"\nca = \"ca\"\ncert = \"c\"\nkey = \"k\"\n")
    }

    #[test]
    fn resolution_prefers_flag_then_env_then_home_then_system() {
        let dir = tempfile::tempdir().unwrap();
        let flag = write(dir.path(), "flag.toml", &config_for("flag:1"));
        let env = write(dir.path(), "env.toml", &config_for("env:1"));
        write(
            dir.path(),
            "home/.config/silo/config.toml",
            &config_for("home:1"),
        );
        write(dir.path(), "system.toml", &config_for("system:1"));

        let mut sources = sources(dir.path());
        assert_eq!(loaded_address(&sources), "home:1");
        sources.env = Some(env.clone().into());
        assert_eq!(loaded_address(&sources), "env:1");
        sources.flag = Some(flag);
        assert_eq!(loaded_address(&sources), "flag:1");

        let mut system_only = self::sources(dir.path());
        system_only.home = Some(dir.path().join("nohome"));
        assert_eq!(loaded_address(&system_only), "system:1");
        system_only.env = Some(OsString::new());
        assert_eq!(
            loaded_address(&system_only),
            "system:1",
            "empty SILO_CONFIG is unset"
        );
    }

    #[test]
    fn an_explicit_file_that_is_missing_is_an_error_naming_its_origin() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "system.toml", &config_for("system:1"));
        let mut sources = sources(dir.path());
        sources.env = Some(dir.path().join("missing.toml").into());
        let err = resolve_server(&sources, None).unwrap_err().to_string();
        assert!(
            err.contains("missing.toml") && err.contains("SILO_CONFIG"),
            "{err}"
        );

        sources.flag = Some(dir.path().join("gone.toml"));
        let err = resolve_server(&sources, None).unwrap_err().to_string();
        assert!(
            err.contains("gone.toml") && err.contains("--config"),
            "{err}"
        );
    }

    #[test]
    fn no_configuration_anywhere_lists_the_places_searched() {
        let dir = tempfile::tempdir().unwrap();
        let err = resolve_server(&sources(dir.path()), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--config FILE"), "{err}");
        assert!(err.contains("home/.config/silo/config.toml"), "{err}");
        assert!(err.contains("system.toml"), "{err}");
    }

    #[test]
    fn relative_paths_are_taken_from_the_files_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "conf/client.toml", ONE_SERVER);
        let target = resolve_server(
            &ConfigSources {
                flag: Some(path),
                ..sources(dir.path())
            },
            None,
        )
        .unwrap();
        assert_eq!(target.name, "local");
        assert_eq!(target.entry.ca, dir.path().join("conf/certs/ca.pem"));
        assert_eq!(target.entry.cert, PathBuf::from("/abs/admin.pem"));
        assert_eq!(target.entry.key, dir.path().join("conf/admin-key.pem"));
        assert_eq!(target.entry.server_name, None);
    }

    fn parse(text: &str) -> ClientFile {
        super::parse(text, Path::new("c.toml")).unwrap()
    }

    fn select_err(config: &ClientFile, requested: Option<&str>) -> String {
        select(config, requested, Path::new("c.toml"), Path::new("/d"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn server_selection_uses_flag_then_current_then_the_only_server() {
        let two = parse(TWO_SERVERS);
        let pick = |config: &ClientFile, requested| {
            select(config, requested, Path::new("c.toml"), Path::new("/d")).unwrap()
        };
        let b = pick(&two, Some("b"));
        assert_eq!(b.name, "b");
        assert_eq!(b.entry.server_name.as_deref(), Some("b.example"));
        assert_eq!(b.entry.ca, PathBuf::from("/d/ca"));

        let with_current = parse(&format!("current = \"a\"\n{TWO_SERVERS}"));
        assert_eq!(pick(&with_current, None).name, "a");
        assert_eq!(pick(&with_current, Some("b")).name, "b");
        assert_eq!(pick(&parse(ONE_SERVER), None).name, "local");
    }

    #[test]
    fn server_selection_errors_list_the_known_names() {
        let two = parse(TWO_SERVERS);
        let err = select_err(&two, Some("prod"));
        assert_eq!(
            err,
            "unknown server \"prod\" (known servers: a, b) in c.toml"
        );
        let err = select_err(&two, None);
        assert!(
            err.contains("--server NAME") && err.contains("a, b"),
            "{err}"
        );
        let dangling = parse(&format!("current = \"x\"\n{TWO_SERVERS}"));
        let err = select_err(&dangling, None);
        assert!(
            err.contains("current = \"x\"") && err.contains("a, b"),
            "{err}"
        );
        let err = select_err(&parse(""), None);
        assert!(err.contains("no servers are configured"), "{err}");
    }

    #[test]
    fn malformed_files_and_unknown_keys_are_refused() {
        for text in [
            "[servers.a]\naddress = \"a:1\"\nca = \"ca\"\ncert = \"c\"\n",
            "[servers.a]\nadress = \"a:1\"\nca = \"ca\"\ncert = \"c\"\nkey = \"k\"\n",
            "servers = 3",
            "[servers.a\n",
        ] {
            let err = super::parse(text, Path::new("c.toml")).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("invalid client configuration c.toml:"),
                "{err}"
            );
        }
    }
}
