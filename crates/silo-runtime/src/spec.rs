//! The YAML build spec of a runtime (`runtime.yml`), runtime names, and references to a
//! runtime (`name` or `name@version`).
//!
//! Parsing refuses unknown keys and every malformed value with a message that names the
//! line and column, because a spec is written by hand and read from untrusted places.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// Why a spec, a runtime name or a runtime reference was refused.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The YAML is malformed, has an unknown key, or a value breaks a rule; the message
    /// starts with "line L, column C: " when the parser knows where.
    #[error("{message}")]
    Yaml {
        /// The 1-based line of the offending text, when known.
        line: Option<u64>,
        /// The 1-based column of the offending text, when known.
        column: Option<u64>,
        /// One sentence for people, location first.
        message: String,
    },
    /// A runtime name breaks the naming rule (see [`check_name`]).
    #[error("invalid runtime name `{name}`: {reason}")]
    Name {
        /// The refused name, as given.
        name: String,
        /// Which part of the rule it breaks.
        reason: &'static str,
    },
    /// A version is not semantic versioning (`MAJOR.MINOR.PATCH`).
    #[error("invalid version `{text}` (expected MAJOR.MINOR.PATCH, e.g. 1.0.0): {source}")]
    Version {
        /// The refused text.
        text: String,
        /// The semver parser's reason.
        source: semver::Error,
    },
    /// A field's value breaks its rule.
    #[error("invalid {field} `{value}`: {reason}")]
    Value {
        /// The field, e.g. "env name" or "pip requirement".
        field: &'static str,
        /// The refused value, as given.
        value: String,
        /// Which part of the rule it breaks.
        reason: &'static str,
    },
    /// The spec cannot be written as YAML (only for values no spec can hold).
    #[error("cannot write the spec as YAML: {0}")]
    Serialize(String),
}

/// A runtime's build spec, as read from `runtime.yml`.
///
/// A value returned by [`RuntimeSpec::parse`] satisfies every rule below; one built by
/// hand can be checked with [`RuntimeSpec::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSpec {
    /// The runtime's name; always passes [`check_name`].
    pub name: String,
    /// The runtime's version.
    pub version: semver::Version,
    /// Free text for people; empty when the spec has none.
    pub description: String,
    /// Where the root filesystem comes from.
    pub base: Base,
    /// Pinned pip requirements installed after the base, in order; each non-empty, one line.
    pub pip: Vec<String>,
    /// npm packages installed globally after the base, in order; each non-empty, one line.
    pub npm: Vec<String>,
    /// Environment variables of jobs in this runtime, in the spec's order; names are
    /// non-empty without `=` or NUL, values have no NUL, and no name appears twice.
    pub env: Vec<(String, String)>,
    /// Shell commands run in the finished runtime; each must exit 0 for the build to pass.
    pub test: Vec<String>,
}

/// Where a runtime's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// A Debian tree built with mmdebstrap.
    Debian {
        /// The Debian suite, e.g. `bookworm`: one token without whitespace.
        suite: String,
        /// Packages to install, each one token without whitespace.
        packages: Vec<String>,
        /// The mirror URL, one token without whitespace; `None` means mmdebstrap's default.
        mirror: Option<String>,
    },
    /// A tree holding only a static busybox copied from the host (offline builds).
    Busybox {
        /// The absolute path of the busybox binary on the host.
        path: PathBuf,
    },
}

impl RuntimeSpec {
    /// Reads a spec from YAML, refusing unknown keys and any value that breaks a rule;
    /// the error names the line and column where the parser knows them.
    pub fn parse(yaml: &str) -> Result<RuntimeSpec, SpecError> {
        let file: SpecFile = serde_saphyr::from_str(yaml).map_err(yaml_error)?;
        let spec = file.into_spec();
        spec.validate()?;
        Ok(spec)
    }

