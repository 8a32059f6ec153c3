//! One workflow while it runs: a task that owns its scheduler state, starts its jobs,
//! reacts to their ends (events from the job manager, never polling), and writes every
//! step to the store before it takes effect.
//!
//! Exactly once: a node's row says RUNNING with attempt N before its job's command can
//! start (the write runs beside the job's preparation; the command waits for it), and the
//! job carries the request token `<workflow>:<node>:<N>`. After a crash the
//! restarted server finds the job by that token (adopting it, or reading its end), or
//! knows it never existed (a job is stored before its command starts) and starts it.

use std::sync::Arc;
use std::time::Duration;

use silo_proto::v1::{Upload, Workflow};
use silo_workflow::schedule::{Action, NodeState, Outcome, Run, RunState};
use silo_workflow::spec::WorkflowSpec;
use tokio::sync::{mpsc, watch};

use super::node_job;
use super::store::{NodeRow, WorkflowRow};
use super::{Engine, now_ms, view};
use crate::store::JobRow;

/// What reaches a running workflow.
pub enum Event {
    /// The job of a node's attempt exists (its id), or could not be started.
    Started {
        node: usize,
        attempt: u32,
        /// Earlier tries of the attempt found never to have run (a crash cut their start).
        cut: Vec<String>,
        result: Result<JobRow, String>,
    },
    /// The job of a node's attempt ended.
    Ended {
        node: usize,
        attempt: u32,
        row: JobRow,
    },
    /// A client cancels it.
    Cancel { reason: String },
}

/// A running workflow's state, owned by its task.
pub struct Running {
    pub engine: Engine,
    pub row: WorkflowRow,
    pub spec: Arc<WorkflowSpec>,
    pub run: Run,
    pub job_ids: Vec<Vec<String>>,
    /// Per node: the last attempt's job row, once it ended (exit code and times).
    pub last_jobs: Vec<Option<JobRow>>,
    pub files: Arc<Vec<Upload>>,
    pub tx: mpsc::UnboundedSender<Event>,
    pub view: watch::Sender<Workflow>,
    /// Nodes changed since the store last had them; written together, in one transaction,
    /// by [`Running::write_dirty`] before anything that depends on them takes effect.
    pub dirty: std::collections::BTreeSet<usize>,
    /// The last node write, in flight or done: each write waits for the one before, so
    /// that they land in order.
    pub last_write: Option<NodeWrite>,
}

/// A write of nodes to the store, shared by whatever waits for it.
pub type NodeWrite = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

