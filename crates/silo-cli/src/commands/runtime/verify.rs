//! `silo runtime verify NAME[@VERSION]`: the server re-hashes every file of the runtime
//! against its signed manifest; each difference is one line, and any makes the exit
//! status 1.

use silo_proto::v1::runtime_difference::Kind;
use silo_proto::v1::{RuntimeDifference, VerifyRuntimeRequest, VerifyRuntimeResponse};

use super::title;
use crate::cli::{GlobalOptions, VerifyArgs};
use crate::format::{human_size, single_line};
use crate::output::{print, say};
use crate::parse::RuntimeRef;
use crate::session::Session;

/// The exit status when the tree differs from its manifest.
pub const EXIT_DIFFERS: i32 = 1;

/// Verifies the runtime and prints the result; returns [`EXIT_DIFFERS`] when it differs.
pub async fn verify(global: &GlobalOptions, args: VerifyArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    let request = VerifyRuntimeRequest {
        runtime: args.runtime.to_string(),
    };
    let response = match session.runtimes.verify_runtime(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(session.runtime_error(&status).into()),
    };
    let printed = print(&render_report(&response, &args.runtime))?;
    if printed != 0 {
        return Ok(printed);
    }
    if response.differences.is_empty() {
        return Ok(0);
    }
    say(differs_message(&response, &args.runtime));
    Ok(EXIT_DIFFERS)
}

/// The runtime verified: as the server names it, else as it was asked for.
fn verified_name(response: &VerifyRuntimeResponse, asked: &RuntimeRef) -> String {
    response
        .runtime
        .as_ref()
        .map_or_else(|| asked.to_string(), title)
}

/// The report on stdout: `python-3.11@1.0.0: 5123 files, 142.3 MiB verified, no
/// differences` when the tree matches, else one line per difference, in the server's
/// order: its kind (changed, missing, extra), the path and what differs.
pub fn render_report(response: &VerifyRuntimeResponse, asked: &RuntimeRef) -> String {
    if response.differences.is_empty() {
        return format!(
            "{}: {} files, {} verified, no differences\n",
            verified_name(response, asked),
            response.files,
            human_size(response.bytes)
        );
    }
    response.differences.iter().map(difference_line).collect()
}

/// `changed  usr/bin/python3.11  content differs`.
fn difference_line(difference: &RuntimeDifference) -> String {
    let kind = match difference.kind() {
        Kind::Changed => "changed",
        Kind::Missing => "missing",
        Kind::Extra => "extra",
        Kind::Unspecified => "differs",
    };
    let path = single_line(&difference.path);
    if difference.detail.is_empty() {
        format!("{kind:<7}  {path}\n")
    } else {
        format!("{kind:<7}  {path}  {}\n", single_line(&difference.detail))
    }
}

/// The message on stderr after the differences.
fn differs_message(response: &VerifyRuntimeResponse, asked: &RuntimeRef) -> String {
    let count = response.differences.len();
    format!(
        "{} differs from its signed manifest: {count} difference{} in {} files checked",
        verified_name(response, asked),
        if count == 1 { "" } else { "s" },
        response.files
    )
}

#[cfg(test)]
mod tests {
    use silo_proto::v1::Runtime;

    use super::*;
    use crate::parse::parse_runtime_ref;

    fn response(differences: Vec<RuntimeDifference>) -> VerifyRuntimeResponse {
        VerifyRuntimeResponse {
            runtime: Some(Runtime {
                name: "python-3.11".into(),
                version: "1.0.0".into(),
                ..Runtime::default()
            }),
            differences,
            files: 5123,
            bytes: 147_010_355,
        }
    }

    fn difference(kind: Kind, path: &str, detail: &str) -> RuntimeDifference {
        RuntimeDifference {
            path: path.into(),
            kind: kind as i32,
            detail: detail.into(),
        }
    }

    #[test]
    fn a_matching_tree_is_one_line_naming_the_version_verified() {
        let asked = parse_runtime_ref("python-3.11").unwrap();
        assert_eq!(
            render_report(&response(Vec::new()), &asked),
            "python-3.11@1.0.0: 5123 files, 140.2 MiB verified, no differences\n"
        );
    }

    #[test]
    fn each_difference_is_a_line_with_kind_path_and_detail() {
        let asked = parse_runtime_ref("python-3.11").unwrap();
        let differing = response(vec![
            difference(Kind::Changed, "usr/bin/python3.11", "content differs"),
            difference(Kind::Missing, "usr/lib/libpython3.11.so", ""),
            difference(Kind::Extra, "tmp/evil\nname", "not in the manifest"),
            difference(
                Kind::Changed,
                "usr/bin/pip",
                "mode 0755, manifest says 0644",
            ),
        ]);
        assert_eq!(
            render_report(&differing, &asked),
            "\
changed  usr/bin/python3.11  content differs
missing  usr/lib/libpython3.11.so
extra    tmp/evil\\nname  not in the manifest
changed  usr/bin/pip  mode 0755, manifest says 0644
"
        );
        assert_eq!(
            differs_message(&differing, &asked),
            "python-3.11@1.0.0 differs from its signed manifest: 4 differences in 5123 files checked"
        );
    }

    #[test]
    fn without_the_runtime_in_the_answer_the_name_asked_for_is_used() {
        let asked = parse_runtime_ref("node-20@2.0.0").unwrap();
        let answer = VerifyRuntimeResponse {
            runtime: None,
            ..response(vec![difference(Kind::Missing, "bin/node", "")])
        };
        assert!(differs_message(&answer, &asked).starts_with("node-20@2.0.0 differs"));
    }
}
