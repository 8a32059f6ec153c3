//! When a schedule fires: its cron expression read in its time zone, the next firings
//! across daylight-saving changes, what a restart does with firings it missed, and whether
//! a firing may overlap the previous one. Pure: no clock, no store; every instant is
//! passed in.
//!
//! Daylight saving is croner's (with jiff's zones): a wall time a zone skips (02:30 on
//! the day clocks spring forward) fires at the first instant after the gap (03:00), once;
//! a wall time a zone repeats (02:30 on the day clocks fall back) fires once, at its first
//! occurrence. Interval fields (`*/15` minutes) keep firing through both.

use std::str::FromStr;

use croner::Cron;
use croner::parser::{CronParser, Seconds};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// A malformed schedule, in one sentence that names the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// The names of the fields of a six-field expression (seconds first), with their ranges.
const FIELDS: [(&str, u32, u32); 6] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
];

/// The most firings a restart counts as missed (beyond it, "at least" this many).
pub const MAX_COUNTED_MISSES: u64 = 100_000;

/// A cron expression in a time zone: the instants a schedule fires at.
#[derive(Debug, Clone)]
pub struct CronPlan {
    cron: Cron,
    zone: TimeZone,
    zone_name: String,
}

/// The IANA zone `name` ("UTC" when empty).
pub fn zone(name: &str) -> Result<(TimeZone, String), PlanError> {
    if name.is_empty() || name == "UTC" {
        return Ok((TimeZone::UTC, "UTC".into()));
    }
    TimeZone::get(name)
        .map(|z| (z, name.to_owned()))
        .map_err(|_| PlanError(format!("unknown time zone '{name}'")))
}

impl CronPlan {
    /// Reads `expression` (five fields, or six with leading seconds, or an alias such as
    /// `@hourly`) in the zone `zone_name` (UTC when empty). A malformed field is named by
    /// its position and name: "cron field 2 (hour) '25': must be 0-23".
    pub fn parse(expression: &str, zone_name: &str) -> Result<CronPlan, PlanError> {
        let (zone, zone_name) = zone(zone_name)?;
        let expression = expression.trim();
        if expression.is_empty() {
            return Err(PlanError("the cron expression is empty".into()));
        }
        let parser = CronParser::builder().seconds(Seconds::Optional).build();
        if !expression.starts_with('@') {
            let fields: Vec<&str> = expression.split_whitespace().collect();
            let names: &[(&str, u32, u32)] = match fields.len() {
                5 => &FIELDS[1..],
                6 => &FIELDS[..],
                n => {
                    return Err(PlanError(format!(
                        "cron expression '{expression}' has {n} fields: it needs 5 (minute \
                         hour day-of-month month day-of-week) or 6 (with a leading second)"
                    )));
                }
            };
            for (i, (field, (name, low, high))) in fields.iter().zip(names).enumerate() {
                let at = |why: String| {
                    PlanError(format!("cron field {} ({name}) '{field}': {why}", i + 1))
                };
                check_numbers(field, *low, *high).map_err(at)?;
                // The field alone, every other field `*`: croner's own word on it.
                let mut alone: Vec<&str> = vec!["*"; 6];
                alone[6 - names.len() + i] = field;
                if let Err(e) = CronParser::builder()
                    .seconds(Seconds::Required)
                    .build()
                    .parse(&alone.join(" "))
                {
                    return Err(at(croner_reason(&e)));
                }
            }
        }
        let cron = parser.parse(expression).map_err(|e| {
            PlanError(format!(
                "cron expression '{expression}': {}",
                croner_reason(&e)
            ))
        })?;
        let plan = CronPlan {
            cron,
            zone,
            zone_name,
        };
        Ok(plan)
    }

