//! The "operations" section: how late a per-second cron schedule's jobs start, and a
//! Prometheus scrape of /metrics while hundreds of jobs run.

use super::{Results, Row, p50_p95, text, verdict};

const LATENESS: &str = "schedule lateness";
const SCRAPE: &str = "metrics scrape";

pub(super) fn rows(r: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    let late = r
        .get(LATENESS)
        .and_then(|_| Ok((r.num(LATENESS, "p50_ms")?, r.num(LATENESS, "p99_ms")?)));
    rows.push(Row {
        section: "operations",
        what: format!(
            "schedule lateness: command start - instant, {} firings of a per-second cron (p50 / p99)",
            r.runs(LATENESS)
        ),
        silo: text(&late, |(p50, p99)| format!("{p50:.2} / {p99:.2} ms")),
        peer: "cron: 1 s resolution".into(),
        peer_value: "-".into(),
        compare: "-".into(),
        target: "within 10 ms",
        met: verdict(late.as_ref().ok().map(|(_, p99)| *p99 <= 10.0)),
    });
    let scrape = r.latency(SCRAPE);
    let shape = r
        .get(SCRAPE)
        .and_then(|_| Ok((r.num(SCRAPE, "jobs")?, r.num(SCRAPE, "body_bytes")?)))
        .map_or(String::new(), |(jobs, bytes)| {
            format!(" with {jobs} jobs running ({:.0} KiB)", bytes / 1024.0)
        });
    rows.push(Row {
        section: "operations",
        what: format!(
            "GET /metrics{shape}, p50 / p95 over {} scrapes",
            r.runs(SCRAPE)
        ),
        silo: text(&scrape, |v| p50_p95(*v)),
        peer: "-".into(),
        peer_value: "-".into(),
        compare: "-".into(),
        target: "-",
        met: "-".into(),
    });
    rows
}
