//! The scheduler's promises over random workflows and random job outcomes: a node starts
//! only when every requirement holds, never beyond `max_parallel`, never after a cancel or
//! a fail-fast stop, and every run ends with every node final.

use std::sync::Arc;

use proptest::prelude::*;
use silo_workflow::schedule::{Action, NodeState, Outcome, Run, RunState};
use silo_workflow::spec::{Condition, WorkflowSpec};

/// One job of a random workflow: its requirements on earlier jobs, its retry limit and
/// whether it may fail without failing the run.
#[derive(Debug, Clone)]
struct RandomJob {
    requires: Vec<(usize, Condition)>,
    retry_limit: u32,
    continue_on_failure: bool,
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![
        3 => Just(Condition::Completed),
        1 => Just(Condition::Failed),
        1 => Just(Condition::Stopped),
        1 => Just(Condition::Skipped),
        2 => Just(Condition::Finished),
    ]
}

fn jobs() -> impl Strategy<Value = Vec<RandomJob>> {
    (1usize..14).prop_flat_map(|n| {
        (0..n)
            .map(|i| {
                (
                    proptest::collection::btree_map(0..i.max(1), condition(), 0..=i.min(3)),
                    0u32..3,
                    proptest::bool::weighted(0.2),
                )
                    .prop_map(
                        move |(requires, retry_limit, continue_on_failure)| RandomJob {
                            requires: requires.into_iter().filter(|&(j, _)| j < i).collect(),
                            retry_limit,
                            continue_on_failure,
                        },
                    )
            })
            .collect::<Vec<_>>()
    })
}

fn workflow(jobs: &[RandomJob], max_parallel: Option<u32>, fail_fast: bool) -> Arc<WorkflowSpec> {
    let mut yaml = format!("name: random\nfail_fast: {fail_fast}\n");
    if let Some(max) = max_parallel {
        yaml.push_str(&format!("max_parallel: {max}\n"));
    }
    yaml.push_str("jobs:\n");
    for (i, job) in jobs.iter().enumerate() {
        yaml.push_str(&format!(
            "  j{i}:\n    command: x\n    continue_on_failure: {}\n    retry: {{limit: {}, backoff: 1s, max_backoff: 4s}}\n",
            job.continue_on_failure, job.retry_limit
        ));
        if !job.requires.is_empty() {
            yaml.push_str("    requires:\n");
            for (upstream, condition) in &job.requires {
                yaml.push_str(&format!("      - j{upstream}: {condition}\n"));
            }
        }
    }
    Arc::new(WorkflowSpec::parse(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_run_keeps_the_rules_and_ends_with_every_node_final(
        jobs in jobs(),
        max_parallel in proptest::option::of(1u32..4),
        fail_fast in proptest::bool::weighted(0.3),
        events in proptest::collection::vec((any::<u8>(), 0u8..3), 1..64),
        cancel_at in proptest::option::weighted(0.2, 0usize..40),
        restore_every in proptest::option::weighted(0.3, 1usize..5),
    ) {
        let spec = workflow(&jobs, max_parallel, fail_fast);
        let mut run = Run::new(spec.clone());
        let mut now = 0u64;
        let mut halted = false;
        let mut canceled = false;
        let mut step = 0usize;
        loop {
            for action in run.next(now) {
                match action {
                    Action::Start { node } => {
                        prop_assert!(!halted, "node {node} started after a cancel or fail-fast");
                        prop_assert_eq!(run.nodes()[node].state, NodeState::Running);
                        for requirement in &spec.jobs[node].requires {
                            let upstream = run.nodes()[requirement.job].state;
                            prop_assert!(
                                requirement.condition.holds(upstream),
                                "node {node} started though j{} is {upstream} and it needs {}",
                                requirement.job, requirement.condition
                            );
                        }
                    }
                    Action::Skip { node, reason } => {
                        prop_assert_eq!(run.nodes()[node].state, NodeState::Skipped);
                        // A valid spec never needs the last-resort skip of a stuck node.
                        prop_assert!(!reason.contains("can never be met"), "{reason}");
                        let halted_now = reason.starts_with("fail_fast: ")
                            || reason.starts_with("the workflow was canceled: ");
                        let broken = spec.jobs[node].requires.iter().any(|r| {
                            r.condition.broken(run.nodes()[r.job].state)
                        });
                        prop_assert!(halted_now || broken, "node {node} skipped: {reason}");
                    }
                    Action::Stop { node } => prop_assert!(false, "next stopped node {node}"),
                }
            }
            let running: Vec<usize> = (0..spec.jobs.len())
                .filter(|&i| run.nodes()[i].state == NodeState::Running)
                .collect();
            if let Some(max) = max_parallel {
                prop_assert!(running.len() <= max as usize, "{} running", running.len());
            }
            if run.state() != RunState::Running {
                break;
            }
            if running.is_empty() {
                let wake = run.wake_at();
                prop_assert!(wake.is_some(), "stuck: nothing runs, nothing backs off: {:?}", run.nodes());
                now = wake.unwrap_or(now).max(now);
                continue;
            }
            let (pick, kind) = events[step % events.len()];
            let node = running[pick as usize % running.len()];
            now += 1;
            let outcome = match kind {
                0 => Outcome::Completed,
                1 => Outcome::Failed("exit code 1".into()),
                _ => Outcome::Stopped("stopped".into()),
            };
            run.ended(node, outcome, now);
            if fail_fast
                && run.nodes()[node].state == NodeState::Failed
                && !spec.jobs[node].continue_on_failure
            {
                halted = true;
            }
            if cancel_at == Some(step) {
                let before: Vec<NodeState> = run.nodes().iter().map(|n| n.state).collect();
                for action in run.cancel("test") {
                    match action {
                        Action::Stop { node } => prop_assert_eq!(before[node], NodeState::Running),
                        Action::Skip { node, .. } => prop_assert!(!before[node].is_final()),
                        Action::Start { node } => prop_assert!(false, "cancel started {node}"),
                    }
                }
                canceled = run.canceled().is_some();
                halted |= canceled;
            }
            if restore_every.is_some_and(|k| step.is_multiple_of(k)) {
                run = Run::restore(spec.clone(), run.nodes().to_vec(), run.canceled().map(str::to_owned));
            }
            step += 1;
            prop_assert!(step < 10_000, "the run does not end");
        }

        prop_assert!(run.nodes().iter().all(|n| n.state.is_final()), "{:?}", run.nodes());
        prop_assert_eq!(run.done_count(), (spec.jobs.len(), spec.jobs.len()));
        let failures: Vec<String> = (0..spec.jobs.len())
            .filter(|&i| {
                run.nodes()[i].state == NodeState::Failed && !spec.jobs[i].continue_on_failure
            })
            .map(|i| format!("j{i} failed: exit code 1"))
            .collect();
        match run.state() {
            RunState::Canceled(reason) => prop_assert!(canceled && reason == "test"),
            // A live run names its first failure in time, a restored one the first in file
            // order: either way, one of the failed nodes.
            RunState::Failed(reason) => prop_assert!(!canceled && failures.contains(&reason), "{reason}"),
            RunState::Completed => prop_assert!(!canceled && failures.is_empty()),
            RunState::Running => prop_assert!(false, "still running"),
        }
        for (i, node) in run.nodes().iter().enumerate() {
            prop_assert!(node.attempts <= spec.jobs[i].retry.limit + 1, "node {i}: {node:?}");
        }
    }
}
