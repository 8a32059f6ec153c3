//! PID 1 of the job: copies the command's output into the log, reaps every zombie,
//! forwards signals, and when the command ends kills what is left and drains the output.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, getpid};
use silo_log::{LogWriter, Stream};

use super::launch::RunningCommand;
use crate::protocol::{ExitStatus, Frame, InitError, Message, read_frame, write_frame};

/// Bytes read from the command's output per read.
pub(super) const READ_CHUNK: usize = 128 * 1024;

/// Copies output to the log, reaps, forwards signals, until the command has ended and its
/// output is drained. Returns the command's exit status.
pub(super) fn supervise(
    job: RunningCommand,
    log: &mut LogWriter,
    mut control: Option<&mut UnixStream>,
    buf: &mut [u8],
) -> ExitStatus {
    let RunningCommand {
        child,
        stdout,
        stderr,
        signals,
    } = job;
    let mut outputs: Vec<(OwnedFd, Stream)> =
        vec![(stdout, Stream::Stdout), (stderr, Stream::Stderr)];
    let mut status: Option<ExitStatus> = None;
    // Once: the pipes start at the most an unprivileged command may raise them to
    // (fs.pipe-max-size, 1 MiB), so their capacity can only shrink from here.
    let mut sink = Sink {
        headroom: end_headroom(&outputs),
        ..Sink::default()
    };
    // The end's headroom from the start: a command whose first output comes once the
    // filesystem is full (it filled it) still ends at once, its output whole.
    let _ = log.reserve(sink.headroom);

    while status.is_none() {
        // While the log's filesystem is full, the output stays in the pipes (the command
        // blocks once they are full) and is tried again every HOLD_RETRY.
        let held = sink.holding;
        let control_fd = control.as_ref().map(|c| c.as_fd());
        let polled = if held { &outputs[..0] } else { &outputs[..] };
        let mut fds: Vec<PollFd<'_>> = polled
            .iter()
            .map(|(fd, _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(signals.as_fd(), PollFlags::POLLIN));
        if let Some(c) = control_fd {
            fds.push(PollFd::new(c, PollFlags::POLLIN));
        }
        let timeout = if held {
            PollTimeout::from(HOLD_RETRY_MS)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let n_out = if held { 0 } else { outputs.len() };
        let control_ready = control.is_some() && ready[n_out + 1];
        let signal_ready = ready[n_out];
        // Held output waits until the log has room for a whole record again, checked once
        // per HOLD_RETRY_MS; the pipes are then polled as before.
        if held {
            let record = silo_log::MAX_RECORD_LEN + 2 * silo_log::HEADER_LEN + 256 + sink.headroom;
            if log.reserve(record).is_ok() {
                sink.holding = false;
            }
        }
        // Output first, so what was written before an exit is logged before it.
        let mut closed = Vec::new();
        for (i, (fd, stream)) in outputs.iter().enumerate().take(n_out) {
            if !ready[i] {
                continue;
            }
            match copy_once(fd.as_fd(), *stream, buf, log, &mut sink) {
                Copied::More | Copied::Held => {}
                Copied::Ended => closed.push(i),
            }
        }
        for i in closed.into_iter().rev() {
            outputs.remove(i);
        }
        if signal_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGCHLD {
                    status = reap(child).or(status);
                } else if let Ok(s) = Signal::try_from(sig) {
                    // To the command's process group; fall back to the command alone.
                    if kill(Pid::from_raw(-child.as_raw()), s).is_err() {
                        let _ = kill(child, s);
                    }
                }
            }
        }
        if control_ready && let Some(c) = control.as_deref_mut() {
            match read_frame(c) {
                Ok(Some(frame)) => answer_unknown(c, frame),
                // The server went away: the job goes on, its output still reaches the log.
                _ => control = None,
            }
        }
    }
    let status = status.unwrap_or(ExitStatus::Signal(libc::SIGKILL));

    end_what_is_left(&outputs, buf, log, &mut sink);
    let _ = log.append_exit(&serde_json::to_vec(&status).unwrap_or_default());
    status
}

