//! A workflow's progress while it runs, on stderr: on a terminal, one line per job and a
//! bar of how many are done, redrawn in place; elsewhere, one plain line per change of a
//! job's state (see `events`).

use std::collections::HashMap;
use std::io::{self, IsTerminal, Write};
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use silo_proto::v1::Workflow;

use super::events::{EventLines, final_line};
use super::text::{job_line, job_state, job_symbol, name_width};

/// Shows a workflow's states as they arrive.
pub trait ShowWorkflow {
    /// Shows the workflow as it is now.
    fn show(&mut self, workflow: &Workflow, now: SystemTime);
    /// Time has passed without a change (running jobs' durations grow).
    fn tick(&mut self, now: SystemTime);
    /// The workflow has ended (`workflow` is its final state): leaves the last picture and
    /// adds the final line.
    fn finish(&mut self, workflow: &Workflow, now: SystemTime);
    /// Following stopped before the end; what is shown stays as it was.
    fn abandon(&mut self);
}

/// How many attempts each job may have, by name, when known (from the workflow file).
pub type AttemptLimits = HashMap<String, u32>;

/// The live view when stderr is a terminal, event lines otherwise.
pub fn for_stderr(limits: AttemptLimits) -> Box<dyn ShowWorkflow> {
    if io::stderr().is_terminal() {
        Box::new(LiveView::new(limits))
    } else {
        Box::new(EventView::new(io::stderr()))
    }
}

/// The picture of a workflow the live view draws: one line per job, in the workflow's
/// order, each starting with its state's symbol.
pub fn live_text(workflow: &Workflow, limits: &AttemptLimits, now: SystemTime) -> String {
    let width = name_width(workflow.jobs.iter().map(|job| job.name.as_str()));
    workflow
        .jobs
        .iter()
        .map(|job| {
            let max = limits.get(&job.name).copied();
            format!(
                "{} {}",
                job_symbol(job_state(job)),
                job_line(job, width, max, now)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Lines redrawn in place on a terminal, under a bar of the jobs done.
pub struct LiveView {
    bar: ProgressBar,
    limits: AttemptLimits,
    last: Option<Workflow>,
}

impl LiveView {
    fn new(limits: AttemptLimits) -> Self {
        let style = ProgressStyle::with_template("{msg}\n{spinner} [{bar:30}] {pos}/{len} done")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bar =
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(style);
        bar.enable_steady_tick(Duration::from_millis(120));
        LiveView {
            bar,
            limits,
            last: None,
        }
    }

    fn draw(&self, workflow: &Workflow, now: SystemTime) {
        self.bar.set_length(u64::from(workflow.total));
        self.bar.set_position(u64::from(workflow.done));
        self.bar.set_message(live_text(workflow, &self.limits, now));
    }
}

impl ShowWorkflow for LiveView {
    fn show(&mut self, workflow: &Workflow, now: SystemTime) {
        self.draw(workflow, now);
        self.last = Some(workflow.clone());
    }

    fn tick(&mut self, now: SystemTime) {
        if let Some(last) = &self.last {
            self.draw(last, now);
        }
    }

    fn finish(&mut self, workflow: &Workflow, now: SystemTime) {
        self.draw(workflow, now);
        self.bar.finish();
        let _ = writeln!(io::stderr().lock(), "{}", final_line(workflow, now));
    }

    fn abandon(&mut self) {
        self.bar.abandon();
    }
}

/// One plain line per change, written to `out`; a failure to write is ignored.
pub struct EventView<W: Write> {
    out: W,
    events: EventLines,
}

impl<W: Write> EventView<W> {
    /// Event lines written to `out`.
    pub fn new(out: W) -> Self {
        EventView {
            out,
            events: EventLines::default(),
        }
    }

    /// What was written so far (for tests).
    #[cfg(test)]
    fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> ShowWorkflow for EventView<W> {
    fn show(&mut self, workflow: &Workflow, now: SystemTime) {
        for line in self.events.changes(workflow, now) {
            let _ = writeln!(self.out, "{line}");
        }
        let _ = self.out.flush();
    }

    fn tick(&mut self, _: SystemTime) {}

    fn finish(&mut self, workflow: &Workflow, now: SystemTime) {
        self.show(workflow, now);
        let _ = writeln!(self.out, "{}", final_line(workflow, now));
        let _ = self.out.flush();
    }

    fn abandon(&mut self) {}
}

#[cfg(test)]
mod tests {
    use silo_proto::v1::{WorkflowJob, WorkflowJobState, WorkflowState};

    use super::*;

    fn job(name: &str, state: WorkflowJobState, attempts: u32) -> WorkflowJob {
        WorkflowJob {
            name: name.into(),
            state: state as i32,
            attempts,
            job_ids: (0..attempts).map(|n| format!("job{n}")).collect(),
            ..WorkflowJob::default()
        }
    }

    #[test]
    fn the_live_picture_has_one_line_per_job_with_its_symbol() {
        use WorkflowJobState::*;
        let workflow = Workflow {
            jobs: vec![
                job("fetch", Completed, 1),
                job("train", Running, 2),
                job("report", Waiting, 0),
            ],
            ..Workflow::default()
        };
        let limits = AttemptLimits::from([("train".to_owned(), 3)]);
        assert_eq!(
            live_text(&workflow, &limits, SystemTime::UNIX_EPOCH),
            "✓ fetch   completed                    attempt 1\n\
             ● train   running                      attempt 2/3\n\
             ◌ report  waiting"
        );
    }

    #[test]
    fn event_lines_end_with_the_final_line() {
        use WorkflowJobState::*;
        let mut view = EventView::new(Vec::new());
        let now = SystemTime::UNIX_EPOCH;
        let running = Workflow {
            id: "0123456789abcdef".into(),
            name: "ci".into(),
            state: WorkflowState::Running as i32,
            total: 1,
            jobs: vec![job("build", Running, 1)],
            ..Workflow::default()
        };
        view.show(&running, now);
        view.tick(now);
        let ended = Workflow {
            state: WorkflowState::Completed as i32,
            done: 1,
            jobs: vec![job("build", Completed, 1)],
            ..running
        };
        view.finish(&ended, now);
        assert_eq!(
            String::from_utf8(view.into_inner()).unwrap(),
            "[build] RUNNING (attempt 1, job job0)\n\
             [build] COMPLETED\n\
             workflow ci (0123456789ab) COMPLETED: 1/1 done\n"
        );
    }
}
