//! `silo top`: the running jobs' usage, live, from one server stream (WatchTop) that
//! samples every job once per interval.
//!
//! On a terminal the table is redrawn in place on the alternate screen (like `top` and
//! `docker stats`) until Ctrl-C, which restores the screen as it was. Elsewhere (a pipe, a
//! file) each snapshot is one plain line per job with a time prefix. `--once` prints one
//! table, taken after a second sample so that cpu % is measured, and exits.

use std::cmp::Ordering;
use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use comfy_table::{CellAlignment, ContentArrangement, Table, presets::NOTHING};
use silo_proto::v1::{TopRow, TopSnapshot, WatchTopRequest};
use tokio::signal::unix::{SignalKind, signal};
use tonic::Streaming;

use crate::cli::{TopArgs, TopSort};
use crate::format::{
    command_line, format_elapsed, human_size, rfc3339_seconds, short_id, single_line, system_time,
    truncate,
};
use crate::output::{print, write_failure};
use crate::session::Session;

/// What a table says when no job runs.
const NO_JOBS: &str = "no jobs are running";

/// Follows the server's snapshots until Ctrl-C (or prints one, with `--once`).
pub async fn top(args: TopArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(&args.global).await?;
    let request = WatchTopRequest {
        interval_ms: u32::try_from(args.interval.as_millis()).unwrap_or(u32::MAX),
    };
    let mut stream = match session.nodes.watch_top(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(session.node_error(&status).into()),
    };
    if args.once {
        // The first snapshot has no rates: they are measured between two samples.
        let first = next(&session, &mut stream).await?;
        let second = next(&session, &mut stream).await?;
        let snapshot = second.or(first).unwrap_or_default();
        return print(&render_table(&snapshot, args.sort));
    }
    let mut interrupts = signal(SignalKind::interrupt())?;
    let mut terminations = signal(SignalKind::terminate())?;
    let mut screen = io::stdout()
        .is_terminal()
        .then(|| FullScreen::enter(args.interval));
    loop {
        let snapshot = tokio::select! {
            snapshot = next(&session, &mut stream) => snapshot?,
            _ = interrupts.recv() => return Ok(0),
            _ = terminations.recv() => return Ok(0),
        };
        let Some(snapshot) = snapshot else {
            drop(screen.take());
            anyhow::bail!(
                "the server at {} stopped sending snapshots (is it shutting down?)",
                session.address
            );
        };
        let written = match &mut screen {
            Some(screen) => screen.draw(&snapshot, args.sort),
            None => print(&plain_lines(&snapshot, args.sort))?,
        };
        if written != 0 {
            return Ok(written);
        }
    }
}

/// The next snapshot; `None` when the server ended the stream.
async fn next(
    session: &Session,
    stream: &mut Streaming<TopSnapshot>,
) -> anyhow::Result<Option<TopSnapshot>> {
    match stream.message().await {
        Ok(snapshot) => Ok(snapshot),
        Err(status) => Err(session.node_error(&status).into()),
    }
}

/// How long the job had run when the snapshot was taken.
fn uptime(row: &TopRow, snapshot: &TopSnapshot) -> Option<Duration> {
    let started = system_time(row.started_at.as_ref())?;
    let at = system_time(snapshot.time.as_ref())?;
    Some(at.duration_since(started).unwrap_or_default())
}

/// The rows in the order `sort` asks for; ties (and unmeasured values, last) by id.
fn sorted(snapshot: &TopSnapshot, sort: TopSort) -> Vec<&TopRow> {
    let mut rows: Vec<&TopRow> = snapshot.jobs.iter().collect();
    // Most first, with an unmeasured value after every measured one.
    fn most<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Ordering {
        match (a, b) {
            (Some(a), Some(b)) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        }
    }
    rows.sort_by(|a, b| {
        let first = match sort {
            TopSort::Cpu => most(a.cpu_percent, b.cpu_percent),
            TopSort::Mem => most(a.memory_current_bytes, b.memory_current_bytes),
            TopSort::Id => Ordering::Equal,
            TopSort::Uptime => most(uptime(a, snapshot), uptime(b, snapshot)),
        };
        first.then_with(|| a.id.cmp(&b.id))
    });
    rows
}

fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".to_owned())
}

fn cpu_text(row: &TopRow) -> String {
    or_dash(row.cpu_percent.map(|p| format!("{p:.1}%")))
}

/// The job's name, or its command when it has none.
fn name_text(row: &TopRow) -> String {
    let name = if row.name.is_empty() {
        command_line(&row.command)
    } else {
        single_line(&row.name)
    };
    truncate(&name, 24)
}

fn io_text(row: &TopRow) -> String {
    match (row.io_read_bytes, row.io_write_bytes) {
        (None, None) => "-".to_owned(),
        (read, write) => format!(
            "{} / {}",
            or_dash(read.map(human_size)),
            or_dash(write.map(human_size))
        ),
    }
}

/// The table: ID, NAME (or the command), CPU % (of one core, over the last interval),
/// MEM, PEAK, IO (read / write since the start), PIDS, UPTIME. Columns are separated by
/// at least three blanks and the text ends with a newline. With no job, the header and a
/// line saying so.
pub fn render_table(snapshot: &TopSnapshot, sort: TopSort) -> String {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "ID",
            "NAME",
            "CPU %",
            "MEM",
            "PEAK",
            "IO READ / WRITE",
            "PIDS",
            "UPTIME",
        ]);
    for row in sorted(snapshot, sort) {
        table.add_row([
            short_id(&row.id).to_owned(),
            name_text(row),
            cpu_text(row),
            or_dash(row.memory_current_bytes.map(human_size)),
            or_dash(row.memory_peak_bytes.map(human_size)),
            io_text(row),
            or_dash(row.pids.map(|p| p.to_string())),
            or_dash(uptime(row, snapshot).map(format_elapsed)),
        ]);
    }
    let last = table.column_count().saturating_sub(1);
    for column in table.column_iter_mut() {
        let right = if column.index == last { 0 } else { 3 };
        column.set_padding((0, right));
        if (2..=4).contains(&column.index) || column.index == 6 {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut text = table.trim_fmt();
    text.push('\n');
    if snapshot.jobs.is_empty() {
        text.push_str(NO_JOBS);
        text.push('\n');
    }
    text
}

/// One line per job, prefixed with the snapshot's time, `key=value` after the id; one
/// line saying so when no job runs.
pub fn plain_lines(snapshot: &TopSnapshot, sort: TopSort) -> String {
    let time = system_time(snapshot.time.as_ref()).map_or_else(|| "-".to_owned(), rfc3339_seconds);
    if snapshot.jobs.is_empty() {
        return format!("{time} {NO_JOBS}\n");
    }
    let rate = |bps: Option<f64>| or_dash(bps.map(|b| format!("{}/s", human_size(b as u64))));
    sorted(snapshot, sort)
        .into_iter()
        .map(|row| {
            format!(
                "{time} {} name={:?} cpu={} mem={} peak={} io_read={} ({}) io_write={} ({}) pids={} uptime={}\n",
                short_id(&row.id),
                name_text(row),
                cpu_text(row),
                or_dash(row.memory_current_bytes.map(human_size)),
                or_dash(row.memory_peak_bytes.map(human_size)),
                or_dash(row.io_read_bytes.map(human_size)),
                rate(row.io_read_bps),
                or_dash(row.io_write_bytes.map(human_size)),
                rate(row.io_write_bps),
                or_dash(row.pids.map(|p| p.to_string())),
                or_dash(uptime(row, snapshot).map(format_elapsed)),
            )
        })
        .collect()
}

/// The terminal's alternate screen, redrawn in place; left (the screen restored, the
/// cursor shown again) when dropped, on every way out.
struct FullScreen {
    interval: Duration,
}

/// Enter the alternate screen, hide the cursor.
const ENTER: &str = "\x1b[?1049h\x1b[?25l";
/// Show the cursor, leave the alternate screen.
const LEAVE: &str = "\x1b[?25h\x1b[?1049l";
/// Cursor to the top left.
const HOME: &str = "\x1b[H";
/// Clear to the end of the line, and to the end of the screen.
const CLEAR_LINE: &str = "\x1b[K";
const CLEAR_BELOW: &str = "\x1b[J";

impl FullScreen {
    fn enter(interval: Duration) -> FullScreen {
        let _ = io::stdout().lock().write_all(ENTER.as_bytes());
        FullScreen { interval }
    }

    /// Draws the snapshot over the last one; returns the exit status (0, or 141 when
    /// stdout has gone away).
    fn draw(&mut self, snapshot: &TopSnapshot, sort: TopSort) -> i32 {
        let picture = screen_text(
            snapshot,
            sort,
            self.interval,
            terminal_size().unwrap_or((usize::MAX, usize::MAX)),
        );
        let mut out = io::stdout().lock();
        match out.write_all(picture.as_bytes()).and_then(|()| out.flush()) {
            Ok(()) => 0,
            Err(err) => write_failure(&err).unwrap_or(1),
        }
    }
}

impl Drop for FullScreen {
    fn drop(&mut self) {
        let mut out = io::stdout().lock();
        let _ = out.write_all(LEAVE.as_bytes());
        let _ = out.flush();
    }
}

/// The whole screen of `(rows, columns)`: a title line, then the table cut to `rows` lines
/// in all (with a last line counting the jobs left out), each line cut to `columns`
/// characters (a wrapped line would scroll the picture) and cleared to its end.
fn screen_text(
    snapshot: &TopSnapshot,
    sort: TopSort,
    interval: Duration,
    (rows, columns): (usize, usize),
) -> String {
    let time = system_time(snapshot.time.as_ref()).map_or_else(|| "-".to_owned(), rfc3339_seconds);
    let title = format!(
        "silo top   {time}   {} running   sorted by {}   every {}   Ctrl-C to quit",
        snapshot.jobs.len(),
        sort_name(sort),
        humantime::format_duration(interval)
    );
    let table = render_table(snapshot, sort);
    let mut lines: Vec<&str> = std::iter::once(title.as_str())
        .chain(std::iter::once(""))
        .chain(table.lines())
        .collect();
    let rows = rows.max(4);
    let more = (lines.len() > rows).then(|| format!("… and {} more", lines.len() - (rows - 1)));
    if let Some(more) = &more {
        lines.truncate(rows - 1);
        lines.push(more);
    }
    // No newline after the last line: on the terminal's last row it would scroll the
    // title away.
    let lines: Vec<String> = lines
        .into_iter()
        .map(|line| line.chars().take(columns).collect())
        .collect();
    let separator = format!("{CLEAR_LINE}\n");
    format!("{HOME}{}{CLEAR_LINE}{CLEAR_BELOW}", lines.join(&separator))
}

fn sort_name(sort: TopSort) -> &'static str {
    match sort {
        TopSort::Cpu => "cpu",
        TopSort::Mem => "mem",
        TopSort::Id => "id",
        TopSort::Uptime => "uptime",
    }
}

