//! The "vs bwrap" section: silo's isolated launch beside bubblewrap's, measured in the same
//! run: through the API on a warm connection with a pause before each launch (idle) and
//! back to back, the whole `silo job run` process, and 100 launches at once.

use super::{Results, Row, ms, text, verdict};

pub(super) fn rows(r: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    // (silo line, bwrap line, what, quantile index, at most this times bwrap's)
    let pairs: [(&str, &str, &str, usize, f64, &'static str); 5] = [
        (
            "launch idle",
            "bwrap idle",
            "API launch, 20 ms pause before each, p50",
            0,
            0.75,
            "at most 0.75x",
        ),
        (
            "launch idle",
            "bwrap idle",
            "API launch, 20 ms pause before each, p95",
            1,
            1.5,
            "at most 1.5x",
        ),
        (
            "launch",
            "bwrap",
            "API launch, back to back, p50",
            0,
            1.0,
            "at most 1.0x",
        ),
        (
            "launch",
            "bwrap",
            "API launch, back to back, p95",
            1,
            1.5,
            "at most 1.5x",
        ),
        (
            "silo job run",
            "bwrap",
            "silo job run -- /bin/true, whole process, p50",
            0,
            1.5,
            "at most 1.5x",
        ),
    ];
    for (silo, peer, what, q, max, target) in pairs {
        let pick = |v: &(f64, f64)| if q == 0 { v.0 } else { v.1 };
        let s = r.latency(silo);
        let p = r.latency(peer);
        let ratio = s
            .as_ref()
            .ok()
            .zip(p.as_ref().ok())
            .map(|(s, p)| pick(s) / pick(p));
        rows.push(Row {
            section: "vs bwrap",
            what: format!("/bin/true: {what} ({} runs)", r.runs(silo)),
            silo: text(&s, |v| ms(pick(v))),
            peer: format!("{peer} (--unshare-all, ro /)"),
            peer_value: text(&p, |v| ms(pick(v))),
            compare: ratio.map_or("-".into(), |x| format!("{x:.2}x")),
            target,
            met: verdict(ratio.map(|x| x <= max)),
        });
    }
    // Back to back, a launch is bound by CPU, not by waits: the whole host's busy time per
    // launch says how much of it each needs.
    let cpu = |name: &str| r.num(name, "host_cpu_ms_per_run");
    let (s, p) = (cpu("launch"), cpu("bwrap"));
    let ratio = s.as_ref().ok().zip(p.as_ref().ok()).map(|(s, p)| s / p);
    rows.push(Row {
        section: "vs bwrap",
        what: format!(
            "/bin/true: the host's busy CPU per launch, back to back (all processes and the \
             kernel; {} runs)",
            r.runs("launch")
        ),
        silo: text(&s, |v| ms(*v)),
        peer: "bwrap (--unshare-all, ro /)".into(),
        peer_value: text(&p, |v| ms(*v)),
        compare: ratio.map_or("-".into(), |x| format!("{x:.2}x")),
        target: "",
        met: "-".into(),
    });
    let wall = |name: &str| r.num(name, "wall_ms");
    let (s, p) = (wall("concurrent"), wall("bwrap concurrent"));
    let ratio = s.as_ref().ok().zip(p.as_ref().ok()).map(|(s, p)| s / p);
    let jobs = r
        .num("concurrent", "jobs")
        .map_or("100".into(), |n| format!("{n}"));
    rows.push(Row {
        section: "vs bwrap",
        what: format!("{jobs} launches of /bin/true at once, each to its end: wall time (median)"),
        silo: text(&s, |v| ms(*v)),
        peer: format!("{jobs} bwraps at once"),
        peer_value: text(&p, |v| ms(*v)),
        compare: ratio.map_or("-".into(), |x| format!("{x:.2}x")),
        target: "",
        met: "-".into(),
    });
    rows
}
