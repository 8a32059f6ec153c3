//! `silo node` and `silo top`: the server's host, and its running jobs live.

use std::time::Duration;

use clap::{Args, ValueEnum};
use silo_proto::values::{MAX_TOP_INTERVAL_MS, MIN_TOP_INTERVAL_MS};

use super::GlobalOptions;

/// `silo node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Which server, and how to reach it.
    #[command(flatten)]
    pub global: GlobalOptions,

    /// Print the node as JSON
    #[arg(long)]
    pub json: bool,
}

/// `silo top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Which server, and how to reach it.
    #[command(flatten)]
    pub global: GlobalOptions,

    /// The column the jobs are sorted by: cpu and mem from the most, id in order, uptime
    /// from the longest running
    #[arg(long, value_enum, value_name = "KEY", default_value_t = TopSort::Cpu)]
    pub sort: TopSort,

    /// Print one table (after a second sample, so that cpu % is measured) and exit
    #[arg(short = 'n', long)]
    pub once: bool,

    /// Time between samples, 200ms to 60s
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = top_interval)]
    pub interval: Duration,
}

/// What `silo top` sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TopSort {
    /// cpu % over the last interval, highest first
    Cpu,
    /// Memory in use now, most first
    Mem,
    /// Job id
    Id,
    /// Time since the job started, longest first
    Uptime,
}

/// A `--interval` value: a duration (`500ms`, `2s`) within the server's bounds.
fn top_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    let (min, max) = (
        Duration::from_millis(u64::from(MIN_TOP_INTERVAL_MS)),
        Duration::from_millis(u64::from(MAX_TOP_INTERVAL_MS)),
    );
    if interval < min || interval > max {
        return Err(format!(
            "{} is out of range: the interval must be between {} and {}",
            humantime::format_duration(interval),
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_are_durations_within_the_servers_bounds() {
        assert_eq!(top_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(top_interval("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(
            top_interval("100ms"),
            Err("100ms is out of range: the interval must be between 200ms and 1m".into())
        );
        assert!(top_interval("2m").is_err());
        assert!(top_interval("fast").is_err());
    }
}
