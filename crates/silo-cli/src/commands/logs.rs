//! `silo job logs ID`: the job's output as it was written, raw or as JSON lines.

use crate::cli::{GlobalOptions, LogsArgs};
use crate::logs::{LogCursor, RecordWriter};
use crate::output::write_failure;
use crate::session::Session;

/// Prints the job's output from `--from` on; with `--follow`, until the job has ended.
pub async fn logs(global: &GlobalOptions, args: LogsArgs) -> anyhow::Result<i32> {
    let session = Session::open(global).await?;
    let mut cursor = LogCursor::new(session, &args.id, args.from, args.follow);
    let mut writer = RecordWriter::new(args.json);
    while let Some(records) = cursor.next_records().await? {
        if let Err(err) = writer.write(&records) {
            return write_failure(&err);
        }
    }
    Ok(0)
}