/// After the command has ended: as PID 1 of the job's namespace, kills everything the job
/// left behind, so its output pipes close and nothing outlives the job, then drains the
/// pipes into the log.
fn end_what_is_left(
    outputs: &[(OwnedFd, Stream)],
    buf: &mut [u8],
    log: &mut LogWriter,
    sink: &mut Sink,
) {
    if getpid().as_raw() == 1 {
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        while let Ok(Some(_)) = wait_any(0) {}
    } else {
        // Not PID 1 (debugging by hand): take only what is already in the pipes.
        for (fd, _) in outputs {
            let _ = nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            );
        }
    }
    // The room kept ahead while the job ran is for this: what the pipes still hold. Should
    // the filesystem still have none (a log that could not allocate ahead), the output
    // waits for at most END_HOLD: the job's end is reported after it.
    sink.headroom = 0;
    let deadline = std::time::Instant::now() + END_HOLD;
    for (fd, stream) in outputs {
        loop {
            match copy_once(fd.as_fd(), *stream, buf, log, sink) {
                Copied::More => {}
                Copied::Ended => break,
                Copied::Held if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(HOLD_RETRY_MS.into()));
                }
                Copied::Held => {
                    // Given up: the rest is drained and dropped, and the log says so.
                    sink.failed = true;
                    let _ = log.append(
                        Stream::System,
                        b"silo: the rest of the output is lost: no space was left for the log",
                    );
                }
            }
        }
    }
}

/// How often output held back by a full filesystem is tried again, in ms.
const HOLD_RETRY_MS: u16 = 250;
/// How long output left in the pipes after the command ended waits for room in the log.
const END_HOLD: std::time::Duration = std::time::Duration::from_secs(5);

/// The state of the job's log as the copy loop sees it.
#[derive(Default)]
pub(super) struct Sink {
    /// A write failed for a reason other than space: output is read and dropped from now
    /// on, so that the command never blocks on a full pipe.
    pub(super) failed: bool,
    /// The log's filesystem had no room since then (until output is logged again, with a
    /// note that says how long it was held back).
    pub(super) held_since: Option<std::time::Instant>,
    /// Output stays in the pipes until the log has room again.
    pub(super) holding: bool,
    /// Room kept allocated ahead for the end of the job ([`end_headroom`]).
    pub(super) headroom: usize,
}

/// What [`copy_once`] did.
pub(super) enum Copied {
    /// Moved output into the log (or dropped it, once the log has failed).
    More,
    /// The pipe is closed and empty.
    Ended,
    /// No room in the log's filesystem: nothing was taken from the pipe.
    Held,
}

/// Output waiting in a pipe from which on it is spliced into the log instead of read and
/// written (one copy fewer per byte; below this, the extra system calls cost more).
const SPLICE_FROM: usize = 32 * 1024;

/// Moves what waits in an output pipe into the log, once. When the log's filesystem has no
/// room for what this would take, takes nothing and answers [`Copied::Held`]: the output
/// waits in the pipe, and no line is lost to a full disk.
pub(super) fn copy_once(
    fd: std::os::fd::BorrowedFd<'_>,
    stream: Stream,
    buf: &mut [u8],
    log: &mut LogWriter,
    sink: &mut Sink,
) -> Copied {
    let waiting = waiting_in(fd);
    // A read takes what FIONREAD saw (a little when it saw nothing: the end of the pipe,
    // or output that came since), so that what it takes is known before it takes it.
    let read_len = if waiting == 0 {
        ANY_READ
    } else {
        waiting.min(buf.len())
    };
    if !sink.failed {
        // Room first for the most a splice or a read below can take, with records for the
        // cap's note or the hold's, and the headroom that the end of the job needs.
        let most = waiting.min(silo_log::MAX_RECORD_LEN).max(read_len);
        match log.reserve(most + 2 * silo_log::HEADER_LEN + 256 + sink.headroom) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) => {
                sink.held_since.get_or_insert_with(std::time::Instant::now);
                sink.holding = true;
                return Copied::Held;
            }
            // Anything else is for the write itself to find.
            Err(_) => {}
        }
        if let Some(since) = sink.held_since.take() {
            let note = format!(
                "silo: output held back for {:.1} s: no space was left for the job's log",
                since.elapsed().as_secs_f64()
            );
            let _ = log.append(Stream::System, note.as_bytes());
        }
    }
    if !sink.failed && waiting >= SPLICE_FROM {
        match log.splice_from_pipe(stream, fd, waiting.min(silo_log::MAX_RECORD_LEN)) {
            Ok(true) => return Copied::More,
            Ok(false) => {}
            // Part of it may have moved; the rest is read and dropped below.
            Err(_) => sink.failed = true,
        }
    }
    loop {
        match nix::unistd::read(fd, &mut buf[..read_len]) {
            Ok(0) => return Copied::Ended,
            Ok(n) => {
                if !sink.failed && log.append(stream, &buf[..n]).is_err() {
                    // Keep draining so the command never blocks on a full pipe.
                    sink.failed = true;
                }
                return Copied::More;
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return Copied::Ended,
        }
    }
}

