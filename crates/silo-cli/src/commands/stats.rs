//! `silo job stats ID [-f]`: the job's resource usage, once or every second.

use silo_proto::v1::StreamStatsRequest;

use crate::cli::{GlobalOptions, StatsArgs};
use crate::format::usage_text;
use crate::output::print;
use crate::session::Session;
use crate::view::UsageView;

/// Prints the usage of job `ID`; with `--follow`, a line per second until it ends.
pub async fn stats(global: &GlobalOptions, args: StatsArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    let request = StreamStatsRequest {
        id: args.id.clone(),
        follow: args.follow,
    };
    let mut stream = match session.client.stream_stats(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(session.error(&status).into()),
    };
    loop {
        let usage = match stream.message().await {
            Ok(Some(usage)) => usage,
            Ok(None) => return Ok(0),
            Err(status) => return Err(session.error(&status).into()),
        };
        let code = if args.json {
            print(&format!(
                "{}\n",
                serde_json::to_string(&UsageView::from(&usage))?
            ))?
        } else {
            print(&format!("{}\n", usage_text(&usage)))?
        };
        if code != 0 {
            return Ok(code);
        }
        if !args.follow {
            return Ok(0);
        }
    }
}
