//! Workflows: YAML DAGs of jobs, run by an engine that submits ordinary jobs through the job
//! manager and reacts to their ends. The spec, its checks and the scheduling rules are
//! `silo-workflow`'s; this module keeps workflows in the store ([`store`]), drives each
//! running one ([`run`]) and serves the gRPC WorkflowService ([`service`]).
//!
//! Jobs know nothing about workflows: the engine uses only the job manager's public
//! interface (a job with a request token and a /shared directory, its live state).

mod node_job;
mod run;
pub mod service;
mod shared;
mod store;
mod view;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use prost::Message;
use silo_proto::v1::{RunWorkflowRequest, Upload, Workflow, WorkflowState};
use silo_workflow::schedule::{Node, NodeState, Run};
use silo_workflow::spec::WorkflowSpec;
use tokio::sync::{mpsc, watch};

use crate::jobs::{JobError, JobManager, JobOptions};
use crate::runtimes::Catalog;
use crate::store::{JobRow, StoreError};
use run::{Event, Running};
use silo_proto::v1::EndCause;
use store::{NodeRow, WorkflowRow, WorkflowStore};

/// Why a workflow operation failed; each maps to one gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The YAML or the request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// No workflow has this id.
    #[error("workflow {0} not found")]
    NotFound(String),
    /// Several workflows start with this prefix.
    #[error("workflow id prefix {0} is ambiguous; give more characters")]
    Ambiguous(String),
    /// It has not ended (delete, retry).
    #[error("workflow {0} is still running; cancel it first")]
    StillRunning(String),
    /// Something on the host failed.
    #[error("{0}")]
    Host(String),
    /// The answer would be larger than the server sends.
    #[error("{0}")]
    TooLarge(String),
}

/// The most bytes of workflows one ListWorkflows answer carries (its encoding limit is 64
/// MiB): whole workflows of 10,000 jobs are about a megabyte each.
const MAX_LIST_BYTES: usize = 48 << 20;

impl From<StoreError> for WorkflowError {
    fn from(e: StoreError) -> WorkflowError {
        match e {
            StoreError::NotFound(id) => WorkflowError::NotFound(id),
            StoreError::Ambiguous { prefix, .. } => WorkflowError::Ambiguous(prefix),
            other => WorkflowError::Host(other.to_string()),
        }
    }
}

impl From<WorkflowError> for tonic::Status {
    fn from(e: WorkflowError) -> tonic::Status {
        use tonic::Status;
        match &e {
            WorkflowError::Invalid(_) | WorkflowError::Ambiguous(_) => {
                Status::invalid_argument(e.to_string())
            }
            WorkflowError::NotFound(_) => Status::not_found(e.to_string()),
            WorkflowError::StillRunning(_) => Status::failed_precondition(e.to_string()),
            WorkflowError::Host(_) => Status::internal(e.to_string()),
            WorkflowError::TooLarge(_) => Status::resource_exhausted(e.to_string()),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    u64::try_from(crate::jobs::now_micros() / 1000).unwrap_or(0)
}

/// The workflow engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: WorkflowStore,
    jobs: JobManager,
    catalog: Catalog,
    /// `<state>/workflows`.
    dir: PathBuf,
    /// The running workflows: how to reach each, and its current view.
    active: Mutex<HashMap<String, Active>>,
    /// Permits for parsing the workflow files clients send ([`PARSES_AT_ONCE`]).
    parses: tokio::sync::Semaphore,
    /// Held by a retry or a delete from its check that the workflow has ended to its
    /// effect: two retries at once would otherwise both run it again (every failed job
    /// twice), and a delete beside a retry would remove what the retry runs.
    ending_changes: tokio::sync::Mutex<()>,
}

/// How many workflow files sent by clients are parsed at once.
const PARSES_AT_ONCE: usize = 2;

struct Active {
    tx: mpsc::UnboundedSender<Event>,
    view: watch::Receiver<Workflow>,
}

impl Engine {
    /// The engine over the workflow tables of `store`; resumes every workflow that had not
    /// ended when the previous server stopped.
    pub async fn start(
        store: &crate::store::Store,
        jobs: JobManager,
        catalog: Catalog,
        dir: PathBuf,
    ) -> Result<Engine, WorkflowError> {
        std::fs::create_dir_all(&dir)
            .and_then(|()| crate::restrict_to_root(&dir))
            .map_err(|e| WorkflowError::Host(format!("cannot create {}: {e}", dir.display())))?;
        let engine = Engine {
            inner: Arc::new(Inner {
                store: WorkflowStore::new(store.pool()),
                jobs,
                catalog,
                dir,
                active: Mutex::default(),
                parses: tokio::sync::Semaphore::new(PARSES_AT_ONCE),
                ending_changes: tokio::sync::Mutex::new(()),
            }),
        };
        for id in engine.inner.store.running().await? {
            if let Err(e) = engine.resume(&id).await {
                tracing::error!(workflow = %id, "cannot resume a workflow: {e}");
            }
        }
        Ok(engine)
    }

