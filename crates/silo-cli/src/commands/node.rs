//! `silo node`: the server's host, as aligned `key: value` lines or JSON.
//!
//! The `--json` shape is part of silo's interface for scripts (fields are only ever
//! added):
//!
//! ```json
//! {
//!   "hostname": "build-1", "version": "0.1.0", "uptime_ms": 302400000,
//!   "server_started_at": "2025-01-31T12:00:00.000Z", "server_uptime_ms": 60000,
//!   "kernel": "6.1.0-18-amd64", "architecture": "x86_64",
//!   "cgroup_layout": "unified", "controllers": ["cpu", "memory", "pids"],
//!   "cpus": 8, "memory_total_bytes": 16706764800, "memory_available_bytes": 12301234176,
//!   "state_dir": "/var/lib/silo", "disk_total_bytes": 105089261568,
//!   "disk_free_bytes": 43175354368, "running_jobs": 2, "total_jobs": 57,
//!   "runtimes": ["python-3.11@1.0.0"],
//!   "load": {"one": 0.52, "five": 0.58, "fifteen": 0.59},
//!   "pressure": {
//!     "cpu": {"some": {"avg10": 1.25, "avg60": 0.5, "avg300": 0.1, "total_usec": 123456},
//!             "full": null},
//!     "memory": {…}, "io": {…}
//!   }
//! }
//! ```
//!
//! `load` is null where the host has none; `pressure` is null where the kernel has no PSI,
//! and a `full` line is null where the kernel does not report it.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use silo_proto::v1::{GetNodeRequest, LoadAverage, Node, Pressure, PressureLine};

use crate::cli::NodeArgs;
use crate::format::{format_elapsed, human_size, rfc3339_seconds, system_time};
use crate::output::{print, print_json};
use crate::session::Session;

/// Asks the server about its host and prints it.
pub async fn node(args: NodeArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(&args.global).await?;
    let node = match session.nodes.get_node(GetNodeRequest {}).await {
        Ok(response) => response.into_inner(),
        Err(status) => return Err(session.node_error(&status).into()),
    };
    let now = SystemTime::now();
    if args.json {
        return print_json(&NodeView::new(&node, now));
    }
    print(&render_node(&node, now))
}

/// `-` for an empty value.
fn or_dash(text: String) -> String {
    if text.is_empty() { "-".into() } else { text }
}

fn percent(value: f64) -> String {
    format!("{value:.2}%")
}

fn pressure_line(line: &PressureLine) -> String {
    format!(
        "{} {} {}",
        percent(line.avg10),
        percent(line.avg60),
        percent(line.avg300)
    )
}

/// `some 1.25% 0.50% 0.10%, full 0.00% 0.00% 0.00%`, or `-` without PSI.
fn pressure_text(pressure: Option<&Pressure>) -> String {
    let Some(pressure) = pressure else {
        return "- (no PSI in this kernel)".into();
    };
    let mut parts = Vec::new();
    if let Some(some) = &pressure.some {
        parts.push(format!("some {}", pressure_line(some)));
    }
    if let Some(full) = &pressure.full {
        parts.push(format!("full {}", pressure_line(full)));
    }
    format!("{} (10s 1m 5m)", parts.join(", "))
}

