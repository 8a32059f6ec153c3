//! Parsing of the values users type on the command line: sizes, durations, environment
//! variables, resource limits and runtime references. Every rejection is one sentence that names the bad value
//! and says what would be accepted, so the job is never sent.

use std::ffi::OsString;
use std::time::Duration;

use silo_proto::values::{self, CpuList};

/// A command-line value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The value is not in the expected form.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What the value should be ("size", "duration", "--env value", …).
        what: &'static str,
        /// The value as given.
        value: String,
        /// Why it is refused and what would be accepted.
        reason: String,
    },
}

impl ParseError {
    /// Why the value is refused, without repeating the value (for messages that already
    /// name it, such as clap's "invalid value '0' for '--memory <SIZE>'").
    pub fn reason(&self) -> &str {
        match self {
            ParseError::Invalid { reason, .. } => reason,
        }
    }
}

fn invalid(what: &'static str, value: &str, reason: impl Into<String>) -> ParseError {
    ParseError::Invalid {
        what,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// Parses a size in bytes in the API's syntax ([`values::parse_size`]: `512K`, `64M`,
/// `1GiB`, …) for a limit.
///
/// Guarantees: the result is greater than zero and at most [`values::MAX_SIZE`].
pub fn parse_size(value: &str) -> Result<u64, ParseError> {
    const WHAT: &str = "size";
    match values::parse_size(value) {
        Ok(0) => Err(invalid(WHAT, value, "must be greater than zero")),
        Ok(bytes) => Ok(bytes),
        Err(err) => Err(invalid(WHAT, value, err.to_string())),
    }
}

/// Parses a duration in humantime syntax (`500ms`, `5s`, `2m`, `1h 30m`) into whole
/// milliseconds.
///
/// Guarantees: the result is at least 1 ms and at most `max`; `what` names the flag in the
/// error.
pub fn parse_duration_ms(
    what: &'static str,
    value: &str,
    max: Duration,
) -> Result<u64, ParseError> {
    let text = value.trim();
    if text.starts_with('-') {
        return Err(invalid(what, value, "a duration cannot be negative"));
    }
    let duration = humantime::parse_duration(text).map_err(|err| {
        invalid(
            what,
            value,
            format!("{err} (expected e.g. 500ms, 5s, 2m, 1h)"),
        )
    })?;
    if duration.is_zero() {
        return Err(invalid(what, value, "must be greater than zero"));
    }
    if duration < Duration::from_millis(1) {
        return Err(invalid(what, value, "must be at least 1ms"));
    }
    if duration > max {
        return Err(invalid(
            what,
            value,
            format!("too long: at most {}", humantime::format_duration(max)),
        ));
    }
    // Bounded by `max` above, which is far below u64::MAX milliseconds.
    u64::try_from(duration.as_millis()).map_err(|_| invalid(what, value, "too long"))
}

/// The longest `--timeout`: the server's bound (a year).
pub const MAX_TIMEOUT: Duration = Duration::from_millis(silo_proto::values::MAX_TIMEOUT_MS);
/// The longest `--grace`: the server's bound (an hour).
pub const MAX_GRACE: Duration = Duration::from_millis(silo_proto::values::MAX_STOP_GRACE_MS);

/// One environment variable for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvSetting {
    /// The variable's name: a letter or `_`, then letters, digits or `_`.
    pub name: String,
    /// Its value; never contains NUL.
    pub value: String,
}

/// Parses one `--env` value: `NAME=VALUE`, or `NAME` alone to pass the variable's value
/// from this client's environment (looked up with `lookup`), as `docker run --env` does.
///
/// Returns `Ok(None)` for `NAME` alone when the client's environment does not have it: the
/// variable is then not passed, again like docker.
pub fn parse_env(
    value: &str,
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Result<Option<EnvSetting>, ParseError> {
    const WHAT: &str = "--env value";
    let (name, given) = match value.split_once('=') {
        Some((name, given)) => (name, Some(given)),
        None => (value, None),
    };
    if name.is_empty() {
        return Err(invalid(
            WHAT,
            value,
            "the variable name is missing (expected NAME=VALUE or NAME)",
        ));
    }
    if !is_env_name(name) {
        return Err(invalid(
            WHAT,
            value,
            format!(
                "{name:?} is not a valid variable name (letters, digits and '_', not starting with a digit)"
            ),
        ));
    }
    let value_text = match given {
        Some(given) => given.to_owned(),
        None => match lookup(name) {
            None => return Ok(None),
            Some(os) => os.into_string().map_err(|_| {
                invalid(
                    WHAT,
                    value,
                    format!("the value of {name} in this environment is not valid UTF-8"),
                )
            })?,
        },
    };
    if value_text.contains('\0') {
        return Err(invalid(WHAT, value, "the value contains a NUL byte"));
    }
    Ok(Some(EnvSetting {
        name: name.to_owned(),
        value: value_text,
    }))
}

/// One secret variable for a job (`--secret-env`, `--secret-env-file`). Its `Debug` hides
/// the value.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretSetting {
    /// The variable's name: a letter or `_`, then letters, digits or `_`.
    pub name: String,
    /// Its value; never contains NUL.
    pub value: String,
}

impl std::fmt::Debug for SecretSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}=<hidden>", self.name)
    }
}