/// Bytes read from a pipe in which FIONREAD saw nothing.
const ANY_READ: usize = 4096;

/// What the end of the job writes to its log at most once the command has ended: the
/// output still in the pipes (their capacity, which the command may have raised) and the
/// exit record. Kept allocated ahead while the job runs, so that a full filesystem never
/// holds the job's end back.
fn end_headroom(outputs: &[(OwnedFd, Stream)]) -> usize {
    let capacities: Vec<usize> = outputs
        .iter()
        .map(|(fd, _)| {
            // SAFETY: F_GETPIPE_SZ on a pipe descriptor we hold reads an int.
            let size = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
            usize::try_from(size).unwrap_or(1 << 20)
        })
        .collect();
    end_headroom_of(&capacities)
}

/// [`end_headroom`] for pipes of these capacities.
pub(super) fn end_headroom_of(capacities: &[usize]) -> usize {
    let in_pipes: usize = capacities.iter().sum();
    // Each pipe's contents as records of at least ANY_READ bytes, and the exit record (a
    // small JSON object).
    in_pipes + in_pipes / ANY_READ * silo_log::HEADER_LEN + 4096
}

/// How many bytes wait in the pipe `fd` (0 when that cannot be told).
fn waiting_in(fd: std::os::fd::BorrowedFd<'_>) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD on a descriptor we hold writes one int to a local.
    let ok = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } == 0;
    if ok { n.max(0) as usize } else { 0 }
}

/// Reaps every exited child; returns the command's status once it has ended.
pub(super) fn reap(command: Pid) -> Option<ExitStatus> {
    let mut result = None;
    loop {
        match wait_any(libc::WNOHANG) {
            Ok(Some((pid, status))) if pid == command.as_raw() => {
                if libc::WIFEXITED(status) {
                    result = Some(ExitStatus::Code(libc::WEXITSTATUS(status)));
                } else if libc::WIFSIGNALED(status) {
                    result = Some(ExitStatus::Signal(libc::WTERMSIG(status)));
                }
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return result,
        }
    }
}

/// Reaps one ended child: its pid and raw wait status, or none when no child has ended
/// yet (`WNOHANG` in `flags`). `waitpid(2)` itself, not nix's: nix reaps the child and
/// then fails with `EINVAL` when it was killed by a real-time signal (which its `Signal`
/// cannot name), so the command's end would be lost and the job would never end.
fn wait_any(flags: libc::c_int) -> Result<Option<(libc::pid_t, libc::c_int)>, Errno> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waitpid writes the status of a child of ours into a local int.
        let pid = unsafe { libc::waitpid(-1, &mut status, flags) };
        match pid {
            0 => return Ok(None),
            -1 if Errno::last() == Errno::EINTR => continue,
            -1 => return Err(Errno::last()),
            pid => return Ok(Some((pid, status))),
        }
    }
}

pub(super) fn answer_unknown(control: &mut UnixStream, frame: Frame) {
    if let Message::Request { id, method, .. } = frame.message {
        let _ = write_frame(
            control,
            &Frame::new(Message::Response {
                id,
                result: Err(InitError::protocol(format!("unknown method {method}"))),
            }),
        );
    }
}
