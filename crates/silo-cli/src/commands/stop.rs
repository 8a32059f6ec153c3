//! `silo job stop ID`: SIGTERM, the grace period, then SIGKILL to everything the job
//! started; answers once the job has ended.

use silo_proto::v1::StopJobRequest;

use crate::cli::{GlobalOptions, StopArgs};
use crate::format::{exit_text, job_state, short_id, state_name};
use crate::output::{print, print_json};
use crate::session::Session;
use crate::view::JobView;

/// Stops the job and prints `stopped job <id> (<state>, exit <code or signal>)`, or the
/// job as JSON with `--json`.
pub async fn stop(global: &GlobalOptions, args: StopArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    let request = StopJobRequest {
        id: args.id,
        grace_ms: args.grace.unwrap_or(0),
    };
    let job = match session.client.stop_job(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(session.error(&status).into()),
    };
    if args.json {
        return print_json(&JobView::from(&job));
    }
    print(&format!(
        "stopped job {} ({}, exit {})\n",
        short_id(&job.id),
        state_name(job_state(&job)),
        exit_text(&job)
    ))
}
