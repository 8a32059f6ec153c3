//! The progress of a build or an install as the server streams it: on a terminal, a bar
//! (or a spinner, while the total is unknown) per phase with the command output above
//! it; elsewhere, plain `[phase] …` lines. The last message carries the installed runtime.

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use silo_proto::v1::{Runtime, RuntimeProgress};
use tokio_stream::{Stream, StreamExt};

use super::title;
use crate::format::{human_size, single_line};
use crate::session::CallError;

/// What the server is doing with a runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `silo runtime build`.
    Build,
    /// `silo runtime install`.
    Install,
}

impl Operation {
    fn noun(self) -> &'static str {
        match self {
            Operation::Build => "build",
            Operation::Install => "install",
        }
    }

    fn past(self) -> &'static str {
        match self {
            Operation::Build => "built",
            Operation::Install => "installed",
        }
    }
}

/// Shows progress messages as they arrive.
pub trait ShowProgress {
    /// Shows one message (a phase change, a count, a line of output).
    fn show(&mut self, progress: &RuntimeProgress);
    /// The operation has succeeded.
    fn finish(&mut self);
    /// The operation has failed; what is shown stays as it was.
    fn abandon(&mut self);
}

/// Bars when stderr is a terminal, plain lines on stderr otherwise.
pub fn for_stderr() -> Box<dyn ShowProgress> {
    if io::stderr().is_terminal() {
        Box::new(Bars::default())
    } else {
        Box::new(Lines::new(io::stderr()))
    }
}

/// Shows `stream` until its last message and returns the runtime that message carries.
///
/// Errors: a failed message, as `describe` puts it; a stream that ends without a runtime
/// ("the server ended the build without a result").
pub async fn follow<S>(
    stream: S,
    operation: Operation,
    view: &mut dyn ShowProgress,
    describe: impl Fn(&tonic::Status) -> CallError,
) -> anyhow::Result<Runtime>
where
    S: Stream<Item = Result<RuntimeProgress, tonic::Status>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(message) = stream.next().await {
        let mut progress = match message {
            Ok(progress) => progress,
            Err(status) => {
                view.abandon();
                return Err(describe(&status).into());
            }
        };
        // The last message carries the result, not a phase of its own.
        if let Some(runtime) = progress.runtime.take() {
            view.finish();
            return Ok(runtime);
        }
        view.show(&progress);
    }
    view.abandon();
    anyhow::bail!("the server ended the {} without a result", operation.noun())
}

/// The line printed when the operation has succeeded: `built python-3.11@1.0.0: 142.3
/// MiB, 5123 entries, manifest sha256:…`.
pub fn summary(operation: Operation, runtime: &Runtime) -> String {
    format!(
        "{} {}: {}, {} entries, manifest {}\n",
        operation.past(),
        title(runtime),
        human_size(runtime.size_bytes),
        runtime.entries,
        runtime.manifest_digest
    )
}

/// The phase a message belongs to: its own, or (when it names none) the current one.
fn phase_of<'a>(progress: &'a RuntimeProgress, current: Option<&'a str>) -> Option<&'a str> {
    if progress.phase.is_empty() {
        current
    } else {
        Some(&progress.phase)
    }
}

/// The lines of a message's output, each safe to print on a terminal.
fn log_lines(progress: &RuntimeProgress) -> impl Iterator<Item = String> + '_ {
    progress
        .log_line
        .lines()
        .map(|line| single_line(line.trim_end_matches('\r')))
        .filter(|line| !line.is_empty())
}

/// Plain lines, for a log or a pipe: `[phase] started` once per phase, `[phase] LINE` for
/// each line of output. Counts are not shown.
pub struct Lines<W: Write> {
    out: W,
    phase: Option<String>,
}

impl<W: Write> Lines<W> {
    /// Lines written to `out`; a failure to write is ignored.
    pub fn new(out: W) -> Self {
        Lines { out, phase: None }
    }

    /// The lines `progress` adds, in order.
    fn lines(&mut self, progress: &RuntimeProgress) -> Vec<String> {
        let mut lines = Vec::new();
        if !progress.phase.is_empty() && self.phase.as_deref() != Some(&progress.phase) {
            self.phase = Some(progress.phase.clone());
            lines.push(format!("[{}] started", single_line(&progress.phase)));
        }
        let label = single_line(phase_of(progress, self.phase.as_deref()).unwrap_or("-"));
        lines.extend(log_lines(progress).map(|line| format!("[{label}] {line}")));
        lines
    }
}

impl<W: Write> ShowProgress for Lines<W> {
    fn show(&mut self, progress: &RuntimeProgress) {
        for line in self.lines(progress) {
            let _ = writeln!(self.out, "{line}");
        }
        let _ = self.out.flush();
    }

    fn finish(&mut self) {}

    fn abandon(&mut self) {}
}