impl Running {
    /// Drives the workflow to its end.
    pub async fn drive(mut self, mut rx: mpsc::UnboundedReceiver<Event>) {
        let deadline = self.spec.timeout.map(|t| {
            let created = u64::try_from(self.row.created_at / 1000).unwrap_or(0);
            created.saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
        });
        loop {
            let actions = self.run.next(now_ms());
            self.apply_all(actions).await;
            self.publish();
            if self.run.state() != RunState::Running {
                self.finish().await;
                return;
            }
            let wake = [
                self.run.wake_at(),
                deadline.filter(|_| self.row.canceled.is_none()),
            ]
            .into_iter()
            .flatten()
            .min();
            let sleep = async {
                match wake {
                    Some(at) => {
                        tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = rx.recv() => match event {
                    Some(event) => {
                        self.handle(event).await;
                        // Whatever else has arrived is taken in too, before the next step:
                        // fifty jobs that end together make one step, not fifty.
                        while let Ok(event) = rx.try_recv() {
                            self.handle(event).await;
                        }
                    }
                    None => return,
                },
                () = sleep => {
                    if let Some(deadline) = deadline
                        && now_ms() >= deadline
                        && self.row.canceled.is_none()
                    {
                        let limit = self.spec.timeout.unwrap_or_default();
                        self.cancel(format!("timed out after {}", humantime::format_duration(limit))).await;
                    }
                }
            }
        }
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Started {
                node,
                attempt,
                cut,
                result,
            } => {
                self.list_cut(node, attempt, cut);
                self.started(node, attempt, result)
            }
            Event::Ended { node, attempt, row } => {
                let current = &self.run.nodes()[node];
                if current.attempts != attempt || current.state != NodeState::Running {
                    return;
                }
                if super::never_ran(&row) {
                    // A try that a server stopped during its start, adopted by this server
                    // while its init was still there (a zombie its old parent left), and
                    // found before its end was recorded: its command never ran, so the
                    // attempt has not happened yet. The next try runs it.
                    self.retry_try(node, attempt).await;
                    return;
                }
                self.run.ended(node, node_job::outcome(&row), now_ms());
                self.last_jobs[node] = Some(row);
                self.save_node(node);
            }
            Event::Cancel { reason } => self.cancel(reason).await,
        }
    }

    async fn cancel(&mut self, reason: String) {
        if self.row.canceled.is_some() || self.run.state() != RunState::Running {
            return;
        }
        self.row.canceled = Some(reason.clone());
        self.save_workflow().await;
        let actions = self.run.cancel(&reason);
        for node in 0..self.spec.jobs.len() {
            self.save_node(node);
        }
        self.apply_all(actions).await;
    }

    /// Applies the scheduler's actions: every node they change is written first, all in one
    /// transaction (after a crash, a node's stored attempt says whether its job may exist),
    /// then the jobs start and stop.
    async fn apply_all(&mut self, actions: Vec<Action>) {
        for action in &actions {
            match action {
                Action::Skip { node, .. } | Action::Start { node } => self.save_node(*node),
                Action::Stop { .. } => {}
            }
        }
        // The jobs are prepared while the nodes are written; their commands wait for the
        // write (see `start`).
        self.write_dirty();
        for action in actions {
            match action {
                Action::Skip { .. } => {}
                // A node started here has a new attempt: no job can have its token yet.
                Action::Start { node } => self.start(node, 0),
                Action::Stop { node } => {
                    if let Some(id) = self.job_ids[node].last() {
                        self.stop_job(id.clone());
                    }
                }
            }
        }
    }

    /// Lists the tries of `node`'s `attempt` that a crash cut before they ran (`cut`)
    /// among its jobs, as every try is: the node shows each job that had its token.
    fn list_cut(&mut self, node: usize, attempt: u32, cut: Vec<String>) {
        if self.run.nodes()[node].attempts != attempt {
            return;
        }
        if super::add_ids(&mut self.job_ids[node], cut) {
            self.save_node(node);
        }
    }

    /// The job of `node`'s `attempt` runs (`Ok`), or could not start (`Err`, why).
    fn started(&mut self, node: usize, attempt: u32, result: Result<JobRow, String>) {
        if self.run.nodes()[node].attempts != attempt {
            return;
        }
        match result {
            Ok(row) => {
                self.last_jobs[node] = Some(row.clone());
                if super::add_ids(&mut self.job_ids[node], [row.id.clone()]) {
                    self.save_node(node);
                }
                if self.row.canceled.is_some() {
                    self.stop_job(row.id.clone());
                }
                self.watch_end(node, attempt, row);
            }
            Err(reason) => {
                self.run.ended(node, Outcome::Failed(reason), now_ms());
                self.save_node(node);
            }
        }
    }

    /// Follows `node`'s current attempt again after its try ended without running: the
    /// try that ran or runs when there is one, else a new one.
    async fn retry_try(&mut self, node: usize, attempt: u32) {
        let id = self.row.id.clone();
        let found = match self.engine.find_attempt(&id, node, attempt).await {
            Ok(found) => {
                self.list_cut(node, attempt, found.cut);
                Ok(found.job)
            }
            Err(e) => Err(e),
        };
        let found = match found {
            Ok(Err(k)) => {
                tracing::info!(workflow = %id, node, attempt, try_ = k, "a job that never ran is started again");
                self.start(node, k);
                return;
            }
            Ok(Ok(job)) => Ok(job),
            Err(e) => Err(format!("cannot find the job's earlier tries: {e}")),
        };
        self.started(node, attempt, found);
    }

    /// Starts the `k`-th try of the job of `node`'s current attempt in the background.
    pub fn start(&self, node: usize, k: u32) {
        let attempt = self.run.nodes()[node].attempts;
        let engine = self.engine.clone();
        let id = self.row.id.clone();
        let owner = self.row.owner.clone();
        let spec = self.spec.clone();
        let files = self.files.clone();
        let tx = self.tx.clone();
        // The node's attempt is written (or being written): the job's command waits for it.
        let gate = self.last_write.clone().map(crate::jobs::StartGate);
        tokio::spawn(async move {
            let (cut, result) = engine
                .start_job(&id, &owner, &spec, &files, node, attempt, k, gate)
                .await;
            let _ = tx.send(Event::Started {
                node,
                attempt,
                cut,
                result,
            });
        });
    }

    /// Sends the job's end to the workflow when it comes (from the job manager's live
    /// state; a job that already ended answers at once).
    pub fn watch_end(&self, node: usize, attempt: u32, row: JobRow) {
        let jobs = self.engine.inner.jobs.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let row = match jobs.live(&row.id) {
                Some(live) => live.ended().await,
                None if row.state.is_final() => row,
                None => jobs.get(&row.id).await.unwrap_or(row),
            };
            let _ = tx.send(Event::Ended { node, attempt, row });
        });
    }

    fn stop_job(&self, id: String) {
        let jobs = self.engine.inner.jobs.clone();
        tokio::spawn(async move {
            let _ = jobs.stop(&id, None).await;
        });
    }

    /// Marks `node` as changed; [`Running::flush`] writes it.
    fn save_node(&mut self, node: usize) {
        self.dirty.insert(node);
    }

    /// Writes every changed node, in one transaction, and waits for every write so far.
    async fn flush(&mut self) {
        if let Some(write) = self.write_dirty() {
            write.await;
        }
    }

    /// Starts writing every changed node, in one transaction, after the writes before it;
    /// returns the last write (none when nothing was ever written).
    fn write_dirty(&mut self) -> Option<NodeWrite> {
        use futures::FutureExt;
        if self.dirty.is_empty() {
            return self.last_write.clone();
        }
        let rows: Vec<(usize, NodeRow)> = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|node| {
                let row = NodeRow {
                    node: self.run.nodes()[node].clone(),
                    job_ids: self.job_ids[node].clone(),
                };
                (node, row)
            })
            .collect();
        let before = self.last_write.take();
        let engine = self.engine.clone();
        let id = self.row.id.clone();
        let write = async move {
            if let Some(before) = before {
                before.await;
            }
            // Debug builds: a test holds the nodes' write, to crash the server while a job
            // is stored and its node's new attempt is not.
            #[cfg(debug_assertions)]
            crate::jobs::test_delay("SILO_TEST_DELAY_NODE_WRITE_MS").await;
            let what = format!("the nodes of workflow {id}");
            crate::store::until_stored(&what, || engine.inner.store.update_nodes(&id, &rows)).await;
        }
        .boxed()
        .shared();
        // It lands whether or not anyone waits for it.
        tokio::spawn(write.clone());
        self.last_write = Some(write.clone());
        Some(write)
    }

    async fn save_workflow(&self) {
        let what = format!("workflow {}", self.row.id);
        crate::store::until_stored(&what, || self.engine.inner.store.update(&self.row)).await;
    }

    async fn finish(&mut self) {
        let (state, reason) = view::state_of(&self.run.state());
        self.row.state = state as i32;
        self.row.reason = reason;
        self.row.ended_at = Some(crate::jobs::now_micros());
        self.flush().await;
        self.save_workflow().await;
        // Counted before it is told: whoever sees the end finds it in the metrics too.
        metrics::counter!(
            crate::metrics::WORKFLOWS_ENDED,
            "state" => crate::metrics::short_name(state.as_str_name(), "WORKFLOW_STATE_"),
        )
        .increment(1);
        self.publish();
        self.engine.forget(&self.row.id);
        tracing::info!(workflow = %self.row.id, "workflow {} ended: {:?} {}", self.row.name, state, self.row.reason);
    }

    /// Brings the workflow's view up to date for its readers, in place: what changed is
    /// written, nothing is rebuilt, and readers are woken only when something changed.
    fn publish(&self) {
        let nodes = self.run.nodes();
        self.view.send_if_modified(|shown| {
            view::refresh(
                shown,
                &self.row,
                &self.spec,
                nodes,
                &self.job_ids,
                &self.last_jobs,
            )
        });
    }
}
