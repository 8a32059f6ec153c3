//! The scheduler of one workflow run: a pure, deterministic state machine.
//!
//! The caller drives it: [`Run::next`] says which jobs to start or skip, [`Run::ended`]
//! reports how a started job ended, [`Run::cancel`] and [`Run::retry`] act on the whole
//! run. Nothing here reads a clock (the caller passes `now_ms`) or does I/O, so the same
//! calls always give the same answers, and the node states the caller persists are enough
//! to [`Run::restore`] a run after a restart.
//!
//! Each call costs time in proportion to the nodes and requirements it touches, not to the
//! size of the workflow, so a run of 100,000 jobs stays cheap per event.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::spec::{Condition, WorkflowSpec};

/// Where one job of a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeState {
    /// Not started; waits for its requirements (or for a free slot under `max_parallel`).
    Waiting,
    /// Its job was started and has not ended yet.
    Running,
    /// An attempt failed or was stopped; the next starts once the time reaches `until_ms`.
    Backoff {
        /// When the next attempt may start, in the caller's milliseconds.
        until_ms: u64,
    },
    /// Its job completed successfully. Final.
    Completed,
    /// Its job failed with no retry left. Final.
    Failed,
    /// Its job was stopped with no retry left, or while the run was canceled. Final.
    Stopped,
    /// It will never start: a requirement can no longer hold, or the run was canceled or
    /// failed fast. Final.
    Skipped,
}

impl NodeState {
    /// Whether the node is done for this run: completed, failed, stopped or skipped.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            NodeState::Completed | NodeState::Failed | NodeState::Stopped | NodeState::Skipped
        )
    }

    /// The state's name in capitals, as users see it: `WAITING`, `RUNNING`, `BACKOFF`,
    /// `COMPLETED`, `FAILED`, `STOPPED` or `SKIPPED`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Waiting => "WAITING",
            NodeState::Running => "RUNNING",
            NodeState::Backoff { .. } => "BACKOFF",
            NodeState::Completed => "COMPLETED",
            NodeState::Failed => "FAILED",
            NodeState::Stopped => "STOPPED",
            NodeState::Skipped => "SKIPPED",
        }
    }
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Condition {
    /// Whether a requirement with this condition holds for an upstream job in `state`.
    /// Only final states satisfy a condition.
    pub fn holds(self, state: NodeState) -> bool {
        match self {
            Condition::Completed => state == NodeState::Completed,
            Condition::Failed => state == NodeState::Failed,
            Condition::Stopped => state == NodeState::Stopped,
            Condition::Skipped => state == NodeState::Skipped,
            Condition::Finished => state.is_final(),
        }
    }

    /// Whether a requirement with this condition can never hold again: the upstream job is
    /// final and the condition does not hold for it.
    pub fn broken(self, state: NodeState) -> bool {
        state.is_final() && !self.holds(state)
    }
}

/// One job of a run: what the caller persists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Where the job stands.
    pub state: NodeState,
    /// How many times its job was started so far, over all retries of the run.
    pub attempts: u32,
    /// Why it is in its state, for people: the failure of the last attempt (`Backoff`,
    /// `Failed`, `Stopped`) or why it was skipped; empty otherwise.
    pub reason: String,
}

impl Node {
    fn waiting() -> Node {
        Node {
            state: NodeState::Waiting,
            attempts: 0,
            reason: String::new(),
        }
    }
}

/// How one attempt's job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It completed successfully.
    Completed,
    /// It failed, for the given reason (e.g. "exit code 1", or why it could not start).
    Failed(String),
    /// It was stopped, for the given reason.
    Stopped(String),
}

/// What the caller must do for a node. The node's state has already been changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the node's job (the node is now `Running`). If it cannot start, report
    /// `ended(node, Outcome::Failed(reason))`.
    Start {
        /// The node, an index into the spec's jobs.
        node: usize,
    },
    /// The node will never start (it is now `Skipped`); record it.
    Skip {
        /// The node.
        node: usize,
        /// Why, for people, e.g. "train ended FAILED; report needs COMPLETED".
        reason: String,
    },
    /// Stop the node's running job; report its end with `ended` as usual.
    Stop {
        /// The node.
        node: usize,
    },
}

