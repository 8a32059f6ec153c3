//! `silo runtime build FILE.yml`: the server builds the runtime from the spec and installs
//! it; its progress is shown live.

use std::path::Path;

use silo_proto::v1::BuildRuntimeRequest;

use super::progress::{self, Operation};
use crate::cli::{BuildArgs, GlobalOptions};
use crate::connect::describe_io;
use crate::output::print;
use crate::session::Session;

/// Sends the spec, shows the build's progress, and prints the built runtime in one line.
pub async fn build(global: &GlobalOptions, args: BuildArgs) -> anyhow::Result<i32> {
    let spec_yaml = read_spec(&args.spec)?;
    let mut session = Session::open(global).await?;
    let request = BuildRuntimeRequest {
        spec_yaml,
        replace: args.replace,
    };
    let stream = match session.runtimes.build_runtime(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(session.runtime_error(&status).into()),
    };
    let mut view = progress::for_stderr();
    let runtime = progress::follow(stream, Operation::Build, &mut *view, |status| {
        session.runtime_error(status)
    })
    .await?;
    print(&progress::summary(Operation::Build, &runtime))
}

/// The spec file's text. The server checks its content; here only that it can be read and
/// is text.
fn read_spec(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path)
        .map_err(|err| anyhow::anyhow!("cannot read {}: {}", path.display(), describe_io(&err)))?;
    String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!(
            "cannot use {} as a runtime spec: it is not UTF-8 text (a spec is YAML)",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_must_be_readable_text() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("python.yml");
        std::fs::write(&spec, "name: python-3.11\nversion: 1.0.0\n").unwrap();
        assert_eq!(
            read_spec(&spec).unwrap(),
            "name: python-3.11\nversion: 1.0.0\n"
        );
        let binary = dir.path().join("binary.yml");
        std::fs::write(&binary, b"name: \xff\n").unwrap();
        let err = read_spec(&binary).unwrap_err().to_string();
        assert!(
            err.ends_with("binary.yml as a runtime spec: it is not UTF-8 text (a spec is YAML)"),
            "{err}"
        );
        let err = read_spec(&dir.path().join("missing.yml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with("missing.yml: no such file or directory"),
            "{err}"
        );
    }
}
