//! `silo top` on the server: every running job sampled once per interval, and its rates
//! (cpu percent, io bytes per second) computed from the counters' change since the
//! previous sample.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use silo_proto::v1::{TopRow, TopSnapshot};
use silo_proto::values::{DEFAULT_TOP_INTERVAL_MS, MAX_TOP_INTERVAL_MS, MIN_TOP_INTERVAL_MS};

use crate::jobs::top::RunningUsage;

/// The interval when a request gives none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(DEFAULT_TOP_INTERVAL_MS as u64);
/// The shortest interval a watcher may ask for.
pub const MIN_INTERVAL: Duration = Duration::from_millis(MIN_TOP_INTERVAL_MS as u64);
/// The longest interval a watcher may ask for.
pub const MAX_INTERVAL: Duration = Duration::from_millis(MAX_TOP_INTERVAL_MS as u64);

/// How many arguments of a command a row carries, and how many bytes of each.
const MAX_ARGS: usize = 32;
const MAX_ARG_BYTES: usize = 256;

/// The interval a WatchTop request asks for: 0 is [`DEFAULT_INTERVAL`]; anything outside
/// [`MIN_INTERVAL`]..=[`MAX_INTERVAL`] is refused with a sentence naming the field.
pub fn interval(interval_ms: u32) -> Result<Duration, String> {
    if interval_ms == 0 {
        return Ok(DEFAULT_INTERVAL);
    }
    let wanted = Duration::from_millis(u64::from(interval_ms));
    if wanted < MIN_INTERVAL || wanted > MAX_INTERVAL {
        return Err(format!(
            "interval_ms {interval_ms} is out of range: it must be between {} and {} (0 for the default, {})",
            MIN_INTERVAL.as_millis(),
            MAX_INTERVAL.as_millis(),
            DEFAULT_INTERVAL.as_millis()
        ));
    }
    Ok(wanted)
}

/// The counters a rate is computed from.
#[derive(Debug, Clone, Copy)]
struct Counters {
    cpu_usec: Option<u64>,
    io_read_bytes: Option<u64>,
    io_write_bytes: Option<u64>,
}

/// One watcher's memory of the previous sample, turning samples into snapshots.
#[derive(Debug, Default)]
pub struct TopSampler {
    previous: HashMap<String, Counters>,
    previous_at: Option<Instant>,
}

