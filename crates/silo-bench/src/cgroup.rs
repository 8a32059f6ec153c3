//! The cost of a job's cgroup on this host: create it, write the limits of the launch
//! benchmark (64 MiB, 50% cpu, 64 pids), remove it, as the server does per job.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::measure::latency;

/// Times `runs` create + limits + remove cycles (after `warmup` untimed ones) in a
/// throw-away subtree `silo-bench-<pid>`, removed afterwards.
pub fn cost(runs: usize, warmup: usize) -> Result<Value> {
    let layout = silo_cgroup::detect().context("detecting the cgroup layout")?;
    let described = layout.to_string();
    let name = format!("silo-bench-{}", std::process::id());
    let root = silo_cgroup::CgroupRoot::open(layout, &name)
        .context("creating the bench's cgroup subtree")?;
    let limits = silo_cgroup::Limits {
        cpu_percent: Some(50),
        memory_bytes: Some(64 << 20),
        pids: Some(64),
        ..Default::default()
    };
    let mut total = Vec::with_capacity(runs);
    let (mut create, mut apply, mut remove) = (Vec::new(), Vec::new(), Vec::new());
    let mut failure = None;
    for i in 0..runs + warmup {
        let t0 = Instant::now();
        let job = match root.create_job(&format!("job{i}")) {
            Ok(job) => job,
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        };
        let t1 = Instant::now();
        let applied = job.apply(&limits);
        let t2 = Instant::now();
        let removed = job.remove();
        let t3 = Instant::now();
        if let Err(e) = applied.and(removed) {
            failure = Some(e.to_string());
            break;
        }
        if i >= warmup {
            total.push(t3 - t0);
            create.push(t1 - t0);
            apply.push(t2 - t1);
            remove.push(t3 - t2);
        }
    }
    let _ = root.destroy();
    if let Some(e) = failure {
        anyhow::bail!("{e}");
    }
    let p50 = |v: Vec<Duration>| latency(v)["p50_ms"].clone();
    let mut out = latency(total);
    out["layout"] = json!(described);
    out["create_p50_ms"] = p50(create);
    out["limits_p50_ms"] = p50(apply);
    out["remove_p50_ms"] = p50(remove);
    Ok(out)
}