    fn workflow_dir(&self, id: &str) -> PathBuf {
        self.inner.dir.join(id)
    }

    /// Parses a workflow file a client sent: on a blocking thread (a large file takes
    /// a while), at most [`PARSES_AT_ONCE`] at a time (each may take a few hundred MB).
    pub async fn parse(&self, yaml: &str) -> Result<WorkflowSpec, WorkflowError> {
        let _permit = self
            .inner
            .parses
            .acquire()
            .await
            .map_err(|_| WorkflowError::Host("the server is shutting down".into()))?;
        let yaml = yaml.to_owned();
        tokio::task::spawn_blocking(move || WorkflowSpec::parse(&yaml))
            .await
            .map_err(|e| WorkflowError::Host(format!("reading the workflow: {e}")))?
            .map_err(|e| WorkflowError::Invalid(e.to_string()))
    }

    /// Parses and checks a workflow as RunWorkflow would, without storing anything.
    pub async fn check(&self, yaml: &str, files: &[Upload]) -> Result<WorkflowSpec, WorkflowError> {
        let spec = self.parse(yaml).await?;
        self.check_parsed(&spec, Some(files))?;
        Ok(spec)
    }

    /// Checks a parsed workflow against this server: its runtimes are installed, the
    /// request carries its uploads (`files`; none: not checked, as in a validation, which
    /// sends none), and each job is one RunJob would take.
    pub fn check_parsed(
        &self,
        spec: &WorkflowSpec,
        files: Option<&[Upload]>,
    ) -> Result<(), WorkflowError> {
        let sent = files.is_some();
        let files = files.unwrap_or_default();
        for (i, job) in spec.jobs.iter().enumerate() {
            if let Some(runtime) = &job.runtime {
                self.inner
                    .catalog
                    .get(runtime)
                    .map_err(|e| WorkflowError::Invalid(format!("job {}: {e}", job.name)))?;
            }
            for wanted in &job.uploads {
                let w = wanted.trim_end_matches('/');
                if sent
                    && !files
                        .iter()
                        .any(|f| f.path == w || f.path.starts_with(&format!("{w}/")))
                {
                    return Err(WorkflowError::Invalid(format!(
                        "job {}: uploads {wanted:?}, which the request does not carry",
                        job.name
                    )));
                }
            }
            let job_spec = node_job::job_spec("0", spec, i);
            let uploads = node_job::uploads(files, spec, i);
            self.inner
                .jobs
                .check(&job_spec, &uploads)
                .map_err(|e| WorkflowError::Invalid(format!("job {}: {e}", job.name)))?;
        }
        Ok(())
    }

