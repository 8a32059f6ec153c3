//! How `silo workflow run` ends: its exit status, and when the workflow did not complete,
//! the job that failed it with the last lines of its output.

use std::collections::VecDeque;

use silo_proto::v1::{LogRecord, Workflow, WorkflowJob, WorkflowJobState, WorkflowState};

use super::lines::{LabelledWriter, Line, LineSplitter, attempt_label};
use super::text::{job_state, workflow_state};
use crate::format::{short_id, single_line, system_time};
use crate::logs::LogCursor;
use crate::output::say;
use crate::session::Session;

/// How many lines of the failed job's output are shown.
pub const TAIL_LINES: usize = 10;

/// The exit status for a workflow that has ended: 0 when it completed, else 1.
pub fn exit_status(workflow: &Workflow) -> i32 {
    match workflow_state(workflow) {
        WorkflowState::Completed => 0,
        _ => 1,
    }
}

/// The job that failed the workflow: of its failed jobs the one that ended first (file
/// order breaks a tie), else likewise of its stopped jobs; `None` when no job failed or
/// was stopped (a canceled workflow skips the rest).
pub fn failed_job(workflow: &Workflow) -> Option<&WorkflowJob> {
    [WorkflowJobState::Failed, WorkflowJobState::Stopped]
        .into_iter()
        .find_map(|wanted| {
            workflow
                .jobs
                .iter()
                .filter(|job| job_state(job) == wanted)
                .min_by_key(|job| {
                    let ended = system_time(job.ended_at.as_ref());
                    (ended.is_none(), ended)
                })
        })
}

/// Why the job failed, in words: its reason, else its exit code.
pub fn job_failure(job: &WorkflowJob) -> String {
    match (job.reason.is_empty(), job.exit_code) {
        (false, _) => single_line(&job.reason),
        (true, Some(code)) => format!("exit code {code}"),
        (true, None) => "no reason given".to_owned(),
    }
}

/// The last lines of a log, read record by record.
#[derive(Debug)]
pub struct LogTail {
    splitter: LineSplitter,
    lines: VecDeque<Line>,
    max: usize,
}

impl LogTail {
    /// A tail keeping at most `max` lines.
    pub fn new(max: usize) -> Self {
        LogTail {
            splitter: LineSplitter::default(),
            lines: VecDeque::with_capacity(max + 1),
            max,
        }
    }

    /// Reads `records`, keeping only the last lines.
    pub fn push(&mut self, records: &[LogRecord]) {
        for record in records {
            let lines = self.splitter.push(record);
            self.keep(lines);
        }
    }

    /// The last lines, an unfinished last line included.
    pub fn finish(mut self) -> Vec<Line> {
        let rest = self.splitter.finish();
        self.keep(rest);
        self.lines.into()
    }

    fn keep(&mut self, lines: Vec<Line>) {
        for line in lines {
            self.lines.push_back(line);
            if self.lines.len() > self.max {
                self.lines.pop_front();
            }
        }
    }
}

/// Says which job failed the workflow and why, and shows the last [`TAIL_LINES`] lines of
/// its last attempt's output (labelled, on stderr). Output that cannot be read is named,
/// not fatal: the workflow's end is already known.
pub async fn report(session: &Session, workflow: &Workflow) {
    let Some(job) = failed_job(workflow) else {
        return;
    };
    let name = single_line(&job.name);
    say(format_args!("job {name}: {}", job_failure(job)));
    let Some(id) = job.job_ids.last() else {
        return;
    };
    let mut tail = LogTail::new(TAIL_LINES);
    let mut cursor = LogCursor::new(session.clone(), id, 0, false);
    loop {
        match cursor.next_records().await {
            Ok(Some(records)) => tail.push(&records),
            Ok(None) => break,
            Err(err) => {
                say(format_args!("cannot read the output of job {name}: {err}"));
                return;
            }
        }
    }
    let lines = tail.finish();
    if lines.is_empty() {
        say(format_args!(
            "job {name} (job {}) wrote no output",
            short_id(id)
        ));
        return;
    }
    say(format_args!(
        "last {} lines of {name} (job {}):",
        lines.len(),
        short_id(id)
    ));
    let label = attempt_label(&job.name, job.job_ids.len());
    let _ = LabelledWriter::to_stderr(label.chars().count()).write(&label, &lines);
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;
    use silo_proto::v1::LogStream;

    use super::*;

    fn job(name: &str, state: WorkflowJobState, ended: Option<i64>) -> WorkflowJob {
        WorkflowJob {
            name: name.into(),
            state: state as i32,
            ended_at: ended.map(|seconds| Timestamp { seconds, nanos: 0 }),
            ..WorkflowJob::default()
        }
    }

    fn workflow(state: WorkflowState, jobs: Vec<WorkflowJob>) -> Workflow {
        Workflow {
            state: state as i32,
            jobs,
            ..Workflow::default()
        }
    }

    #[test]
    fn only_a_completed_workflow_exits_0() {
        assert_eq!(exit_status(&workflow(WorkflowState::Completed, vec![])), 0);
        for state in [
            WorkflowState::Failed,
            WorkflowState::Canceled,
            WorkflowState::Running,
            WorkflowState::Unspecified,
        ] {
            assert_eq!(exit_status(&workflow(state, vec![])), 1, "{state:?}");
        }
    }

    #[test]
    fn the_failed_job_is_the_first_to_fail_then_the_first_stopped() {
        use WorkflowJobState::*;
        let failed = workflow(
            WorkflowState::Failed,
            vec![
                job("fetch", Completed, Some(1)),
                job("stopped", Stopped, Some(2)),
                job("late", Failed, Some(20)),
                job("early", Failed, Some(10)),
                job("report", Skipped, None),
            ],
        );
        assert_eq!(failed_job(&failed).unwrap().name, "early");
        let stopped = workflow(
            WorkflowState::Failed,
            vec![job("a", Stopped, Some(5)), job("b", Stopped, Some(3))],
        );
        assert_eq!(failed_job(&stopped).unwrap().name, "b");
        let canceled = workflow(
            WorkflowState::Canceled,
            vec![job("a", Completed, Some(1)), job("b", Skipped, None)],
        );
        assert!(failed_job(&canceled).is_none());
    }

    #[test]
    fn a_failure_is_the_jobs_reason_or_its_exit_code() {
        let mut failed = job("t", WorkflowJobState::Failed, None);
        assert_eq!(job_failure(&failed), "no reason given");
        failed.exit_code = Some(2);
        assert_eq!(job_failure(&failed), "exit code 2");
        failed.reason = "exited with code 2".into();
        assert_eq!(job_failure(&failed), "exited with code 2");
    }

    #[test]
    fn the_tail_keeps_the_last_lines_across_records() {
        let record = |stream: LogStream, data: String| LogRecord {
            sequence: 0,
            timestamp_unix_nanos: 0,
            stream: stream as i32,
            data: data.into_bytes().into(),
        };
        let mut tail = LogTail::new(3);
        tail.push(&[record(
            LogStream::Stdout,
            (1..=5).map(|n| format!("line {n}\n")).collect(),
        )]);
        tail.push(&[
            record(LogStream::Stderr, "Traceback\n".into()),
            record(LogStream::Stdout, "partial".into()),
        ]);
        let lines: Vec<String> = tail
            .finish()
            .iter()
            .map(|line| String::from_utf8_lossy(&line.data).into_owned())
            .collect();
        assert_eq!(lines, ["line 5", "Traceback", "partial"]);
        assert!(LogTail::new(10).finish().is_empty());
    }
}
