//! `silo workflow logs ID [JOB]`: the output of a workflow's jobs (or of one job), every
//! attempt, each line prefixed with its job (`train#2 | …` for a second attempt); stdout
//! lines go to stdout, the rest to stderr. With `--follow`, every attempt that starts
//! while the workflow runs is followed too, until the workflow has ended.

use std::collections::HashSet;

use silo_proto::v1::{LogRecord, Workflow, WorkflowJob};
use tokio::sync::mpsc;

use super::get_workflow;
use super::lines::{LabelledWriter, Line, LineSplitter, attempt_label};
use super::text::workflow_title;
use super::watch::WorkflowWatch;
use crate::cli::{GlobalOptions, WorkflowLogsArgs};
use crate::format::single_line;
use crate::logs::LogCursor;
use crate::output::write_failure;
use crate::session::{CallError, Session};

/// Prints the jobs' output job by job (in the workflow's order, attempts oldest first);
/// with `--follow`, as it is written, until the workflow and all its jobs have ended.
pub async fn logs(global: &GlobalOptions, args: WorkflowLogsArgs) -> anyhow::Result<i32> {
    let mut session = Session::open(global).await?;
    if args.follow {
        return follow(session, &args.id, args.job.as_deref()).await;
    }
    let workflow = get_workflow(&mut session, &args.id).await?;
    let jobs = selected(&workflow, args.job.as_deref())?;
    let mut writer = LabelledWriter::new(label_width(&jobs));
    for job in jobs {
        for (index, id) in job.job_ids.iter().enumerate() {
            let label = attempt_label(&job.name, index + 1);
            let mut splitter = LineSplitter::default();
            let mut cursor = LogCursor::new(session.clone(), id, 0, false);
            while let Some(records) = cursor.next_records().await? {
                if let Err(err) = writer.write(&label, &split(&mut splitter, &records)) {
                    return write_failure(&err);
                }
            }
            if let Err(err) = writer.write(&label, &splitter.finish()) {
                return write_failure(&err);
            }
        }
    }
    Ok(0)
}

/// One attempt being followed: its label and its unfinished lines.
struct Attempt {
    label: String,
    splitter: LineSplitter,
}

/// Output of attempt `index` (into the follower's list): records, or `None` at its end.
type Output = (usize, Result<Option<Vec<LogRecord>>, CallError>);

/// Follows every attempt of the selected jobs as the workflow's changes reveal them.
async fn follow(session: Session, id: &str, job: Option<&str>) -> anyhow::Result<i32> {
    let mut changes = WorkflowWatch::new(session.clone(), id).spawn();
    let (sender, mut output) = mpsc::channel::<Output>(64);
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut followed: HashSet<String> = HashSet::new();
    let mut writer: Option<LabelledWriter> = None;
    let mut watching = true;
    let mut open = 0usize;
    while watching || open > 0 {
        tokio::select! {
            change = changes.recv(), if watching => match change {
                Some(Ok(workflow)) => {
                    let jobs = selected(&workflow, job)?;
                    writer.get_or_insert_with(|| LabelledWriter::new(label_width(&jobs)));
                    for job in jobs {
                        for (index, job_id) in job.job_ids.iter().enumerate() {
                            if followed.insert(job_id.clone()) {
                                attempts.push(Attempt {
                                    label: attempt_label(&job.name, index + 1),
                                    splitter: LineSplitter::default(),
                                });
                                spawn_reader(session.clone(), job_id, attempts.len() - 1, sender.clone());
                                open += 1;
                            }
                        }
                    }
                }
                Some(Err(err)) => return Err(err.into()),
                None => watching = false,
            },
            Some((index, records)) = output.recv(), if open > 0 => {
                let attempt = &mut attempts[index];
                let lines = match records? {
                    Some(records) => split(&mut attempt.splitter, &records),
                    None => {
                        open -= 1;
                        attempt.splitter.finish()
                    }
                };
                if let Some(writer) = writer.as_mut()
                    && let Err(err) = writer.write(&attempt.label, &lines)
                {
                    return write_failure(&err);
                }
            }
        }
    }
    Ok(0)
}

/// Reads job `id`'s output to its end (following it while it runs) in a task of its own,
/// sending it as attempt `index`'s.
fn spawn_reader(session: Session, id: &str, index: usize, sender: mpsc::Sender<Output>) {
    let mut cursor = LogCursor::new(session, id, 0, true);
    tokio::spawn(async move {
        loop {
            let next = cursor.next_records().await;
            let ended = !matches!(next, Ok(Some(_)));
            if sender.send((index, next)).await.is_err() || ended {
                return;
            }
        }
    });
}

fn split(splitter: &mut LineSplitter, records: &[LogRecord]) -> Vec<Line> {
    records
        .iter()
        .flat_map(|record| splitter.push(record))
        .collect()
}

/// The jobs asked for: all of them, or the one named `job`.
fn selected<'a>(workflow: &'a Workflow, job: Option<&str>) -> anyhow::Result<Vec<&'a WorkflowJob>> {
    let Some(name) = job else {
        return Ok(workflow.jobs.iter().collect());
    };
    match workflow.jobs.iter().find(|job| job.name == name) {
        Some(job) => Ok(vec![job]),
        None => anyhow::bail!(
            "workflow {} has no job named {:?}; its jobs: {}",
            workflow_title(workflow),
            single_line(name),
            workflow
                .jobs
                .iter()
                .map(|job| single_line(&job.name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The width of the longest label the jobs' attempts so far have.
fn label_width(jobs: &[&WorkflowJob]) -> usize {
    jobs.iter()
        .map(|job| {
            attempt_label(&job.name, job.job_ids.len().max(1))
                .chars()
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow() -> Workflow {
        let job = |name: &str, attempts: usize| WorkflowJob {
            name: name.into(),
            job_ids: (0..attempts).map(|n| n.to_string()).collect(),
            ..WorkflowJob::default()
        };
        Workflow {
            id: "0123456789abcdef".into(),
            name: "ci".into(),
            jobs: vec![job("fetch", 1), job("train", 2), job("report", 0)],
            ..Workflow::default()
        }
    }

    #[test]
    fn labels_are_as_wide_as_the_longest_attempt_so_far() {
        let workflow = workflow();
        let jobs = selected(&workflow, None).unwrap();
        assert_eq!(label_width(&jobs), "train#2".len());
        let one = selected(&workflow, Some("fetch")).unwrap();
        assert_eq!(label_width(&one), "fetch".len());
    }

    #[test]
    fn an_unknown_job_is_refused_listing_the_workflows_jobs() {
        let err = selected(&workflow(), Some("trian"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "workflow ci (0123456789ab) has no job named \"trian\"; its jobs: fetch, train, report"
        );
    }
}