    /// Checks, stores and starts a workflow.
    pub async fn submit(
        &self,
        request: RunWorkflowRequest,
        owner: String,
    ) -> Result<Workflow, WorkflowError> {
        let mut spec = self.check(&request.yaml, &request.files).await?;
        if !request.name.is_empty() {
            spec.name = request.name.clone();
        }
        let spec = Arc::new(spec);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let dir = self.workflow_dir(&id);
        let files = request.files;
        {
            let (made, files) = (dir.clone(), files.clone());
            tokio::task::spawn_blocking(move || {
                shared::create_shared_dir(&made.join("shared"))?;
                let keep = RunWorkflowRequest {
                    files,
                    ..RunWorkflowRequest::default()
                };
                std::fs::write(made.join("files.pb"), keep.encode_to_vec())
            })
            .await
            .map_err(|e| WorkflowError::Host(e.to_string()))?
            .map_err(|e| WorkflowError::Host(format!("cannot create {}: {e}", dir.display())))?;
        }
        // A YAML with secret values is stored only sealed; the row keeps a note.
        let (yaml, sealed) = if spec.jobs.iter().any(|j| !j.secret_env.is_empty()) {
            let sealed = self
                .inner
                .jobs
                .secret_key()
                .seal(
                    &crate::secrets::workflow_owner(&id),
                    crate::secrets::WORKFLOW_YAML,
                    &request.yaml,
                )
                .map_err(|e| WorkflowError::Host(e.to_string()));
            match sealed {
                Ok(sealed) => (crate::secrets::SEALED_YAML_NOTE.to_owned(), Some(sealed)),
                Err(e) => {
                    let _ = crate::tree::remove_dir_all(&dir);
                    return Err(e);
                }
            }
        } else {
            (request.yaml, None)
        };
        let row = WorkflowRow {
            id: id.clone(),
            name: spec.name.clone(),
            owner,
            yaml,
            state: WorkflowState::Running as i32,
            reason: String::new(),
            canceled: None,
            created_at: crate::jobs::now_micros(),
            ended_at: None,
        };
        let run = Run::new(spec.clone());
        let nodes: Vec<NodeRow> = run
            .nodes()
            .iter()
            .map(|n| NodeRow {
                node: n.clone(),
                job_ids: Vec::new(),
            })
            .collect();
        if let Err(e) = self.inner.store.insert(&row, &nodes, sealed.as_ref()).await {
            let _ = crate::tree::remove_dir_all(&dir);
            return Err(e.into());
        }
        metrics::counter!(crate::metrics::WORKFLOWS_STARTED).increment(1);
        tracing::info!(workflow = %id, "workflow {} submitted with {} jobs", spec.name, spec.jobs.len());
        let view = self.spawn(
            row,
            spec,
            run,
            (vec![Vec::new(); nodes.len()], vec![None; nodes.len()]),
            Arc::new(files),
            &[],
        );
        let first = view.borrow().clone();
        Ok(first)
    }

    /// Starts the task that drives a workflow, with each node's job ids and last job;
    /// `recover` lists the running nodes whose job must be found (or started) first.
    fn spawn(
        &self,
        row: WorkflowRow,
        spec: Arc<WorkflowSpec>,
        run: Run,
        (job_ids, last_jobs): (Vec<Vec<String>>, Vec<Option<JobRow>>),
        files: Arc<Vec<Upload>>,
        recover: &[(usize, Result<JobRow, u32>)],
    ) -> watch::Receiver<Workflow> {
        let (tx, rx) = mpsc::unbounded_channel();
        let nodes = run.nodes().to_vec();
        let first = view::workflow(&row, &spec, &nodes, &job_ids, &last_jobs);
        let (view_tx, view_rx) = watch::channel(first);
        let running = Running {
            engine: self.clone(),
            row,
            spec,
            run,
            job_ids,
            last_jobs,
            files,
            tx: tx.clone(),
            view: view_tx,
            dirty: Default::default(),
            last_write: None,
        };
        for (node, found) in recover {
            let attempt = running.run.nodes()[*node].attempts;
            match found {
                Ok(job) => running.watch_end(*node, attempt, job.clone()),
                Err(k) => running.start(*node, *k),
            }
        }
        if let Ok(mut active) = self.inner.active.lock() {
            active.insert(
                running.row.id.clone(),
                Active {
                    tx,
                    view: view_rx.clone(),
                },
            );
        }
        tokio::spawn(running.drive(rx));
        view_rx
    }

    fn forget(&self, id: &str) {
        if let Ok(mut active) = self.inner.active.lock() {
            active.remove(id);
        }
    }

    /// The token of a node's attempt's job, the `k`-th try of it (a try whose job never
    /// ran because the server stopped during its start is tried again).
    fn token(id: &str, node: usize, attempt: u32, k: u32) -> String {
        match k {
            0 => format!("{id}:{node}:{attempt}"),
            k => format!("{id}:{node}:{attempt}#{k}"),
        }
    }

    /// The job of a node's attempt, if one exists that ran or runs, and the try number for
    /// a new one otherwise; with the ids of the tries before it that never ran (the server
    /// stopped during their start), which the node lists beside the one that runs.
    async fn find_attempt(&self, id: &str, node: usize, attempt: u32) -> Result<Found, JobError> {
        let mut cut = Vec::new();
        for k in 0.. {
            match self
                .inner
                .jobs
                .find_by_token(&Self::token(id, node, attempt, k))
                .await?
            {
                None => return Ok(Found { cut, job: Err(k) }),
                Some(row) if never_ran(&row) => cut.push(row.id),
                Some(row) => return Ok(Found { cut, job: Ok(row) }),
            }
        }
        unreachable!("the loop returns")
    }

