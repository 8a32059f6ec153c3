//! `silo job list`: jobs as a borderless table (like `docker ps`), newest first.

use std::time::SystemTime;

use comfy_table::{ContentArrangement, Table, presets::NOTHING};
use silo_proto::v1::{Job, JobState, ListJobsRequest, ListJobsResponse};

use crate::cli::{GlobalOptions, ListArgs};
use crate::format::{
    command_line, exit_text, format_age, format_elapsed, job_duration, job_state, short_id,
    single_line, state_name, system_time, truncate,
};
use crate::output::{print, print_json};
use crate::session::Session;
use crate::view::JobView;

/// How many characters of the command line the table shows.
const COMMAND_WIDTH: usize = 40;

/// How many jobs are listed without `--limit` or `--all`.
const DEFAULT_LIMIT: u32 = 100;

/// The most jobs asked for in one request: the server's largest page.
const MAX_PAGE_SIZE: u32 = 1000;

/// Lists jobs in the server's order (newest first), as a table or a JSON array.
///
/// The jobs come a page at a time; the table asks for summaries (all it shows), `--json`
/// for whole jobs.
pub async fn list(global: &GlobalOptions, args: ListArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    // The server filters by the full id; a prefix is resolved first. A full id stands
    // as it is: the jobs of a deleted schedule keep its id.
    let schedule_id = match &args.schedule {
        Some(id) if id.len() == 32 => id.to_ascii_lowercase(),
        Some(prefix) => {
            let request = silo_proto::v1::GetScheduleRequest { id: prefix.clone() };
            match session.schedules.get_schedule(request).await {
                Ok(response) => response.into_inner().id,
                Err(status) => return Err(session.schedule_error(&status).into()),
            }
        }
        None => String::new(),
    };
    let states: Vec<i32> = args
        .state
        .iter()
        .map(|state| JobState::from(*state) as i32)
        .collect();
    let view = if args.json {
        silo_proto::v1::JobView::Full
    } else {
        silo_proto::v1::JobView::Summary
    };
    let wanted = (!args.all).then(|| args.limit.unwrap_or(DEFAULT_LIMIT) as usize);
    let fetched = fetch_pages(wanted, |page_token, page_size| {
        let mut client = session.client.clone();
        let request = ListJobsRequest {
            states: states.clone(),
            // What a server older than pagination reads; it then sends one page alone.
            limit: page_size,
            page_size,
            page_token,
            view: view as i32,
            schedule_id: schedule_id.clone(),
        };
        async move { client.list_jobs(request).await.map(|r| r.into_inner()) }
    })
    .await;
    let jobs = match fetched {
        Ok(jobs) => jobs,
        Err(status) => return Err(session.error(&status).into()),
    };
    if args.json {
        let views: Vec<JobView> = jobs.iter().map(JobView::from).collect();
        return print_json(&views);
    }
    print(&render_table(&jobs, SystemTime::now()))
}

/// Jobs from successive pages, `fetch(page_token, page_size)` giving each, until `wanted`
/// jobs (every job when `None`) or the last page. Never asks for more than it still needs.
async fn fetch_pages<F, Fut, E>(wanted: Option<usize>, mut fetch: F) -> Result<Vec<Job>, E>
where
    F: FnMut(String, u32) -> Fut,
    Fut: Future<Output = Result<ListJobsResponse, E>>,
{
    let mut jobs = Vec::new();
    let mut token = String::new();
    loop {
        let left = wanted.map_or(usize::MAX, |wanted| wanted - jobs.len());
        let page_size = left.min(MAX_PAGE_SIZE as usize) as u32;
        let page = fetch(token.clone(), page_size).await?;
        jobs.extend(page.jobs);
        let done = wanted.is_some_and(|wanted| jobs.len() >= wanted);
        // A server that answers a token with itself would be asked forever.
        if done || page.next_page_token.is_empty() || page.next_page_token == token {
            break;
        }
        token = page.next_page_token;
    }
    if let Some(wanted) = wanted {
        jobs.truncate(wanted);
    }
    Ok(jobs)
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
    crate::format::table_text(table)
}

