//! Pictures of the job graph: exact text, Mermaid and DOT, with and without states.

use silo_workflow::graph::{Format, layers, render};
use silo_workflow::schedule::NodeState;
use silo_workflow::spec::WorkflowSpec;

const PIPELINE: &str = r#"
name: ml-pipeline
defaults: {command: x}
jobs:
  fetch:
  train:
    requires:
      - fetch: COMPLETED
  evaluate:
    needs: [train]
  lint:
  report:
    requires:
      - evaluate: FINISHED
      - lint: FAILED
"#;

fn pipeline() -> WorkflowSpec {
    WorkflowSpec::parse(PIPELINE).unwrap()
}

const STATES: [NodeState; 5] = [
    NodeState::Completed,
    NodeState::Running,
    NodeState::Waiting,
    NodeState::Backoff { until_ms: 5 },
    NodeState::Waiting,
];

#[test]
fn jobs_are_layered_by_their_longest_path_from_a_root() {
    assert_eq!(layers(&pipeline()), [0, 1, 2, 0, 3]);
}

#[test]
fn text_lists_layers_with_what_each_job_requires() {
    let expected = "\
1  fetch
   lint
2  train     ← fetch: COMPLETED
3  evaluate  ← train: COMPLETED
4  report    ← evaluate: FINISHED, lint: FAILED
";
    assert_eq!(render(&pipeline(), None, Format::Text), expected);
}

#[test]
fn text_with_states_shows_each_jobs_state() {
    let expected = "\
1  fetch     COMPLETED
   lint      BACKOFF
2  train     RUNNING    ← fetch: COMPLETED
3  evaluate  WAITING    ← train: COMPLETED
4  report    WAITING    ← evaluate: FINISHED, lint: FAILED
";
    assert_eq!(render(&pipeline(), Some(&STATES), Format::Text), expected);
}

#[test]
fn mermaid_is_a_top_down_flowchart_with_labelled_edges() {
    let expected = r#"flowchart TD
    n0["fetch"]
    n1["train"]
    n2["evaluate"]
    n3["lint"]
    n4["report"]
    n0 -->|COMPLETED| n1
    n1 -->|COMPLETED| n2
    n2 -->|FINISHED| n4
    n3 -->|FAILED| n4
"#;
    assert_eq!(render(&pipeline(), None, Format::Mermaid), expected);
}

#[test]
fn mermaid_with_states_colours_jobs_by_state() {
    let expected = r##"flowchart TD
    n0["fetch (COMPLETED)"]
    n1["train (RUNNING)"]
    n2["evaluate (WAITING)"]
    n3["lint (BACKOFF)"]
    n4["report (WAITING)"]
    n0 -->|COMPLETED| n1
    n1 -->|COMPLETED| n2
    n2 -->|FINISHED| n4
    n3 -->|FAILED| n4
    classDef waiting fill:#f5f5f5,stroke:#9e9e9e
    class n2,n4 waiting
    classDef running fill:#e3f2fd,stroke:#1e88e5
    class n1 running
    classDef backoff fill:#fff8e1,stroke:#f9a825
    class n3 backoff
    classDef completed fill:#e8f5e9,stroke:#43a047
    class n0 completed
"##;
    assert_eq!(
        render(&pipeline(), Some(&STATES), Format::Mermaid),
        expected
    );
}

#[test]
fn dot_is_a_digraph_named_after_the_workflow() {
    let expected = r#"digraph "ml-pipeline" {
    rankdir=TB;
    node [shape=box];
    "fetch";
    "train";
    "evaluate";
    "lint";
    "report";
    "fetch" -> "train" [label="COMPLETED"];
    "train" -> "evaluate" [label="COMPLETED"];
    "evaluate" -> "report" [label="FINISHED"];
    "lint" -> "report" [label="FAILED"];
}
"#;
    assert_eq!(render(&pipeline(), None, Format::Dot), expected);
}

#[test]
fn dot_with_states_fills_jobs_by_state() {
    let spec = WorkflowSpec::parse(
        "name: \"say \\\"hi\\\"\"\njobs:\n  a: {command: x}\n  b: {command: x, needs: [a]}\n",
    )
    .unwrap();
    let expected = r##"digraph "say \"hi\"" {
    rankdir=TB;
    node [shape=box];
    "a" [label="a\nFAILED", style=filled, fillcolor="#ffebee", color="#e53935"];
    "b" [label="b\nSKIPPED", style=filled, fillcolor="#eeeeee", color="#bdbdbd"];
    "a" -> "b" [label="COMPLETED"];
}
"##;
    let states = [NodeState::Failed, NodeState::Skipped];
    assert_eq!(render(&spec, Some(&states), Format::Dot), expected);
}

#[test]
fn missing_states_are_left_out() {
    let states = [NodeState::Completed];
    let text = render(&pipeline(), Some(&states), Format::Text);
    assert!(
        text.starts_with("1  fetch     COMPLETED\n   lint\n2  train"),
        "{text}"
    );
}

#[test]
fn rendering_is_deterministic() {
    for format in [Format::Text, Format::Mermaid, Format::Dot] {
        let first = render(&pipeline(), Some(&STATES), format);
        for _ in 0..5 {
            assert_eq!(render(&pipeline(), Some(&STATES), format), first);
        }
    }
}
