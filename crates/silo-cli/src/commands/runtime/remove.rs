//! `silo runtime remove NAME@VERSION`: removes one runtime version; the server refuses
//! while a job uses it.

use silo_proto::v1::{RemoveRuntimeRequest, RemoveRuntimeResponse};

use super::title;
use crate::cli::{GlobalOptions, RemoveArgs};
use crate::format::human_size;
use crate::output::print;
use crate::parse::RuntimeRef;
use crate::session::Session;

/// Removes the runtime and prints what was removed and the bytes freed.
pub async fn remove(global: &GlobalOptions, args: RemoveArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    let request = RemoveRuntimeRequest {
        runtime: args.runtime.to_string(),
    };
    let response = match session.runtimes.remove_runtime(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(session.runtime_error(&status).into()),
    };
    print(&render_removed(&response, &args.runtime))
}

/// `removed python-3.11@1.0.0 (142.3 MiB, 5123 entries); freed 120.1 MiB`; the bytes
/// freed are those no other runtime shares.
pub fn render_removed(response: &RemoveRuntimeResponse, asked: &RuntimeRef) -> String {
    let freed = human_size(response.freed_bytes);
    match &response.runtime {
        Some(runtime) => format!(
            "removed {} ({}, {} entries); freed {freed}\n",
            title(runtime),
            human_size(runtime.size_bytes),
            runtime.entries
        ),
        None => format!("removed {asked}; freed {freed}\n"),
    }
}

#[cfg(test)]
mod tests {
    use silo_proto::v1::Runtime;

    use super::*;
    use crate::parse::parse_exact_runtime_ref;

    #[test]
    fn removal_names_the_runtime_and_the_bytes_freed() {
        let asked = parse_exact_runtime_ref("python-3.11@1.0.0").unwrap();
        let response = RemoveRuntimeResponse {
            runtime: Some(Runtime {
                name: "python-3.11".into(),
                version: "1.0.0".into(),
                size_bytes: 149_212_365,
                entries: 5123,
                ..Runtime::default()
            }),
            freed_bytes: 125_939_712,
        };
        assert_eq!(
            render_removed(&response, &asked),
            "removed python-3.11@1.0.0 (142.3 MiB, 5123 entries); freed 120.1 MiB\n"
        );
        let bare = RemoveRuntimeResponse {
            runtime: None,
            freed_bytes: 0,
        };
        assert_eq!(
            render_removed(&bare, &asked),
            "removed python-3.11@1.0.0; freed 0 bytes\n"
        );
    }
}
