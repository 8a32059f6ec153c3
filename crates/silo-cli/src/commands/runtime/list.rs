//! `silo runtime list`: the installed runtimes as a borderless table (like `silo job
//! list`), by name then newest version first.

use std::time::SystemTime;

use comfy_table::{ContentArrangement, Table, presets::NOTHING};
use silo_proto::v1::{ListRuntimesRequest, Runtime};

use crate::cli::{GlobalOptions, RuntimeListArgs};
use crate::format::{format_age, human_size, single_line, system_time, truncate};
use crate::output::{print, print_json};
use crate::session::Session;
use crate::view::RuntimeView;

/// How many characters of a signer's fingerprint the table shows.
const SIGNER_WIDTH: usize = 17;

/// Lists the runtimes in the server's order, as a table or a JSON array.
pub async fn list(global: &GlobalOptions, args: RuntimeListArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    let runtimes = match session.runtimes.list_runtimes(ListRuntimesRequest {}).await {
        Ok(response) => response.into_inner().runtimes,
        Err(status) => return Err(session.runtime_error(&status).into()),
    };
    if args.json {
        let views: Vec<RuntimeView> = runtimes.iter().map(RuntimeView::from).collect();
        return print_json(&views);
    }
    print(&render_table(&runtimes, SystemTime::now()))
}

/// The table: NAME, VERSION, SIZE, SHARED (bytes stored once with other runtimes),
/// ENTRIES, INSTALLED (age), USED BY (jobs now in it), SIGNER (`this server`, or the start
/// of the key's fingerprint). Columns are separated by at least three blanks, lines carry
/// no trailing blanks, and the text ends with a newline. An empty list prints the header
/// alone.
pub fn render_table(runtimes: &[Runtime], now: SystemTime) -> String {
    let mut table = Table::new();
    table
        .load_preset(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header([
            "NAME",
            "VERSION",
            "SIZE",
            "SHARED",
            "ENTRIES",
            "INSTALLED",
            "USED BY",
            "SIGNER",
        ]);
    for runtime in runtimes {
        let installed = system_time(runtime.installed_at.as_ref());
        table.add_row([
            single_line(&runtime.name),
            single_line(&runtime.version),
            human_size(runtime.size_bytes),
            match runtime.shared_bytes {
                0 => "-".to_owned(),
                shared => human_size(shared),
            },
            runtime.entries.to_string(),
            installed.map_or_else(|| "-".to_owned(), |at| format_age(at, now)),
            match runtime.used_by_jobs {
                0 => "-".to_owned(),
                1 => "1 job".to_owned(),
                jobs => format!("{jobs} jobs"),
            },
            signer(runtime),
        ]);
    }
    crate::format::table_text(table)
}

fn signer(runtime: &Runtime) -> String {
    if runtime.signed_here {
        "this server".to_owned()
    } else if runtime.signer.is_empty() {
        "-".to_owned()
    } else {
        truncate(&single_line(&runtime.signer), SIGNER_WIDTH)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_table_shows_one_aligned_line_per_runtime() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let python = Runtime {
            name: "python-3.11".into(),
            version: "1.0.0".into(),
            size_bytes: 149_212_365,
            shared_bytes: 12 << 20,
            entries: 5123,
            installed_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000 - 3 * 86_400,
                nanos: 0,
            }),
            used_by_jobs: 2,
            signer: "3f2a1b2c4d5e6f708192a3b4c5d6e7f8".into(),
            signed_here: true,
            ..Runtime::default()
        };
        let node = Runtime {
            name: "node-20".into(),
            version: "0.1.0-rc.1".into(),
            size_bytes: 900,
            entries: 12,
            signer: "3f2a1b2c4d5e6f708192a3b4c5d6e7f8".into(),
            ..Runtime::default()
        };
        let expected = "\
NAME          VERSION      SIZE        SHARED     ENTRIES   INSTALLED   USED BY   SIGNER
python-3.11   1.0.0        142.3 MiB   12.0 MiB   5123      3d ago      2 jobs    this server
node-20       0.1.0-rc.1   900 bytes   -          12        -           -         3f2a1b2c4d5e6f70…
";
        assert_eq!(render_table(&[python, node], now), expected);
    }

    #[test]
    fn an_empty_list_prints_the_header_alone() {
        let table = render_table(&[], SystemTime::UNIX_EPOCH);
        assert_eq!(table.lines().count(), 1, "{table}");
        assert!(table.starts_with("NAME"), "{table}");
    }
}
