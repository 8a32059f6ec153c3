//! The workflows the benchmarks run, written as YAML the way a person would: every job runs
//! `true`, and `needs` draws the graph.

/// A workflow file: its header lines, then one line per job under `jobs:`.
fn file(header: &[String], jobs: impl Iterator<Item = String>) -> String {
    let mut lines: Vec<String> = header.to_vec();
    lines.push("jobs:".into());
    lines.extend(jobs.map(|job| format!("  {job}")));
    lines.push(String::new());
    lines.join("\n")
}

/// A job running `true` that needs `needs` (none: a root).
fn job(name: &str, needs: &[String]) -> String {
    job_running(name, "command: 'true'", needs)
}

/// A job running `command` (YAML keys) that needs `needs` (none: a root).
fn job_running(name: &str, command: &str, needs: &[String]) -> String {
    if needs.is_empty() {
        format!("{name}: {{{command}}}")
    } else {
        format!("{name}: {{{command}, needs: [{}]}}", needs.join(", "))
    }
}

/// `jobs` jobs in a line, `j0` to `j{jobs-1}`, each needing the one before it; each runs
/// `true`, or `sleep` for `run_ms` milliseconds when that is not 0.
pub fn chain(name: &str, jobs: usize, run_ms: u64) -> String {
    let command = match run_ms {
        0 => "command: 'true'".to_string(),
        ms => format!("command: sleep, args: ['{}.{:03}']", ms / 1000, ms % 1000),
    };
    file(
        &[format!("name: {name}")],
        (0..jobs).map(|i| match i {
            0 => job_running("j0", &command, &[]),
            _ => job_running(&format!("j{i}"), &command, &[format!("j{}", i - 1)]),
        }),
    )
}

/// One job `root`, then `children` jobs `c0`, `c1`, ... that each need it, at most
/// `max_parallel` of all of them running at once.
pub fn fan_out(name: &str, children: usize, max_parallel: u32) -> String {
    let root = std::iter::once(job("root", &[]));
    let children = (0..children).map(|i| job(&format!("c{i}"), &["root".into()]));
    file(
        &[
            format!("name: {name}"),
            format!("max_parallel: {max_parallel}"),
        ],
        root.chain(children),
    )
}

/// A pipeline of `stages` stages of `width` jobs each (`width` >= 2): stage `s` is a hub
/// `h{s}` and `width - 1` workers `w{s}_{k}` that need it (a fan-out); every hub after the
/// first needs all the workers of the stage before it (a fan-in). It has `stages * width`
/// jobs and [`stage_requirements`] requirements.
pub fn stages(name: &str, stages: usize, width: usize) -> String {
    assert!(width >= 2, "a stage is a hub and at least one worker");
    let workers = |s: usize| (1..width).map(move |k| format!("w{s}_{k}"));
    file(
        &[format!("name: {name}")],
        (0..stages).flat_map(|s| {
            let before: Vec<String> = if s == 0 {
                vec![]
            } else {
                workers(s - 1).collect()
            };
            let hub = format!("h{s}");
            let each = workers(s).map(move |w| job(&w, &[format!("h{s}")]));
            std::iter::once(job(&hub, &before)).chain(each)
        }),
    )
}

/// The requirements [`stages`] writes: each worker needs its hub, and each hub after the
/// first needs the workers before it.
pub fn stage_requirements(stages: usize, width: usize) -> usize {
    let workers = width - 1;
    stages * workers + stages.saturating_sub(1) * workers
}

#[cfg(test)]
mod tests {
    use super::*;
    use silo_workflow::spec::WorkflowSpec;

    fn parse(yaml: &str) -> WorkflowSpec {
        WorkflowSpec::parse(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
    }

    #[test]
    fn a_chain_has_each_job_need_the_one_before() {
        let spec = parse(&chain("c", 4, 0));
        assert_eq!(spec.jobs.len(), 4);
        assert!(spec.jobs[0].requires.is_empty());
        for i in 1..4 {
            let needs: Vec<usize> = spec.jobs[i].requires.iter().map(|r| r.job).collect();
            assert_eq!(needs, [i - 1]);
        }
    }

    #[test]
    fn a_fan_out_has_every_child_need_the_root_under_max_parallel() {
        let spec = parse(&fan_out("f", 5, 2));
        assert_eq!(spec.jobs.len(), 6);
        assert_eq!(spec.max_parallel, Some(2));
        assert!(
            spec.jobs[1..]
                .iter()
                .all(|j| j.requires.len() == 1 && j.requires[0].job == 0)
        );
    }

    #[test]
    fn stages_have_the_jobs_and_requirements_they_promise() {
        for (n, width) in [(1, 2), (3, 3), (4, 5)] {
            let spec = parse(&stages("s", n, width));
            let requires: usize = spec.jobs.iter().map(|j| j.requires.len()).sum();
            assert_eq!(spec.jobs.len(), n * width);
            assert_eq!(requires, stage_requirements(n, width));
        }
    }
}
