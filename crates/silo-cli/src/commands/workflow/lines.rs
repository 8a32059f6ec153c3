//! A job's output as whole lines, each labelled with its job like `docker compose logs`
//! does: `train  | epoch 1`. Records may end in the middle of a line; the rest of it is
//! kept until its newline (or the end of the log) arrives.

use std::io::{self, Write};

use silo_proto::v1::{LogRecord, LogStream};

/// One line of a job's output, without its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Where the job wrote it: stdout, stderr, or system (a message from silo itself,
    /// already prefixed "silo: ").
    pub stream: LogStream,
    /// The line's bytes, as the job wrote them.
    pub data: Vec<u8>,
}

/// Cuts one job's records into lines, keeping stdout's and stderr's unfinished lines
/// apart.
#[derive(Debug, Default)]
pub struct LineSplitter {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl LineSplitter {
    /// The lines `record` completes. A system message is whole lines by itself.
    pub fn push(&mut self, record: &LogRecord) -> Vec<Line> {
        let stream = LogStream::try_from(record.stream).unwrap_or(LogStream::Stdout);
        let (partial, stream) = match stream {
            LogStream::Stderr => (&mut self.stderr, LogStream::Stderr),
            LogStream::System => return system_lines(&record.data),
            _ => (&mut self.stdout, LogStream::Stdout),
        };
        partial.extend_from_slice(&record.data);
        let Some(last_newline) = partial.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        let rest = partial.split_off(last_newline + 1);
        let complete = std::mem::replace(partial, rest);
        complete[..complete.len() - 1]
            .split(|&b| b == b'\n')
            .map(|data| Line {
                stream,
                data: data.to_vec(),
            })
            .collect()
    }

    /// The unfinished lines, once the log has ended (stdout's first).
    pub fn finish(&mut self) -> Vec<Line> {
        [
            (LogStream::Stdout, std::mem::take(&mut self.stdout)),
            (LogStream::Stderr, std::mem::take(&mut self.stderr)),
        ]
        .into_iter()
        .filter(|(_, data)| !data.is_empty())
        .map(|(stream, data)| Line { stream, data })
        .collect()
    }
}

fn system_lines(data: &[u8]) -> Vec<Line> {
    let text = String::from_utf8_lossy(data);
    text.trim_end_matches('\n')
        .split('\n')
        .map(|line| Line {
            stream: LogStream::System,
            data: format!("silo: {line}").into_bytes(),
        })
        .collect()
}

/// The label of a job's attempt: its name for the first, `name#2` for the second, ….
pub fn attempt_label(name: &str, attempt: usize) -> String {
    let name = crate::format::single_line(name);
    if attempt <= 1 {
        name
    } else {
        format!("{name}#{attempt}")
    }
}

/// `label | data` and a newline, the label padded to `width` characters.
pub fn prefixed(label: &str, width: usize, line: &Line) -> Vec<u8> {
    let mut out = format!("{label:<width$} | ").into_bytes();
    out.extend_from_slice(&line.data);
    out.push(b'\n');
    out
}

/// Writes labelled lines where they belong: stdout's to stdout, the rest to stderr (or
/// everything to stderr, for output quoted in a message).
pub struct LabelledWriter {
    width: usize,
    all_to_stderr: bool,
}

impl LabelledWriter {
    /// A writer padding labels to `width`.
    pub fn new(width: usize) -> Self {
        LabelledWriter {
            width,
            all_to_stderr: false,
        }
    }

    /// A writer of every line to stderr, padding labels to `width`.
    pub fn to_stderr(width: usize) -> Self {
        LabelledWriter {
            width,
            all_to_stderr: true,
        }
    }

    /// Writes and flushes `lines`, each prefixed with `label`. A label wider than the
    /// width so far widens it for every later line.
    pub fn write(&mut self, label: &str, lines: &[Line]) -> io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        self.width = self.width.max(label.chars().count());
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        for line in lines {
            let text = prefixed(label, self.width, line);
            if line.stream == LogStream::Stdout && !self.all_to_stderr {
                stdout.extend_from_slice(&text);
            } else {
                stderr.extend_from_slice(&text);
            }
        }
        write_flush(&mut io::stdout().lock(), &stdout)?;
        write_flush(&mut io::stderr().lock(), &stderr)
    }
}

fn write_flush(out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    out.write_all(bytes)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stream: LogStream, data: &str) -> LogRecord {
        LogRecord {
            sequence: 0,
            timestamp_unix_nanos: 0,
            stream: stream as i32,
            data: data.as_bytes().to_vec().into(),
        }
    }

    fn texts(lines: &[Line]) -> Vec<(LogStream, String)> {
        lines
            .iter()
            .map(|line| {
                (
                    line.stream,
                    String::from_utf8_lossy(&line.data).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn records_are_cut_into_lines_and_a_line_split_across_records_is_joined() {
        use LogStream::*;
        let mut splitter = LineSplitter::default();
        assert_eq!(
            texts(&splitter.push(&record(Stdout, "one\ntw"))),
            [(Stdout, "one".into())]
        );
        assert_eq!(
            texts(&splitter.push(&record(Stderr, "warn: "))),
            Vec::<(LogStream, String)>::new()
        );
        assert_eq!(
            texts(&splitter.push(&record(Stdout, "o\n\nthree\n"))),
            [
                (Stdout, "two".into()),
                (Stdout, String::new()),
                (Stdout, "three".into())
            ]
        );
        assert_eq!(
            texts(&splitter.push(&record(System, "output truncated\n"))),
            [(System, "silo: output truncated".into())]
        );
        assert_eq!(
            texts(&splitter.push(&record(Stdout, "no newline at the end"))),
            Vec::<(LogStream, String)>::new()
        );
        assert_eq!(
            texts(&splitter.finish()),
            [
                (Stdout, "no newline at the end".into()),
                (Stderr, "warn: ".into())
            ]
        );
        assert!(splitter.finish().is_empty());
    }

    #[test]
    fn lines_are_prefixed_with_the_label_padded_to_the_longest() {
        let line = Line {
            stream: LogStream::Stdout,
            data: b"epoch 1".to_vec(),
        };
        assert_eq!(prefixed("fetch", 7, &line), b"fetch   | epoch 1\n");
        assert_eq!(prefixed("train#2", 7, &line), b"train#2 | epoch 1\n");
        assert_eq!(
            prefixed("évalué", 7, &line),
            "évalué  | epoch 1\n".as_bytes()
        );
        let raw = Line {
            stream: LogStream::Stderr,
            data: b"\xff".to_vec(),
        };
        assert_eq!(prefixed("a", 1, &raw), b"a | \xff\n");
    }

    #[test]
    fn the_first_attempt_is_labelled_by_the_name_alone() {
        assert_eq!(attempt_label("train", 1), "train");
        assert_eq!(attempt_label("train", 3), "train#3");
        assert_eq!(attempt_label("a\nb", 1), r"a\nb");
    }
}
