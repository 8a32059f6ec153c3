//! Pictures of a workflow's job graph: a layered listing for terminals, Mermaid and
//! Graphviz DOT. The output depends only on the spec and the states given, so it can be
//! compared exactly.

use std::fmt::Write as _;

use crate::schedule::NodeState;
use crate::spec::WorkflowSpec;

/// The kind of picture [`render`] draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Jobs in topological layers, one per line, each with the jobs it requires:
    ///
    /// ```text
    /// 1  fetch
    /// 2  train   ← fetch: COMPLETED
    /// 3  report  ← train: FINISHED
    /// ```
    Text,
    /// A Mermaid `flowchart TD`, edges labelled with their conditions.
    Mermaid,
    /// A Graphviz `digraph`, edges labelled with their conditions.
    Dot,
}

/// Draws the workflow's jobs and requirements; with `states` (one per job, in the spec's
/// order), each job also shows its state. Edges run from the required job to the job that
/// requires it. A state missing from a short `states` is left out; a requirement whose index
/// is outside the jobs is not drawn.
pub fn render(spec: &WorkflowSpec, states: Option<&[NodeState]>, format: Format) -> String {
    let state = |job: usize| states.and_then(|s| s.get(job)).copied();
    match format {
        Format::Text => text(spec, &state),
        Format::Mermaid => mermaid(spec, &state),
        Format::Dot => dot(spec, &state),
    }
}

/// Each job's layer (0-based): one more than the highest layer of the jobs it requires.
/// Jobs on a cycle (only in a spec built by hand) go one layer below all others.
pub fn layers(spec: &WorkflowSpec) -> Vec<usize> {
    let n = spec.jobs.len();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting_on = vec![0usize; n];
    for (job, spec_job) in spec.jobs.iter().enumerate() {
        for requirement in &spec_job.requires {
            if requirement.job < n {
                dependents[requirement.job].push(job);
                waiting_on[job] += 1;
            }
        }
    }
    let mut layer = vec![0usize; n];
    let mut placed = vec![false; n];
    let mut queue: std::collections::VecDeque<usize> =
        (0..n).filter(|&job| waiting_on[job] == 0).collect();
    while let Some(job) = queue.pop_front() {
        placed[job] = true;
        for &next in &dependents[job] {
            layer[next] = layer[next].max(layer[job] + 1);
            waiting_on[next] -= 1;
            if waiting_on[next] == 0 {
                queue.push_back(next);
            }
        }
    }
    let below = layer.iter().max().map_or(0, |&deepest| deepest + 1);
    for job in 0..n {
        if !placed[job] {
            layer[job] = below;
        }
    }
    layer
}

