//! Small text forms of job and runtime facts shared by the tables, the detail views and
//! messages: states, exit statuses, ages, durations, sizes, command lines.

use std::time::{Duration, SystemTime};

use silo_proto::v1::{EndCause, Job, JobState, StartFailure};
use silo_proto::values::{format_size, signal_name};

/// How many characters of a job id tables show.
pub const SHORT_ID_LEN: usize = 8;

/// The first [`SHORT_ID_LEN`] characters of an id.
pub fn short_id(id: &str) -> &str {
    match id.char_indices().nth(SHORT_ID_LEN) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

/// A state as users type and read it: `scheduled`, `running`, `completed`, ….
pub fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Unspecified => "unknown",
        JobState::Scheduled => "scheduled",
        JobState::Starting => "starting",
        JobState::Running => "running",
        JobState::Completed => "completed",
        JobState::Failed => "failed",
        JobState::Stopped => "stopped",
    }
}

/// Limits as `cpu=50% memory=64M pids=64`, the set ones only; `-` when none is set.
pub fn limits_text(limits: &silo_proto::v1::Limits) -> String {
    let mut parts = Vec::new();
    if let Some(cpu) = limits.cpu_percent {
        parts.push(format!("cpu={cpu}%"));
    }
    if let Some(cpus) = &limits.cpus {
        parts.push(format!("cpus={cpus}"));
    }
    if let Some(memory) = limits.memory_bytes {
        parts.push(format!("memory={}", format_size(memory)));
    }
    if let Some(io) = limits.io_bps {
        parts.push(format!("io={}/s", format_size(io)));
    }
    if let Some(pids) = limits.pids {
        parts.push(format!("pids={pids}"));
    }
    if let Some(disk) = limits.disk_bytes {
        parts.push(format!("disk={}", format_size(disk)));
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(" ")
    }
}

/// Why `job` ended, for people who read the typed cause: "exited", "timed out",
/// "start failed: command not found (exec, errno 2)"; `None` while it has not ended (or
/// when the server did not say).
pub fn end_cause_text(job: &Job) -> Option<String> {
    let cause = match job.end_cause() {
        EndCause::Unspecified => return None,
        EndCause::Exited => "exited",
        EndCause::Signaled => "killed by a signal",
        EndCause::TimedOut => "timed out",
        EndCause::OutOfMemory => "out of memory",
        EndCause::Stopped => "stopped",
        EndCause::ServerRestart => "server restart",
        EndCause::Killed => "killed",
        EndCause::DiskFull => "host disk full",
        EndCause::StartFailed => {
            let kind = match job.start_failure() {
                StartFailure::Unspecified => "unknown",
                StartFailure::CommandNotFound => "command not found",
                StartFailure::NotExecutable => "not executable",
                StartFailure::WorkingDirectory => "working directory",
                StartFailure::Setup => "setup",
                StartFailure::Internal => "internal",
            };
            let detail = match (job.failed_step.as_str(), job.errno) {
                ("", None) => String::new(),
                (step, None) => format!(" ({step})"),
                ("", Some(errno)) => format!(" (errno {errno})"),
                (step, Some(errno)) => format!(" ({step}, errno {errno})"),
            };
            return Some(format!("start failed: {kind}{detail}"));
        }
    };
    Some(cause.to_owned())
}

/// The state of `job`; a value this client does not know reads as `unknown`.
pub fn job_state(job: &Job) -> JobState {
    JobState::try_from(job.state).unwrap_or(JobState::Unspecified)
}

/// The EXIT column: the exit code, the signal's name (`SIGKILL`), or `-`.
pub fn exit_text(job: &Job) -> String {
    match (job.exit_code, job.signal) {
        (_, Some(signal)) => signal_name(signal),
        (Some(code), None) => code.to_string(),
        (None, None) => "-".to_owned(),
    }
}

/// A protobuf timestamp as a system time; `None` when unset or out of range.
pub fn system_time(timestamp: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    timestamp.and_then(|ts| SystemTime::try_from(*ts).ok())
}

/// How long the job has run: start to end, or start to `now` while it runs.
pub fn job_duration(job: &Job, now: SystemTime) -> Option<Duration> {
    let started = system_time(job.started_at.as_ref())?;
    let ended = system_time(job.ended_at.as_ref()).unwrap_or(now);
    Some(ended.duration_since(started).unwrap_or_default())
}

