//! What `silo top` needs of the job manager: every running job's usage at once, and how
//! many jobs there are.

use std::sync::Arc;

use silo_proto::v1::{JobState, Usage};

use super::live::LiveJob;
use super::{JobError, JobManager};

/// A running job and its usage, read at one moment.
#[derive(Debug, Clone)]
pub struct RunningUsage {
    /// The job's full id.
    pub id: String,
    /// Its name ("" when it has none).
    pub name: String,
    /// Its command and arguments.
    pub command: Vec<String>,
    /// Who started it.
    pub owner: String,
    /// When its command started, in microseconds since the epoch.
    pub started_at: Option<i64>,
    /// Its cgroup's counters now; `None` when it has no cgroup or they could not be read.
    pub usage: Option<Usage>,
}

impl JobManager {
    /// Every job in the RUNNING state with its usage now. Reads each job's cgroup files,
    /// so call it on a blocking thread. The live table's lock is held only to list the
    /// jobs, never while their files are read.
    pub fn running_usage(&self) -> Vec<RunningUsage> {
        self.running_with(LiveJob::usage)
    }

    /// As [`JobManager::running_usage`], with only each job's CPU time and memory now
    /// (two cgroup files a job instead of a dozen): what a metrics scrape reports.
    pub fn running_cpu_and_memory(&self) -> Vec<RunningUsage> {
        self.running_with(LiveJob::cpu_and_memory)
    }

    fn running_with(&self, sample: fn(&LiveJob) -> Option<Usage>) -> Vec<RunningUsage> {
        let live: Vec<Arc<LiveJob>> = match self.inner.live.lock() {
            Ok(map) => map.values().cloned().collect(),
            Err(_) => return Vec::new(),
        };
        live.iter()
            .filter_map(|job| {
                let (name, command, owner, started_at) = {
                    let row = job.row.borrow();
                    if row.state != JobState::Running {
                        return None;
                    }
                    (
                        row.spec.name.clone(),
                        row.spec.command.clone(),
                        row.owner.clone(),
                        row.started_at,
                    )
                };
                Some(RunningUsage {
                    id: job.id.clone(),
                    name,
                    command,
                    owner,
                    started_at,
                    usage: sample(job),
                })
            })
            .collect()
    }

    /// How many jobs the store holds, in any state.
    pub async fn total_jobs(&self) -> Result<u64, JobError> {
        Ok(self.inner.store.count().await?)
    }
}