fn text(spec: &WorkflowSpec, state: &dyn Fn(usize) -> Option<NodeState>) -> String {
    let layer = layers(spec);
    let mut order: Vec<usize> = (0..spec.jobs.len()).collect();
    order.sort_by_key(|&job| (layer[job], job));
    let number_width = layer
        .iter()
        .max()
        .map_or(1, |&deepest| (deepest + 1).to_string().len());
    let name_width = spec
        .jobs
        .iter()
        .map(|job| job.name.chars().count())
        .max()
        .unwrap_or(0);
    let state_width = (0..spec.jobs.len())
        .filter_map(state)
        .map(|s| s.as_str().len())
        .max()
        .unwrap_or(0);

    let mut out = String::new();
    let mut previous_layer = None;
    for job in order {
        let number = if previous_layer == Some(layer[job]) {
            String::new()
        } else {
            (layer[job] + 1).to_string()
        };
        previous_layer = Some(layer[job]);
        let mut line = format!(
            "{number:<number_width$}  {:<name_width$}",
            spec.jobs[job].name
        );
        if state_width > 0 {
            let shown = state(job).map_or("", NodeState::as_str);
            let _ = write!(line, "  {shown:<state_width$}");
        }
        let requires: Vec<String> = spec.jobs[job]
            .requires
            .iter()
            .filter_map(|r| Some(format!("{}: {}", spec.jobs.get(r.job)?.name, r.condition)))
            .collect();
        if !requires.is_empty() {
            let _ = write!(line, "  ← {}", requires.join(", "));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The look of each state in Mermaid and DOT: (class name, fill colour, border colour).
fn style(state: NodeState) -> (&'static str, &'static str, &'static str) {
    match state {
        NodeState::Waiting => ("waiting", "#f5f5f5", "#9e9e9e"),
        NodeState::Running => ("running", "#e3f2fd", "#1e88e5"),
        NodeState::Backoff { .. } => ("backoff", "#fff8e1", "#f9a825"),
        NodeState::Completed => ("completed", "#e8f5e9", "#43a047"),
        NodeState::Failed => ("failed", "#ffebee", "#e53935"),
        NodeState::Stopped => ("stopped", "#fbe9e7", "#f4511e"),
        NodeState::Skipped => ("skipped", "#eeeeee", "#bdbdbd"),
    }
}

/// The states in a fixed order, for deterministic class definitions.
const STATE_ORDER: [NodeState; 7] = [
    NodeState::Waiting,
    NodeState::Running,
    NodeState::Backoff { until_ms: 0 },
    NodeState::Completed,
    NodeState::Failed,
    NodeState::Stopped,
    NodeState::Skipped,
];

fn mermaid(spec: &WorkflowSpec, state: &dyn Fn(usize) -> Option<NodeState>) -> String {
    let label = |text: &str| text.replace('"', "#quot;");
    let mut out = String::from("flowchart TD\n");
    for (i, job) in spec.jobs.iter().enumerate() {
        match state(i) {
            Some(s) => {
                let _ = writeln!(out, "    n{i}[\"{} ({s})\"]", label(&job.name));
            }
            None => {
                let _ = writeln!(out, "    n{i}[\"{}\"]", label(&job.name));
            }
        }
    }
    for (i, job) in spec.jobs.iter().enumerate() {
        for requirement in job.requires.iter().filter(|r| r.job < spec.jobs.len()) {
            let _ = writeln!(
                out,
                "    n{} -->|{}| n{i}",
                requirement.job, requirement.condition
            );
        }
    }
    for shown in STATE_ORDER {
        let (class, fill, stroke) = style(shown);
        let members: Vec<String> = (0..spec.jobs.len())
            .filter(|&i| state(i).is_some_and(|s| s.as_str() == shown.as_str()))
            .map(|i| format!("n{i}"))
            .collect();
        if !members.is_empty() {
            let _ = writeln!(out, "    classDef {class} fill:{fill},stroke:{stroke}");
            let _ = writeln!(out, "    class {} {class}", members.join(","));
        }
    }
    out
}

fn dot(spec: &WorkflowSpec, state: &dyn Fn(usize) -> Option<NodeState>) -> String {
    let quote = |text: &str| format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!(
        "digraph {} {{\n    rankdir=TB;\n    node [shape=box];\n",
        quote(&spec.name)
    );
    for (i, job) in spec.jobs.iter().enumerate() {
        match state(i) {
            Some(s) => {
                let (_, fill, stroke) = style(s);
                let _ = writeln!(
                    out,
                    "    {} [label=\"{}\\n{s}\", style=filled, fillcolor=\"{fill}\", color=\"{stroke}\"];",
                    quote(&job.name),
                    job.name.replace('\\', "\\\\").replace('"', "\\\""),
                );
            }
            None => {
                let _ = writeln!(out, "    {};", quote(&job.name));
            }
        }
    }
    for job in &spec.jobs {
        for requirement in &job.requires {
            if let Some(upstream) = spec.jobs.get(requirement.job) {
                let _ = writeln!(
                    out,
                    "    {} -> {} [label=\"{}\"];",
                    quote(&upstream.name),
                    quote(&job.name),
                    requirement.condition
                );
            }
        }
    }
    out.push_str("}\n");
    out
}