    /// Starts the `k`-th try of the job of a node's attempt (`k` is 0 unless a crash left
    /// tries that never ran: see [`Engine::find_attempt`]); answers with its row, or why it
    /// could not start, and the ids of earlier tries found never to have run.
    #[allow(clippy::too_many_arguments)]
    async fn start_job(
        &self,
        id: &str,
        owner: &str,
        spec: &WorkflowSpec,
        files: &[Upload],
        node: usize,
        attempt: u32,
        k: u32,
        gate: Option<crate::jobs::StartGate>,
    ) -> (Vec<String>, Result<JobRow, String>) {
        let mut cut = Vec::new();
        let mut runtime = None;
        let mut root = None;
        let mut hold = None;
        let named = &spec.jobs[node].runtime;
        if let Some(named) = named.as_ref().filter(|r| !r.is_empty()) {
            let (installed, guard) = match self.inner.catalog.resolve(named).await {
                Ok(resolved) => resolved,
                Err(e) => return (cut, Err(e.to_string())),
            };
            runtime = Some(installed.label());
            root = Some(installed.job_root());
            hold = Some(guard);
        }
        let mut k = k;
        let started = loop {
            // Made for each try: a second one follows only a token clash (rare).
            let mut job = node_job::job_spec(id, spec, node);
            if let Some(label) = &runtime {
                job.runtime = label.clone();
            }
            let uploads = node_job::uploads(files, spec, node);
            let options = JobOptions {
                root: root.clone(),
                shared_dir: Some(self.workflow_dir(id).join("shared")),
                request_token: Some(Self::token(id, node, attempt, k)),
                gate: gate.clone(),
                ..JobOptions::default()
            };
            let started = self
                .inner
                .jobs
                .run_in(job, uploads, owner.to_owned(), options)
                .await;
            match started {
                // A job has this try's token already: the server stopped after storing
                // it and before the node's new attempt was written, so this attempt began
                // before the crash. Its job is followed if it ran or runs, and otherwise
                // the next try starts.
                Err(e) if is_duplicate_token(&e) => {
                    let found = match self.find_attempt(id, node, attempt).await {
                        Ok(found) => found,
                        Err(found) => break Err(found),
                    };
                    // Each search starts from the first try: it finds them all.
                    cut = found.cut;
                    match found.job {
                        Ok(job) => break Ok(job),
                        Err(next) if next > k => k = next,
                        Err(_) => break Err(e),
                    }
                }
                other => break other,
            }
        };
        drop(hold);
        (cut, started.map_err(|e| e.to_string()))
    }

    /// A stored workflow's YAML as submitted: opened from `workflow_secrets` when it holds
    /// secret values.
    async fn yaml_of(&self, row: &WorkflowRow) -> Result<String, WorkflowError> {
        match self.inner.store.sealed_yaml(&row.id).await? {
            Some(sealed) => self
                .inner
                .jobs
                .secret_key()
                .open(&crate::secrets::workflow_owner(&row.id), &sealed)
                .map_err(|e| WorkflowError::Host(e.to_string())),
            None => Ok(row.yaml.clone()),
        }
    }

    /// Resumes a workflow the previous server left running.
    async fn resume(&self, id: &str) -> Result<(), WorkflowError> {
        let (row, nodes) = self.inner.store.get(id).await?;
        let spec = match WorkflowSpec::parse(&self.yaml_of(&row).await?) {
            Ok(spec) => Arc::new(spec),
            Err(e) => {
                let mut row = row;
                row.state = WorkflowState::Failed as i32;
                row.reason = format!("its YAML no longer parses after a restart: {e}");
                row.ended_at = Some(crate::jobs::now_micros());
                self.inner.store.update(&row).await?;
                return Ok(());
            }
        };
        let files = self.read_files(id);
        let job_ids = stored_job_ids(&nodes, spec.jobs.len());
        let run = Run::restore(
            spec.clone(),
            nodes.iter().map(|n| n.node.clone()).collect(),
            row.canceled.clone(),
        );
        let mut recover = Vec::new();
        let mut job_ids = job_ids;
        for (node, n) in run.nodes().iter().enumerate() {
            if n.state != NodeState::Running {
                continue;
            }
            let found = self
                .find_attempt(id, node, n.attempts)
                .await
                .map_err(|e| WorkflowError::Host(e.to_string()))?;
            add_ids(&mut job_ids[node], found.cut);
            match found.job {
                Ok(job) => {
                    add_ids(&mut job_ids[node], [job.id.clone()]);
                    recover.push((node, Ok(job)));
                }
                Err(k) => recover.push((node, Err(k))),
            }
        }
        tracing::info!(workflow = %id, "resuming workflow {} ({} jobs in flight)", row.name, recover.len());
        let last_jobs = self.last_jobs(&job_ids).await;
        self.spawn(
            row,
            spec,
            run,
            (job_ids, last_jobs),
            Arc::new(files),
            &recover,
        );
        Ok(())
    }

