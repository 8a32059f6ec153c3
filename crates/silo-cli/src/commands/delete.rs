//! `silo job delete ID`: removes a finished job, its log and its files.

use serde_json::json;
use silo_proto::v1::DeleteJobRequest;

use crate::cli::{DeleteArgs, GlobalOptions};
use crate::output::{print, print_json};
use crate::session::Session;

/// Deletes the job and prints `deleted job <id>` (or `{"id": "<id>"}` with `--json`),
/// naming the full id the prefix resolved to.
pub async fn delete(global: &GlobalOptions, args: DeleteArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    let request = DeleteJobRequest { id: args.id };
    let deleted = match session.client.delete_job(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(session.error(&status).into()),
    };
    if args.json {
        print_json(&json!({ "id": deleted.id }))
    } else {
        print(&format!("deleted job {}\n", deleted.id))
    }
}
