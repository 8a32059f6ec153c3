//! `silo runtime info NAME[@VERSION]`: one runtime in detail, as `key: value` lines
//! followed by its environment, packages and spec, or as JSON.

use silo_proto::v1::{GetRuntimeRequest, Runtime};

use super::title;
use crate::cli::{GlobalOptions, RuntimeInfoArgs};
use crate::format::{human_size, rfc3339_seconds, single_line, system_time};
use crate::output::{print, print_json};
use crate::session::Session;
use crate::view::RuntimeView;

/// Prints the runtime (its highest installed version for a bare NAME).
pub async fn info(global: &GlobalOptions, args: RuntimeInfoArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    let request = GetRuntimeRequest {
        runtime: args.runtime.to_string(),
    };
    let runtime = match session.runtimes.get_runtime(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(session.runtime_error(&status).into()),
    };
    if args.json {
        return print_json(&RuntimeView::from(&runtime));
    }
    print(&render_runtime(&runtime))
}

/// The runtime as aligned `key: value` lines in a fixed order (runtime, description, size,
/// shared, entries, manifest, signer, installed (RFC 3339, UTC), used by), then the
/// sections env (`NAME=VALUE`), packages and spec (the YAML as sent), each line indented
/// by two blanks. Unset values and empty sections read `-`.
pub fn render_runtime(runtime: &Runtime) -> String {
    let text = |value: &str| {
        if value.is_empty() {
            "-".to_owned()
        } else {
            single_line(value)
        }
    };
    let signer = match (runtime.signer.as_str(), runtime.signed_here) {
        ("", _) => "-".to_owned(),
        (signer, true) => format!("{} (this server)", single_line(signer)),
        (signer, false) => single_line(signer),
    };
    let lines = [
        ("runtime", title(runtime)),
        ("description", text(&runtime.description)),
        (
            "size",
            format!(
                "{} ({} bytes)",
                human_size(runtime.size_bytes),
                runtime.size_bytes
            ),
        ),
        (
            "shared",
            match runtime.shared_bytes {
                0 => "-".to_owned(),
                shared => format!("{} stored once with other runtimes", human_size(shared)),
            },
        ),
        ("entries", runtime.entries.to_string()),
        ("manifest", text(&runtime.manifest_digest)),
        ("signer", signer),
        (
            "installed",
            system_time(runtime.installed_at.as_ref())
                .map_or_else(|| "-".to_owned(), rfc3339_seconds),
        ),
        (
            "used by",
            match runtime.used_by_jobs {
                0 => "no job".to_owned(),
                1 => "1 job".to_owned(),
                jobs => format!("{jobs} jobs"),
            },
        ),
    ];
    let width = lines.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in lines {
        out.push_str(&format!("{:<width$} {value}\n", format!("{key}:")));
    }
    let env: Vec<String> = runtime
        .env
        .iter()
        .map(|var| format!("{}={}", var.name, var.value))
        .collect();
    section(&mut out, "env", env.iter().map(String::as_str));
    section(
        &mut out,
        "packages",
        runtime.packages.iter().map(String::as_str),
    );
    section(&mut out, "spec", runtime.spec_yaml.lines());
    out
}

/// `name:` and then each line indented by two blanks, or `name: -` when there is none.
fn section<'a>(out: &mut String, name: &str, lines: impl Iterator<Item = &'a str>) {
    let mut lines = lines.peekable();
    if lines.peek().is_none() {
        out.push_str(&format!("{name}: -\n"));
        return;
    }
    out.push_str(&format!("{name}:\n"));
    for line in lines {
        out.push_str(&format!("  {}\n", single_line(line)));
    }
}

#[cfg(test)]
mod tests {
    use silo_proto::v1::EnvVar;

    use super::*;

    #[test]
    fn info_shows_every_field_then_env_packages_and_spec() {
        let runtime = Runtime {
            name: "python-3.11".into(),
            version: "1.0.0".into(),
            description: "CPython 3.11 with numpy".into(),
            size_bytes: 149_212_365,
            shared_bytes: 0,
            entries: 5123,
            manifest_digest: "sha256:9f86d081".into(),
            signer: "3f2a1b2c".into(),
            signed_here: true,
            installed_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            used_by_jobs: 1,
            spec_yaml: "name: python-3.11\nversion: 1.0.0\npip:\n  - numpy==1.26.4\n".into(),
            packages: vec!["dpkg:python3=3.11.2-1".into(), "pip:numpy=1.26.4".into()],
            env: vec![
                EnvVar {
                    name: "PATH".into(),
                    value: "/usr/local/bin:/usr/bin:/bin".into(),
                },
                EnvVar {
                    name: "LANG".into(),
                    value: "C.UTF-8".into(),
                },
            ],
        };
        let expected = "\
runtime:     python-3.11@1.0.0
description: CPython 3.11 with numpy
size:        142.3 MiB (149212365 bytes)
shared:      -
entries:     5123
manifest:    sha256:9f86d081
signer:      3f2a1b2c (this server)
installed:   2023-11-14T22:13:20Z
used by:     1 job
env:
  PATH=/usr/local/bin:/usr/bin:/bin
  LANG=C.UTF-8
packages:
  dpkg:python3=3.11.2-1
  pip:numpy=1.26.4
spec:
  name: python-3.11
  version: 1.0.0
  pip:
    - numpy==1.26.4
";
        assert_eq!(render_runtime(&runtime), expected);
    }

    #[test]
    fn a_runtime_signed_elsewhere_with_nothing_set_reads_as_dashes() {
        let runtime = Runtime {
            name: "node-20".into(),
            version: "2.0.0".into(),
            signer: "ab12".into(),
            shared_bytes: 2 << 20,
            ..Runtime::default()
        };
        let text = render_runtime(&runtime);
        for line in [
            "signer:      ab12\n",
            "shared:      2.0 MiB stored once with other runtimes\n",
            "installed:   -\n",
            "used by:     no job\n",
            "env: -\npackages: -\nspec: -\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
    }
}