/// Parses one `--secret-env` value: `NAME=VALUE`, or `NAME` alone for the variable's
/// value in this client's environment (looked up with `lookup`), which must be set.
///
/// Unlike [`parse_env`], an error never repeats the value: it names the variable at most.
pub fn parse_secret_env(
    arg: &str,
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Result<SecretSetting, String> {
    let (name, given) = match arg.split_once('=') {
        Some((name, given)) => (name, Some(given)),
        None => (arg, None),
    };
    if name.is_empty() {
        return Err(
            "--secret-env: the variable name is missing (expected NAME=VALUE or NAME)".into(),
        );
    }
    if !is_env_name(name) {
        // Without '=', what was given may be a value typed by mistake: not repeated.
        let shown = if given.is_some() {
            format!("{name:?}")
        } else {
            "the argument".to_owned()
        };
        return Err(format!(
            "--secret-env: {shown} is not a valid variable name (letters, digits and '_', not starting with a digit)"
        ));
    }
    let value = match given {
        Some(given) => given.to_owned(),
        None => lookup(name)
            .ok_or_else(|| {
                format!(
                    "--secret-env {name}: {name} is not set in this environment (set it, or give {name}=VALUE)"
                )
            })?
            .into_string()
            .map_err(|_| {
                format!("--secret-env {name}: its value in this environment is not valid UTF-8")
            })?,
    };
    if value.contains('\0') {
        return Err(format!(
            "--secret-env {name}: the value contains a NUL byte"
        ));
    }
    Ok(SecretSetting {
        name: name.to_owned(),
        value,
    })
}

/// Parses a dotenv file's `text` (`--secret-env-file`; `file` names it in errors): one
/// `NAME=VALUE` per line, optionally after `export `; blank lines and lines starting with
/// `#` are skipped. A value may be in double quotes (with `\"`, `\\`, `\n` escapes) or
/// single quotes (taken literally), and may be followed by a ` #` comment; an unquoted
/// value ends at a ` #` comment and loses its trailing blanks. A later line of a name
/// replaces an earlier one.
///
/// An error names `file:line` and the variable, never a value.
pub fn parse_dotenv(file: &str, text: &str) -> Result<Vec<SecretSetting>, String> {
    let mut settings: Vec<SecretSetting> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = format!("{file}:{}", i + 1);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = match line.strip_prefix("export") {
            Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
            _ => line,
        };
        let Some((name, raw)) = line.split_once('=') else {
            return Err(format!("{at}: expected NAME=VALUE"));
        };
        let name = name.trim_end();
        if !is_env_name(name) {
            return Err(format!(
                "{at}: {name:?} is not a valid variable name (letters, digits and '_', not starting with a digit)"
            ));
        }
        let value = dotenv_value(raw.trim_start())
            .map_err(|why| format!("{at}: the value of {name} {why}"))?;
        if value.contains('\0') {
            return Err(format!("{at}: the value of {name} contains a NUL byte"));
        }
        settings.retain(|s| s.name != name);
        settings.push(SecretSetting {
            name: name.to_owned(),
            value,
        });
    }
    Ok(settings)
}

