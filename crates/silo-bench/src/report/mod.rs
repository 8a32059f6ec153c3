//! The table: silo beside its peers, from the JSON lines of one run of bench/run.sh.

mod operations;
mod runtimes;
mod speed;
mod workflows;

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};
use comfy_table::{ContentArrangement, Table, presets};
use serde_json::Value;

/// The result lines by name; a later line of the same name wins.
struct Results(HashMap<String, Value>);

impl Results {
    /// The line called `name`, or why there is none.
    fn get(&self, name: &str) -> Result<&Value, String> {
        let line = self.0.get(name).ok_or_else(|| "not measured".to_string())?;
        match why_not(line) {
            Some(why) => Err(why),
            None => Ok(line),
        }
    }

    /// One number of the line called `name`, also from a line that failed after measuring
    /// it (a runtime's build time, when its install failed); else why there is none.
    fn field(&self, name: &str, field: &str) -> Result<f64, String> {
        let line = self.0.get(name).ok_or_else(|| "not measured".to_string())?;
        match line.get(field).and_then(Value::as_f64) {
            Some(x) => Ok(x),
            None => Err(why_not(line).unwrap_or_else(|| format!("{name}: no {field}"))),
        }
    }

    fn num(&self, name: &str, field: &str) -> Result<f64, String> {
        let line = self.get(name)?;
        line.get(field)
            .and_then(Value::as_f64)
            .ok_or_else(|| format!("{name}: no {field}"))
    }

    /// (p50, p95) in ms.
    fn latency(&self, name: &str) -> Result<(f64, f64), String> {
        Ok((self.num(name, "p50_ms")?, self.num(name, "p95_ms")?))
    }

    fn runs(&self, name: &str) -> String {
        self.num(name, "runs")
            .map(|r| format!("{r}"))
            .unwrap_or_else(|_| "?".into())
    }
}

/// Why a line has no numbers: the measurement failed (`error`), or bench/run.sh did not
/// run it (`skipped`, e.g. "skipped in --quick"); `None` for a measured line.
fn why_not(line: &Value) -> Option<String> {
    if let Some(err) = line.get("error").and_then(Value::as_str) {
        return Some(format!("not measured: {err}"));
    }
    line.get("skipped")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// One row: what silo measured, what the peer measured, and how they compare.
struct Row {
    section: &'static str,
    what: String,
    silo: String,
    peer: String,
    peer_value: String,
    compare: String,
    target: &'static str,
    met: String,
}

fn ms(x: f64) -> String {
    format!("{x:.2} ms")
}

fn p50_p95((p50, p95): (f64, f64)) -> String {
    format!("{p50:.2} / {p95:.2} ms")
}

fn text<T>(r: &Result<T, String>, f: impl Fn(&T) -> String) -> String {
    match r {
        Ok(v) => f(v),
        Err(e) => e.clone(),
    }
}

fn verdict(ok: Option<bool>) -> String {
    match ok {
        Some(true) => "yes".into(),
        Some(false) => "NO".into(),
        None => "-".into(),
    }
}

/// Reads `path` and prints the table (with `title` above it).
pub fn print(path: &Path, title: Option<&str>) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = HashMap::new();
    for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
        let v: Value =
            serde_json::from_str(line).with_context(|| format!("bad result line: {line}"))?;
        if let Some(name) = v.get("name").and_then(Value::as_str) {
            lines.insert(name.to_string(), v);
        }
    }
    let rows = rows(&Results(lines));
    let mut table = Table::new();
    table
        .load_preset(presets::ASCII_MARKDOWN)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "section",
            "measurement",
            "silo",
            "peer",
            "peer value",
            "silo vs peer",
            "target",
            "met",
        ]);
    for r in rows {
        table.add_row([
            r.section.into(),
            r.what,
            r.silo,
            r.peer,
            r.peer_value,
            r.compare,
            r.target.into(),
            r.met,
        ]);
    }
    if let Some(title) = title {
        println!("{title}");
    }
    println!("{table}");
    Ok(())
}