/// Where a whole run stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Some node is waiting, running or backing off.
    Running,
    /// Every node is final and none failed without `continue_on_failure`.
    Completed,
    /// Every node is final and one failed without `continue_on_failure`; the reason names
    /// the first, e.g. "train failed: exit code 1".
    Failed(String),
    /// Every node is final after [`Run::cancel`]; the reason is the cancel's.
    Canceled(String),
}

/// One run of a workflow: the nodes' states and what follows from them.
///
/// Invariants kept by every method, for any sequence of calls: a node is started only when
/// every requirement holds, never beyond `max_parallel`, never after a cancel or a fail-fast
/// stop; once no node runs or backs off, no node is left waiting by [`Run::next`].
#[derive(Debug, Clone)]
pub struct Run {
    spec: Arc<WorkflowSpec>,
    nodes: Vec<Node>,
    /// The cancel's reason, once canceled.
    canceled: Option<String>,
    /// "train failed: exit code 1" for the first node that failed without
    /// `continue_on_failure`.
    failure: Option<String>,
    /// The name of the job whose failure stopped the run, with `fail_fast`.
    fail_fast: Option<String>,
    /// For each node, the (downstream node, condition) of every requirement on it.
    dependents: Vec<Vec<(usize, Condition)>>,
    /// For each waiting node, how many of its requirements wait for a non-final upstream.
    unresolved: Vec<usize>,
    /// Waiting nodes whose requirements all hold, in file order.
    ready: BTreeSet<usize>,
    /// Nodes that became final and whose dependents have not been looked at yet.
    settled: VecDeque<usize>,
    /// Waiting nodes found, outside `settled`, to have a requirement that can never hold.
    blocked: Vec<usize>,
    /// Backing-off nodes by the time they may start again.
    backoff: BTreeSet<(u64, usize)>,
    running: usize,
    finals: usize,
}

impl Run {
    /// A new run: every node waiting, nothing started.
    pub fn new(spec: Arc<WorkflowSpec>) -> Run {
        let nodes = vec![Node::waiting(); spec.jobs.len()];
        Run::restore(spec, nodes, None)
    }

    /// A run as the caller persisted it: the nodes' states and the cancel's reason, if
    /// canceled. The first failure is taken as the first failed node in file order. Nodes
    /// missing from `nodes` are waiting; nodes beyond the spec's jobs are dropped.
    pub fn restore(spec: Arc<WorkflowSpec>, mut nodes: Vec<Node>, canceled: Option<String>) -> Run {
        nodes.resize_with(spec.jobs.len(), Node::waiting);
        let mut run = Run {
            dependents: dependents(&spec),
            spec,
            nodes,
            canceled,
            failure: None,
            fail_fast: None,
            unresolved: Vec::new(),
            ready: BTreeSet::new(),
            settled: VecDeque::new(),
            blocked: Vec::new(),
            backoff: BTreeSet::new(),
            running: 0,
            finals: 0,
        };
        if let Some(first) = (0..run.nodes.len()).find(|&i| run.fails_run(i)) {
            run.note_failure(first);
        }
        run.recount();
        run
    }

    /// The workflow this run runs.
    pub fn spec(&self) -> &Arc<WorkflowSpec> {
        &self.spec
    }

    /// The nodes, one per job, in the spec's order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The cancel's reason, once canceled (what [`Run::restore`] takes back).
    pub fn canceled(&self) -> Option<&str> {
        self.canceled.as_deref()
    }

