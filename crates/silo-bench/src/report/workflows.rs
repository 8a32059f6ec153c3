//! The "workflows" section: how soon a job starts after the job it needs has ended, a wide
//! fan-out under `max_parallel`, the validation of a 10,000-job workflow, and the server's
//! memory per workflow node.

use super::{Results, Row, ms, text, verdict};

/// The `silo-bench workflow` line and the `silo-bench workflow-validate` line.
const ON_SERVER: &str = "workflow";
const VALIDATE: &str = "workflow validate";

/// What engines that poll for their jobs' ends take per edge: the system silo learns from
/// polls every 2 s / 5 s (a dependent started up to about 7 s after its parent), Argo
/// about 10 s by default. Not measured here, so no ratio.
const POLLING_PEERS: &str = "polling engines: seconds";

pub(super) fn rows(r: &Results) -> Vec<Row> {
    let mut rows = Vec::new();
    let field = |f: &str| r.field(ON_SERVER, f);
    let count = |f: &str, fallback: &str| field(f).map_or(fallback.to_string(), |n| format!("{n}"));

    // Per edge of the chain: child started_at minus parent ended_at (the server's clocks),
    // and at the same quantile the two parts of it: the engine's reaction (parent ended ->
    // child created) and the child's launch (created -> started). First the chain of
    // `true` (back to back: each edge meets the previous job's teardown and the ready
    // inits' refill), then the spaced chain, whose jobs run long enough for the host to
    // have done that work.
    let jobs = count("chain_jobs", "?");
    let spaced_ms = count("spaced_chain_ms", "?");
    // The spaced chain is left out of a line that has none (`--spaced-chain-ms 0`).
    let chains = [
        ("", format!("{jobs}-job chain of true"), true),
        (
            "spaced_",
            format!("{jobs}-job chain of {spaced_ms} ms jobs (host idle at each edge)"),
            field("spaced_chain_edges").is_ok(),
        ),
    ];
    for (prefix, chain, measured) in chains {
        if !measured {
            continue;
        }
        for (q, max, target) in [("p50", 2.0, "at most 2 ms"), ("p99", 10.0, "at most 10 ms")] {
            let edge = field(&format!("{prefix}edge_{q}_ms"));
            let mut parts = field(&format!("{prefix}edge_reaction_{q}_ms"))
                .and_then(|react| Ok((react, field(&format!("{prefix}edge_launch_{q}_ms"))?)))
                .map_or(String::new(), |(react, launch)| {
                    format!("; {q} of its parts: engine {react:.2} ms, launch {launch:.2} ms")
                });
            // A launch that found no ready init waited for one being prepared, or made its
            // own: most of a slow edge.
            if q == "p50"
                && let Ok(misses) = field(&format!("{prefix}chain_pool_misses"))
            {
                parts += &format!("; {misses} of its launches found no ready init");
            }
            rows.push(Row {
                section: "workflows",
                what: format!("edge: child started - parent ended, {chain}, {q}{parts}"),
                silo: text(&edge, |v| ms(*v)),
                peer: POLLING_PEERS.into(),
                peer_value: "-".into(),
                compare: "-".into(),
                target,
                met: verdict(edge.as_ref().ok().map(|v| *v <= max)),
            });
        }
    }

    // The fan-out: RunWorkflow to the final state seen; the line has its numbers only when
    // every job ran exactly once and no more than max_parallel ran at once.
    let fan = r.get(ON_SERVER).and_then(|_| {
        Ok((
            r.num(ON_SERVER, "fan_out_wall_s")?,
            r.num(ON_SERVER, "fan_out_jobs_per_s")?,
        ))
    });
    let checked = r
        .num(ON_SERVER, "fan_out_peak_running")
        .map_or(String::new(), |peak| {
            format!("; every job ran once, at most {peak} at once")
        });
    let server = field("fan_out_server_s").map_or(String::new(), |s| {
        format!(" (server's created -> ended {s:.2} s)")
    });
    rows.push(Row {
        section: "workflows",
        what: format!(
            "fan-out: 1 + {} jobs of true, max_parallel {}, RunWorkflow -> final state{checked}",
            field("fan_out_jobs").map_or("?".into(), |n| format!("{}", n - 1.0)),
            count("max_parallel", "?"),
        ),
        silo: text(&fan, |(s, rate)| {
            format!("{s:.2} s, {rate:.0} jobs/s{server}")
        }),
        peer: "-".into(),
        peer_value: "-".into(),
        compare: "-".into(),
        target: "",
        met: verdict(None),
    });

    // Validation of a 10,000-job workflow, in-process.
    let validate = r.num(VALIDATE, "median_ms");
    let shape = r.get(VALIDATE).ok().map_or(String::new(), |v| {
        format!(
            "{} jobs, {} needs ({} stages of fan-out + fan-in)",
            v["jobs"], v["requirements"], v["stages"]
        )
    });
    rows.push(Row {
        section: "workflows",
        what: format!(
            "validate {shape}: WorkflowSpec::parse, median of {}",
            r.get(VALIDATE)
                .ok()
                .and_then(|v| v["all_ms"].as_array().map(Vec::len))
                .map_or("?".into(), |n| n.to_string())
        ),
        silo: text(&validate, |v| ms(*v)),
        peer: "-".into(),
        peer_value: "-".into(),
        compare: "-".into(),
        target: "at most 100 ms",
        met: verdict(validate.as_ref().ok().map(|v| *v <= 100.0)),
    });

    // Memory per node across the fan-out, beside a plain job's (the memory row): a node's
    // growth includes its job's.
    let per_node = field("rss_per_node_kib");
    let per_job = r
        .num("memory", "rss_growth_per_1000_kib")
        .map(|k| k / 1000.0);
    let both = per_node.as_ref().ok().zip(per_job.as_ref().ok());
    rows.push(Row {
        section: "workflows",
        what: format!(
            "server RSS growth per workflow node, its job included (over the {}-node fan-out)",
            count("fan_out_jobs", "?")
        ),
        silo: text(&per_node, |k| format!("{k:.2} KiB")),
        peer: "silo, per finished job (memory row)".into(),
        peer_value: text(&per_job, |k| format!("{k:.2} KiB")),
        compare: both.map_or("-".into(), |(n, j)| format!("{:+.2} KiB", n - j)),
        target: "",
        met: verdict(None),
    });
    rows
}