/// One dotenv value (what follows `=`, leading blanks removed); the error says what is
/// wrong with it in words that do not repeat it.
fn dotenv_value(raw: &str) -> Result<String, &'static str> {
    let rest_is_comment = |rest: &str| {
        let rest = rest.trim_start();
        rest.is_empty() || rest.starts_with('#')
    };
    if let Some(body) = raw.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    return if rest_is_comment(&body[i + 1..]) {
                        Ok(value)
                    } else {
                        Err("has text after its closing quote")
                    };
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, 'r')) => value.push('\r'),
                    Some((_, 't')) => value.push('\t'),
                    Some((_, c @ ('"' | '\\' | '$'))) => value.push(c),
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => return Err("has no closing double quote"),
                },
                c => value.push(c),
            }
        }
        return Err("has no closing double quote");
    }
    if let Some(body) = raw.strip_prefix('\'') {
        let end = body.find('\'').ok_or("has no closing single quote")?;
        return if rest_is_comment(&body[end + 1..]) {
            Ok(body[..end].to_owned())
        } else {
            Err("has text after its closing quote")
        };
    }
    let value = match raw.find(" #").or_else(|| raw.find("\t#")) {
        Some(comment) => &raw[..comment],
        None if raw.starts_with('#') => "",
        None => raw,
    };
    Ok(value.trim_end().to_owned())
}

/// Whether `name` is a portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The highest `--cpu` percentage: a thousand cores.
pub const MAX_CPU_PERCENT: u32 = 100_000;

/// Parses `--cpu PERCENT`: percent of one core (`50`, `250`, optionally `50%`), from 1 to
/// [`MAX_CPU_PERCENT`].
pub fn parse_cpu_percent(value: &str) -> Result<u32, ParseError> {
    const WHAT: &str = "--cpu percentage";
    let text = value.trim();
    let text = text.strip_suffix('%').unwrap_or(text);
    parse_bounded(
        WHAT,
        value,
        text,
        MAX_CPU_PERCENT,
        "percent of one core, e.g. 50 or 250",
    )
}

/// The highest `--pids`: the kernel's largest possible pid_max.
pub const MAX_PIDS: u32 = 1 << 22;

/// Parses `--pids N`: a process count from 1 to [`MAX_PIDS`].
pub fn parse_pids(value: &str) -> Result<u32, ParseError> {
    parse_bounded(
        "--pids count",
        value,
        value.trim(),
        MAX_PIDS,
        "a number of processes",
    )
}

fn parse_bounded(
    what: &'static str,
    value: &str,
    text: &str,
    max: u32,
    expected: &str,
) -> Result<u32, ParseError> {
    if text.starts_with('-') {
        return Err(invalid(what, value, "cannot be negative"));
    }
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(
            what,
            value,
            format!("expected a whole number ({expected})"),
        ));
    }
    let too_large = || invalid(what, value, format!("too large: at most {max}"));
    let number: u32 = text.parse().map_err(|_| too_large())?;
    if number == 0 {
        return Err(invalid(what, value, "must be greater than zero"));
    }
    if number > max {
        return Err(too_large());
    }
    Ok(number)
}

/// Parses `--cpus LIST` in cpuset syntax ([`CpuList`]: `0-3`, `1,3`, `2,0`). Returns the
/// list in its normal form (`0,2` for `2,0`), as the server applies it.
pub fn parse_cpu_list(value: &str) -> Result<String, ParseError> {
    CpuList::parse(value)
        .map(|list| list.to_string())
        .map_err(|err| invalid("--cpus list", value, err.to_string()))
}

/// The longest runtime name.
pub const MAX_RUNTIME_NAME_LEN: usize = 64;

/// A runtime as a command names it: `NAME` (the server picks its highest installed
/// version) or `NAME@VERSION` (exactly that version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeRef {
    /// 1 to [`MAX_RUNTIME_NAME_LEN`] characters of `a-z`, `0-9`, `.`, `_` and `-`, the
    /// first a letter or digit.
    pub name: String,
    /// The exact version, when one was named.
    pub version: Option<semver::Version>,
}