    /// What to do now. First, nodes whose requirements can no longer hold become skipped,
    /// transitively (each returned as [`Action::Skip`] naming the upstream job and its
    /// state); after a cancel or a fail-fast stop every waiting or backing-off node is
    /// skipped instead. Then backing-off nodes whose time has come, and waiting nodes whose
    /// requirements all hold, are started in file order while fewer than `max_parallel`
    /// run: each becomes `Running` with one more attempt and is returned as
    /// [`Action::Start`]. A node the spec lets never start (only possible in a spec built by
    /// hand with a cycle or a bad index) is skipped once nothing else can happen.
    pub fn next(&mut self, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Some(reason) = self.halt_reason().filter(|_| self.waiting_or_backoff() > 0) {
            for node in 0..self.nodes.len() {
                if matches!(
                    self.nodes[node].state,
                    NodeState::Waiting | NodeState::Backoff { .. }
                ) {
                    self.skip(node, reason.clone(), &mut actions);
                }
            }
        }
        while let Some(&(until_ms, node)) = self.backoff.first() {
            if until_ms > now_ms {
                break;
            }
            self.backoff.pop_first();
            self.nodes[node].state = NodeState::Waiting;
            self.ready.insert(node);
        }
        loop {
            self.propagate(&mut actions);
            self.start_ready(&mut actions);
            if self.running > 0 || !self.backoff.is_empty() || !self.ready.is_empty() {
                break;
            }
            // Nothing runs and nothing can start, yet a node waits: it never will. Skip the
            // first and look again, since its skip may let others start or be skipped.
            let Some(node) =
                (0..self.nodes.len()).find(|&n| self.nodes[n].state == NodeState::Waiting)
            else {
                break;
            };
            let reason = format!(
                "{}'s requirements can never be met",
                self.spec.jobs[node].name
            );
            self.skip(node, reason, &mut actions);
        }
        actions
    }

    /// The earliest time a backing-off node may start, for the caller's timer.
    pub fn wake_at(&self) -> Option<u64> {
        self.backoff.first().map(|&(until_ms, _)| until_ms)
    }

    /// A running node's job ended; a call for a node that is not running is ignored (a
    /// repeated event). A failed or stopped attempt with retries left (`attempts <=
    /// retry.limit`) backs off for `backoff * 2^(attempts-1)`, at most `max_backoff`,
    /// unless the run was canceled or failed fast; otherwise the node takes its final
    /// state. A failure without `continue_on_failure` fails the run (the first names the
    /// failure) and, with `fail_fast`, stops every start from then on.
    pub fn ended(&mut self, node: usize, outcome: Outcome, now_ms: u64) {
        let Some(current) = self.nodes.get(node) else {
            return;
        };
        if current.state != NodeState::Running {
            return;
        }
        self.running = self.running.saturating_sub(1);
        let job = &self.spec.jobs[node];
        let (state, reason) = match outcome {
            Outcome::Completed => (NodeState::Completed, String::new()),
            Outcome::Failed(reason) => (NodeState::Failed, reason),
            Outcome::Stopped(reason) => (NodeState::Stopped, reason),
        };
        let attempts = current.attempts;
        if state != NodeState::Completed && attempts <= job.retry.limit && !self.halted() {
            let until_ms = now_ms.saturating_add(backoff_ms(job.retry, attempts));
            let verb = if state == NodeState::Failed {
                "failed"
            } else {
                "was stopped"
            };
            let node_state = &mut self.nodes[node];
            node_state.state = NodeState::Backoff { until_ms };
            node_state.reason = format!("attempt {attempts} {verb}: {reason}");
            self.backoff.insert((until_ms, node));
            return;
        }
        let node_state = &mut self.nodes[node];
        node_state.state = state;
        node_state.reason = reason;
        self.finals += 1;
        self.settled.push_back(node);
        if self.fails_run(node) && self.failure.is_none() {
            self.note_failure(node);
        }
    }