/// The terminal's size in rows and columns, when stdout is one.
fn terminal_size() -> Option<(usize, usize)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass, which lives across the
    // call; on a descriptor that is not a terminal it fails and writes nothing.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_row > 0 && size.ws_col > 0)
        .then_some((usize::from(size.ws_row), usize::from(size.ws_col)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Option<prost_types::Timestamp> {
        Some(prost_types::Timestamp { seconds, nanos: 0 })
    }

    fn row(id: &str, cpu: Option<f64>, memory: u64, started: i64) -> TopRow {
        TopRow {
            id: id.into(),
            name: String::new(),
            command: vec!["sleep".into(), "30".into()],
            started_at: at(started),
            cpu_percent: cpu,
            memory_current_bytes: Some(memory),
            memory_peak_bytes: Some(memory * 2),
            io_read_bytes: Some(0),
            io_write_bytes: Some(4096),
            pids: Some(1),
            ..TopRow::default()
        }
    }

    fn snapshot() -> TopSnapshot {
        TopSnapshot {
            time: at(1_700_000_100),
            interval_ms: 1000,
            jobs: vec![
                row("aaaaaaaa11", Some(2.0), 3 << 20, 1_700_000_090),
                row("bbbbbbbb22", Some(99.5), 1 << 20, 1_700_000_099),
                TopRow {
                    name: "build".into(),
                    ..row("cccccccc33", None, 8 << 20, 1_700_000_000)
                },
            ],
        }
    }

    fn ids(snapshot: &TopSnapshot, sort: TopSort) -> Vec<&str> {
        sorted(snapshot, sort).iter().map(|r| &r.id[..1]).collect()
    }

    #[test]
    fn each_sort_key_orders_the_rows_with_unmeasured_values_last() {
        let s = snapshot();
        assert_eq!(ids(&s, TopSort::Cpu), ["b", "a", "c"]);
        assert_eq!(ids(&s, TopSort::Mem), ["c", "a", "b"]);
        assert_eq!(ids(&s, TopSort::Id), ["a", "b", "c"]);
        assert_eq!(ids(&s, TopSort::Uptime), ["c", "a", "b"]);
    }

    #[test]
    fn the_table_shows_each_job_with_its_usage() {
        let text = render_table(&snapshot(), TopSort::Cpu);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("ID"), "{text}");
        assert!(lines[0].contains("CPU %"), "{text}");
        let words: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            words,
            [
                "bbbbbbbb", "sleep", "30", "99.5%", "1.0", "MiB", "2.0", "MiB", "0", "bytes", "/",
                "4.0", "KiB", "1", "1.0s"
            ],
            "{text}"
        );
        assert!(lines[3].starts_with("cccccccc   build "), "{text}");
        assert!(
            lines[3].contains(" - "),
            "an unmeasured cpu % is a dash: {text}"
        );
        assert!(!text.contains(NO_JOBS));
    }

    #[test]
    fn no_jobs_is_a_header_and_a_line_saying_so() {
        let empty = TopSnapshot {
            time: at(0),
            ..TopSnapshot::default()
        };
        let text = render_table(&empty, TopSort::Cpu);
        assert!(text.starts_with("ID"), "{text}");
        assert!(text.ends_with("\nno jobs are running\n"), "{text}");
        assert_eq!(
            plain_lines(&empty, TopSort::Cpu),
            "1970-01-01T00:00:00Z no jobs are running\n"
        );
    }

    #[test]
    fn plain_lines_are_one_per_job_with_the_time_first() {
        let text = plain_lines(&snapshot(), TopSort::Id);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            "2023-11-14T22:15:00Z aaaaaaaa name=\"sleep 30\" cpu=2.0% mem=3.0 MiB peak=6.0 MiB \
             io_read=0 bytes (-) io_write=4.0 KiB (-) pids=1 uptime=10.0s"
        );
        assert!(lines[2].contains("name=\"build\" cpu=-"), "{text}");
    }

    #[test]
    fn the_screen_is_drawn_from_the_top_and_cut_to_the_terminal() {
        let text = screen_text(&snapshot(), TopSort::Cpu, Duration::from_secs(1), (5, 40));
        assert!(text.starts_with(HOME));
        assert!(text.ends_with(&format!("{CLEAR_LINE}{CLEAR_BELOW}")));
        let lines: Vec<&str> = text.split('\n').collect();
        // Title, blank, header, one job, then the count of the rest: five rows.
        assert_eq!(lines.len(), 5, "{text:?}");
        assert!(
            lines[0].starts_with("\x1b[Hsilo top   2023-11-14T22:15:00Z   3"),
            "{text:?}"
        );
        // Each line cut to the 40 columns, then cleared to its end.
        assert!(lines[3].starts_with("bbbbbbbb   sleep 30"), "{text:?}");
        assert_eq!(
            lines[3].strip_suffix(CLEAR_LINE).unwrap().chars().count(),
            40
        );
        assert!(lines[4].starts_with("… and 2 more"), "{text:?}");
    }
}
