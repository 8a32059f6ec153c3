//! The scheduler: which jobs start when, what is skipped and why, retries, cancel, retry of
//! a whole run, and restore after a restart.

use std::sync::Arc;

use silo_workflow::schedule::{Action, Node, NodeState, Outcome, Run, RunState};
use silo_workflow::spec::{Condition, Requirement, WorkflowSpec};

/// A workflow whose jobs all run `x`; `jobs` is the YAML under `jobs:`, `top` any
/// workflow keys.
fn spec_with(top: &str, jobs: &str) -> Arc<WorkflowSpec> {
    let yaml = format!("name: t\n{top}defaults: {{command: x}}\njobs:\n{jobs}");
    Arc::new(WorkflowSpec::parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")))
}

fn spec(jobs: &str) -> Arc<WorkflowSpec> {
    spec_with("", jobs)
}

fn starts(nodes: &[usize]) -> Vec<Action> {
    nodes.iter().map(|&node| Action::Start { node }).collect()
}

fn skip(node: usize, reason: &str) -> Action {
    Action::Skip {
        node,
        reason: reason.into(),
    }
}

fn failed(reason: &str) -> Outcome {
    Outcome::Failed(reason.into())
}

fn states(run: &Run) -> Vec<NodeState> {
    run.nodes().iter().map(|n| n.state).collect()
}

use NodeState::{Completed, Failed, Running, Skipped, Stopped, Waiting};

#[test]
fn a_diamond_runs_the_middle_in_parallel_and_the_bottom_last() {
    let mut run = Run::new(spec(
        "  top:\n  left: {needs: [top]}\n  right: {needs: [top]}\n  bottom: {needs: [left, right]}\n",
    ));
    assert_eq!(run.next(0), starts(&[0]));
    assert_eq!(run.next(0), vec![], "nothing more starts while top runs");
    run.ended(0, Outcome::Completed, 10);
    assert_eq!(run.next(10), starts(&[1, 2]));
    run.ended(2, Outcome::Completed, 20);
    assert_eq!(run.next(20), vec![], "bottom waits for left too");
    run.ended(1, Outcome::Completed, 30);
    assert_eq!(run.next(30), starts(&[3]));
    assert_eq!(run.state(), RunState::Running);
    run.ended(3, Outcome::Completed, 40);
    assert_eq!(run.next(40), vec![]);
    assert_eq!(run.state(), RunState::Completed);
    assert_eq!(run.done_count(), (4, 4));
    assert!(
        run.nodes()
            .iter()
            .all(|n| n.attempts == 1 && n.reason.is_empty())
    );
}

#[test]
fn a_fan_out_of_100_starts_every_branch_at_once_in_file_order() {
    let mut jobs = String::from("  root:\n");
    for i in 0..100 {
        jobs.push_str(&format!("  leaf{i}: {{needs: [root]}}\n"));
    }
    let mut run = Run::new(spec(&jobs));
    assert_eq!(run.next(0), starts(&[0]));
    run.ended(0, Outcome::Completed, 1);
    assert_eq!(run.next(1), starts(&(1..=100).collect::<Vec<_>>()));
    assert_eq!(run.done_count(), (1, 101));
}

#[test]
fn a_fan_in_starts_only_after_its_last_input() {
    let mut jobs = String::new();
    let mut names = Vec::new();
    for i in 0..10 {
        jobs.push_str(&format!("  in{i}:\n"));
        names.push(format!("in{i}"));
    }
    jobs.push_str(&format!("  sink: {{needs: [{}]}}\n", names.join(", ")));
    let mut run = Run::new(spec(&jobs));
    assert_eq!(run.next(0), starts(&(0..10).collect::<Vec<_>>()));
    for i in 0..9 {
        run.ended(i, Outcome::Completed, 1);
        assert_eq!(run.next(1), vec![], "after input {i}");
    }
    run.ended(9, Outcome::Completed, 2);
    assert_eq!(run.next(2), starts(&[10]));
}

#[test]
fn a_failure_skips_its_dependents_while_other_branches_continue() {
    let mut run = Run::new(spec(
        "  train:\n  report: {needs: [train]}\n  other:\n  after_other: {needs: [other]}\n",
    ));
    assert_eq!(run.next(0), starts(&[0, 2]));
    run.ended(0, failed("exit code 1"), 5);
    assert_eq!(
        run.next(5),
        vec![skip(1, "train ended FAILED; report needs COMPLETED")]
    );
    assert_eq!(run.state(), RunState::Running, "other still runs");
    run.ended(2, Outcome::Completed, 6);
    assert_eq!(run.next(6), starts(&[3]));
    run.ended(3, Outcome::Completed, 7);
    assert_eq!(run.next(7), vec![]);
    assert_eq!(states(&run), [Failed, Skipped, Completed, Completed]);
    assert_eq!(run.nodes()[0].reason, "exit code 1");
    assert_eq!(
        run.nodes()[1].reason,
        "train ended FAILED; report needs COMPLETED"
    );
    assert_eq!(
        run.state(),
        RunState::Failed("train failed: exit code 1".into())
    );
}

#[test]
fn fail_fast_starts_nothing_more_and_skips_what_waits() {
    let mut run = Run::new(spec_with(
        "fail_fast: true\nmax_parallel: 2\n",
        "  a:\n  b:\n  c:\n  d: {needs: [b]}\n",
    ));
    assert_eq!(run.next(0), starts(&[0, 1]));
    run.ended(0, failed("exit code 2"), 1);
    assert_eq!(
        run.next(1),
        vec![
            skip(2, "fail_fast: a failed"),
            skip(3, "fail_fast: a failed"),
        ]
    );
    assert_eq!(
        run.nodes()[1].state,
        Running,
        "a running job is left to end"
    );
    run.ended(1, Outcome::Completed, 2);
    assert_eq!(run.next(2), vec![]);
    assert_eq!(
        run.state(),
        RunState::Failed("a failed: exit code 2".into())
    );
}

#[test]
fn a_finished_cleanup_runs_after_a_failure_and_the_workflow_still_fails() {
    let mut run = Run::new(spec(
        "  work:\n  cleanup:\n    requires:\n      - work: FINISHED\n",
    ));
    assert_eq!(run.next(0), starts(&[0]));
    run.ended(0, failed("exit code 1"), 1);
    assert_eq!(run.next(1), starts(&[1]));
    run.ended(1, Outcome::Completed, 2);
    assert_eq!(run.next(2), vec![]);
    assert_eq!(
        run.state(),
        RunState::Failed("work failed: exit code 1".into())
    );
}

#[test]
fn skipped_propagates_through_a_chain_in_one_call() {
    let mut run = Run::new(spec(
        "  a:\n  b: {needs: [a]}\n  c: {needs: [b]}\n  d:\n    requires:\n      - c: COMPLETED\n",
    ));
    run.next(0);
    run.ended(0, failed("exit code 1"), 1);
    assert_eq!(
        run.next(1),
        vec![
            skip(1, "a ended FAILED; b needs COMPLETED"),
            skip(2, "b ended SKIPPED; c needs COMPLETED"),
            skip(3, "c ended SKIPPED; d needs COMPLETED"),
        ]
    );
    assert_eq!(run.done_count(), (4, 4));
}

#[test]
fn a_job_requiring_skipped_runs_when_its_upstream_is_skipped() {
    let mut run = Run::new(spec(
        "  a:\n  b: {needs: [a]}\n  on_skip:\n    requires:\n      - b: SKIPPED\n",
    ));
    run.next(0);
    run.ended(0, Outcome::Stopped("stopped by alice".into()), 1);
    assert_eq!(
        run.next(1),
        vec![
            skip(1, "a ended STOPPED; b needs COMPLETED"),
            Action::Start { node: 2 },
        ]
    );
}

#[test]
fn conditions_hold_exactly_for_their_end_states() {
    let cases = [
        (Condition::Completed, [true, false, false, false]),
        (Condition::Failed, [false, true, false, false]),
        (Condition::Stopped, [false, false, true, false]),
        (Condition::Skipped, [false, false, false, true]),
        (Condition::Finished, [true, true, true, true]),
    ];
    for (condition, expected) in cases {
        let holds = [Completed, Failed, Stopped, Skipped].map(|s| condition.holds(s));
        assert_eq!(holds, expected, "{condition}");
        for state in [Waiting, Running, NodeState::Backoff { until_ms: 1 }] {
            assert!(
                !condition.holds(state) && !condition.broken(state),
                "{condition} {state}"
            );
        }
    }
}

#[test]
fn a_failed_attempt_backs_off_doubling_up_to_the_cap_then_succeeds() {
    let mut run = Run::new(spec(
        "  flaky:\n    retry: {limit: 4, backoff: 1s, max_backoff: 3s}\n  next: {needs: [flaky]}\n",
    ));
    assert_eq!(run.next(0), starts(&[0]));
    // (now when attempt n fails, the wait that follows)
    let waits = [(100, 1_000), (2_000, 2_000), (5_000, 3_000), (9_000, 3_000)];
    for (attempt, (now, wait)) in waits.into_iter().enumerate() {
        run.ended(0, failed("exit code 1"), now);
        let until_ms = now + wait;
        assert_eq!(run.nodes()[0].state, NodeState::Backoff { until_ms });
        assert_eq!(
            run.nodes()[0].reason,
            format!("attempt {} failed: exit code 1", attempt + 1)
        );
        assert_eq!(run.wake_at(), Some(until_ms));
        assert_eq!(run.next(until_ms - 1), vec![], "too early");
        assert_eq!(run.next(until_ms), starts(&[0]));
        assert_eq!(run.nodes()[0].attempts, attempt as u32 + 2);
        assert_eq!(run.wake_at(), None);
    }
    run.ended(0, Outcome::Completed, 20_000);
    assert_eq!(run.next(20_000), starts(&[1]));
    assert_eq!(run.nodes()[0].attempts, 5);
}

#[test]
fn a_job_whose_retries_are_exhausted_fails_with_limit_plus_one_attempts() {
    let mut run = Run::new(spec("  flaky:\n    retry: {limit: 2, backoff: 0s}\n"));
    let mut now = 0;
    for _ in 0..3 {
        assert_eq!(run.next(now), starts(&[0]));
        now += 1;
        run.ended(0, failed("exit code 1"), now);
    }
    assert_eq!(run.next(now), vec![]);
    assert_eq!(run.nodes()[0].state, Failed);
    assert_eq!(run.nodes()[0].attempts, 3);
    assert_eq!(
        run.state(),
        RunState::Failed("flaky failed: exit code 1".into())
    );
}

#[test]
fn continue_on_failure_leaves_the_workflow_completed() {
    let mut run = Run::new(spec(
        "  lint: {continue_on_failure: true}\n  build:\n    requires:\n      - lint: FINISHED\n",
    ));
    run.next(0);
    run.ended(0, failed("3 warnings"), 1);
    assert_eq!(run.next(1), starts(&[1]));
    run.ended(1, Outcome::Completed, 2);
    assert_eq!(run.next(2), vec![]);
    assert_eq!(run.state(), RunState::Completed);
}

#[test]
fn max_parallel_caps_running_jobs_and_fills_freed_slots_in_file_order() {
    let jobs: String = (0..10).map(|i| format!("  j{i}:\n")).collect();
    let mut run = Run::new(spec_with("max_parallel: 3\n", &jobs));
    assert_eq!(run.next(0), starts(&[0, 1, 2]));
    assert_eq!(run.next(0), vec![]);
    run.ended(1, Outcome::Completed, 1);
    assert_eq!(run.next(1), starts(&[3]));
    run.ended(0, failed("x"), 2);
    run.ended(2, Outcome::Completed, 2);
    assert_eq!(run.next(2), starts(&[4, 5]));
    let running = run.nodes().iter().filter(|n| n.state == Running).count();
    assert_eq!(running, 3);
}

#[test]
fn a_backing_off_job_does_not_hold_a_slot() {
    let mut run = Run::new(spec_with(
        "max_parallel: 1\n",
        "  a:\n    retry: {limit: 1, backoff: 10s}\n  b:\n",
    ));
    assert_eq!(run.next(0), starts(&[0]));
    run.ended(0, failed("x"), 0);
    assert_eq!(run.next(0), starts(&[1]));
    assert_eq!(
        run.next(10_000),
        vec![],
        "a's time has come but b holds the slot"
    );
    run.ended(1, Outcome::Completed, 10_500);
    assert_eq!(run.next(10_500), starts(&[0]));
}

#[test]
fn cancel_stops_running_jobs_and_skips_the_rest() {
    let mut run = Run::new(spec(
        "  a:\n    retry: {limit: 5}\n  b:\n    retry: {limit: 5, backoff: 1m}\n  c: {needs: [a]}\n  d:\n",
    ));
    assert_eq!(run.next(0), starts(&[0, 1, 3]));
    run.ended(1, failed("x"), 0);
    run.ended(3, Outcome::Completed, 0);
    let reason = "the workflow was canceled: by alice";
    assert_eq!(
        run.cancel("by alice"),
        vec![Action::Stop { node: 0 }, skip(1, reason), skip(2, reason)]
    );
    assert_eq!(run.wake_at(), None);
    assert_eq!(run.state(), RunState::Running, "a still has to end");
    run.ended(0, Outcome::Stopped("canceled".into()), 1);
    assert_eq!(run.nodes()[0].state, Stopped, "no retry after a cancel");
    assert_eq!(run.next(1), vec![]);
    assert_eq!(run.state(), RunState::Canceled("by alice".into()));
    assert_eq!(run.canceled(), Some("by alice"));
    assert_eq!(
        run.cancel("again"),
        vec![],
        "a finished run is left as it is"
    );
}

#[test]
fn retrying_a_failed_run_keeps_completed_nodes_and_attempts() {
    let mut run = Run::new(spec(
        "  fetch:\n  train: {needs: [fetch]}\n  report: {needs: [train]}\n",
    ));
    run.next(0);
    run.ended(0, Outcome::Completed, 1);
    run.next(1);
    run.ended(1, failed("exit code 1"), 2);
    run.next(2);
    assert_eq!(states(&run), [Completed, Failed, Skipped]);

    assert!(run.retry());
    assert_eq!(states(&run), [Completed, Waiting, Waiting]);
    assert_eq!(run.state(), RunState::Running);
    assert_eq!(run.next(3), starts(&[1]));
    assert_eq!(run.nodes()[1].attempts, 2, "attempts are kept");
    assert!(!run.retry(), "no retry while running");
    run.ended(1, Outcome::Completed, 4);
    assert_eq!(run.next(4), starts(&[2]));
    run.ended(2, Outcome::Completed, 5);
    run.next(5);
    assert_eq!(run.state(), RunState::Completed);
    assert_eq!(run.nodes()[0].attempts, 1, "fetch did not run again");
}

#[test]
fn retrying_a_canceled_run_forgets_the_cancel() {
    let mut run = Run::new(spec("  a:\n  b: {needs: [a]}\n"));
    run.next(0);
    run.cancel("stop");
    run.ended(0, Outcome::Stopped("canceled".into()), 1);
    assert_eq!(run.state(), RunState::Canceled("stop".into()));
    assert!(run.retry());
    assert_eq!(run.canceled(), None);
    assert_eq!(run.next(2), starts(&[0]));
}

#[test]
fn a_restored_run_continues_where_it_stood() {
    let spec = spec_with(
        "max_parallel: 2\n",
        "  a:\n    retry: {limit: 1, backoff: 5s}\n  b:\n  c: {needs: [b]}\n  d: {needs: [c]}\n  e:\n",
    );
    let mut run = Run::new(spec.clone());
    assert_eq!(run.next(0), starts(&[0, 1]));
    run.ended(0, failed("x"), 1_000);
    run.ended(1, Outcome::Completed, 1_000);
    assert_eq!(run.next(1_000), starts(&[2, 4]));
    // The server persists the nodes, restarts, and restores.
    let persisted: Vec<Node> = run.nodes().to_vec();
    let mut restored = Run::restore(spec, persisted, None);
    assert_eq!(restored.nodes(), run.nodes());
    assert_eq!(restored.wake_at(), Some(6_000));
    assert_eq!(restored.next(6_000), vec![], "two are running, the limit");
    restored.ended(2, Outcome::Completed, 6_100);
    assert_eq!(
        restored.next(6_100),
        starts(&[0]),
        "a's retry comes first in file order"
    );
    restored.ended(4, Outcome::Completed, 6_200);
    assert_eq!(restored.next(6_200), starts(&[3]));
    restored.ended(0, Outcome::Completed, 7_000);
    restored.ended(3, Outcome::Completed, 7_000);
    restored.next(7_000);
    assert_eq!(restored.state(), RunState::Completed);
}

#[test]
fn a_restored_run_finds_its_failure_and_cancel() {
    let spec = spec_with("fail_fast: true\n", "  a:\n  b:\n  c:\n");
    let nodes = vec![
        Node {
            state: Completed,
            attempts: 1,
            reason: String::new(),
        },
        Node {
            state: Failed,
            attempts: 1,
            reason: "exit code 9".into(),
        },
        Node {
            state: Waiting,
            attempts: 0,
            reason: String::new(),
        },
    ];
    let mut run = Run::restore(spec.clone(), nodes.clone(), None);
    assert_eq!(run.next(0), vec![skip(2, "fail_fast: b failed")]);
    assert_eq!(
        run.state(),
        RunState::Failed("b failed: exit code 9".into())
    );

    let mut run = Run::restore(spec, nodes, Some("by bob".into()));
    assert_eq!(
        run.next(0),
        vec![skip(2, "the workflow was canceled: by bob")]
    );
    assert_eq!(run.state(), RunState::Canceled("by bob".into()));
}

#[test]
fn a_job_that_could_not_start_is_reported_as_failed() {
    let mut run = Run::new(spec("  a:\n  b: {needs: [a]}\n"));
    assert_eq!(run.next(0), starts(&[0]));
    run.ended(0, failed("runtime python-3.11 is not installed"), 0);
    assert_eq!(
        run.next(0),
        vec![skip(1, "a ended FAILED; b needs COMPLETED")]
    );
    assert_eq!(
        run.state(),
        RunState::Failed("a failed: runtime python-3.11 is not installed".into())
    );
}

#[test]
fn ends_of_nodes_that_are_not_running_are_ignored() {
    let mut run = Run::new(spec("  a:\n  b:\n"));
    run.next(0);
    run.ended(0, Outcome::Completed, 1);
    run.ended(0, failed("late duplicate"), 2);
    run.ended(7, Outcome::Completed, 2);
    assert_eq!(run.nodes()[0].state, Completed);
    assert_eq!(run.done_count(), (1, 2));
}

#[test]
fn a_hand_built_spec_with_a_cycle_or_a_bad_index_still_terminates() {
    let mut spec = (*spec("  a:\n  b:\n  c:\n")).clone();
    spec.jobs[0].requires = vec![Requirement {
        job: 1,
        condition: Condition::Completed,
    }];
    spec.jobs[1].requires = vec![Requirement {
        job: 0,
        condition: Condition::Completed,
    }];
    spec.jobs[2].requires = vec![Requirement {
        job: 42,
        condition: Condition::Completed,
    }];
    let mut run = Run::new(Arc::new(spec));
    assert_eq!(
        run.next(0),
        vec![
            skip(2, "c requires job #42, which does not exist"),
            skip(0, "a's requirements can never be met"),
            skip(1, "a ended SKIPPED; b needs COMPLETED"),
        ]
    );
    assert_eq!(run.state(), RunState::Completed);
}

#[test]
fn restore_tolerates_a_node_list_of_the_wrong_length() {
    let spec = spec("  a:\n  b:\n");
    let run = Run::restore(spec.clone(), vec![], None);
    assert_eq!(states(&run), [Waiting, Waiting]);
    let many = vec![
        Node {
            state: Completed,
            attempts: 1,
            reason: String::new()
        };
        5
    ];
    let run = Run::restore(spec, many, None);
    assert_eq!(run.state(), RunState::Completed);
}

#[test]
fn node_states_have_stable_names() {
    let names: Vec<&str> = [
        Waiting,
        Running,
        NodeState::Backoff { until_ms: 3 },
        Completed,
        Failed,
        Stopped,
        Skipped,
    ]
    .iter()
    .map(|s| s.as_str())
    .collect();
    assert_eq!(
        names,
        [
            "WAITING",
            "RUNNING",
            "BACKOFF",
            "COMPLETED",
            "FAILED",
            "STOPPED",
            "SKIPPED"
        ]
    );
}
