//! The build spec: what `runtime.yml` may say, and how a mistake is reported.

use std::path::PathBuf;

use proptest::prelude::*;
use silo_runtime::spec::{Base, RuntimeRef, RuntimeSpec, SpecError, check_name};

const DEBIAN: &str = r#"
name: python-3.11
version: 1.0.0
description: Python 3.11 with pip and venv
base:
  suite: bookworm
  packages: [python3, python3-pip, python3-venv]
  mirror: http://deb.debian.org/debian
pip: ["numpy==1.26.4"]
npm: ["left-pad@1.3.0"]
env:
  PYTHONDONTWRITEBYTECODE: "1"
  LANG: C.UTF-8
test:
  - python3 -c 'import sys; assert sys.version_info[:2] == (3, 11)'
"#;

fn message(yaml: &str) -> String {
    RuntimeSpec::parse(yaml).unwrap_err().to_string()
}

#[test]
fn a_debian_spec_reads_every_field() {
    let spec = RuntimeSpec::parse(DEBIAN).unwrap();
    assert_eq!(spec.name, "python-3.11");
    assert_eq!(spec.version, semver::Version::new(1, 0, 0));
    assert_eq!(spec.description, "Python 3.11 with pip and venv");
    assert_eq!(
        spec.base,
        Base::Debian {
            suite: "bookworm".into(),
            packages: vec![
                "python3".into(),
                "python3-pip".into(),
                "python3-venv".into()
            ],
            mirror: Some("http://deb.debian.org/debian".into()),
        }
    );
    assert_eq!(spec.pip, ["numpy==1.26.4"]);
    assert_eq!(spec.npm, ["left-pad@1.3.0"]);
    assert_eq!(
        spec.env,
        [
            ("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned()),
            ("LANG".to_owned(), "C.UTF-8".to_owned())
        ]
    );
    assert_eq!(spec.test.len(), 1);
}

#[test]
fn a_busybox_spec_needs_only_name_version_and_base() {
    let spec =
        RuntimeSpec::parse("name: tiny\nversion: 0.1.0\nbase:\n  busybox: /bin/busybox\n").unwrap();
    assert_eq!(
        spec.base,
        Base::Busybox {
            path: PathBuf::from("/bin/busybox")
        }
    );
    assert!(spec.description.is_empty() && spec.pip.is_empty() && spec.env.is_empty());
}

#[test]
fn environment_is_an_alias_of_env_and_order_is_kept() {
    let yaml = "name: a\nversion: 1.0.0\nbase: {busybox: /bin/busybox}\nenvironment:\n  Z: last\n  A: first\n";
    let spec = RuntimeSpec::parse(yaml).unwrap();
    assert_eq!(
        spec.env,
        [
            ("Z".to_owned(), "last".to_owned()),
            ("A".to_owned(), "first".to_owned())
        ]
    );
}

#[test]
fn an_unknown_key_is_named_with_its_line_and_column() {
    let yaml = "name: a\nversion: 1.0.0\nbase:\n  packges: [python3]\n  suite: bookworm\n";
    let error = RuntimeSpec::parse(yaml).unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with("line 4, column 3: unknown key `packges`"),
        "{text}"
    );
    assert!(matches!(
        error,
        SpecError::Yaml {
            line: Some(4),
            column: Some(3),
            ..
        }
    ));
    let top = message("name: a\nversion: 1.0.0\nbase: {busybox: /bin/busybox}\nimage: x\n");
    assert!(
        top.starts_with("line 4, column 1: unknown key `image`"),
        "{top}"
    );
}

#[test]
fn a_version_that_is_not_semver_is_refused_where_it_stands() {
    let text = message("name: a\nversion: 1.0\nbase: {busybox: /bin/busybox}\n");
    assert!(
        text.starts_with("line 2, column 10: invalid version `1.0`"),
        "{text}"
    );
    assert!(message("name: a\nbase: {busybox: /bin/busybox}\n").contains("missing key `version`"));
}

#[test]
fn a_bad_name_is_refused() {
    for bad in ["../x", "A", "\"\"", "-lead", "a/b", "x\u{e9}"] {
        let text = message(&format!(
            "name: {bad}\nversion: 1.0.0\nbase: {{busybox: /bin/busybox}}\n"
        ));
        assert!(
            text.starts_with("line 1, column 7: invalid runtime name"),
            "{bad}: {text}"
        );
    }
}

#[test]
fn check_name_allows_only_one_safe_path_component() {
    for good in ["python-3.11", "a", "0", "node_20.x", &"a".repeat(64)] {
        check_name(good).unwrap();
    }
    for bad in [
        "",
        ".",
        "..",
        "../x",
        "A",
        "a/b",
        "-a",
        ".a",
        "_a",
        "a b",
        &"a".repeat(65),
    ] {
        assert!(
            matches!(check_name(bad), Err(SpecError::Name { .. })),
            "{bad:?} passed"
        );
    }
}