/// A bar or spinner per phase, on stderr; output lines are printed above it.
#[derive(Default)]
pub struct Bars {
    current: Option<PhaseBar>,
}

/// The bar of the phase under way.
struct PhaseBar {
    phase: String,
    bar: ProgressBar,
    shape: Shape,
}

/// What a bar shows: a count with a known total, a count alone, or the time alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Bytes { known_total: bool },
    Entries { known_total: bool },
    Elapsed,
}

impl Shape {
    fn of(progress: &RuntimeProgress) -> Shape {
        let known_total = progress.total > 0;
        match progress.unit.as_str() {
            "bytes" => Shape::Bytes { known_total },
            "entries" => Shape::Entries { known_total },
            _ => Shape::Elapsed,
        }
    }

    fn template(self) -> &'static str {
        match self {
            Shape::Bytes { known_total: true } => {
                "{prefix:>10} [{bar:30}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec})"
            }
            Shape::Bytes { known_total: false } => "{prefix:>10} {spinner} {binary_bytes}",
            Shape::Entries { known_total: true } => "{prefix:>10} [{bar:30}] {pos}/{len} entries",
            Shape::Entries { known_total: false } => "{prefix:>10} {spinner} {pos} entries",
            Shape::Elapsed => "{prefix:>10} {spinner} {elapsed}",
        }
    }

    fn style(self) -> ProgressStyle {
        ProgressStyle::with_template(self.template())
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
    }

    /// The phase's amount when it is over: `, 142.3 MiB`, `, 5123 entries`, or nothing.
    fn amount(self, bar: &ProgressBar) -> String {
        match self {
            Shape::Bytes { .. } => format!(", {}", human_size(bar.position())),
            Shape::Entries { .. } => format!(", {} entries", bar.position()),
            Shape::Elapsed => String::new(),
        }
    }
}

impl PhaseBar {
    fn start(phase: &str, shape: Shape) -> PhaseBar {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
            .with_style(shape.style())
            .with_prefix(single_line(phase));
        bar.enable_steady_tick(Duration::from_millis(120));
        PhaseBar {
            phase: phase.to_owned(),
            bar,
            shape,
        }
    }

    /// Leaves the bar as one line saying what the phase did: `pip done in 12s, 42.0 MiB`.
    fn finish(self) {
        let done = ProgressStyle::with_template("{prefix:>10} done in {elapsed}{msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        let amount = self.shape.amount(&self.bar);
        self.bar.set_style(done);
        self.bar.finish_with_message(amount);
    }
}

impl ShowProgress for Bars {
    fn show(&mut self, progress: &RuntimeProgress) {
        let current = self.current.as_ref().map(|bar| bar.phase.as_str());
        let phase = phase_of(progress, current).unwrap_or("-").to_owned();
        let shape = Shape::of(progress);
        if current != Some(phase.as_str()) {
            if let Some(previous) = self.current.take() {
                previous.finish();
            }
            self.current = Some(PhaseBar::start(&phase, shape));
        }
        let Some(current) = self.current.as_mut() else {
            return;
        };
        if current.shape != shape {
            current.shape = shape;
            current.bar.set_style(shape.style());
        }
        if progress.total > 0 {
            current.bar.set_length(progress.total);
        }
        current.bar.set_position(progress.done);
        for line in log_lines(progress) {
            current.bar.println(line);
        }
    }

    fn finish(&mut self) {
        if let Some(current) = self.current.take() {
            current.finish();
        }
    }

    fn abandon(&mut self) {
        if let Some(current) = self.current.take() {
            current.bar.abandon();
        }
    }
}

/// A bar of bytes for a transfer (an export), shown on stderr when it is a terminal and
/// not at all otherwise: a bar when the total is known, else a spinner.
pub struct TransferBar(Option<PhaseBar>);

impl TransferBar {
    /// A bar labelled `label`, for `total` bytes (0: unknown).
    pub fn for_stderr(label: &str, total: u64) -> TransferBar {
        if !io::stderr().is_terminal() {
            return TransferBar(None);
        }
        let current = PhaseBar::start(
            label,
            Shape::Bytes {
                known_total: total > 0,
            },
        );
        if total > 0 {
            current.bar.set_length(total);
        }
        TransferBar(Some(current))
    }

    /// `done` bytes have been transferred.
    pub fn set(&self, done: u64) {
        if let Some(current) = &self.0 {
            current.bar.set_position(done);
        }
    }

    /// The transfer is complete.
    pub fn finish(self) {
        if let Some(current) = self.0 {
            current.finish();
        }
    }