    /// Writes the spec as YAML that [`RuntimeSpec::parse`] reads back equal, for every
    /// spec that passes [`RuntimeSpec::validate`].
    pub fn to_yaml(&self) -> String {
        // Serializing strings, lists and maps of strings cannot fail; keep a readable
        // fallback rather than a panic should the serializer ever refuse.
        serde_saphyr::to_string(&SpecOut::from(self))
            .unwrap_or_else(|e| format!("# {}\n", SpecError::Serialize(e.to_string())))
    }

    /// Checks every rule that [`RuntimeSpec::parse`] enforces, for a spec built in code.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_name(&self.name)?;
        check_base(&self.base)?;
        for requirement in &self.pip {
            check_line("pip requirement", requirement)?;
        }
        for package in &self.npm {
            check_line("npm package", package)?;
        }
        let mut names = std::collections::HashSet::new();
        for (name, value) in &self.env {
            check_env(name, value)?;
            if !names.insert(name.as_str()) {
                return Err(value_error("env name", name, "appears twice"));
            }
        }
        for command in &self.test {
            check_command(command)?;
        }
        Ok(())
    }
}

/// Checks a runtime name: 1 to 64 characters of `a-z`, `0-9`, `.`, `_` and `-`, starting
/// with a letter or digit. A name that passes is always one safe path component (never
/// empty, `.` or `..`, never holding `/`).
pub fn check_name(name: &str) -> Result<(), SpecError> {
    let refuse = |reason| {
        Err(SpecError::Name {
            name: name.to_owned(),
            reason,
        })
    };
    let Some(first) = name.bytes().next() else {
        return refuse("it is empty");
    };
    if name.len() > 64 {
        return refuse("it is longer than 64 characters");
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return refuse("it must start with a lowercase letter or a digit");
    }
    let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b);
    if !name.bytes().all(allowed) {
        return refuse("only lowercase letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// Reads a version as semantic versioning, the one rule for versions in specs,
/// manifests and references.
pub(crate) fn parse_version(text: &str) -> Result<semver::Version, SpecError> {
    semver::Version::parse(text).map_err(|source| SpecError::Version {
        text: text.to_owned(),
        source,
    })
}

fn value_error(field: &'static str, value: &str, reason: &'static str) -> SpecError {
    SpecError::Value {
        field,
        value: value.to_owned(),
        reason,
    }
}

/// A token: non-empty, without whitespace or control characters.
fn check_token(field: &'static str, value: &str) -> Result<(), SpecError> {
    if value.is_empty() {
        return Err(value_error(field, value, "it is empty"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(value_error(
            field,
            value,
            "it must not hold whitespace or control characters",
        ));
    }
    Ok(())
}

/// One line of text: non-empty, without newline, carriage return or NUL.
fn check_line(field: &'static str, value: &str) -> Result<(), SpecError> {
    if value.trim().is_empty() {
        return Err(value_error(field, value, "it is empty"));
    }
    if value.contains(['\n', '\r', '\0']) {
        return Err(value_error(field, value, "it must be one line without NUL"));
    }
    Ok(())
}

fn check_command(command: &str) -> Result<(), SpecError> {
    if command.trim().is_empty() {
        return Err(value_error("test command", command, "it is empty"));
    }
    if command.contains('\0') {
        return Err(value_error("test command", command, "it must not hold NUL"));
    }
    Ok(())
}

fn check_env(name: &str, value: &str) -> Result<(), SpecError> {
    if name.is_empty() {
        return Err(value_error("env name", name, "it is empty"));
    }
    if name.contains(['=', '\0']) {
        return Err(value_error("env name", name, "it must not hold '=' or NUL"));
    }
    if value.contains('\0') {
        return Err(value_error("env value", value, "it must not hold NUL"));
    }
    Ok(())
}

fn check_base(base: &Base) -> Result<(), SpecError> {
    match base {
        Base::Debian {
            suite,
            packages,
            mirror,
        } => {
            check_token("Debian suite", suite)?;
            for package in packages {
                check_token("Debian package", package)?;
            }
            if let Some(mirror) = mirror {
                check_token("Debian mirror", mirror)?;
            }
            Ok(())
        }
        Base::Busybox { path } => check_busybox(path),
    }
}

fn check_busybox(path: &std::path::Path) -> Result<(), SpecError> {
    let text = path.to_string_lossy();
    if !path.is_absolute() {
        return Err(value_error("busybox path", &text, "it must be absolute"));
    }
    if text.contains('\0') {
        return Err(value_error("busybox path", &text, "it must not hold NUL"));
    }
    Ok(())
}

/// Turns the YAML library's error into one located sentence in the spec's words (a
/// mapping's entries are "keys" to the person writing it).
fn yaml_error(error: serde_saphyr::Error) -> SpecError {
    let location = error.location().filter(|l| l.line() > 0);
    let mut message = error.without_snippet().to_string();
    if let Some(location) = location {
        let suffix = format!(" at line {}, column {}", location.line(), location.column());
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
        message = format!(
            "line {}, column {}: {message}",
            location.line(),
            location.column()
        );
    }
    let message = message
        .replace("unknown field `", "unknown key `")
        .replace("missing field `", "missing key `");
    SpecError::Yaml {
        line: location.map(|l| l.line()),
        column: location.map(|l| l.column()),
        message,
    }
}

/// The file's shape. Each value is checked as it is read (through the `deserialize_with`
/// functions below) so that a refusal carries the value's line and column; the checks
/// themselves are the ones [`RuntimeSpec::validate`] runs.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    #[serde(deserialize_with = "de_name")]
    name: String,
    #[serde(deserialize_with = "de_version")]
    version: semver::Version,
    #[serde(default)]
    description: Option<String>,
    #[serde(deserialize_with = "de_base")]
    base: Base,
    #[serde(default, deserialize_with = "de_pip")]
    pip: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_npm")]
    npm: Option<Vec<String>>,
    #[serde(default, alias = "environment", deserialize_with = "de_env")]
    env: Option<Vec<(String, String)>>,
    #[serde(default, deserialize_with = "de_test")]
    test: Option<Vec<String>>,
}

impl SpecFile {
    fn into_spec(self) -> RuntimeSpec {
        RuntimeSpec {
            name: self.name,
            version: self.version,
            description: self.description.unwrap_or_default(),
            base: self.base,
            pip: self.pip.unwrap_or_default(),
            npm: self.npm.unwrap_or_default(),
            env: self.env.unwrap_or_default(),
            test: self.test.unwrap_or_default(),
        }
    }
}

fn located<E: de::Error>(error: SpecError) -> E {
    E::custom(error)
}

fn de_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    check_name(&name).map_err(located)?;
    Ok(name)
}

fn de_version<'de, D: Deserializer<'de>>(d: D) -> Result<semver::Version, D::Error> {
    let text = String::deserialize(d)?;
    parse_version(&text).map_err(located)
}

fn de_lines<'de, D: Deserializer<'de>>(
    d: D,
    check: impl Fn(&str) -> Result<(), SpecError>,
) -> Result<Option<Vec<String>>, D::Error> {
    let lines = Option::<Vec<String>>::deserialize(d)?;
    for line in lines.iter().flatten() {
        check(line).map_err(located)?;
    }
    Ok(lines)
}

fn de_pip<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    de_lines(d, |line| check_line("pip requirement", line))
}

fn de_npm<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    de_lines(d, |line| check_line("npm package", line))
}

