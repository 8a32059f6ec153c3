//! `silo workflow status ID`: the workflow's facts as `key: value` lines and a table of
//! its jobs; with `--watch`, shown again on every change until it has ended.

use std::io::{self, IsTerminal};
use std::time::{Duration, SystemTime};

use comfy_table::{ContentArrangement, Table, presets::NOTHING};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use silo_proto::v1::Workflow;

use super::get_workflow;
use super::json::WorkflowView;
use super::text::{
    job_duration, job_state, job_state_name, last_job_id, workflow_duration, workflow_state,
    workflow_state_name,
};
use super::watch::WorkflowWatch;
use crate::cli::{GlobalOptions, WorkflowStatusArgs};
use crate::format::{format_elapsed, rfc3339_seconds, single_line, system_time, truncate};
use crate::output::{print, print_json};
use crate::session::Session;

/// How many characters of a job's reason the table shows.
const REASON_WIDTH: usize = 60;

/// Prints the workflow `ID` (or unique prefix); with `--watch`, again on each change.
pub async fn status(global: &GlobalOptions, args: WorkflowStatusArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    if args.watch {
        return watch(session, &args.id, args.json).await;
    }
    let workflow = get_workflow(&mut session, &args.id).await?;
    if args.json {
        return print_json(&WorkflowView::from(&workflow));
    }
    print(&render_status(&workflow, SystemTime::now()))
}

/// Shows each state the server sends until the final one: redrawn in place on a
/// terminal, else printed whole each time (a blank line between), or as one JSON object
/// per line.
async fn watch(session: Session, id: &str, json: bool) -> anyhow::Result<i32> {
    let mut changes = WorkflowWatch::new(session, id).spawn();
    if json || !io::stdout().is_terminal() {
        let mut first = true;
        while let Some(change) = changes.recv().await {
            let workflow = change?;
            let text = if json {
                format!(
                    "{}\n",
                    serde_json::to_string(&WorkflowView::from(&workflow))?
                )
            } else if first {
                render_status(&workflow, SystemTime::now())
            } else {
                format!("\n{}", render_status(&workflow, SystemTime::now()))
            };
            first = false;
            let printed = print(&text)?;
            if printed != 0 {
                return Ok(printed);
            }
        }
        return Ok(0);
    }
    let screen = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout()).with_style(
        ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let mut last: Option<Workflow> = None;
    loop {
        tokio::select! {
            change = changes.recv() => match change {
                Some(Ok(workflow)) => {
                    screen.set_message(render_status(&workflow, SystemTime::now()).trim_end().to_owned());
                    last = Some(workflow);
                }
                Some(Err(err)) => {
                    screen.abandon();
                    return Err(err.into());
                }
                None => break,
            },
            _ = ticks.tick() => {
                if let Some(workflow) = &last {
                    screen.set_message(render_status(workflow, SystemTime::now()).trim_end().to_owned());
                }
            }
        }
    }
    screen.finish();
    Ok(0)
}

/// The workflow as aligned `key: value` lines (id, name, state, reason, owner, created,
/// ended, duration, done), a blank line, and a table of its jobs: JOB, STATE, ATTEMPTS,
/// EXIT, DURATION, JOB ID (of the last attempt, short), REASON. Unset values read `-`.
pub fn render_status(workflow: &Workflow, now: SystemTime) -> String {
    let text = |value: &str| {
        if value.is_empty() {
            "-".to_owned()
        } else {
            single_line(value)
        }
    };
    let time = |ts: Option<&prost_types::Timestamp>| {
        system_time(ts).map_or_else(|| "-".to_owned(), rfc3339_seconds)
    };
    let lines = [
        ("id", text(&workflow.id)),
        ("name", text(&workflow.name)),
        (
            "state",
            workflow_state_name(workflow_state(workflow)).to_owned(),
        ),
        ("reason", text(&workflow.reason)),
        ("owner", text(&workflow.owner)),
        ("created", time(workflow.created_at.as_ref())),
        ("ended", time(workflow.ended_at.as_ref())),
        (
            "duration",
            workflow_duration(workflow, now).map_or_else(|| "-".to_owned(), format_elapsed),
        ),
        ("done", format!("{}/{}", workflow.done, workflow.total)),
    ];
    let width = lines.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in lines {
        out.push_str(&format!("{:<width$} {value}\n", format!("{key}:")));
    }
    out.push('\n');
    out.push_str(&jobs_table(workflow, now));
    out
}

fn jobs_table(workflow: &Workflow, now: SystemTime) -> String {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "JOB", "STATE", "ATTEMPTS", "EXIT", "DURATION", "JOB ID", "REASON",
        ]);
    for job in &workflow.jobs {
        table.add_row([
            single_line(&job.name),
            job_state_name(job_state(job)).to_owned(),
            job.attempts.to_string(),
            job.exit_code
                .map_or_else(|| "-".to_owned(), |code| code.to_string()),
            job_duration(job, now).map_or_else(|| "-".to_owned(), format_elapsed),
            last_job_id(job).to_owned(),
            if job.reason.is_empty() {
                "-".to_owned()
            } else {
                truncate(&single_line(&job.reason), REASON_WIDTH)
            },
        ]);
    }
    crate::format::table_text(table)
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;
    use silo_proto::v1::{WorkflowJob, WorkflowJobState, WorkflowState};

    use super::*;

    #[test]
    fn status_shows_the_facts_then_one_row_per_job() {
        let at = |seconds| Some(Timestamp { seconds, nanos: 0 });
        let workflow = Workflow {
            id: "0123456789abcdef0123456789abcdef".into(),
            name: "nightly".into(),
            state: WorkflowState::Failed as i32,
            reason: "job train failed".into(),
            owner: "admin".into(),
            created_at: at(1_700_000_000),
            ended_at: at(1_700_000_184),
            done: 3,
            total: 3,
            jobs: vec![
                WorkflowJob {
                    name: "fetch".into(),
                    state: WorkflowJobState::Completed as i32,
                    attempts: 1,
                    job_ids: vec!["3f2a1b2c-0000".into()],
                    exit_code: Some(0),
                    started_at: at(1_700_000_000),
                    ended_at: at(1_700_000_004),
                    ..WorkflowJob::default()
                },
                WorkflowJob {
                    name: "train".into(),
                    state: WorkflowJobState::Failed as i32,
                    reason: "exited with code 1".into(),
                    attempts: 2,
                    job_ids: vec!["1".into(), "9c1d2e3f-0000".into()],
                    exit_code: Some(1),
                    started_at: at(1_700_000_100),
                    ended_at: at(1_700_000_184),
                    ..WorkflowJob::default()
                },
                WorkflowJob {
                    name: "report".into(),
                    state: WorkflowJobState::Skipped as i32,
                    reason: "requires train: COMPLETED, but it FAILED".into(),
                    ..WorkflowJob::default()
                },
            ],
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_500);
        let expected = "\
id:       0123456789abcdef0123456789abcdef
name:     nightly
state:    failed
reason:   job train failed
owner:    admin
created:  2023-11-14T22:13:20Z
ended:    2023-11-14T22:16:24Z
duration: 3m4s
done:     3/3

JOB      STATE       ATTEMPTS   EXIT   DURATION   JOB ID     REASON
fetch    completed   1          0      4.0s       3f2a1b2c   -
train    failed      2          1      1m24s      9c1d2e3f   exited with code 1
report   skipped     0          -      -          -          requires train: COMPLETED, but it FAILED
";
        assert_eq!(render_status(&workflow, now), expected);
    }
}