    /// The job of each node's last attempt (for its exit code and times).
    async fn last_jobs(&self, job_ids: &[Vec<String>]) -> Vec<Option<JobRow>> {
        let mut found = Vec::with_capacity(job_ids.len());
        for ids in job_ids {
            found.push(match ids.last() {
                Some(job) => self.inner.jobs.get(job).await.ok(),
                None => None,
            });
        }
        found
    }

    fn read_files(&self, id: &str) -> Vec<Upload> {
        std::fs::read(self.workflow_dir(id).join("files.pb"))
            .ok()
            .and_then(|b| RunWorkflowRequest::decode(b.as_slice()).ok())
            .map(|r| r.files)
            .unwrap_or_default()
    }

    /// The full id of the one workflow `prefix` names.
    pub async fn resolve(&self, prefix: &str) -> Result<String, WorkflowError> {
        Ok(self.inner.store.resolve(prefix).await?)
    }

    /// A workflow as it is now.
    pub async fn get(&self, prefix: &str) -> Result<Workflow, WorkflowError> {
        let id = self.resolve(prefix).await?;
        if let Some(view) = self.active_view(&id) {
            return Ok(view.borrow().clone());
        }
        self.stored_view(&id).await.map(|(w, _, _)| w)
    }

    fn active_view(&self, id: &str) -> Option<watch::Receiver<Workflow>> {
        self.inner
            .active
            .lock()
            .ok()?
            .get(id)
            .map(|a| a.view.clone())
    }

    /// A stored workflow's view, with its spec and nodes.
    async fn stored_view(
        &self,
        id: &str,
    ) -> Result<(Workflow, Option<Arc<WorkflowSpec>>, Vec<Node>), WorkflowError> {
        let (row, nodes) = self.inner.store.get(id).await?;
        let spec = WorkflowSpec::parse(&self.yaml_of(&row).await?)
            .ok()
            .map(Arc::new);
        let job_ids: Vec<Vec<String>> = nodes.iter().map(|n| n.job_ids.clone()).collect();
        let states: Vec<Node> = nodes.iter().map(|n| n.node.clone()).collect();
        let last_jobs = self.last_jobs(&job_ids).await;
        let view = match &spec {
            Some(spec) => view::workflow(&row, spec, &states, &job_ids, &last_jobs),
            None => Workflow {
                id: row.id.clone(),
                name: row.name.clone(),
                state: row.state,
                reason: row.reason.clone(),
                owner: row.owner.clone(),
                ..Workflow::default()
            },
        };
        Ok((view, spec, states))
    }