fn or_dash(text: String) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text
    }
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
        let scheduled = job("0000ffff", "", JobState::Scheduled, &["true"]);
        let table = render_table(&[running, completed, killed, scheduled], now);
        let expected = "\
ID         NAME    STATE       EXIT      STARTED   DURATION   COMMAND
3f2a1b2c   -       running     -         2m ago    2m5s       sleep 1000
9c0d4e5f   build   completed   0         3s ago    1.2s       make -j4
77aa88bb   long    stopped     SIGKILL   2h ago    1h0m       sh -c 'while true; do echo tick; sleep…
0000ffff   -       scheduled   -         -         -          true
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

    /// A server of `total` jobs (ids "0", "1", … newest first) that ends each page after
    /// at most `short` jobs, as a server may; records each request's (token, size).
    fn paged_server(
        total: usize,
        short: usize,
        requests: &std::cell::RefCell<Vec<(String, u32)>>,
    ) -> impl FnMut(String, u32) -> std::future::Ready<Result<ListJobsResponse, String>> {
        move |token, size| {
            requests.borrow_mut().push((token.clone(), size));
            let start: usize = if token.is_empty() {
                0
            } else {
                token.parse().unwrap()
            };
            let end = total.min(start + short.min(size as usize));
            std::future::ready(Ok(ListJobsResponse {
                jobs: (start..end)
                    .map(|n| job(&n.to_string(), "", JobState::Completed, &["true"]))
                    .collect(),
                next_page_token: if end < total {
                    end.to_string()
                } else {
                    String::new()
                },
            }))
        }
    }

    fn ids(jobs: &[Job]) -> Vec<usize> {
        jobs.iter().map(|j| j.id.parse().unwrap()).collect()
    }

    #[tokio::test]
    async fn pages_are_followed_until_the_limit_asking_only_for_what_is_left() {
        let requests = Default::default();
        let jobs = fetch_pages(Some(100), paged_server(250, 40, &requests))
            .await
            .unwrap();
        assert_eq!(ids(&jobs), (0..100).collect::<Vec<_>>());
        assert_eq!(
            requests.take(),
            [
                (String::new(), 100),
                ("40".to_owned(), 60),
                ("80".to_owned(), 20)
            ]
        );
    }

    #[tokio::test]
    async fn every_job_is_fetched_once_in_order_until_the_last_page() {
        let requests = Default::default();
        let jobs = fetch_pages(None, paged_server(2500, 1000, &requests))
            .await
            .unwrap();
        assert_eq!(ids(&jobs), (0..2500).collect::<Vec<_>>());
        let sizes: Vec<u32> = requests.take().into_iter().map(|(_, size)| size).collect();
        assert_eq!(sizes, [1000, 1000, 1000]);
        // Fewer jobs than the limit: the last page ends the walk.
        let jobs = fetch_pages(Some(100), paged_server(3, 1, &requests))
            .await
            .unwrap();
        assert_eq!(ids(&jobs), [0, 1, 2]);
    }

    #[tokio::test]
    async fn a_server_repeating_its_token_is_not_asked_forever() {
        let mut calls = 0;
        let jobs = fetch_pages(None, |_, _| {
            calls += 1;
            std::future::ready(Ok::<_, String>(ListJobsResponse {
                jobs: vec![job("0", "", JobState::Completed, &["true"])],
                next_page_token: "again".into(),
            }))
        })
        .await
        .unwrap();
        assert_eq!((jobs.len(), calls), (2, 2));
    }

    #[tokio::test]
    async fn a_failed_page_fails_the_list() {
        let result = fetch_pages(None, |token: String, _| {
            std::future::ready(if token.is_empty() {
                Ok(ListJobsResponse {
                    jobs: Vec::new(),
                    next_page_token: "1".into(),
                })
            } else {
                Err("gone".to_owned())
            })
        })
        .await;
        assert_eq!(result, Err("gone".to_owned()));
    }

    #[test]
    fn names_with_newlines_stay_on_one_line() {
        let table = render_table(
            &[job("abc", "a\nb", JobState::Scheduled, &["x"])],
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(table.lines().count(), 2, "{table}");
        assert!(table.contains(r"a\nb"), "{table}");
    }
}