#[test]
fn base_takes_exactly_one_form() {
    let both =
        message("name: a\nversion: 1.0.0\nbase:\n  suite: bookworm\n  busybox: /bin/busybox\n");
    assert!(both.contains("not both"), "{both}");
    let neither = message("name: a\nversion: 1.0.0\nbase:\n  packages: [x]\n");
    assert!(neither.contains("needs `suite`"), "{neither}");
}

#[test]
fn values_that_break_their_rules_are_refused() {
    let base = "name: a\nversion: 1.0.0\n";
    let cases = [
        ("base: {busybox: bin/busybox}\n", "must be absolute"),
        ("base: {suite: 'book worm'}\n", "Debian suite"),
        (
            "base: {suite: bookworm, packages: ['']}\n",
            "Debian package",
        ),
        ("base: {busybox: /b}\nenv: {'A=B': x}\n", "env name"),
        ("base: {busybox: /b}\nenv: {'': x}\n", "env name"),
        ("base: {busybox: /b}\npip: [\"a\\nb\"]\n", "pip requirement"),
        ("base: {busybox: /b}\nnpm: ['']\n", "npm package"),
        ("base: {busybox: /b}\ntest: ['  ']\n", "test command"),
    ];
    for (rest, expected) in cases {
        let text = message(&format!("{base}{rest}"));
        assert!(text.contains(expected), "{rest}: {text}");
        assert!(text.starts_with("line "), "{rest}: not located: {text}");
    }
}

#[test]
fn runtime_refs_read_name_and_optional_version_and_print_back() {
    let bare: RuntimeRef = "python-3.11".parse().unwrap();
    assert_eq!(bare.version, None);
    assert_eq!(bare.to_string(), "python-3.11");
    let pinned: RuntimeRef = "python-3.11@1.0.0".parse().unwrap();
    assert_eq!(pinned.name, "python-3.11");
    assert_eq!(pinned.version, Some(semver::Version::new(1, 0, 0)));
    assert_eq!(pinned.to_string(), "python-3.11@1.0.0");
    assert!("Python".parse::<RuntimeRef>().is_err());
    assert!("python@1".parse::<RuntimeRef>().is_err());
    assert!("@1.0.0".parse::<RuntimeRef>().is_err());
}

fn token() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9.+:/=-]{0,20}"
}

fn line() -> impl Strategy<Value = String> {
    // Any one line, including YAML's special words and characters.
    prop_oneof![
        "[^\n\r\0]{1,30}".prop_filter("not blank", |s| !s.trim().is_empty()),
        Just("null".to_owned()),
        Just("~".to_owned()),
        Just("true".to_owned()),
        Just("- a: b".to_owned()),
        Just("'quoted' \"both\" #hash".to_owned()),
        Just("1.0".to_owned()),
    ]
}

fn spec() -> impl Strategy<Value = RuntimeSpec> {
    let base = prop_oneof![
        (
            token(),
            prop::collection::vec(token(), 0..4),
            prop::option::of(token())
        )
            .prop_map(|(suite, packages, mirror)| Base::Debian {
                suite,
                packages,
                mirror
            }),
        "/[a-z/ ]{1,20}".prop_map(|p| Base::Busybox { path: p.into() }),
    ];
    let env =
        prop::collection::btree_map("[A-Za-z_ .:-][A-Za-z0-9_ .:-]{0,10}", "[^\0]{0,20}", 0..4)
            .prop_map(|m| m.into_iter().rev().collect::<Vec<_>>());
    (
        "[a-z0-9][a-z0-9._-]{0,20}",
        (0u64..100, 0u64..100, 0u64..100),
        "[^\0]{0,40}",
        base,
        prop::collection::vec(line(), 0..3),
        prop::collection::vec(line(), 0..3),
        env,
        prop::collection::vec(
            "[^\0]{1,40}".prop_filter("not blank", |s| !s.trim().is_empty()),
            0..3,
        ),
    )
        .prop_map(
            |(name, (major, minor, patch), description, base, pip, npm, env, test)| RuntimeSpec {
                name,
                version: semver::Version::new(major, minor, patch),
                description,
                base,
                pip,
                npm,
                env,
                test,
            },
        )
}

proptest! {
    #[test]
    fn to_yaml_reads_back_equal(spec in spec()) {
        spec.validate().unwrap();
        let yaml = spec.to_yaml();
        let back = RuntimeSpec::parse(&yaml);
        prop_assert!(back.is_ok(), "{yaml}\n{:?}", back);
        prop_assert_eq!(back.unwrap(), spec);
    }
}
