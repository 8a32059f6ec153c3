//! `silo job list`: jobs as a borderless table (like `docker ps`), newest first.

use std::time::SystemTime;

use comfy_table::{ContentArrangement, Table, presets::NOTHING};
use silo_proto::v1::{Job, JobState, ListJobsRequest};

use crate::cli::{GlobalOptions, ListArgs};
use crate::format::{
    command_line, exit_text, format_age, format_elapsed, job_duration, job_state, short_id,
    state_name, system_time, truncate,
};
use crate::output::{print, print_json};
use crate::session::Session;
use crate::view::JobView;

/// How many characters of the command line the table shows.
const COMMAND_WIDTH: usize = 40;

/// Lists jobs in the server's order (newest first), as a table or a JSON array.
pub async fn list(global: &GlobalOptions, args: ListArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    let request = ListJobsRequest {
        states: args
            .state
            .iter()
            .map(|state| JobState::from(*state) as i32)
            .collect(),
        limit: args.limit.unwrap_or(0),
    };
    let jobs = match session.client.list_jobs(request).await {
        Ok(response) => response.into_inner().jobs,
        Err(status) => return Err(session.error(&status).into()),
    };
    if args.json {
        let views: Vec<JobView> = jobs.iter().map(JobView::from).collect();
        return print_json(&views);
    }
    print(&render_table(&jobs, SystemTime::now()))
}

/// The table: ID (8 characters), NAME, STATE, EXIT, STARTED (age), DURATION (running jobs
/// count to `now`), COMMAND (cut to 40 characters). Columns are separated by at least
/// three blanks, lines carry no trailing blanks, and the text ends with a newline. An
/// empty list prints the header alone.
pub fn render_table(jobs: &[Job], now: SystemTime) -> String {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "ID", "NAME", "STATE", "EXIT", "STARTED", "DURATION", "COMMAND",
        ]);
    for job in jobs {
        let spec = job.spec.clone().unwrap_or_default();
        let started = system_time(job.started_at.as_ref());
        table.add_row([
            short_id(&job.id).to_owned(),
            or_dash(truncate(&single_line(&spec.name), 24)),
            state_name(job_state(job)).to_owned(),
            exit_text(job),
            started.map_or_else(|| "-".to_owned(), |started| format_age(started, now)),
            job_duration(job, now).map_or_else(|| "-".to_owned(), format_elapsed),
            truncate(&command_line(&spec.command), COMMAND_WIDTH),
        ]);
    }
    let last = table.column_count().saturating_sub(1);
    for column in table.column_iter_mut() {
        let right = if column.index == last { 0 } else { 3 };
        column.set_padding((0, right));
    }
    let mut text = table.trim_fmt();
    text.push('\n');
    text
}

fn or_dash(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
}

/// `text` with control characters escaped, so one job is one line.
fn single_line(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prost_types::Timestamp;
    use silo_proto::v1::JobSpec;

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn at(secs_before_now: u64, millis: u32) -> Option<Timestamp> {
        Some(Timestamp {
            seconds: (NOW - secs_before_now) as i64,
            nanos: (millis * 1_000_000) as i32,
        })
    }

    fn job(id: &str, name: &str, state: JobState, command: &[&str]) -> Job {
        Job {
            id: id.to_owned(),
            state: state as i32,
            spec: Some(JobSpec {
                name: name.to_owned(),
                command: command.iter().map(|s| s.to_string()).collect(),
                ..JobSpec::default()
            }),
            ..Job::default()
        }
    }

    #[test]
    fn the_table_shows_one_aligned_line_per_job() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
        let running = Job {
            started_at: at(125, 0),
            ..job(
                "3f2a1b2c-aaaa-bbbb",
                "",
                JobState::Running,
                &["sleep", "1000"],
            )
        };
        let completed = Job {
            exit_code: Some(0),
            started_at: at(3, 0),
            ended_at: at(2, 200),
            ..job(
                "9c0d4e5f-0000",
                "build",
                JobState::Completed,
                &["make", "-j4"],
            )
        };
        let killed = Job {
            signal: Some(9),
            started_at: at(7200, 0),
            ended_at: at(3600, 0),
            ..job(
                "77aa88bb-1111",
                "long",
                JobState::Stopped,
                &["sh", "-c", "while true; do echo tick; sleep 1; done"],
            )
        };
        let pending = job("0000ffff", "", JobState::Pending, &["true"]);
        let table = render_table(&[running, completed, killed, pending], now);
        let expected = "\
ID         NAME    STATE       EXIT      STARTED   DURATION   COMMAND
3f2a1b2c   -       running     -         2m ago    2m5s       sleep 1000
9c0d4e5f   build   completed   0         3s ago    1.2s       make -j4
77aa88bb   long    stopped     SIGKILL   2h ago    1h0m       sh -c 'while true; do echo tick; sleep…
0000ffff   -       pending     -         -         -          true
";
        assert_eq!(table, expected);
    }

    #[test]
    fn an_empty_list_prints_the_header_alone() {
        let table = render_table(&[], SystemTime::UNIX_EPOCH);
        assert_eq!(
            table,
            "ID   NAME   STATE   EXIT   STARTED   DURATION   COMMAND\n"
        );
    }

    #[test]
    fn names_with_newlines_stay_on_one_line() {
        let table = render_table(
            &[job("abc", "a\nb", JobState::Pending, &["x"])],
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(table.lines().count(), 2, "{table}");
        assert!(table.contains(r"a\nb"), "{table}");
    }
}