impl TopSampler {
    /// The snapshot of `jobs`, sampled at `at` (`time` on the wall clock). A job seen in
    /// the previous sample gets rates over the time since; a new one gets none.
    pub fn snapshot(
        &mut self,
        jobs: Vec<RunningUsage>,
        at: Instant,
        time: SystemTime,
    ) -> TopSnapshot {
        let elapsed = self
            .previous_at
            .map(|before| at.saturating_duration_since(before))
            .filter(|elapsed| !elapsed.is_zero());
        let mut current = HashMap::with_capacity(jobs.len());
        let rows = jobs
            .into_iter()
            .map(|job| {
                let usage = job.usage.unwrap_or_default();
                let now = Counters {
                    cpu_usec: usage.cpu_usec,
                    io_read_bytes: usage.io_read_bytes,
                    io_write_bytes: usage.io_write_bytes,
                };
                let before = self.previous.get(&job.id).copied();
                let rate = |pick: fn(&Counters) -> Option<u64>, per_second: f64| {
                    let (elapsed, before) = (elapsed?, before.as_ref()?);
                    let delta = pick(&now)?.saturating_sub(pick(before)?);
                    Some(delta as f64 * per_second / elapsed.as_secs_f64())
                };
                let row = TopRow {
                    cpu_percent: rate(|c| c.cpu_usec, 100.0 / 1e6),
                    io_read_bps: rate(|c| c.io_read_bytes, 1.0),
                    io_write_bps: rate(|c| c.io_write_bytes, 1.0),
                    id: job.id.clone(),
                    name: job.name,
                    command: job
                        .command
                        .into_iter()
                        .take(MAX_ARGS)
                        .map(|arg| cut(arg, MAX_ARG_BYTES))
                        .collect(),
                    owner: job.owner,
                    started_at: crate::service::timestamp(job.started_at),
                    cpu_usec: usage.cpu_usec,
                    memory_current_bytes: usage.memory_current_bytes,
                    memory_peak_bytes: usage.memory_peak_bytes,
                    io_read_bytes: usage.io_read_bytes,
                    io_write_bytes: usage.io_write_bytes,
                    pids: usage.pids_current,
                };
                current.insert(job.id, now);
                row
            })
            .collect();
        // Jobs that ended are forgotten with their sample.
        self.previous = current;
        self.previous_at = Some(at);
        TopSnapshot {
            time: Some(prost_types::Timestamp::from(time)),
            interval_ms: elapsed.map_or(0, |e| u64::try_from(e.as_millis()).unwrap_or(u64::MAX)),
            jobs: rows,
        }
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(mut text: String, max: usize) -> String {
    if text.len() > max {
        let end = (0..=max).rev().find(|&i| text.is_char_boundary(i));
        text.truncate(end.unwrap_or(0));
    }
    text
}

#[cfg(test)]
mod tests {
    use silo_proto::v1::Usage;

    use super::*;

    fn job(id: &str, cpu_usec: u64, io_read: u64) -> RunningUsage {
        RunningUsage {
            id: id.into(),
            name: format!("{id}-name"),
            command: vec!["sh".into(), "-c".into(), "é".repeat(200)],
            owner: "admin".into(),
            started_at: Some(1_500_000),
            usage: Some(Usage {
                cpu_usec: Some(cpu_usec),
                io_read_bytes: Some(io_read),
                memory_current_bytes: Some(4096),
                pids_current: Some(2),
                ..Usage::default()
            }),
        }
    }

    #[test]
    fn the_first_snapshot_has_no_rates_and_the_next_has_them_over_the_interval() {
        let mut sampler = TopSampler::default();
        let start = Instant::now();
        let first = sampler.snapshot(vec![job("a", 1_000_000, 0)], start, SystemTime::UNIX_EPOCH);
        assert_eq!(first.interval_ms, 0);
        assert_eq!(first.jobs[0].cpu_percent, None);
        assert_eq!(first.jobs[0].io_read_bps, None);
        assert_eq!(first.jobs[0].memory_current_bytes, Some(4096));
        assert_eq!(first.jobs[0].pids, Some(2));

        // Half a second of cpu time in half a second: one full core. 1 MiB read.
        let second = sampler.snapshot(
            vec![job("a", 1_500_000, 1 << 20), job("b", 10, 0)],
            start + Duration::from_millis(500),
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(second.interval_ms, 500);
        let a = &second.jobs[0];
        assert_eq!(a.cpu_percent, Some(100.0));
        assert_eq!(a.io_read_bps, Some(2.0 * (1 << 20) as f64));
        assert_eq!(a.io_write_bps, None, "no write counter, no rate");
        // A job new in this sample has no rate yet.
        assert_eq!(second.jobs[1].cpu_percent, None);
    }

    #[test]
    fn a_job_that_left_and_came_back_starts_over() {
        let mut sampler = TopSampler::default();
        let start = Instant::now();
        sampler.snapshot(vec![job("a", 5, 0)], start, SystemTime::UNIX_EPOCH);
        sampler.snapshot(vec![], start + DEFAULT_INTERVAL, SystemTime::UNIX_EPOCH);
        let back = sampler.snapshot(
            vec![job("a", 10, 0)],
            start + 2 * DEFAULT_INTERVAL,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(back.jobs[0].cpu_percent, None);
    }

    #[test]
    fn rows_carry_the_jobs_identity_and_a_cut_command() {
        let mut sampler = TopSampler::default();
        let snapshot = sampler.snapshot(vec![job("a", 0, 0)], Instant::now(), SystemTime::now());
        let row = &snapshot.jobs[0];
        assert_eq!((row.id.as_str(), row.name.as_str()), ("a", "a-name"));
        assert_eq!(row.owner, "admin");
        assert_eq!(row.command[2], "é".repeat(128));
        assert_eq!(row.started_at.unwrap().seconds, 1);
    }

    #[test]
    fn intervals_outside_the_bounds_are_refused_naming_the_field() {
        assert_eq!(interval(0), Ok(DEFAULT_INTERVAL));
        assert_eq!(interval(200), Ok(MIN_INTERVAL));
        assert_eq!(interval(60_000), Ok(MAX_INTERVAL));
        let err = interval(199).unwrap_err();
        assert!(err.starts_with("interval_ms 199 is out of range"), "{err}");
        assert!(err.contains("between 200 and 60000"), "{err}");
        assert!(interval(60_001).is_err());
    }
}
