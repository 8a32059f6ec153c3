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
    mut log: LogWriter,
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
    let mut log_failed = false;

    while status.is_none() {
        let control_fd = control.as_ref().map(|c| c.as_fd());
        let mut fds: Vec<PollFd<'_>> = outputs
            .iter()
            .map(|(fd, _)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(signals.as_fd(), PollFlags::POLLIN));
        if let Some(c) = control_fd {
            fds.push(PollFd::new(c, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let n_out = outputs.len();
        let control_ready = control.is_some() && ready[n_out + 1];
        let signal_ready = ready[n_out];
        // Output first, so what was written before an exit is logged before it.
        let mut closed = Vec::new();
        for (i, (fd, stream)) in outputs.iter().enumerate() {
            if ready[i] && !copy_once(fd.as_fd(), *stream, buf, &mut log, &mut log_failed) {
                closed.push(i);
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

    end_what_is_left(&outputs, buf, &mut log, &mut log_failed);
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
    log_failed: &mut bool,
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
    for (fd, stream) in outputs {
        while copy_once(fd.as_fd(), *stream, buf, log, log_failed) {}
    }
}

/// Output waiting in a pipe from which on it is spliced into the log instead of read and
/// written (one copy fewer per byte; below this, the extra system calls cost more).
const SPLICE_FROM: usize = 32 * 1024;

/// Moves what waits in an output pipe into the log, once. Returns false at end of file.
pub(super) fn copy_once(
    fd: std::os::fd::BorrowedFd<'_>,
    stream: Stream,
    buf: &mut [u8],
    log: &mut LogWriter,
    failed: &mut bool,
) -> bool {
    let waiting = waiting_in(fd);
    if !*failed && waiting >= SPLICE_FROM {
        match log.splice_from_pipe(stream, fd, waiting.min(silo_log::MAX_RECORD_LEN)) {
            Ok(true) => return true,
            Ok(false) => {}
            // Part of it may have moved; the rest is read and dropped below.
            Err(_) => *failed = true,
        }
    }
    loop {
        match nix::unistd::read(fd, buf) {
            Ok(0) => return false,
            Ok(n) => {
                if !*failed && log.append(stream, &buf[..n]).is_err() {
                    // Keep draining so the command never blocks on a full pipe.
                    *failed = true;
                }
                return true;
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
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
