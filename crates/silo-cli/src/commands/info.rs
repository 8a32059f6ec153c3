//! `silo server info`: what the server is and allows, and who the caller is.

use silo_proto::v1::{JobNetwork, Role, ServerInfo};
use silo_proto::values::format_size;

use crate::cli::{GlobalOptions, ServerInfoArgs};
use crate::format::{format_elapsed, limits_text};
use crate::output::{print, print_json};
use crate::session::Session;

/// Asks the server about itself and prints it.
pub async fn info(global: &GlobalOptions, args: ServerInfoArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    let info = session.server_info().await?;
    if args.json {
        return print_json(&info_json(&info));
    }
    print(&render_info(&info))
}

/// The caller's role, as the API's enum without its prefix.
fn role_name(info: &ServerInfo) -> &'static str {
    match info.caller_role() {
        Role::Admin => "admin",
        Role::Viewer => "viewer",
        Role::Unspecified => "unknown",
    }
}

fn network_names(info: &ServerInfo) -> Vec<&'static str> {
    info.networks()
        .map(|n| match n {
            JobNetwork::None => "none",
            JobNetwork::Host => "host",
            JobNetwork::Unspecified => "unknown",
        })
        .collect()
}

/// The server as aligned `key: value` lines.
pub fn render_info(info: &ServerInfo) -> String {
    let text = |value: &str| {
        if value.is_empty() {
            "-".to_owned()
        } else {
            value.to_owned()
        }
    };
    let list = |items: &[String]| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(", ")
        }
    };
    let limits = |l: &Option<silo_proto::v1::Limits>| limits_text(&l.clone().unwrap_or_default());
    let millis = |ms: u64| format_elapsed(std::time::Duration::from_millis(ms));
    let lines = [
        ("version", info.version.clone()),
        ("caller", format!("{} ({})", info.caller, role_name(info))),
        ("cgroups", text(&info.cgroup_layout)),
        ("controllers", list(&info.controllers)),
        ("features", list(&info.features)),
        ("networks", network_names(info).join(", ")),
        ("max jobs", info.max_jobs.to_string()),
        ("defaults", limits(&info.default_limits)),
        ("maximum", limits(&info.max_limits)),
        ("minimum", limits(&info.min_limits)),
        (
            "timeout",
            format!("at most {}", millis(info.max_timeout_ms)),
        ),
        (
            "grace",
            format!(
                "{} by default, at most {}",
                millis(info.default_stop_grace_ms),
                millis(info.max_stop_grace_ms)
            ),
        ),
        (
            "uploads",
            format!("at most {}", format_size(info.max_upload_bytes)),
        ),
        ("server cert", until(info.server_certificate_ends.as_ref())),
        ("your cert", until(info.caller_certificate_ends.as_ref())),
    ];
    let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    lines
        .iter()
        .map(|(k, v)| format!("{:<width$} {v}\n", format!("{k}:")))
        .collect()
}

/// The server as `--json` prints it.
fn info_json(info: &ServerInfo) -> serde_json::Value {
    let limits = |l: &Option<silo_proto::v1::Limits>| {
        let l = l.clone().unwrap_or_default();
        serde_json::json!({
            "cpu_percent": l.cpu_percent, "cpus": l.cpus, "memory_bytes": l.memory_bytes,
            "io_bps": l.io_bps, "pids": l.pids, "disk_bytes": l.disk_bytes,
        })
    };
    serde_json::json!({
        "version": info.version,
        "caller": info.caller,
        "caller_role": role_name(info),
        "cgroup_layout": info.cgroup_layout,
        "controllers": info.controllers,
        "features": info.features,
        "networks": network_names(info),
        "max_jobs": info.max_jobs,
        "default_limits": limits(&info.default_limits),
        "max_limits": limits(&info.max_limits),
        "min_limits": limits(&info.min_limits),
        "max_timeout_ms": info.max_timeout_ms,
        "default_stop_grace_ms": info.default_stop_grace_ms,
        "max_stop_grace_ms": info.max_stop_grace_ms,
        "max_upload_bytes": info.max_upload_bytes,
        "server_certificate_ends": rfc3339(info.server_certificate_ends.as_ref()),
        "caller_certificate_ends": rfc3339(info.caller_certificate_ends.as_ref()),
    })
}

/// "valid until …" for a certificate's end, or "-" when the server does not say.
fn until(ends: Option<&prost_types::Timestamp>) -> String {
    rfc3339(ends).map_or_else(|| "-".to_owned(), |at| format!("valid until {at}"))
}

/// A timestamp in RFC 3339 (UTC, seconds), when there is one.
fn rfc3339(at: Option<&prost_types::Timestamp>) -> Option<String> {
    crate::format::system_time(at).map(crate::format::rfc3339_seconds)
}