fn de_test<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    de_lines(d, check_command)
}

/// The `base:` mapping before its form is known.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BaseFile {
    suite: Option<String>,
    packages: Option<Vec<String>>,
    mirror: Option<String>,
    busybox: Option<PathBuf>,
}

fn de_base<'de, D: Deserializer<'de>>(d: D) -> Result<Base, D::Error> {
    let file = BaseFile::deserialize(d)?;
    let debian_keys = file.suite.is_some() || file.packages.is_some() || file.mirror.is_some();
    let base = match (file.busybox, file.suite) {
        (Some(path), _) if !debian_keys => Base::Busybox { path },
        (Some(_), _) => {
            return Err(de::Error::custom(
                "base: give either `busybox` or the Debian keys (`suite`, `packages`, `mirror`), not both",
            ));
        }
        (None, Some(suite)) => Base::Debian {
            suite,
            packages: file.packages.unwrap_or_default(),
            mirror: file.mirror,
        },
        (None, None) => {
            return Err(de::Error::custom(
                "base: needs `suite` (a Debian tree) or `busybox` (a static busybox)",
            ));
        }
    };
    check_base(&base).map_err(located)?;
    Ok(base)
}

/// `env:` is a mapping whose order is kept.
fn de_env<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<(String, String)>>, D::Error> {
    struct EnvVisitor;
    impl<'de> Visitor<'de> for EnvVisitor {
        type Value = Option<Vec<(String, String)>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping of environment variable names to values")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut env: Vec<(String, String)> = Vec::new();
            while let Some((name, value)) = map.next_entry::<String, String>()? {
                check_env(&name, &value).map_err(located)?;
                if env.iter().any(|(seen, _)| *seen == name) {
                    return Err(located(value_error("env name", &name, "appears twice")));
                }
                env.push((name, value));
            }
            Ok(Some(env))
        }
    }
    d.deserialize_option(EnvVisitor)
}