/// The host as aligned `key: value` lines, sizes for reading.
pub fn render_node(node: &Node, now: SystemTime) -> String {
    let started = system_time(node.server_started_at.as_ref());
    let server_uptime = match started {
        Some(started) => format!(
            "{} (since {})",
            format_elapsed(now.duration_since(started).unwrap_or_default()),
            rfc3339_seconds(started)
        ),
        None => "-".into(),
    };
    let lines = [
        ("hostname", or_dash(node.hostname.clone())),
        ("version", node.version.clone()),
        ("server uptime", server_uptime),
        (
            "host uptime",
            format_elapsed(Duration::from_millis(node.uptime_ms)),
        ),
        (
            "kernel",
            or_dash(
                format!("{} {}", node.kernel, node.architecture)
                    .trim()
                    .into(),
            ),
        ),
        (
            "cgroups",
            if node.cgroup_layout.is_empty() {
                "- (none: limits are refused)".into()
            } else {
                node.cgroup_layout.clone()
            },
        ),
        ("controllers", or_dash(node.controllers.join(", "))),
        ("cpus", node.cpus.to_string()),
        (
            "memory",
            format!(
                "{} available of {}",
                human_size(node.memory_available_bytes),
                human_size(node.memory_total_bytes)
            ),
        ),
        (
            "disk",
            format!(
                "{} free of {} ({})",
                human_size(node.disk_free_bytes),
                human_size(node.disk_total_bytes),
                node.state_dir
            ),
        ),
        (
            "jobs",
            format!("{} running, {} in all", node.running_jobs, node.total_jobs),
        ),
        ("runtimes", or_dash(node.runtimes.join(", "))),
        (
            "load",
            node.load.as_ref().map_or_else(
                || "-".into(),
                |l| format!("{:.2} {:.2} {:.2} (1m 5m 15m)", l.one, l.five, l.fifteen),
            ),
        ),
        ("cpu pressure", pressure_text(node.cpu_pressure.as_ref())),
        (
            "memory pressure",
            pressure_text(node.memory_pressure.as_ref()),
        ),
        ("io pressure", pressure_text(node.io_pressure.as_ref())),
    ];
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    lines
        .iter()
        .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
        .collect()
}

/// The node as `--json` prints it (see the module's documentation).
#[derive(Debug, Serialize)]
struct NodeView {
    hostname: String,
    version: String,
    uptime_ms: u64,
    server_started_at: Option<String>,
    server_uptime_ms: Option<u64>,
    kernel: String,
    architecture: String,
    cgroup_layout: String,
    controllers: Vec<String>,
    cpus: u32,
    memory_total_bytes: u64,
    memory_available_bytes: u64,
    state_dir: String,
    disk_total_bytes: u64,
    disk_free_bytes: u64,
    running_jobs: u32,
    total_jobs: u64,
    runtimes: Vec<String>,
    load: Option<LoadView>,
    pressure: PressureByResource,
}

#[derive(Debug, Serialize)]
struct LoadView {
    one: f64,
    five: f64,
    fifteen: f64,
}

#[derive(Debug, Serialize)]
struct PressureByResource {
    cpu: Option<PressureView>,
    memory: Option<PressureView>,
    io: Option<PressureView>,
}

#[derive(Debug, Serialize)]
struct PressureView {
    some: Option<PressureLineView>,
    full: Option<PressureLineView>,
}

#[derive(Debug, Serialize)]
struct PressureLineView {
    avg10: f64,
    avg60: f64,
    avg300: f64,
    total_usec: u64,
}

impl From<&PressureLine> for PressureLineView {
    fn from(l: &PressureLine) -> Self {
        PressureLineView {
            avg10: l.avg10,
            avg60: l.avg60,
            avg300: l.avg300,
            total_usec: l.total_usec,
        }
    }
}

impl From<&Pressure> for PressureView {
    fn from(p: &Pressure) -> Self {
        PressureView {
            some: p.some.as_ref().map(Into::into),
            full: p.full.as_ref().map(Into::into),
        }
    }
}

impl From<&LoadAverage> for LoadView {
    fn from(l: &LoadAverage) -> Self {
        LoadView {
            one: l.one,
            five: l.five,
            fifteen: l.fifteen,
        }
    }
}