    /// The newest `limit` workflows, whole or (`summary`) without their jobs, read one at
    /// a time. A summary needs only the stored row and nodes: no spec is parsed, no job
    /// read. Whole workflows stop at [`MAX_LIST_BYTES`]: past it the call is refused, not
    /// cut short. A workflow deleted meanwhile is left out.
    pub async fn list(&self, limit: u32, summary: bool) -> Result<Vec<Workflow>, WorkflowError> {
        let ids = self.inner.store.list_ids(limit).await?;
        let mut found = Vec::with_capacity(ids.len());
        let mut bytes = 0usize;
        for id in ids {
            let shown = match (self.active_view(&id), summary) {
                (Some(active), true) => view::without_jobs(&active.borrow()),
                (None, true) => match self.inner.store.get(&id).await {
                    Ok((row, nodes)) => {
                        let nodes: Vec<_> = nodes.into_iter().map(|n| n.node).collect();
                        view::summary(&row, &nodes)
                    }
                    Err(StoreError::NotFound(_)) => continue,
                    Err(e) => return Err(e.into()),
                },
                (_, false) => match self.get(&id).await {
                    Ok(whole) => whole,
                    Err(WorkflowError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                },
            };
            bytes = bytes.saturating_add(prost::Message::encoded_len(&shown));
            if bytes > MAX_LIST_BYTES {
                return Err(WorkflowError::TooLarge(format!(
                    "the {} newest workflows are more than {} MiB in the full view; ask for \
                     fewer (limit) or for the summary view",
                    found.len() + 1,
                    MAX_LIST_BYTES >> 20
                )));
            }
            found.push(shown);
        }
        Ok(found)
    }

    /// A workflow's views: now, then on every change; `None` once it has ended.
    pub async fn watch(
        &self,
        prefix: &str,
    ) -> Result<(Workflow, Option<watch::Receiver<Workflow>>), WorkflowError> {
        let id = self.resolve(prefix).await?;
        match self.active_view(&id) {
            Some(view) => {
                let now = view.borrow().clone();
                Ok((now, Some(view)))
            }
            None => Ok((self.get(&id).await?, None)),
        }
    }

    /// Cancels a running workflow and answers once it has ended (a finished one answers
    /// as it is).
    pub async fn cancel(&self, prefix: &str, reason: &str) -> Result<Workflow, WorkflowError> {
        let id = self.resolve(prefix).await?;
        let active = self
            .inner
            .active
            .lock()
            .ok()
            .and_then(|a| a.get(&id).map(|a| (a.tx.clone(), a.view.clone())));
        let Some((tx, mut view)) = active else {
            return self.get(&id).await;
        };
        let _ = tx.send(Event::Cancel {
            reason: reason.to_owned(),
        });
        let ended = view
            .wait_for(|w| w.state != WorkflowState::Running as i32)
            .await
            .map(|w| w.clone());
        match ended {
            Ok(w) => Ok(w),
            Err(_) => self.get(&id).await,
        }
    }

    /// Runs again the failed, stopped and skipped jobs of a finished workflow.
    pub async fn retry(&self, prefix: &str) -> Result<Workflow, WorkflowError> {
        let _changing = self.inner.ending_changes.lock().await;
        let id = self.resolve(prefix).await?;
        if self.active_view(&id).is_some() {
            return Err(WorkflowError::StillRunning(id));
        }
        let (mut row, nodes) = self.inner.store.get(&id).await?;
        let spec = Arc::new(
            WorkflowSpec::parse(&self.yaml_of(&row).await?)
                .map_err(|e| WorkflowError::Invalid(e.to_string()))?,
        );
        let mut run = Run::restore(
            spec.clone(),
            nodes.iter().map(|n| n.node.clone()).collect(),
            row.canceled.clone(),
        );
        if !run.retry() {
            return Err(WorkflowError::StillRunning(id));
        }
        row.state = WorkflowState::Running as i32;
        row.reason.clear();
        row.canceled = None;
        row.ended_at = None;
        let job_ids = stored_job_ids(&nodes, spec.jobs.len());
        let stored: Vec<(usize, NodeRow)> = run
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let row = NodeRow {
                    node: node.clone(),
                    job_ids: job_ids[i].clone(),
                };
                (i, row)
            })
            .collect();
        self.inner.store.update_nodes(&id, &stored).await?;
        self.inner.store.update(&row).await?;
        let files = self.read_files(&id);
        let last_jobs = self.last_jobs(&job_ids).await;
        let view = self.spawn(row, spec, run, (job_ids, last_jobs), Arc::new(files), &[]);
        let now = view.borrow().clone();
        Ok(now)
    }

    /// Ids of at most `limit` workflows that ended before `cutoff` (µs since the epoch).
    pub async fn ended_before(
        &self,
        cutoff: i64,
        limit: u32,
    ) -> Result<Vec<String>, WorkflowError> {
        Ok(self.inner.store.ended_before(cutoff, limit).await?)
    }