    /// The zone's IANA name ("UTC" for none).
    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }

    /// The first firing strictly after `after`; `None` when there is none (an expression
    /// that matches no date, such as February 30).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_next_occurrence(&after.to_zoned(self.zone.clone()), false)
            .ok()
            .map(|z| z.timestamp())
    }

    /// The last firing at or before `at`.
    pub fn last_at_or_before(&self, at: Timestamp) -> Option<Timestamp> {
        self.cron
            .find_previous_occurrence(&at.to_zoned(self.zone.clone()), true)
            .ok()
            .map(|z| z.timestamp())
    }

    /// Up to `n` firings strictly after `after`, in order.
    pub fn upcoming(&self, after: Timestamp, n: usize) -> Vec<Timestamp> {
        let mut out = Vec::with_capacity(n);
        let mut at = after;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// Firings in `[from, to]`, counted up to [`MAX_COUNTED_MISSES`].
    pub fn count_between(&self, from: Timestamp, to: Timestamp) -> u64 {
        let mut count = 0;
        let mut at = match self
            .cron
            .find_next_occurrence(&from.to_zoned(self.zone.clone()), true)
        {
            Ok(z) => z.timestamp(),
            Err(_) => return 0,
        };
        while at <= to && count < MAX_COUNTED_MISSES {
            count += 1;
            match self.next_after(at) {
                Some(next) => at = next,
                None => break,
            }
        }
        count
    }
}

/// Checks the plain numbers of a cron field (in values, ranges, `#` and `W` forms, and
/// steps) against the field's range. Names (JAN, MON), `*`, `?` and `L` are croner's.
fn check_numbers(field: &str, low: u32, high: u32) -> Result<(), String> {
    for part in field.split(',') {
        if part.is_empty() {
            return Err("an empty list entry".into());
        }
        let (base, step) = match part.split_once('/') {
            Some((base, step)) => (base, Some(step)),
            None => (part, None),
        };
        if let Some(step) = step {
            match step.parse::<u32>() {
                Ok(0) => return Err("a step must be at least 1".into()),
                Ok(_) => {}
                Err(_) => return Err(format!("step '{step}' is not a number")),
            }
        }
        let base = base.split('#').next().unwrap_or(base);
        let base = base.trim_end_matches(['W', 'w', 'L', 'l']);
        for value in base.split('-') {
            if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                let n: u64 = value.parse().unwrap_or(u64::MAX);
                if n < u64::from(low) || n > u64::from(high) {
                    return Err(format!("must be {low}-{high}"));
                }
            }
        }
    }
    Ok(())
}

/// croner's reason, without its "Component error:" prefixes.
fn croner_reason(e: &croner::errors::CronError) -> String {
    use croner::errors::CronError;
    let text = match e {
        CronError::ComponentError(m)
        | CronError::InvalidPattern(m)
        | CronError::IllegalCharacters(m) => m.clone(),
        other => other.to_string(),
    };
    let text = text.trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "not a valid cron expression".into(),
    }
}

impl FromStr for CronPlan {
    type Err = PlanError;

    /// An expression in UTC.
    fn from_str(expression: &str) -> Result<CronPlan, PlanError> {
        CronPlan::parse(expression, "")
    }
}

/// What a schedule does with firings that fell while the server was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// Drop them.
    Skip,
    /// Run one job for the latest of them.
    Once,
}

/// Whether a firing may start while the previous firing's job still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Skip the firing.
    Skip,
    /// Start another job.
    Allow,
}

/// What a schedule does on start-up when its next firing is due or past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchUp {
    /// The instant to fire for now (in the past), if any: the latest missed firing.
    pub fire: Option<Timestamp>,
    /// The next regular firing after `now`.
    pub next: Option<Timestamp>,
    /// Missed firings that will not run.
    pub dropped: u64,
}

/// What a schedule whose next firing was `due` does at `now`, under `missed`. A firing
/// not yet due is left alone (`fire` none, `next` = `due`); a missed one is never run more
/// than once, however many fell.
pub fn catch_up(plan: &CronPlan, due: Timestamp, now: Timestamp, missed: Missed) -> CatchUp {
    if due > now {
        return CatchUp {
            fire: None,
            next: Some(due),
            dropped: 0,
        };
    }
    let count = plan.count_between(due, now);
    let latest = plan.last_at_or_before(now).filter(|l| *l >= due);
    let next = plan.next_after(now);
    match (missed, latest) {
        (Missed::Once, Some(latest)) => CatchUp {
            fire: Some(latest),
            next,
            dropped: count.saturating_sub(1),
        },
        _ => CatchUp {
            fire: None,
            next,
            dropped: count,
        },
    }
}