impl std::fmt::Display for RuntimeRef {
    /// `NAME` or `NAME@VERSION`, as the API takes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(version) => write!(f, "{}@{version}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// Parses a runtime reference: `NAME` or `NAME@VERSION`, the version in semver
/// (`python-3.11`, `python-3.11@1.0.0`).
pub fn parse_runtime_ref(value: &str) -> Result<RuntimeRef, ParseError> {
    const WHAT: &str = "runtime";
    let (name, version) = match value.split_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (value, None),
    };
    if let Some(reason) = runtime_name_problem(name) {
        return Err(invalid(WHAT, value, reason));
    }
    let version = match version {
        None => None,
        Some("") => {
            return Err(invalid(
                WHAT,
                value,
                "the version after '@' is missing (expected NAME or NAME@VERSION, e.g. python-3.11@1.0.0)",
            ));
        }
        Some(text) => Some(semver::Version::parse(text).map_err(|err| {
            let hint = if text.starts_with(['v', 'V']) {
                format!(" (write {}, without the v)", &text[1..])
            } else {
                " (expected MAJOR.MINOR.PATCH, e.g. 1.0.0)".to_owned()
            };
            invalid(
                WHAT,
                value,
                format!("the version {text:?} is not semver: {err}{hint}"),
            )
        })?),
    };
    Ok(RuntimeRef {
        name: name.to_owned(),
        version,
    })
}

/// Parses a runtime reference that must name its version: `NAME@VERSION`.
///
/// Guarantees: the result's `version` is set.
pub fn parse_exact_runtime_ref(value: &str) -> Result<RuntimeRef, ParseError> {
    let runtime = parse_runtime_ref(value)?;
    if runtime.version.is_none() {
        return Err(invalid(
            "runtime",
            value,
            format!(
                "name the version: {value}@VERSION (silo runtime list shows the installed ones)"
            ),
        ));
    }
    Ok(runtime)
}