    /// Cancels the run: every waiting or backing-off node becomes skipped ("the workflow was
    /// canceled: {reason}", returned as [`Action::Skip`]) and every running node is returned
    /// as [`Action::Stop`]; those end through [`Run::ended`] as usual, without retries. A run
    /// that is no longer running is left as it is.
    pub fn cancel(&mut self, reason: &str) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state() != RunState::Running {
            return actions;
        }
        self.canceled = Some(reason.to_owned());
        let skip_reason = format!("the workflow was canceled: {reason}");
        for node in 0..self.nodes.len() {
            match self.nodes[node].state {
                NodeState::Waiting | NodeState::Backoff { .. } => {
                    self.skip(node, skip_reason.clone(), &mut actions);
                }
                NodeState::Running => actions.push(Action::Stop { node }),
                _ => {}
            }
        }
        self.propagate(&mut actions);
        actions
    }

    /// Retries a finished run: failed, stopped and skipped nodes wait again (their attempts
    /// kept, so `retry.limit` counts over the whole run), completed nodes stay, and the
    /// cancel, the failure and the fail-fast stop are forgotten. Returns false, changing
    /// nothing, while the run is still running.
    pub fn retry(&mut self) -> bool {
        if self.state() == RunState::Running {
            return false;
        }
        for node in &mut self.nodes {
            if node.state != NodeState::Completed {
                node.state = NodeState::Waiting;
                node.reason.clear();
            }
        }
        self.canceled = None;
        self.failure = None;
        self.fail_fast = None;
        self.recount();
        true
    }

    /// Where the whole run stands: running while a node waits, runs or backs off; then
    /// canceled after a cancel, failed when a node failed without `continue_on_failure`,
    /// else completed.
    pub fn state(&self) -> RunState {
        if self.finals < self.nodes.len() {
            return RunState::Running;
        }
        if let Some(reason) = &self.canceled {
            return RunState::Canceled(reason.clone());
        }
        match &self.failure {
            Some(failure) => RunState::Failed(failure.clone()),
            None => RunState::Completed,
        }
    }

    /// (final nodes, all nodes), for "7/12 done".
    pub fn done_count(&self) -> (usize, usize) {
        (self.finals, self.nodes.len())
    }

    /// Starts ready nodes in file order while fewer than `max_parallel` run, unless the run
    /// was canceled or failed fast.
    fn start_ready(&mut self, actions: &mut Vec<Action>) {
        if self.halted() {
            return;
        }
        let limit = self
            .spec
            .max_parallel
            .map_or(usize::MAX, |n| n.max(1) as usize);
        while self.running < limit {
            let Some(node) = self.ready.pop_first() else {
                break;
            };
            let node_state = &mut self.nodes[node];
            node_state.state = NodeState::Running;
            node_state.attempts = node_state.attempts.saturating_add(1);
            node_state.reason.clear();
            self.running += 1;
            actions.push(Action::Start { node });
        }
    }

    /// How many nodes wait or back off.
    fn waiting_or_backoff(&self) -> usize {
        self.nodes.len().saturating_sub(self.finals + self.running)
    }

    /// Whether no node may start any more: after a cancel or a fail-fast stop.
    fn halted(&self) -> bool {
        self.canceled.is_some() || self.fail_fast.is_some()
    }

    /// Why no node may start any more, if so.
    fn halt_reason(&self) -> Option<String> {
        if let Some(reason) = &self.canceled {
            return Some(format!("the workflow was canceled: {reason}"));
        }
        self.fail_fast
            .as_ref()
            .map(|name| format!("fail_fast: {name} failed"))
    }

    fn fails_run(&self, node: usize) -> bool {
        self.nodes[node].state == NodeState::Failed && !self.spec.jobs[node].continue_on_failure
    }

    fn note_failure(&mut self, node: usize) {
        let job = &self.spec.jobs[node];
        self.failure = Some(format!("{} failed: {}", job.name, self.nodes[node].reason));
        if self.spec.fail_fast {
            self.fail_fast = Some(job.name.clone());
        }
    }

    /// Makes a waiting or backing-off node skipped.
    fn skip(&mut self, node: usize, reason: String, actions: &mut Vec<Action>) {
        if let NodeState::Backoff { until_ms } = self.nodes[node].state {
            self.backoff.remove(&(until_ms, node));
        }
        self.ready.remove(&node);
        self.nodes[node].state = NodeState::Skipped;
        self.nodes[node].reason = reason.clone();
        self.finals += 1;
        self.settled.push_back(node);
        actions.push(Action::Skip { node, reason });
    }

    /// Looks at the dependents of every node that became final: a requirement that now
    /// holds counts down, one that can never hold skips the dependent (and so on down).
    fn propagate(&mut self, actions: &mut Vec<Action>) {
        for node in std::mem::take(&mut self.blocked) {
            if self.nodes[node].state == NodeState::Waiting {
                let reason = self.broken_reason(node);
                self.skip(node, reason, actions);
            }
        }
        while let Some(upstream) = self.settled.pop_front() {
            let state = self.nodes[upstream].state;
            for k in 0..self.dependents[upstream].len() {
                let (node, condition) = self.dependents[upstream][k];
                if self.nodes[node].state != NodeState::Waiting {
                    continue;
                }
                if condition.holds(state) {
                    self.unresolved[node] = self.unresolved[node].saturating_sub(1);
                    if self.unresolved[node] == 0 {
                        self.ready.insert(node);
                    }
                } else {
                    let reason = format!(
                        "{} ended {state}; {} needs {condition}",
                        self.spec.jobs[upstream].name, self.spec.jobs[node].name
                    );
                    self.skip(node, reason, actions);
                }
            }
        }
    }

    /// Why a waiting node can never start: its first requirement that can never hold.
    fn broken_reason(&self, node: usize) -> String {
        let job = &self.spec.jobs[node];
        for requirement in &job.requires {
            match self.nodes.get(requirement.job) {
                Some(upstream) if requirement.condition.broken(upstream.state) => {
                    return format!(
                        "{} ended {}; {} needs {}",
                        self.spec.jobs[requirement.job].name,
                        upstream.state,
                        job.name,
                        requirement.condition
                    );
                }
                Some(_) => {}
                None => {
                    return format!(
                        "{} requires job #{}, which does not exist",
                        job.name, requirement.job
                    );
                }
            }
        }
        format!("{}'s requirements can never be met", job.name)
    }

    /// Recomputes every count and set from the nodes' states (after a restore or a retry).
    fn recount(&mut self) {
        let n = self.nodes.len();
        self.unresolved = vec![0; n];
        self.ready.clear();
        self.settled.clear();
        self.blocked.clear();
        self.backoff.clear();
        self.running = 0;
        self.finals = 0;
        for node in 0..n {
            match self.nodes[node].state {
                NodeState::Running => self.running += 1,
                NodeState::Backoff { until_ms } => {
                    self.backoff.insert((until_ms, node));
                }
                state if state.is_final() => self.finals += 1,
                _ => {
                    let mut unresolved = 0;
                    let mut broken = false;
                    for requirement in &self.spec.jobs[node].requires {
                        match self.nodes.get(requirement.job) {
                            Some(upstream) if requirement.condition.holds(upstream.state) => {}
                            Some(upstream) if !upstream.state.is_final() => unresolved += 1,
                            _ => broken = true,
                        }
                    }
                    self.unresolved[node] = unresolved;
                    if broken {
                        self.blocked.push(node);
                    } else if unresolved == 0 {
                        self.ready.insert(node);
                    }
                }
            }
        }
    }
}

/// For each job, the (downstream job, condition) of every requirement on it; requirements
/// naming a job that does not exist are left out (they never hold).
fn dependents(spec: &WorkflowSpec) -> Vec<Vec<(usize, Condition)>> {
    let mut dependents = vec![Vec::new(); spec.jobs.len()];
    for (node, job) in spec.jobs.iter().enumerate() {
        for requirement in &job.requires {
            if let Some(list) = dependents.get_mut(requirement.job) {
                list.push((node, requirement.condition));
            }
        }
    }
    dependents
}

/// The wait after failed attempt `attempt` (1-based): `backoff * 2^(attempt-1)`, at most
/// `max_backoff`, in milliseconds.
pub fn backoff_ms(retry: crate::spec::Retry, attempt: u32) -> u64 {
    let base = u64::try_from(retry.backoff.as_millis()).unwrap_or(u64::MAX);
    let cap = u64::try_from(retry.max_backoff.as_millis()).unwrap_or(u64::MAX);
    let doublings = attempt.saturating_sub(1);
    let wait = if doublings >= 64 {
        if base == 0 { 0 } else { u64::MAX }
    } else {
        base.saturating_mul(1u64 << doublings)
    };
    wait.min(cap)
}
