//! `silo schedule list|status|pause|resume|delete`, and `silo job run --cron`, which
//! creates a schedule.

use comfy_table::{ContentArrangement, Table, presets::NOTHING};
use serde::Serialize;
use silo_proto::v1::{
    CreateScheduleRequest, DeleteScheduleRequest, GetScheduleRequest, ListSchedulesRequest,
    MissedPolicy, OverlapPolicy, PauseScheduleRequest, ResumeScheduleRequest, RunJobRequest,
    Schedule,
};

use crate::cli::{GlobalOptions, MissedArg, OverlapArg, RunArgs, ScheduleCommand};
use crate::format::{command_line, short_id, system_time, truncate};
use crate::output::{print, print_json, say};
use crate::session::Session;

/// How many characters of the command line the table shows.
const COMMAND_WIDTH: usize = 40;

/// A time as this machine's wall clock reads it, with its offset
/// ("2026-12-05T09:00:00+01:00"); "-" when unset.
pub fn local_time(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
        .map_or_else(
            || "-".to_owned(),
            |t| {
                t.to_zoned(jiff::tz::TimeZone::system())
                    .strftime("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string()
            },
        )
}

/// `silo job run --cron EXPR`: creates the schedule, prints its id on stdout and its next
/// firing on stderr.
pub async fn create(
    session: &mut Session,
    args: &RunArgs,
    cron: &str,
    request: RunJobRequest,
) -> anyhow::Result<i32> {
    let request = CreateScheduleRequest {
        spec: request.spec,
        cron: cron.to_owned(),
        time_zone: args.tz.clone().unwrap_or_default(),
        missed: match args.missed {
            Some(MissedArg::Skip) => MissedPolicy::Skip,
            Some(MissedArg::Once) => MissedPolicy::Once,
            None => MissedPolicy::Unspecified,
        } as i32,
        overlap: match args.overlap {
            Some(OverlapArg::Skip) => OverlapPolicy::Skip,
            Some(OverlapArg::Allow) => OverlapPolicy::Allow,
            None => OverlapPolicy::Unspecified,
        } as i32,
    };
    let schedule = match session.schedules.create_schedule(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(session.schedule_error(&status).into()),
    };
    say(format_args!(
        "schedule {} created; next firing at {}",
        short_id(&schedule.id),
        local_time(schedule.next_at.as_ref())
    ));
    print(&format!("{}\n", schedule.id))
}

/// Runs one `silo schedule …` command.
pub async fn schedule(global: &GlobalOptions, command: ScheduleCommand) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    let mut client = session.schedules.clone();
    let answer = match command {
        ScheduleCommand::List(args) => {
            let schedules = client
                .list_schedules(ListSchedulesRequest {})
                .await
                .map(|r| r.into_inner().schedules);
            return match schedules {
                Ok(list) if args.json => {
                    print_json(&list.iter().map(ScheduleView::from).collect::<Vec<_>>())
                }
                Ok(list) => print(&render_table(&list)),
                Err(status) => Err(session.schedule_error(&status).into()),
            };
        }
        ScheduleCommand::Status(args) => {
            let got = client
                .get_schedule(GetScheduleRequest { id: args.id })
                .await;
            return match got.map(|r| r.into_inner()) {
                Ok(schedule) if args.json => print_json(&ScheduleView::from(&schedule)),
                Ok(schedule) => print(&render_status(&schedule)),
                Err(status) => Err(session.schedule_error(&status).into()),
            };
        }
        ScheduleCommand::Pause(args) => client
            .pause_schedule(PauseScheduleRequest { id: args.id })
            .await
            .map(|r| format!("paused schedule {}\n", short_id(&r.into_inner().id))),
        ScheduleCommand::Resume(args) => client
            .resume_schedule(ResumeScheduleRequest { id: args.id })
            .await
            .map(|r| {
                let s = r.into_inner();
                format!(
                    "resumed schedule {}; next firing at {}\n",
                    short_id(&s.id),
                    local_time(s.next_at.as_ref())
                )
            }),
        ScheduleCommand::Delete(args) => client
            .delete_schedule(DeleteScheduleRequest { id: args.id })
            .await
            .map(|r| format!("deleted schedule {}\n", short_id(&r.into_inner().id))),
    };
    match answer {
        Ok(text) => print(&text),
        Err(status) => {
            session.schedules = client;
            Err(session.schedule_error(&status).into())
        }
    }
}

fn missed_name(value: i32) -> &'static str {
    match MissedPolicy::try_from(value) {
        Ok(MissedPolicy::Skip) => "skip",
        _ => "once",
    }
}

fn overlap_name(value: i32) -> &'static str {
    match OverlapPolicy::try_from(value) {
        Ok(OverlapPolicy::Allow) => "allow",
        _ => "skip",
    }
}

/// The table: ID, CRON, ZONE, STATE (active or paused), NEXT, FIRED, LAST JOB, COMMAND.
pub fn render_table(schedules: &[Schedule]) -> String {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "ID", "CRON", "ZONE", "STATE", "NEXT", "FIRED", "LAST JOB", "COMMAND",
        ]);
    for s in schedules {
        let spec = s.spec.clone().unwrap_or_default();
        table.add_row([
            short_id(&s.id).to_owned(),
            s.cron.clone(),
            s.time_zone.clone(),
            if s.paused { "paused" } else { "active" }.to_owned(),
            local_time(s.next_at.as_ref()),
            s.fired.to_string(),
            match s.last_job_id.as_str() {
                "" => "-".to_owned(),
                id => short_id(id).to_owned(),
            },
            truncate(&command_line(&spec.command), COMMAND_WIDTH),
        ]);
    }
    crate::format::table_text(table)
}