/// Why `name` is not a runtime name, or `None` when it is one.
fn runtime_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("the name is missing (expected NAME or NAME@VERSION)".to_owned());
    }
    if name.chars().count() > MAX_RUNTIME_NAME_LEN {
        return Some(format!(
            "the name is longer than {MAX_RUNTIME_NAME_LEN} characters"
        ));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        return Some(format!(
            "{bad:?} is not allowed in a name (lower-case letters, digits, '.', '_' and '-')"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Some("the name must start with a lower-case letter or a digit".to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_the_apis_and_more_than_zero() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size(" 1GiB "), Ok(1 << 30));
        for (input, reason) in [
            ("0", "greater than zero"),
            ("0M", "greater than zero"),
            ("-64M", "negative"),
            ("10X", "unknown unit \"X\""),
            ("1.5G", "smaller unit"),
            ("1025T", "too large"),
        ] {
            let err = parse_size(input).expect_err(input).to_string();
            assert!(err.contains(reason), "{input}: {err}");
            assert!(
                err.starts_with(&format!("invalid size {input:?}: ")),
                "{input}: {err}"
            );
        }
    }

    #[test]
    fn durations_are_humantime_in_milliseconds() {
        assert_eq!(
            parse_duration_ms("--timeout", "500ms", MAX_TIMEOUT),
            Ok(500)
        );
        assert_eq!(parse_duration_ms("--timeout", "5s", MAX_TIMEOUT), Ok(5000));
        assert_eq!(
            parse_duration_ms("--timeout", "2m", MAX_TIMEOUT),
            Ok(120_000)
        );
        assert_eq!(
            parse_duration_ms("--timeout", "1h 30m", MAX_TIMEOUT),
            Ok(5_400_000)
        );
    }

    #[test]
    fn durations_reject_zero_negative_garbage_and_absurd_values() {
        for (input, reason) in [
            ("0s", "greater than zero"),
            ("0", "greater than zero"),
            ("-5s", "negative"),
            ("5", "expected e.g."),
            ("soon", "expected e.g."),
            ("10us", "at least 1ms"),
            ("400days", "too long"),
        ] {
            let err = parse_duration_ms("--timeout", input, MAX_TIMEOUT)
                .expect_err(input)
                .to_string();
            assert!(err.contains(reason), "{input}: {err}");
            assert!(err.starts_with("invalid --timeout"), "{err}");
        }
        assert!(parse_duration_ms("--grace", "2h", MAX_GRACE).is_err());
        assert!(parse_duration_ms("--grace", "1h", MAX_GRACE).is_ok());
    }

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    #[test]
    fn env_name_equals_value_is_taken_literally() {
        let set = parse_env("A_1=x=y", no_env).unwrap().unwrap();
        assert_eq!((set.name.as_str(), set.value.as_str()), ("A_1", "x=y"));
        let empty = parse_env("EMPTY=", no_env).unwrap().unwrap();
        assert_eq!(empty.value, "");
    }

    #[test]
    fn env_name_alone_takes_the_clients_value_or_is_skipped() {
        let lookup = |name: &str| (name == "HOME").then(|| OsString::from("/root"));
        assert_eq!(
            parse_env("HOME", lookup).unwrap(),
            Some(EnvSetting {
                name: "HOME".into(),
                value: "/root".into()
            })
        );
        assert_eq!(parse_env("NOT_SET", lookup).unwrap(), None);
    }

    #[test]
    fn secret_env_takes_a_value_or_the_clients_and_never_repeats_it() {
        let lookup = |name: &str| (name == "TOKEN").then(|| OsString::from("from-shell"));
        let s = parse_secret_env("A=x=y", lookup).unwrap();
        assert_eq!((s.name.as_str(), s.value.as_str()), ("A", "x=y"));
        assert_eq!(
            parse_secret_env("TOKEN", lookup).unwrap().value,
            "from-shell"
        );
        assert!(!format!("{s:?}").contains("x=y"));
        let e = parse_secret_env("NOT_SET", lookup).unwrap_err();
        assert!(e.contains("NOT_SET is not set in this environment"), "{e}");
        for (arg, expected) in [
            ("=s3cr3t", "name is missing"),
            ("1A=s3cr3t", "\"1A\" is not a valid variable name"),
            ("s3cr3t!", "the argument is not a valid variable name"),
            ("A=s3cr3t\0", "NUL"),
        ] {
            let e = parse_secret_env(arg, lookup).unwrap_err();
            assert!(e.contains(expected) && !e.contains("s3cr3t"), "{arg}: {e}");
        }
    }

    #[test]
    fn dotenv_files_take_comments_quotes_and_export() {
        let text = "\
# a comment
A=plain value   # comment after
export B=\"double \\\"quoted\\\" # not a comment\\n\"  # comment
  C = 'single $literal \\n'
D=
E=\"\"
F=x#y
A=replaced
";
        let got: Vec<(String, String)> = parse_dotenv("f.env", text)
            .unwrap()
            .into_iter()
            .map(|s| (s.name, s.value))
            .collect();
        let want = [
            ("B", "double \"quoted\" # not a comment\n"),
            ("C", "single $literal \\n"),
            ("D", ""),
            ("E", ""),
            ("F", "x#y"),
            ("A", "replaced"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_malformed_dotenv_line_is_named_by_file_and_line_without_its_value() {
        for (text, expected) in [
            ("A=1\nno equals s3cr3t\n", "f.env:2: expected NAME=VALUE"),
            (
                "\n1X=s3cr3t\n",
                "f.env:2: \"1X\" is not a valid variable name",
            ),
            (
                "A=\"s3cr3t\n",
                "f.env:1: the value of A has no closing double quote",
            ),
            (
                "A='s3cr3t\n",
                "f.env:1: the value of A has no closing single quote",
            ),
            (
                "A=\"s3cr3t\" tail\n",
                "f.env:1: the value of A has text after its closing quote",
            ),
            ("export\n", "f.env:1: expected NAME=VALUE"),
        ] {
            let e = parse_dotenv("f.env", text).unwrap_err();
            assert!(e.starts_with(expected) && !e.contains("s3cr3t"), "{e}");
        }
    }

    #[test]
    fn env_rejects_missing_or_invalid_names_and_nul() {
        for (input, reason) in [
            ("=V", "name is missing"),
            ("=", "name is missing"),
            ("", "name is missing"),
            ("1A=x", "not a valid variable name"),
            ("A-B=x", "not a valid variable name"),
            ("A B=x", "not a valid variable name"),
            ("A\0=x", "not a valid variable name"),
            ("A=x\0y", "NUL"),
        ] {
            let err = parse_env(input, no_env).expect_err(input).to_string();
            assert!(err.contains(reason), "{input:?}: {err}");
        }
    }

    #[test]
    fn cpu_percent_pids_and_cpu_lists_are_bounded() {
        assert_eq!(parse_cpu_percent("50"), Ok(50));
        assert_eq!(parse_cpu_percent("250%"), Ok(250));
        assert!(parse_cpu_percent("0").is_err());
        assert!(parse_cpu_percent("-1").is_err());
        assert!(parse_cpu_percent("100001").is_err());
        assert!(parse_cpu_percent("99999999999").is_err());
        assert!(parse_cpu_percent("half").is_err());
        assert_eq!(parse_pids("64"), Ok(64));
        assert!(parse_pids("0").is_err());
        assert!(parse_pids("5000000").is_err());
        assert_eq!(parse_cpu_list("0-3"), Ok("0-3".to_owned()));
        assert_eq!(parse_cpu_list("1, 3"), Ok("1,3".to_owned()));
        for bad in ["", "a", "3-1", "1,,2", "0-", "9000", "-1"] {
            let err = parse_cpu_list(bad).expect_err(bad).to_string();
            assert!(
                err.starts_with(&format!("invalid --cpus list {bad:?}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn cpu_lists_are_sent_in_their_normal_form() {
        assert_eq!(parse_cpu_list("2,0"), Ok("0,2".to_owned()));
        assert_eq!(parse_cpu_list("0,0"), Ok("0".to_owned()));
        assert_eq!(parse_cpu_list("0-2,1"), Ok("0-2".to_owned()));
    }

    #[test]
    fn runtimes_are_named_with_or_without_a_semver_version() {
        let bare = parse_runtime_ref("python-3.11").unwrap();
        assert_eq!(
            (bare.name.as_str(), bare.version.as_ref()),
            ("python-3.11", None)
        );
        assert_eq!(bare.to_string(), "python-3.11");
        let exact = parse_runtime_ref("python-3.11@1.0.0").unwrap();
        assert_eq!(exact.version, Some(semver::Version::new(1, 0, 0)));
        assert_eq!(exact.to_string(), "python-3.11@1.0.0");
        for good in ["0", "node_20", "a.b-c_d", "java-21@2.1.0-rc.1+build.5"] {
            let runtime = parse_runtime_ref(good).expect(good);
            assert_eq!(runtime.to_string(), good);
        }
        let longest = "a".repeat(MAX_RUNTIME_NAME_LEN);
        assert!(parse_runtime_ref(&longest).is_ok());
    }

    #[test]
    fn bad_runtime_names_and_versions_are_refused_with_the_reason() {
        let too_long = "a".repeat(MAX_RUNTIME_NAME_LEN + 1);
        for (input, reason) in [
            ("", "name is missing"),
            ("@1.0.0", "name is missing"),
            ("Python", "'P' is not allowed"),
            ("py thon", "' ' is not allowed"),
            ("py/thon", "'/' is not allowed"),
            ("-python", "must start with a lower-case letter or a digit"),
            (".hidden", "must start with"),
            (too_long.as_str(), "longer than 64 characters"),
            ("python@", "version after '@' is missing"),
            ("python@1.0", "not semver"),
            ("python@v1.0.0", "write 1.0.0, without the v"),
            ("python@1.0.0@2", "not semver"),
            ("python@latest", "not semver"),
        ] {
            let err = parse_runtime_ref(input).expect_err(input).to_string();
            assert!(err.contains(reason), "{input:?}: {err}");
            assert!(
                err.starts_with(&format!("invalid runtime {input:?}: ")),
                "{err}"
            );
        }
    }

    #[test]
    fn an_exact_runtime_reference_names_its_version() {
        let exact = parse_exact_runtime_ref("python-3.11@1.0.0").unwrap();
        assert_eq!(exact.version, Some(semver::Version::new(1, 0, 0)));
        let err = parse_exact_runtime_ref("python-3.11")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("name the version: python-3.11@VERSION"),
            "{err}"
        );
        assert!(parse_exact_runtime_ref("Python@1.0.0").is_err());
    }
}

/// The longest `--in`, and how far ahead `--at` may be: the server's bound (a year).
pub const MAX_AHEAD: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parses a `--at` time into an instant: RFC 3339 with an offset
/// (`2026-12-05T09:00:00+01:00`, `…Z`), a time with an IANA zone
/// (`2026-12-05T09:00[Europe/Berlin]`), or a time without a zone (`2026-12-05T09:00`,
/// `2026-12-05 09:00:00`), read in `local` (this machine's zone; a wall time that zone
/// skips or repeats resolves as jiff's "compatible" rule: after the gap, the first of the
/// two).
///
/// Guarantees: the instant lies after `now` and at most [`MAX_AHEAD`] after it; the error
/// for a past time shows now in `local` ("… is in the past (now …)").
pub fn parse_at(
    value: &str,
    now: jiff::Timestamp,
    local: &jiff::tz::TimeZone,
) -> Result<jiff::Timestamp, ParseError> {
    const WHAT: &str = "--at time";
    let text = value.trim();
    let instant = if let Ok(zoned) = text.parse::<jiff::Zoned>() {
        zoned.timestamp()
    } else if let Ok(instant) = text.parse::<jiff::Timestamp>() {
        instant
    } else if let Ok(civil) = text.parse::<jiff::civil::DateTime>() {
        civil
            .to_zoned(local.clone())
            .map_err(|e| invalid(WHAT, value, e.to_string()))?
            .timestamp()
    } else {
        return Err(invalid(
            WHAT,
            value,
            "expected e.g. 2026-12-05T09:00:00+01:00, 2026-12-05T09:00 (this machine's zone) \
             or 2026-12-05T09:00[Europe/Berlin]",
        ));
    };
    if instant <= now {
        let now = now.to_zoned(local.clone()).strftime("%Y-%m-%dT%H:%M:%S%:z");
        return Err(invalid(
            WHAT,
            value,
            format!("{text} is in the past (now {now})"),
        ));
    }
    let ahead = instant.duration_since(now);
    if ahead.as_secs() > MAX_AHEAD.as_secs() as i64 {
        return Err(invalid(WHAT, value, "more than a year ahead"));
    }
    Ok(instant)
}

#[cfg(test)]
mod at_tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2026-12-05T09:12:03Z".parse().unwrap()
    }

    fn berlin() -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get("Europe/Berlin").unwrap()
    }

    #[test]
    fn a_time_with_an_offset_or_zone_is_that_instant() {
        let at = parse_at("2026-12-05T11:00:00+01:00", now(), &berlin()).unwrap();
        assert_eq!(at.to_string(), "2026-12-05T10:00:00Z");
        let at = parse_at("2026-12-05T11:00[America/New_York]", now(), &berlin()).unwrap();
        assert_eq!(at.to_string(), "2026-12-05T16:00:00Z");
        let at = parse_at("2026-12-06T00:00:00Z", now(), &berlin()).unwrap();
        assert_eq!(at.to_string(), "2026-12-06T00:00:00Z");
    }

    #[test]
    fn a_time_without_a_zone_is_read_in_the_local_zone_not_utc() {
        let at = parse_at("2026-12-05T11:00", now(), &berlin()).unwrap();
        assert_eq!(at.to_string(), "2026-12-05T10:00:00Z");
        let ny = jiff::tz::TimeZone::get("America/New_York").unwrap();
        let at = parse_at("2026-12-05 11:00:00", now(), &ny).unwrap();
        assert_eq!(at.to_string(), "2026-12-05T16:00:00Z");
    }

    #[test]
    fn a_past_time_is_refused_showing_now() {
        let e = parse_at("2026-12-05T09:00:00+01:00", now(), &berlin()).unwrap_err();
        assert_eq!(
            e.reason(),
            "2026-12-05T09:00:00+01:00 is in the past (now 2026-12-05T10:12:03+01:00)"
        );
    }

    #[test]
    fn in_takes_compound_durations() {
        assert_eq!(parse_duration_ms("--in", "2h30m", MAX_AHEAD), Ok(9_000_000));
        assert_eq!(parse_duration_ms("--in", "90s", MAX_AHEAD), Ok(90_000));
        assert!(parse_duration_ms("--in", "400d", MAX_AHEAD).is_err());
    }

    #[test]
    fn garbage_and_far_futures_are_refused() {
        assert!(parse_at("tomorrow", now(), &berlin()).is_err());
        assert!(parse_at("2026-13-01T00:00", now(), &berlin()).is_err());
        let e = parse_at("2028-12-05T00:00:00Z", now(), &berlin()).unwrap_err();
        assert_eq!(e.reason(), "more than a year ahead");
    }
}