impl NodeView {
    fn new(node: &Node, now: SystemTime) -> Self {
        let started = system_time(node.server_started_at.as_ref());
        NodeView {
            hostname: node.hostname.clone(),
            version: node.version.clone(),
            uptime_ms: node.uptime_ms,
            server_started_at: started
                .map(|time| humantime::format_rfc3339_millis(time).to_string()),
            server_uptime_ms: started.map(|started| {
                let up = now.duration_since(started).unwrap_or_default();
                u64::try_from(up.as_millis()).unwrap_or(u64::MAX)
            }),
            kernel: node.kernel.clone(),
            architecture: node.architecture.clone(),
            cgroup_layout: node.cgroup_layout.clone(),
            controllers: node.controllers.clone(),
            cpus: node.cpus,
            memory_total_bytes: node.memory_total_bytes,
            memory_available_bytes: node.memory_available_bytes,
            state_dir: node.state_dir.clone(),
            disk_total_bytes: node.disk_total_bytes,
            disk_free_bytes: node.disk_free_bytes,
            running_jobs: node.running_jobs,
            total_jobs: node.total_jobs,
            runtimes: node.runtimes.clone(),
            load: node.load.as_ref().map(Into::into),
            pressure: PressureByResource {
                cpu: node.cpu_pressure.as_ref().map(Into::into),
                memory: node.memory_pressure.as_ref().map(Into::into),
                io: node.io_pressure.as_ref().map(Into::into),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        Node {
            hostname: "build-1".into(),
            version: "0.1.0".into(),
            uptime_ms: 3 * 86_400_000 + 4 * 3_600_000,
            server_started_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            kernel: "6.1.0-18-amd64".into(),
            architecture: "x86_64".into(),
            cgroup_layout: "unified".into(),
            controllers: vec!["cpu".into(), "memory".into()],
            cpus: 8,
            memory_total_bytes: 16 << 30,
            memory_available_bytes: 12 << 30,
            state_dir: "/var/lib/silo".into(),
            disk_total_bytes: 100 << 30,
            disk_free_bytes: 40 << 30,
            running_jobs: 2,
            total_jobs: 57,
            runtimes: vec![],
            load: Some(LoadAverage {
                one: 0.5,
                five: 0.25,
                fifteen: 1.0,
            }),
            cpu_pressure: Some(Pressure {
                some: Some(PressureLine {
                    avg10: 1.25,
                    avg60: 0.5,
                    avg300: 0.1,
                    total_usec: 7,
                }),
                full: None,
            }),
            memory_pressure: None,
            io_pressure: None,
        }
    }

    #[test]
    fn the_node_reads_as_aligned_lines_with_sizes_for_people() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_065);
        let text = render_node(&node(), now);
        let expected = "\
hostname:        build-1
version:         0.1.0
server uptime:   1m5s (since 2023-11-14T22:13:20Z)
host uptime:     3d4h
kernel:          6.1.0-18-amd64 x86_64
cgroups:         unified
controllers:     cpu, memory
cpus:            8
memory:          12.0 GiB available of 16.0 GiB
disk:            40.0 GiB free of 100.0 GiB (/var/lib/silo)
jobs:            2 running, 57 in all
runtimes:        -
load:            0.50 0.25 1.00 (1m 5m 15m)
cpu pressure:    some 1.25% 0.50% 0.10% (10s 1m 5m)
memory pressure: - (no PSI in this kernel)
io pressure:     - (no PSI in this kernel)
";
        assert_eq!(text, expected);
    }

    #[test]
    fn the_json_has_stable_keys_and_nulls_for_what_the_host_lacks() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_065);
        let json = serde_json::to_value(NodeView::new(&node(), now)).unwrap();
        assert_eq!(json["cpus"], 8);
        assert_eq!(json["server_uptime_ms"], 65_000);
        assert_eq!(json["server_started_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(json["load"]["fifteen"], 1.0);
        assert_eq!(json["pressure"]["cpu"]["some"]["total_usec"], 7);
        assert!(json["pressure"]["cpu"]["full"].is_null());
        assert!(json["pressure"]["memory"].is_null());
        assert_eq!(json["runtimes"], serde_json::json!([]));
    }
}
