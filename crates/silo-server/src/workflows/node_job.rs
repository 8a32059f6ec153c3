//! What a workflow node's job is: its JobSpec from the YAML, its uploads, and how its end
//! reads to the scheduler.

use silo_proto::v1::{EnvVar, JobNetwork, JobSpec, JobState, Limits, SecretVar, Upload};
use silo_workflow::schedule::Outcome;
use silo_workflow::spec::{JobSpec as NodeSpec, WorkflowSpec};

use crate::store::JobRow;

/// The job of `node` (an index into `spec.jobs`) of workflow `id`.
pub fn job_spec(id: &str, spec: &WorkflowSpec, node: usize) -> JobSpec {
    let n: &NodeSpec = &spec.jobs[node];
    let mut command = vec![n.command.clone()];
    command.extend(n.args.iter().cloned());
    let mut env: Vec<EnvVar> = vec![
        EnvVar {
            name: "SILO_WORKFLOW_ID".into(),
            value: id.to_owned(),
        },
        EnvVar {
            name: "SILO_WORKFLOW_JOB".into(),
            value: n.name.clone(),
        },
    ];
    env.extend(n.env.iter().map(|(name, value)| EnvVar {
        name: name.clone(),
        value: value.clone(),
    }));
    let r = &n.resources;
    let limits = Limits {
        cpu_percent: r.cpu_percent,
        cpus: r.cpus.clone(),
        memory_bytes: r.memory_bytes,
        io_bps: r.io_bps.filter(|b| *b > 0),
        pids: r.pids,
        disk_bytes: r.disk_bytes,
    };
    JobSpec {
        command,
        env,
        workdir: n.workdir.clone().unwrap_or_default(),
        timeout_ms: n
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
        name: format!("{}/{}", spec.name, n.name),
        limits: Some(limits),
        network: if n.network_host {
            JobNetwork::Host
        } else {
            JobNetwork::None
        } as i32,
        runtime: n.runtime.clone().unwrap_or_default(),
        secret_env: n
            .secret_env
            .iter()
            .map(|(name, value)| SecretVar {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        ..JobSpec::default()
    }
}

/// The uploads of `node`: the workflow's files under each path it names.
pub fn uploads(files: &[Upload], spec: &WorkflowSpec, node: usize) -> Vec<Upload> {
    let wanted = &spec.jobs[node].uploads;
    files
        .iter()
        .filter(|f| {
            wanted.iter().any(|w| {
                let w = w.trim_end_matches('/');
                f.path == w || f.path.starts_with(&format!("{w}/"))
            })
        })
        .cloned()
        .collect()
}

/// How an ended job reads to the scheduler.
pub fn outcome(row: &JobRow) -> Outcome {
    let reason = if row.reason.is_empty() {
        format!("{:?}", row.state).to_lowercase()
    } else {
        row.reason.clone()
    };
    match row.state {
        JobState::Completed => Outcome::Completed,
        JobState::Stopped => Outcome::Stopped(reason),
        _ => Outcome::Failed(reason),
    }
}