/// A duration as people say it, with the two largest units: `850ms`, `1.2s`, `3m4s`,
/// `2h5m`, `3d4h`.
pub fn format_elapsed(duration: Duration) -> String {
    let millis = duration.as_millis();
    let secs = duration.as_secs();
    if millis < 1000 {
        format!("{millis}ms")
    } else if secs < 60 {
        format!("{}.{}s", secs, (millis % 1000) / 100)
    } else if secs < 3600 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else if secs < 86_400 {
        format!("{}h{}m", secs / 3600, (secs % 3600) / 60)
    } else {
        format!("{}d{}h", secs / 86_400, (secs % 86_400) / 3600)
    }
}

/// How long ago `then` was, in one unit: `3s ago`, `2m ago`, `5h ago`, `4d ago`. A time
/// in the future (clock skew) reads as `just now`.
pub fn format_age(then: SystemTime, now: SystemTime) -> String {
    let Ok(age) = now.duration_since(then) else {
        return "just now".to_owned();
    };
    let secs = age.as_secs();
    if secs < 1 {
        "just now".to_owned()
    } else if secs < 60 {
        format!("{secs}s ago")
    } else if secs < 3600 {
        format!("{}m ago", secs / 60)
    } else if secs < 86_400 {
        format!("{}h ago", secs / 3600)
    } else {
        format!("{}d ago", secs / 86_400)
    }
}

/// A time as RFC 3339 in UTC with whole seconds: `2025-01-31T12:00:00Z`.
pub fn rfc3339_seconds(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// An argv as one line a shell user can read: arguments with blanks, quotes or shell
/// characters are single-quoted, control characters are escaped.
pub fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| quote(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_alphanumeric() || "-_./=:,+@%".contains(c));
    let escaped: String = arg
        .chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if plain {
        escaped
    } else {
        format!("'{}'", escaped.replace('\'', r"'\''"))
    }
}

/// A byte count rounded for reading, in binary units with one decimal: `512 bytes`,
/// `1.5 KiB`, `142.3 MiB`, `2.0 GiB`. (Limits, which are exact, use `format_size`.)
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return if bytes == 1 {
            "1 byte".to_owned()
        } else {
            format!("{bytes} bytes")
        };
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // 1023.96 KiB would round to "1024.0 KiB": move up a unit before rounding does.
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A borderless table as the lists print it: columns separated by three blanks, no blank
/// at the start or end of a line, a newline at the end.
pub fn table_text(mut table: comfy_table::Table) -> String {
    let last = table.column_count().saturating_sub(1);
    for column in table.column_iter_mut() {
        let right = if column.index == last { 0 } else { 3 };
        column.set_padding((0, right));
    }
    let mut text = table.trim_fmt();
    text.push('\n');
    text
}

/// `text` with control characters escaped (`\n`, `\u{1b}`), so it stays on one line and
/// cannot move a terminal's cursor.
pub fn single_line(text: &str) -> String {
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

/// `text` cut to at most `max` characters, ending in `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", kept.trim_end())
}