/// Whether a firing starts a job, given the policy and whether the previous firing's job
/// is still running.
pub fn may_fire(overlap: Overlap, previous_running: bool) -> bool {
    overlap == Overlap::Allow || !previous_running
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a test instant")
    }

    fn firings(plan: &CronPlan, from: &str, to: &str) -> Vec<String> {
        let (mut t, end) = (at(from), at(to));
        let mut out = Vec::new();
        while let Some(next) = plan.next_after(t) {
            if next > end {
                break;
            }
            out.push(next.to_string());
            t = next;
        }
        out
    }

    #[test]
    fn a_daily_time_in_the_spring_forward_gap_fires_once_at_the_end_of_the_gap() {
        // Europe/Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist.
        let plan = CronPlan::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let fired = firings(&plan, "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z");
        assert_eq!(
            fired,
            [
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:00:00Z", // 03:00 CEST, the first instant after the gap
                "2026-03-30T00:30:00Z", // 02:30 CEST
            ]
        );
    }

    #[test]
    fn a_daily_time_in_the_repeated_fall_back_hour_fires_once() {
        // Europe/Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
        let plan = CronPlan::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let fired = firings(&plan, "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z");
        assert_eq!(
            fired,
            [
                "2026-10-24T00:30:00Z", // 02:30 CEST
                "2026-10-25T00:30:00Z", // the first 02:30 (CEST), not the second (CET)
                "2026-10-26T01:30:00Z", // 02:30 CET
            ]
        );
    }

    #[test]
    fn new_york_changes_on_its_own_days() {
        // America/New_York springs forward on 2026-03-08 and falls back on 2026-11-01.
        let plan = CronPlan::parse("30 2 * * *", "America/New_York").unwrap();
        let spring = firings(&plan, "2026-03-08T00:00:00Z", "2026-03-09T00:00:00Z");
        assert_eq!(spring, ["2026-03-08T07:00:00Z"]); // 03:00 EDT
        // There the repeated hour is 01:00-02:00: 01:30 fires once, at 01:30 EDT.
        let plan = CronPlan::parse("30 1 * * *", "America/New_York").unwrap();
        let fall = firings(&plan, "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z");
        assert_eq!(fall, ["2026-11-01T05:30:00Z"]);
    }

    #[test]
    fn an_interval_keeps_its_pace_through_both_changes() {
        let plan = CronPlan::parse("0 * * * *", "Europe/Berlin").unwrap();
        // The spring day has 23 hours, the fall day 25: one firing per real hour.
        let spring = firings(&plan, "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z");
        assert_eq!(spring.len(), 23);
        let fall = firings(&plan, "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z");
        assert_eq!(fall.len(), 25);
    }

    #[test]
    fn a_zone_without_a_name_is_utc_and_an_unknown_one_is_named() {
        assert_eq!(CronPlan::parse("* * * * *", "").unwrap().zone_name(), "UTC");
        let e = CronPlan::parse("* * * * *", "Europe/Berln").unwrap_err();
        assert_eq!(e.0, "unknown time zone 'Europe/Berln'");
    }

    #[test]
    fn a_malformed_field_is_named_by_its_position_and_name() {
        let e = CronPlan::parse("0 25 * * *", "").unwrap_err();
        assert_eq!(e.0, "cron field 2 (hour) '25': must be 0-23");
        let e = CronPlan::parse("0 0 0 * *", "").unwrap_err();
        assert_eq!(e.0, "cron field 3 (day of month) '0': must be 1-31");
        let e = CronPlan::parse("61 0 0 * * *", "").unwrap_err();
        assert_eq!(e.0, "cron field 1 (second) '61': must be 0-59");
        let e = CronPlan::parse("*/0 * * * *", "").unwrap_err();
        assert_eq!(
            e.0,
            "cron field 1 (minute) '*/0': a step must be at least 1"
        );
        let e = CronPlan::parse("* * * 13 *", "").unwrap_err();
        assert_eq!(e.0, "cron field 4 (month) '13': must be 1-12");
        let e = CronPlan::parse("* * * * FOO", "").unwrap_err();
        assert!(e.0.starts_with("cron field 5 (day of week) 'FOO': "), "{e}");
        let e = CronPlan::parse("* * *", "").unwrap_err();
        assert!(e.0.contains("has 3 fields"), "{e}");
        assert!(CronPlan::parse("", "").is_err());
    }

    #[test]
    fn seconds_aliases_names_and_steps_parse() {
        for ok in [
            "* * * * * *",
            "*/5 * * * *",
            "0 9 * * MON-FRI",
            "@hourly",
            "0 0 1 JAN *",
            "0 0 L * *",
        ] {
            CronPlan::parse(ok, "Europe/Berlin").unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let plan = CronPlan::parse("* * * * * *", "").unwrap();
        assert_eq!(
            plan.next_after(at("2026-12-05T09:00:00.4Z")),
            Some(at("2026-12-05T09:00:01Z"))
        );
    }

    #[test]
    fn missed_once_runs_the_latest_missed_firing_and_no_burst() {
        let plan = CronPlan::parse("*/5 * * * *", "").unwrap();
        // Down from 10:03 to 10:31: 10:05 .. 10:30 (6 firings) were missed.
        let c = catch_up(
            &plan,
            at("2026-12-05T10:05:00Z"),
            at("2026-12-05T10:31:00Z"),
            Missed::Once,
        );
        assert_eq!(c.fire, Some(at("2026-12-05T10:30:00Z")));
        assert_eq!(c.next, Some(at("2026-12-05T10:35:00Z")));
        assert_eq!(c.dropped, 5);
        let c = catch_up(
            &plan,
            at("2026-12-05T10:05:00Z"),
            at("2026-12-05T10:31:00Z"),
            Missed::Skip,
        );
        assert_eq!(c.fire, None);
        assert_eq!(c.next, Some(at("2026-12-05T10:35:00Z")));
        assert_eq!(c.dropped, 6);
    }

    #[test]
    fn a_firing_not_yet_due_is_left_alone() {
        let plan = CronPlan::parse("*/5 * * * *", "").unwrap();
        let due = at("2026-12-05T10:05:00Z");
        let c = catch_up(&plan, due, at("2026-12-05T10:04:00Z"), Missed::Once);
        assert_eq!(
            c,
            CatchUp {
                fire: None,
                next: Some(due),
                dropped: 0
            }
        );
    }

    #[test]
    fn overlap_skip_waits_for_the_previous_job_and_allow_does_not() {
        assert!(may_fire(Overlap::Skip, false));
        assert!(!may_fire(Overlap::Skip, true));
        assert!(may_fire(Overlap::Allow, true));
        assert!(may_fire(Overlap::Allow, false));
    }

    proptest! {
        #[test]
        fn next_firings_are_strictly_later_and_match_a_fresh_search(
            minute in 0u32..60, hour in 0u32..24, start in 1_700_000_000i64..1_900_000_000,
            zone in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
        ) {
            let plan = CronPlan::parse(&format!("{minute} {hour} * * *"), zone).unwrap();
            let start = Timestamp::from_second(start).unwrap();
            let next = plan.upcoming(start, 4);
            prop_assert_eq!(next.len(), 4);
            let mut previous = start;
            for t in next {
                prop_assert!(t > previous);
                // Never twice the same day's firing: a daily expression fires at least
                // 22 hours apart (a day, less a DST shift and a gap's end).
                if previous != start {
                    prop_assert!(t.as_second() - previous.as_second() >= 22 * 3600);
                }
                previous = t;
            }
        }

        #[test]
        fn catch_up_never_fires_more_than_once_and_next_is_in_the_future(
            down_from in 0i64..100_000, down_for in 0i64..1_000_000,
            missed in prop::sample::select(vec![Missed::Once, Missed::Skip]),
        ) {
            let plan = CronPlan::parse("*/7 * * * *", "Europe/Berlin").unwrap();
            let base = 1_790_000_000 + down_from;
            let due = plan.next_after(Timestamp::from_second(base).unwrap()).unwrap();
            let now = Timestamp::from_second(base + down_for).unwrap();
            let c = catch_up(&plan, due, now, missed);
            if due <= now {
                prop_assert!(c.next.unwrap() > now);
                if let Some(fire) = c.fire {
                    prop_assert!(fire >= due && fire <= now);
                    prop_assert_eq!(missed, Missed::Once);
                }
            }
        }
    }
}