fn rows(r: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    let launch = r.latency("launch");
    let fork = r.latency("fork/exec");

    // Launch: RunJob → ended, beside fork/exec of the same /bin/true.
    for (i, label) in [(0, "p50"), (1, "p95")] {
        let pick = |v: &(f64, f64)| if i == 0 { v.0 } else { v.1 };
        let both = launch
            .as_ref()
            .ok()
            .zip(fork.as_ref().ok())
            .map(|(s, f)| (pick(s), pick(f)));
        rows.push(Row {
            section: "launch",
            what: format!(
                "/bin/true, RunJobAttached -> ended, {label} ({} runs)",
                r.runs("launch")
            ),
            silo: text(&launch, |v| ms(pick(v))),
            peer: "fork/exec".into(),
            peer_value: text(&fork, |v| ms(pick(v))),
            compare: both.map_or("-".into(), |(s, f)| {
                format!("{:+.2} ms ({:.1}x)", s - f, s / f)
            }),
            target: if i == 0 { "within 2 ms" } else { "" },
            met: verdict(both.filter(|_| i == 0).map(|(s, f)| s - f <= 2.0)),
        });
    }
    // Limits (cgroup create + limits + removal) against the same launch without them.
    let limited = r.latency("launch+limits");
    let limits_desc = r
        .get("launch+limits")
        .ok()
        .map(|v| {
            let mem = v
                .get("memory_bytes")
                .and_then(Value::as_u64)
                .map(|b| format!("mem {}M", b >> 20));
            let cpu = v
                .get("cpu_percent")
                .and_then(Value::as_u64)
                .map(|c| format!("cpu {c}%"));
            let pids = v
                .get("pids")
                .and_then(Value::as_u64)
                .map(|p| format!("pids {p}"));
            [mem, cpu, pids]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "limits".into());
    for (i, label) in [(0, "p50"), (1, "p95")] {
        let pick = |v: &(f64, f64)| if i == 0 { v.0 } else { v.1 };
        let both = limited
            .as_ref()
            .ok()
            .zip(launch.as_ref().ok())
            .map(|(l, s)| (pick(l), pick(s)));
        rows.push(Row {
            section: "limits",
            what: format!("launch with {limits_desc}, {label}"),
            silo: text(&limited, |v| ms(pick(v))),
            peer: "silo, no limits".into(),
            peer_value: text(&launch, |v| ms(pick(v))),
            compare: both.map_or("-".into(), |(l, s)| format!("{:+.2} ms", l - s)),
            target: if i == 0 { "at most +1 ms" } else { "" },
            met: verdict(both.filter(|_| i == 0).map(|(l, s)| l - s <= 1.0)),
        });
    }

    // A job's cgroup on its own.
    let cg = r.latency("cgroup");
    let layout = r
        .get("cgroup")
        .ok()
        .and_then(|v| v.get("layout"))
        .and_then(Value::as_str)
        .map(|l| l.split(' ').next().unwrap_or(l).to_owned())
        .unwrap_or_default();
    let parts = r.get("cgroup").ok().map(|v| {
        format!(
            "create {} + limits {} + remove {} ms",
            v["create_p50_ms"], v["limits_p50_ms"], v["remove_p50_ms"]
        )
    });
    rows.push(Row {
        section: "limits",
        what: format!("job cgroup create + limits + remove ({layout}), p50 / p95"),
        silo: text(&cg, |v| format!("{} / {}", ms(v.0), ms(v.1))),
        peer: "-".into(),
        peer_value: parts.unwrap_or_else(|| "-".into()),
        compare: "-".into(),
        target: "",
        met: verdict(None),
    });

    // Log throughput.
    let logs = r.num("logs", "mb_s");
    let pipe = r.num("pipe", "mb_s");
    let mib = r
        .num("logs", "bytes")
        .or_else(|_| r.num("pipe", "bytes"))
        .map_or(0.0, |b| b / 1048576.0);
    let ratio = logs
        .as_ref()
        .ok()
        .zip(pipe.as_ref().ok())
        .map(|(l, p)| l / p);
    rows.push(Row {
        section: "logs",
        what: format!("{mib:.0} MiB stdout, StreamLogs follow, discarded"),
        silo: text(&logs, |v| format!("{v:.0} MB/s")),
        peer: "dd bs=64K piped to cat".into(),
        peer_value: text(&pipe, |v| format!("{v:.0} MB/s")),
        compare: ratio.map_or("-".into(), |x| format!("{x:.2}x")),
        target: "at least 0.8x",
        met: verdict(ratio.map(|x| x >= 0.8)),
    });

    // Server memory and store.
    let jobs = r
        .num("memory", "jobs")
        .map_or(String::new(), |j| format!(" (measured over {j} jobs)"));
    let mem = |field: &str, scale: f64, unit: &str| {
        text(&r.num("memory", field), |v| {
            format!("{:.2} {unit}", v / scale)
        })
    };
    for (what, value) in [
        (
            "server idle RSS".to_string(),
            mem("idle_rss_kib", 1024.0, "MiB"),
        ),
        (
            format!("RSS growth per 1,000 finished jobs{jobs}"),
            mem("rss_growth_per_1000_kib", 1024.0, "MiB"),
        ),
        (
            format!("store (silo.db + WAL) growth per 1,000 jobs{jobs}"),
            mem("db_growth_per_1000_bytes", 1024.0, "KiB"),
        ),
    ] {
        rows.push(Row {
            section: "memory",
            what,
            silo: value,
            peer: "-".into(),
            peer_value: "-".into(),
            compare: "-".into(),
            target: "",
            met: "-".into(),
        });
    }

    // Isolated launch: silo's p50 beside the sandboxes' p50 / p95.
    for (name, peer, target, ok) in [
        ("fork/exec", "fork/exec", "", None),
        ("unshare", "unshare pid,mnt,uts,ipc,net", "", None),
        (
            "bwrap",
            "bwrap --unshare-all, ro /",
            "silo p50 at most bwrap's",
            Some(1.0),
        ),
        (
            "crun",
            "crun run, ro bind of /",
            "silo p50 at most half crun's",
            Some(0.5),
        ),
    ] {
        let peer_lat = r.latency(name);
        let both = launch
            .as_ref()
            .ok()
            .zip(peer_lat.as_ref().ok())
            .map(|(s, p)| (s.0, p.0));
        rows.push(Row {
            section: "isolated",
            what: format!("/bin/true p50 / p95 ({} runs)", r.runs(name)),
            silo: text(&launch, |v| ms(v.0)),
            peer: peer.into(),
            peer_value: text(&peer_lat, |v| p50_p95(*v)),
            compare: both.map_or("-".into(), |(s, p)| format!("{:.2}x p50", s / p)),
            target,
            met: verdict(ok.and_then(|k| both.map(|(s, p)| s <= k * p))),
        });
    }

    rows.extend(speed::rows(r));
    rows.extend(runtimes::rows(r, &launch));
    rows.extend(workflows::rows(r));
    rows.extend(operations::rows(r));
    rows
}