    /// The transfer failed; the bar stays as it was.
    pub fn abandon(self) {
        if let Some(current) = self.0 {
            current.bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(phase: &str, log_line: &str) -> RuntimeProgress {
        RuntimeProgress {
            phase: phase.into(),
            log_line: log_line.into(),
            ..RuntimeProgress::default()
        }
    }

    fn built() -> Runtime {
        Runtime {
            name: "python-3.11".into(),
            version: "1.0.0".into(),
            size_bytes: 149_212_365,
            entries: 5123,
            manifest_digest: "sha256:0123abcd".into(),
            ..Runtime::default()
        }
    }

    fn describe(status: &tonic::Status) -> CallError {
        CallError {
            message: status.message().to_owned(),
            code: status.code(),
        }
    }

    #[test]
    fn plain_lines_name_each_phase_once_and_prefix_output_with_it() {
        let mut lines = Lines::new(Vec::new());
        let shown: Vec<String> = [
            message("base", ""),
            message("base", "I: retrieving Packages"),
            RuntimeProgress {
                done: 10,
                total: 100,
                unit: "bytes".into(),
                ..message("base", "")
            },
            message("", "I: still base"),
            message("pip", "Collecting numpy==1.26.4\r\nInstalling\n"),
            message("pip", "evil \u{1b}[2J"),
        ]
        .iter()
        .flat_map(|progress| lines.lines(progress))
        .collect();
        assert_eq!(
            shown,
            [
                "[base] started",
                "[base] I: retrieving Packages",
                "[base] I: still base",
                "[pip] started",
                "[pip] Collecting numpy==1.26.4",
                "[pip] Installing",
                r"[pip] evil \u{1b}[2J",
            ]
        );
    }

    #[tokio::test]
    async fn the_last_message_gives_the_runtime_and_lines_go_to_the_writer() {
        let stream = tokio_stream::iter([
            Ok(message("base", "hello")),
            Ok(RuntimeProgress {
                runtime: Some(built()),
                ..message("sign", "")
            }),
            Ok(message("never", "shown")),
        ]);
        let mut lines = Lines::new(Vec::new());
        let runtime = follow(stream, Operation::Build, &mut lines, describe)
            .await
            .unwrap();
        assert_eq!(runtime, built());
        // The result's message is not a phase: nothing is printed for it.
        assert_eq!(
            String::from_utf8(lines.out).unwrap(),
            "[base] started\n[base] hello\n"
        );
        assert_eq!(
            summary(Operation::Build, &runtime),
            "built python-3.11@1.0.0: 142.3 MiB, 5123 entries, manifest sha256:0123abcd\n"
        );
        assert!(summary(Operation::Install, &runtime).starts_with("installed python-3.11@1.0.0: "));
    }

    #[tokio::test]
    async fn a_stream_without_a_result_is_an_error() {
        let stream = tokio_stream::iter([Ok(message("base", "")), Ok(message("pip", ""))]);
        let err = follow(
            stream,
            Operation::Build,
            &mut Lines::new(io::sink()),
            describe,
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the server ended the build without a result"
        );
        let empty = tokio_stream::iter(Vec::<Result<RuntimeProgress, tonic::Status>>::new());
        let err = follow(
            empty,
            Operation::Install,
            &mut Lines::new(io::sink()),
            describe,
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the server ended the install without a result"
        );
    }

    #[tokio::test]
    async fn a_failed_message_is_the_servers_sentence_with_its_code() {
        let stream = tokio_stream::iter([
            Ok(message("test", "")),
            Err(tonic::Status::invalid_argument(
                "spec line 3, column 5: unknown field `pipp`",
            )),
        ]);
        let err = follow(
            stream,
            Operation::Build,
            &mut Lines::new(io::sink()),
            describe,
        )
        .await
        .unwrap_err();
        let call = err.downcast_ref::<CallError>().unwrap();
        assert_eq!(call.code, tonic::Code::InvalidArgument);
        assert_eq!(call.message, "spec line 3, column 5: unknown field `pipp`");
    }

    #[test]
    fn bars_take_their_shape_from_the_unit_and_whether_the_total_is_known() {
        let shape = |unit: &str, total| {
            Shape::of(&RuntimeProgress {
                unit: unit.into(),
                total,
                ..RuntimeProgress::default()
            })
        };
        assert_eq!(shape("bytes", 10), Shape::Bytes { known_total: true });
        assert_eq!(shape("bytes", 0), Shape::Bytes { known_total: false });
        assert_eq!(shape("entries", 5), Shape::Entries { known_total: true });
        assert_eq!(shape("", 5), Shape::Elapsed);
        assert_eq!(shape("furlongs", 5), Shape::Elapsed);
        for shape in [
            Shape::Bytes { known_total: true },
            Shape::Bytes { known_total: false },
            Shape::Entries { known_total: true },
            Shape::Entries { known_total: false },
            Shape::Elapsed,
        ] {
            assert!(
                ProgressStyle::with_template(shape.template()).is_ok(),
                "{shape:?}"
            );
        }
    }
}