    /// Removes a finished workflow, its jobs and its directory.
    pub async fn delete(&self, prefix: &str) -> Result<String, WorkflowError> {
        let _changing = self.inner.ending_changes.lock().await;
        let id = self.resolve(prefix).await?;
        if self.active_view(&id).is_some() {
            return Err(WorkflowError::StillRunning(id));
        }
        let (_, nodes) = self.inner.store.get(&id).await?;
        for job in nodes.iter().flat_map(|n| n.job_ids.iter()) {
            match self.inner.jobs.delete(job).await {
                Ok(_) | Err(JobError::Store(StoreError::NotFound(_))) => {}
                Err(e) => return Err(WorkflowError::Host(format!("cannot delete job {job}: {e}"))),
            }
        }
        self.inner.store.delete(&id).await?;
        let dir = self.workflow_dir(&id);
        let _ = tokio::task::spawn_blocking(move || crate::tree::remove_dir_all(dir)).await;
        Ok(id)
    }

    /// The workflow's DAG in `format`, with its jobs' states.
    pub async fn graph(
        &self,
        prefix: &str,
        format: silo_workflow::graph::Format,
    ) -> Result<String, WorkflowError> {
        let id = self.resolve(prefix).await?;
        let (_, spec, nodes) = self.stored_view(&id).await?;
        let spec = spec.ok_or_else(|| WorkflowError::Invalid("its YAML does not parse".into()))?;
        let states: Vec<NodeState> = match self.active_view(&id) {
            Some(view) => {
                let now = view.borrow().clone();
                // The live view is fresher than the store: map its states back.
                nodes
                    .iter()
                    .zip(now.jobs.iter())
                    .map(|(n, j)| live_state(j.state(), &n.state))
                    .collect()
            }
            None => nodes.iter().map(|n| n.state).collect(),
        };
        Ok(silo_workflow::graph::render(&spec, Some(&states), format))
    }
}

/// The scheduler state a live wire state stands for (`stored` keeps a backoff's time).
fn live_state(state: silo_proto::v1::WorkflowJobState, stored: &NodeState) -> NodeState {
    use silo_proto::v1::WorkflowJobState as S;
    match state {
        S::Running => NodeState::Running,
        S::Backoff => *stored,
        S::Completed => NodeState::Completed,
        S::Failed => NodeState::Failed,
        S::Stopped => NodeState::Stopped,
        S::Skipped => NodeState::Skipped,
        S::Waiting | S::Unspecified => NodeState::Waiting,
    }
}

/// Whether `e` is the store's refusal of a second job with the same request token.
fn is_duplicate_token(e: &JobError) -> bool {
    matches!(
        e,
        JobError::Store(crate::store::StoreError::Db(sqlx::Error::Database(db)))
            if db.is_unique_violation()
    )
}

/// What [`Engine::find_attempt`] found of a node's attempt.
struct Found {
    /// The tries that never ran (the server stopped during their start), oldest first.
    cut: Vec<String>,
    /// The try that ran or runs, else the number of the next try.
    job: Result<JobRow, u32>,
}

/// Whether a job never ran its command because the server stopped during its start.
fn never_ran(row: &JobRow) -> bool {
    row.end_cause == EndCause::ServerRestart && row.started_at.is_none()
}

/// Adds the job ids `ids` to a node's list, each once; whether any was new.
fn add_ids(list: &mut Vec<String>, ids: impl IntoIterator<Item = String>) -> bool {
    let mut added = false;
    for id in ids {
        if !list.contains(&id) {
            list.push(id);
            added = true;
        }
    }
    added
}

/// Each node's job ids as stored, one entry per job of the workflow's YAML (`jobs`), as
/// [`Run::restore`] makes its nodes: a store whose node rows do not match its YAML's jobs
/// (damaged, or written by another version) must not make an index out of range.
fn stored_job_ids(nodes: &[NodeRow], jobs: usize) -> Vec<Vec<String>> {
    let mut ids: Vec<Vec<String>> = nodes.iter().map(|n| n.job_ids.clone()).collect();
    ids.resize_with(jobs, Vec::new);
    ids
}

#[cfg(test)]
mod tests {
    use super::{NodeRow, stored_job_ids};
    use silo_workflow::schedule::{Node, NodeState};

    #[test]
    fn stored_job_ids_have_one_entry_per_job_of_the_yaml() {
        let row = |id: &str| NodeRow {
            node: Node {
                state: NodeState::Completed,
                attempts: 1,
                reason: String::new(),
            },
            job_ids: vec![id.to_owned()],
        };
        let stored = [row("a"), row("b")];
        assert_eq!(stored_job_ids(&stored, 3), [vec!["a"], vec!["b"], vec![]]);
        assert_eq!(stored_job_ids(&stored, 1), [vec!["a"]]);
    }
}