/// Resource usage in one line: `cpu=1.2s memory=12M (peak 20M) io=read 0B write 10M
/// pids=3 throttled=0.5s oom_kills=0`; counters this host cannot measure are left out.
pub fn usage_text(u: &silo_proto::v1::Usage) -> String {
    let secs = |usec: u64| format_elapsed(Duration::from_micros(usec));
    let mut parts = Vec::new();
    if let Some(cpu) = u.cpu_usec {
        parts.push(format!("cpu={}", secs(cpu)));
    }
    match (u.memory_current_bytes, u.memory_peak_bytes) {
        (Some(now), Some(peak)) => parts.push(format!(
            "memory={} (peak {})",
            format_size(now),
            format_size(peak)
        )),
        (Some(now), None) => parts.push(format!("memory={}", format_size(now))),
        (None, Some(peak)) => parts.push(format!("memory_peak={}", format_size(peak))),
        (None, None) => {}
    }
    if u.io_read_bytes.is_some() || u.io_write_bytes.is_some() {
        parts.push(format!(
            "io=read {} write {}",
            format_size(u.io_read_bytes.unwrap_or(0)),
            format_size(u.io_write_bytes.unwrap_or(0))
        ));
    }
    if let Some(pids) = u.pids_current {
        parts.push(format!("pids={pids}"));
    }
    if let Some(refused) = u.pids_refused.filter(|n| *n > 0) {
        parts.push(format!("forks_refused={refused}"));
    }
    if let Some(throttled) = u.cpu_throttled_usec.filter(|n| *n > 0) {
        parts.push(format!("throttled={}", secs(throttled)));
    }
    if let Some(oom) = u.oom_kills {
        parts.push(format!("oom_kills={oom}"));
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_times_use_the_two_largest_units() {
        let cases = [
            (Duration::from_millis(0), "0ms"),
            (Duration::from_millis(850), "850ms"),
            (Duration::from_millis(1234), "1.2s"),
            (Duration::from_secs(59), "59.0s"),
            (Duration::from_secs(184), "3m4s"),
            (Duration::from_secs(7500), "2h5m"),
            (Duration::from_secs(3 * 86_400 + 4 * 3600 + 5), "3d4h"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_elapsed(duration), text);
        }
    }

    #[test]
    fn ages_use_one_unit_and_tolerate_clock_skew() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ago = |secs| format_age(now - Duration::from_secs(secs), now);
        assert_eq!(ago(0), "just now");
        assert_eq!(ago(3), "3s ago");
        assert_eq!(ago(150), "2m ago");
        assert_eq!(ago(7200), "2h ago");
        assert_eq!(ago(86_400 * 4), "4d ago");
        assert_eq!(format_age(now + Duration::from_secs(5), now), "just now");
    }

    #[test]
    fn exit_column_shows_code_signal_name_or_dash() {
        let job = |exit_code, signal| Job {
            exit_code,
            signal,
            ..Job::default()
        };
        assert_eq!(exit_text(&job(Some(0), None)), "0");
        assert_eq!(exit_text(&job(Some(3), None)), "3");
        assert_eq!(exit_text(&job(None, Some(9))), "SIGKILL");
        assert_eq!(exit_text(&job(None, Some(15))), "SIGTERM");
        assert_eq!(exit_text(&job(None, Some(64))), "SIG64");
        assert_eq!(exit_text(&job(None, None)), "-");
    }

    #[test]
    fn command_lines_quote_what_a_shell_would_split() {
        let argv = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(command_line(&argv(&["echo", "hi"])), "echo hi");
        assert_eq!(
            command_line(&argv(&["sh", "-c", "echo 'a b'"])),
            r"sh -c 'echo '\''a b'\'''"
        );
        assert_eq!(
            command_line(&argv(&["printf", "a\nb", ""])),
            r"printf 'a\nb' ''"
        );
    }

    #[test]
    fn truncation_keeps_at_most_max_characters() {
        assert_eq!(truncate("short", 40), "short");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(truncate("ab cd", 4), "ab…");
    }

    #[test]
    fn human_sizes_use_binary_units_with_one_decimal() {
        for (bytes, text) in [
            (0, "0 bytes"),
            (1, "1 byte"),
            (1023, "1023 bytes"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            ((1 << 20) - 1, "1.0 MiB"),
            (149_212_365, "142.3 MiB"),
            (2 << 30, "2.0 GiB"),
            (u64::MAX, "16.0 EiB"),
        ] {
            assert_eq!(human_size(bytes), text, "{bytes}");
        }
    }

    #[test]
    fn single_lines_escape_control_characters() {
        assert_eq!(single_line("a\nb\tc"), r"a\nb\tc");
        assert_eq!(single_line("\u{1b}[2J"), r"\u{1b}[2J");
        assert_eq!(single_line("plain é"), "plain é");
    }

    #[test]
    fn ids_have_short_forms() {
        assert_eq!(short_id("3f2a1b2c-dead-beef"), "3f2a1b2c");
        assert_eq!(short_id("3f2a"), "3f2a");
    }

    #[test]
    fn limits_read_as_the_flags_that_set_them() {
        let limits = silo_proto::v1::Limits {
            cpu_percent: Some(50),
            cpus: Some("0,2".into()),
            memory_bytes: Some(64 << 20),
            io_bps: Some(10 << 20),
            pids: Some(64),
            disk_bytes: Some(1536 << 20),
        };
        assert_eq!(
            limits_text(&limits),
            "cpu=50% cpus=0,2 memory=64M io=10M/s pids=64 disk=1536M"
        );
        assert_eq!(limits_text(&silo_proto::v1::Limits::default()), "-");
    }
}