/// The file's shape for writing: optional parts are left out when empty.
#[derive(Serialize)]
struct SpecOut<'a> {
    name: &'a str,
    version: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    base: BaseOut<'a>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pip: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    npm: &'a [String],
    #[serde(skip_serializing_if = "EnvOut::is_empty")]
    env: EnvOut<'a>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    test: &'a [String],
}

#[derive(Serialize)]
#[serde(untagged)]
enum BaseOut<'a> {
    Debian {
        suite: &'a str,
        packages: &'a [String],
        #[serde(skip_serializing_if = "Option::is_none")]
        mirror: Option<&'a str>,
    },
    Busybox {
        busybox: String,
    },
}

struct EnvOut<'a>(&'a [(String, String)]);

impl EnvOut<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for EnvOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'a> From<&'a RuntimeSpec> for SpecOut<'a> {
    fn from(spec: &'a RuntimeSpec) -> Self {
        SpecOut {
            name: &spec.name,
            version: spec.version.to_string(),
            description: &spec.description,
            base: match &spec.base {
                Base::Debian {
                    suite,
                    packages,
                    mirror,
                } => BaseOut::Debian {
                    suite,
                    packages,
                    mirror: mirror.as_deref(),
                },
                Base::Busybox { path } => BaseOut::Busybox {
                    busybox: path.to_string_lossy().into_owned(),
                },
            },
            pip: &spec.pip,
            npm: &spec.npm,
            env: EnvOut(&spec.env),
            test: &spec.test,
        }
    }
}

/// A reference to a runtime: its name, and a version or `None` for "the newest".
///
/// Written `name` or `name@version`; [`fmt::Display`] gives back the text it was parsed
/// from (with the version in semver's canonical form).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuntimeRef {
    /// The runtime's name; always passes [`check_name`].
    pub name: String,
    /// The exact version, or `None` for the newest installed one.
    pub version: Option<semver::Version>,
}

impl FromStr for RuntimeRef {
    type Err = SpecError;

    /// Reads `name` or `name@version`; the name must pass [`check_name`] and the version
    /// must be semver.
    fn from_str(text: &str) -> Result<RuntimeRef, SpecError> {
        let (name, version) = match text.split_once('@') {
            Some((name, version)) => (name, Some(parse_version(version)?)),
            None => (text, None),
        };
        check_name(name)?;
        Ok(RuntimeRef {
            name: name.to_owned(),
            version,
        })
    }
}

impl fmt::Display for RuntimeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(version) => write!(f, "{}@{version}", self.name),
            None => f.write_str(&self.name),
        }
    }
}
