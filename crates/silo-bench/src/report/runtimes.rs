//! The "runtimes" section: jobs launched in a runtime's tree beside the host's view, and
//! the life of the python-3.11 runtime (build, sizes, install, verify, shared disk).

use super::{Results, Row, ms, text, verdict};
use crate::measure::{LAUNCH_COMMAND, Launch};

/// The runtime a /bin/true launch is measured in, and the one a Python launch is.
const BUSYBOX: &str = "busybox";
const PYTHON: &str = "python-3.11";
/// Built only in a full run, beside python-3.11, for the disk they share.
const PYTHON_ML: &str = "python-3.11-ml";
/// The Python launch's command.
const PYTHON_COMMAND: [&str; 3] = ["python3", "-c", "pass"];

/// The name of the launch line of `command` in `runtime` (`None`: the host's view).
fn launch_name(command: &[&str], runtime: Option<&str>) -> String {
    Launch {
        command: command.iter().map(|s| s.to_string()).collect(),
        limits: Default::default(),
        runtime: runtime.map(str::to_owned),
        gap: Default::default(),
    }
    .name()
}

/// The name of the `silo-bench runtime` line of `runtime`.
fn runtime_line(runtime: &str) -> String {
    format!("runtime {runtime}")
}

/// Megabytes (10^6 bytes), as the logs' MB/s.
fn mb(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1e6)
}

fn seconds(s: f64) -> String {
    if s < 10.0 {
        format!("{s:.2} s")
    } else {
        format!("{s:.1} s")
    }
}

/// The launch in `runtime` (p50, p95), or why there is none: the runtime's build failed or
/// was skipped, else the launch's own failure.
fn launch_in(r: &Results, command: &[&str], runtime: &str) -> Result<(f64, f64), String> {
    r.latency(&launch_name(command, Some(runtime)))
        .map_err(|launch| match r.get(&runtime_line(runtime)) {
            Err(build) => format!("{runtime}: {build}"),
            Ok(_) => launch,
        })
}

