//! The validation of a large workflow in-process: `WorkflowSpec::parse` (YAML, every rule,
//! the cycle check) of a pipeline of fan-outs and fan-ins, as the server does before it
//! stores a workflow.

use std::time::Instant;

use anyhow::{Result, ensure};
use serde_json::{Value, json};
use silo_workflow::spec::WorkflowSpec;

use super::shapes;
use crate::measure::round;

/// Parses [`shapes::stages`]`(stages, width)` `repeat` times and reports the median time;
/// fails unless every parse accepts it with all its jobs and requirements.
pub fn validate(stages: usize, width: usize, repeat: usize) -> Result<Value> {
    ensure!(stages > 0, "--stages must be positive");
    ensure!(
        width >= 2,
        "--width must be at least 2 (a hub and a worker)"
    );
    let yaml = shapes::stages("bench-validate", stages, width);
    let (jobs, requirements) = (stages * width, shapes::stage_requirements(stages, width));
    let mut times = Vec::new();
    for _ in 0..repeat.max(1) {
        let start = Instant::now();
        let parsed = WorkflowSpec::parse(&yaml);
        let took = start.elapsed().as_secs_f64() * 1e3;
        let spec = parsed.map_err(|e| anyhow::anyhow!("WorkflowSpec::parse refused it: {e}"))?;
        let found: usize = spec.jobs.iter().map(|j| j.requires.len()).sum();
        ensure!(
            spec.jobs.len() == jobs && found == requirements,
            "parsed {} jobs and {found} requirements, wrote {jobs} and {requirements}",
            spec.jobs.len()
        );
        times.push(took);
    }
    times.sort_by(f64::total_cmp);
    Ok(json!({
        "jobs": jobs,
        "requirements": requirements,
        "yaml_bytes": yaml.len(),
        "median_ms": round(times[times.len() / 2]),
        "all_ms": times.iter().map(|t| round(*t)).collect::<Vec<_>>(),
    }))
}
