//! Writing to the terminal without panicking: stdout closed by its reader (`silo job list |
//! head`) ends the command quietly with 141, like any Unix tool killed by SIGPIPE.

use std::fmt::Display;
use std::io::{self, Write};

use serde::Serialize;

use crate::connect::{describe_io, error_chain};
use crate::exit::EXIT_BROKEN_PIPE;

/// Prints `silo: <message>` on stderr. A failure to write to stderr is ignored: there is
/// nowhere left to report it.
pub fn say(message: impl Display) {
    let _ = writeln!(io::stderr().lock(), "silo: {message}");
}

/// Writes `text` to stdout and flushes. Returns the exit status: 0, or 141 when the reader
/// has gone away.
pub fn print(text: &str) -> anyhow::Result<i32> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(0),
        Err(err) => write_failure(&err),
    }
}

/// Prints `value` as pretty JSON and a newline (see [`print`]).
pub fn print_json(value: &impl Serialize) -> anyhow::Result<i32> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    print(&text)
}

/// The exit status for a failed write to stdout: 141 for a closed pipe, an error otherwise.
pub fn write_failure(err: &io::Error) -> anyhow::Result<i32> {
    if err.kind() == io::ErrorKind::BrokenPipe {
        Ok(EXIT_BROKEN_PIPE)
    } else {
        Err(anyhow::anyhow!("cannot write output: {}", describe_io(err)))
    }
}

/// The error as one line: its message and its causes joined by ": ", leaving out a cause
/// whose text the message already contains.
pub fn error_message(err: &anyhow::Error) -> String {
    error_chain(err.as_ref())
}

/// Prints `silo: <error>` on stderr (see [`error_message`]); the binary exits 1 after it.
pub fn report_error(err: &anyhow::Error) {
    say(error_message(err));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_do_not_repeat_a_cause_the_message_already_names() {
        let io = io::Error::new(io::ErrorKind::NotFound, "no such file");
        let err = anyhow::Error::new(io).context("cannot read x: no such file");
        assert_eq!(error_message(&err), "cannot read x: no such file");
        let err = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_message(&err), "outer: inner");
    }
}