/// The section's rows; `host_launch` is the /bin/true launch on the host's view.
pub(super) fn rows(r: &Results, host_launch: &Result<(f64, f64), String>) -> Vec<Row> {
    let mut rows = Vec::new();

    // /bin/true in busybox's tree beside the same launch on the host's view.
    let busybox = launch_in(r, &[LAUNCH_COMMAND], BUSYBOX);
    let runs = r.runs(&launch_name(&[LAUNCH_COMMAND], Some(BUSYBOX)));
    for (i, label) in [(0, "p50"), (1, "p95")] {
        let pick = |v: &(f64, f64)| if i == 0 { v.0 } else { v.1 };
        let both = busybox
            .as_ref()
            .ok()
            .zip(host_launch.as_ref().ok())
            .map(|(b, h)| (pick(b), pick(h)));
        rows.push(Row {
            section: "runtimes",
            what: format!("launch in {BUSYBOX} runtime, /bin/true, {label} ({runs} runs)"),
            silo: text(&busybox, |v| ms(pick(v))),
            peer: "silo, host view".into(),
            peer_value: text(host_launch, |v| ms(pick(v))),
            compare: both.map_or("-".into(), |(b, h)| format!("{:+.2} ms", b - h)),
            target: if i == 0 { "within +0.5 ms" } else { "" },
            met: verdict(both.filter(|_| i == 0).map(|(b, h)| b - h <= 0.5)),
        });
    }

    // python3 -c pass in python-3.11's tree beside the host's python3.
    let python = launch_in(r, &PYTHON_COMMAND, PYTHON);
    let host_python = r.latency(&launch_name(&PYTHON_COMMAND, None));
    let runs = r.runs(&launch_name(&PYTHON_COMMAND, Some(PYTHON)));
    for (i, label) in [(0, "p50"), (1, "p95")] {
        let pick = |v: &(f64, f64)| if i == 0 { v.0 } else { v.1 };
        let both = python
            .as_ref()
            .ok()
            .zip(host_python.as_ref().ok())
            .map(|(p, h)| (pick(p), pick(h)));
        rows.push(Row {
            section: "runtimes",
            what: format!(
                "{} in {PYTHON}, {label} ({runs} runs)",
                PYTHON_COMMAND.join(" ")
            ),
            silo: text(&python, |v| ms(pick(v))),
            peer: "silo, host view".into(),
            peer_value: text(&host_python, |v| ms(pick(v))),
            compare: both.map_or("-".into(), |(p, h)| {
                format!("{:+.2} ms ({:.2}x)", p - h, p / h)
            }),
            target: "",
            met: verdict(None),
        });
    }

    // The python-3.11 runtime's life: build, sizes, reinstall of its export, verify.
    let line = runtime_line(PYTHON);
    let field = |f: &str| r.field(&line, f);
    let entries = field("entries").map_or(String::new(), |n| format!(", {n} entries"));
    let files = field("verify_files").map_or(String::new(), |n| format!(", {n} files"));
    let format = r
        .get(&line)
        .ok()
        .and_then(|v| v.get("archive_format"))
        .and_then(|f| f.as_str())
        .map_or(String::new(), |f| format!(", {f}"));
    let tree = field("size_bytes");
    let archive = field("archive_bytes");
    let limit =
        |value: &Result<f64, String>, max: f64| verdict(value.as_ref().ok().map(|v| *v <= max));
    let build = field("build_s");
    let install = field("install_s");
    let verify = field("verify_s");
    let lifecycle = [
        (
            format!("{PYTHON} build (mmdebstrap, tests, sign, install)"),
            text(&build, |s| seconds(*s)),
            "at most 120 s",
            limit(&build, 120.0),
        ),
        (
            format!("{PYTHON} tree (Runtime.size_bytes{entries})"),
            text(&tree, |b| mb(*b)),
            "at most 150 MB",
            limit(&tree, 150e6),
        ),
        (
            format!("{PYTHON} archive (ExportRuntime bytes{format})"),
            text(&archive, |b| mb(*b)),
            "at most 50 MB",
            limit(&archive, 50e6),
        ),
        (
            format!("{PYTHON} install of its export, after RemoveRuntime"),
            text(&install, |s| seconds(*s)),
            "at most 10 s",
            limit(&install, 10.0),
        ),
        (
            format!("{PYTHON} verify (VerifyRuntime{files})"),
            text(&verify, |s| seconds(*s)),
            "at most 2 s",
            limit(&verify, 2.0),
        ),
    ];
    for (i, (what, silo, target, met)) in lifecycle.into_iter().enumerate() {
        // The archive beside the tree it holds.
        let (peer, peer_value, compare) = match (i, &archive, &tree) {
            (2, Ok(a), Ok(t)) => ("tree".into(), mb(*t), format!("{:.2}x", a / t)),
            _ => ("-".into(), "-".into(), "-".into()),
        };
        rows.push(Row {
            section: "runtimes",
            what,
            silo,
            peer,
            peer_value,
            compare,
            target,
            met,
        });
    }

    // python-3.11-ml (full run only), then the disk both take, files stored once.
    let ml = runtime_line(PYTHON_ML);
    let ml_build = r.field(&ml, "build_s");
    let ml_tree = r.field(&ml, "size_bytes");
    rows.push(Row {
        section: "runtimes",
        what: format!("{PYTHON_ML} build (pip in the runtime), tree"),
        silo: match (&ml_build, &ml_tree) {
            (Ok(s), Ok(b)) => format!("{}, {}", seconds(*s), mb(*b)),
            (Err(e), _) | (_, Err(e)) => e.clone(),
        },
        peer: "-".into(),
        peer_value: "-".into(),
        compare: "-".into(),
        target: "",
        met: verdict(None),
    });
    // Without python-3.11-ml there is nothing to share: say so once, in the row above.
    let disk_line = "runtime disk";
    let ml_failed = r.0.get(&ml).is_some_and(|line| line.get("error").is_some());
    let missing = |e: String| {
        if ml_failed {
            format!("no {PYTHON_ML} (row above)")
        } else {
            e
        }
    };
    let disk = r.num(disk_line, "disk_bytes").map_err(missing);
    let trees = r.num(disk_line, "trees_bytes").map_err(missing);
    let both = disk.as_ref().ok().zip(trees.as_ref().ok());
    rows.push(Row {
        section: "runtimes",
        what: format!("{PYTHON} + {PYTHON_ML} on disk (each inode once, st_blocks)"),
        silo: text(&disk, |b| mb(*b)),
        peer: "sum of both trees (size_bytes)".into(),
        peer_value: trees.as_ref().map_or("-".into(), |b| mb(*b)),
        compare: both.map_or("-".into(), |(d, t)| {
            format!("{:.2}x, saves {}", d / t, mb(t - d))
        }),
        target: "",
        met: verdict(None),
    });
    rows
}
