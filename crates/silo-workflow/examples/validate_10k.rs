//! Measures how long reading and checking a workflow of 10,000 jobs takes: a chain through
//! every job plus a fan-out from the first. Run with
//! `cargo run --release -p silo-workflow --example validate_10k`.

use std::time::{Duration, Instant};

use silo_workflow::spec::WorkflowSpec;

fn main() {
    let mut yaml =
        String::from("name: big\njobs:\n  j0: {command: x}\n  j1: {command: x, needs: [j0]}\n");
    for i in 2..10_000 {
        yaml.push_str(&format!(
            "  j{i}:\n    command: x\n    needs: [j{}]\n    requires:\n      - j0: FINISHED\n",
            i - 1
        ));
    }
    let mut times: Vec<Duration> = (0..11)
        .map(|_| {
            let start = Instant::now();
            let spec = WorkflowSpec::parse(&yaml).expect("the workflow is valid");
            let took = start.elapsed();
            assert_eq!(spec.jobs.len(), 10_000);
            took
        })
        .collect();
    times.sort();
    println!(
        "10,000 jobs, {} bytes of YAML: parse and validate min {:?}, median {:?}, max {:?}",
        yaml.len(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
}