/// One schedule as `key: value` lines, with its next three firings.
pub fn render_status(s: &Schedule) -> String {
    let spec = s.spec.clone().unwrap_or_default();
    let dash = |v: &str| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.to_owned()
        }
    };
    let upcoming: Vec<String> = s.upcoming.iter().map(|t| local_time(Some(t))).collect();
    let lines = [
        ("id", s.id.clone()),
        ("name", dash(&spec.name)),
        ("cron", s.cron.clone()),
        ("zone", s.time_zone.clone()),
        (
            "state",
            if s.paused { "paused" } else { "active" }.to_owned(),
        ),
        ("missed", missed_name(s.missed).to_owned()),
        ("overlap", overlap_name(s.overlap).to_owned()),
        ("owner", dash(&s.owner)),
        ("created", local_time(s.created_at.as_ref())),
        (
            "next",
            if upcoming.is_empty() {
                "-".to_owned()
            } else {
                upcoming.join(", ")
            },
        ),
        ("last fired", local_time(s.last_fired_at.as_ref())),
        ("last job", dash(&s.last_job_id)),
        ("fired", s.fired.to_string()),
        ("skipped", s.skipped.to_string()),
        ("last error", dash(&s.last_error)),
        ("command", command_line(&spec.command)),
    ];
    let width = lines.iter().map(|(key, _)| key.len()).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (key, value) in lines {
        out.push_str(&format!(
            "{:<width$} {}\n",
            format!("{key}:"),
            value.replace('\n', "\\n")
        ));
    }
    out
}

/// A schedule as printed by `--json`.
#[derive(Debug, Serialize)]
pub struct ScheduleView {
    id: String,
    name: String,
    cron: String,
    time_zone: String,
    paused: bool,
    missed: &'static str,
    overlap: &'static str,
    owner: String,
    command: Vec<String>,
    created_at: Option<String>,
    next_at: Option<String>,
    /// The next firings (status only; empty in a list).
    upcoming: Vec<String>,
    last_fired_at: Option<String>,
    last_job_id: Option<String>,
    fired: u64,
    skipped: u64,
    last_error: Option<String>,
}

fn rfc3339(t: Option<&prost_types::Timestamp>) -> Option<String> {
    system_time(t).map(|t| humantime::format_rfc3339_millis(t).to_string())
}

impl From<&Schedule> for ScheduleView {
    fn from(s: &Schedule) -> Self {
        let spec = s.spec.clone().unwrap_or_default();
        ScheduleView {
            id: s.id.clone(),
            name: spec.name,
            cron: s.cron.clone(),
            time_zone: s.time_zone.clone(),
            paused: s.paused,
            missed: missed_name(s.missed),
            overlap: overlap_name(s.overlap),
            owner: s.owner.clone(),
            command: spec.command,
            created_at: rfc3339(s.created_at.as_ref()),
            next_at: rfc3339(s.next_at.as_ref()),
            upcoming: s.upcoming.iter().filter_map(|t| rfc3339(Some(t))).collect(),
            last_fired_at: rfc3339(s.last_fired_at.as_ref()),
            last_job_id: (!s.last_job_id.is_empty()).then(|| s.last_job_id.clone()),
            fired: s.fired,
            skipped: s.skipped,
            last_error: (!s.last_error.is_empty()).then(|| s.last_error.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silo_proto::v1::JobSpec;

    #[test]
    fn the_table_shows_state_policy_and_last_job() {
        let schedule = Schedule {
            id: "3f2a1b2c00".into(),
            cron: "*/5 * * * *".into(),
            time_zone: "Europe/Berlin".into(),
            paused: true,
            fired: 7,
            last_job_id: "9c0d4e5f11".into(),
            spec: Some(JobSpec {
                command: vec!["echo".into(), "hi there".into()],
                ..JobSpec::default()
            }),
            ..Schedule::default()
        };
        let table = render_table(&[schedule]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ID"), "{table}");
        for part in [
            "3f2a1b2c",
            "*/5 * * * *",
            "Europe/Berlin",
            "paused",
            "7",
            "9c0d4e5f",
            "echo 'hi there'",
        ] {
            assert!(lines[1].contains(part), "{part} missing in {table}");
        }
    }

    #[test]
    fn status_lists_the_next_firings_and_policies() {
        let schedule = Schedule {
            id: "3f2a".into(),
            cron: "0 2 * * *".into(),
            time_zone: "UTC".into(),
            missed: MissedPolicy::Skip as i32,
            upcoming: vec![
                prost_types::Timestamp {
                    seconds: 1_800_000_000,
                    nanos: 0,
                },
                prost_types::Timestamp {
                    seconds: 1_800_086_400,
                    nanos: 0,
                },
            ],
            ..Schedule::default()
        };
        let text = render_status(&schedule);
        assert!(text.contains("missed:     skip"), "{text}");
        assert!(text.contains("overlap:    skip"), "{text}");
        let next = text.lines().find(|l| l.starts_with("next:")).unwrap();
        assert_eq!(next.matches(", ").count(), 1, "{next}");
    }
}
