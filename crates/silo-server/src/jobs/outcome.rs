//! How a job ended: the one type every path to a job's end produces, from which the store,
//! the API and the CLI take their state, cause and sentence.

use silo_proto::v1::{EndCause, JobState, StartFailure};
use silo_proto::values::signal_name;
use silo_sandbox::protocol::{ErrorKind, ExitStatus, InitError};

use super::live::{Free, Room, StopCause};

/// A job's end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// COMPLETED, FAILED or STOPPED.
    pub state: JobState,
    /// Why, for machines.
    pub cause: EndCause,
    /// Why, in one sentence for people.
    pub reason: String,
    /// The command's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended the command (or the init), when one did.
    pub signal: Option<i32>,
    /// With [`EndCause::StartFailed`]: what kind of failure, the step and the errno.
    pub start_failure: Option<StartFailureDetail>,
}

/// What failed in a job's start, as the init reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartFailureDetail {
    /// The kind, as the API names it.
    pub kind: StartFailure,
    /// The step that failed ("exec", "chdir", "pivot_root", ...), when one did.
    pub step: Option<String>,
    /// The system call's errno, when one failed.
    pub errno: Option<i32>,
}

impl Outcome {
    /// The end of a job whose command never ran, from the init's typed error.
    pub fn start_failed(e: &InitError) -> Outcome {
        let kind = match (e.kind, e.step.as_deref(), e.errno) {
            (ErrorKind::Exec, _, Some(libc::ENOENT)) => StartFailure::CommandNotFound,
            (ErrorKind::Exec, _, _) => StartFailure::NotExecutable,
            (ErrorKind::Setup, Some("chdir"), _) => StartFailure::WorkingDirectory,
            (ErrorKind::Setup, _, _) => StartFailure::Setup,
            (ErrorKind::Protocol | ErrorKind::Timeout, _, _) => StartFailure::Internal,
        };
        Outcome {
            state: JobState::Failed,
            cause: EndCause::StartFailed,
            reason: e.message.clone(),
            exit_code: None,
            signal: None,
            start_failure: Some(StartFailureDetail {
                kind,
                step: e.step.clone(),
                errno: e.errno,
            }),
        }
    }

    /// The end of a job killed because its init broke the init protocol.
    pub fn killed(reason: String) -> Outcome {
        Outcome {
            state: JobState::Failed,
            cause: EndCause::Killed,
            reason,
            exit_code: None,
            signal: Some(libc::SIGKILL),
            start_failure: None,
        }
    }

    /// The end of a job a restarted server found gone without an exit in its log.
    pub fn server_restart() -> Outcome {
        Outcome {
            state: JobState::Failed,
            cause: EndCause::ServerRestart,
            reason: "server restarted".into(),
            exit_code: None,
            signal: None,
            start_failure: None,
        }
    }

    /// The end of a job whose command ran, from why it was stopped (if it was), what the
    /// init reported and how the init itself ended.
    pub fn of_run(
        stop: Option<StopCause>,
        exit: Option<ExitStatus>,
        init: Option<(Option<i32>, Option<i32>)>,
    ) -> Outcome {
        let (exit_code, signal) = match exit {
            Some(ExitStatus::Code(c)) => (Some(c), None),
            Some(ExitStatus::Signal(s)) => (None, Some(s)),
            // No report: the init was killed (by a stop's SIGKILL, or by something else).
            None => (None, init.and_then(|(_, s)| s).or(Some(libc::SIGKILL))),
        };
        let (state, cause, reason) = match stop {
            Some(StopCause::Request) => (
                JobState::Stopped,
                EndCause::Stopped,
                "stopped by request".to_owned(),
            ),
            Some(StopCause::Timeout(d)) => (
                JobState::Failed,
                EndCause::TimedOut,
                format!("timed out after {}", humantime::format_duration(d)),
            ),
            Some(StopCause::DiskFull { free, grew }) => {
                let nearly = match free {
                    Free::Bytes(bytes) => format!(
                        "was nearly full ({} free)",
                        silo_proto::values::size_phrase(bytes)
                    ),
                    Free::Inodes(inodes) => {
                        format!("was nearly out of inodes ({inodes} left)")
                    }
                };
                let reason = match grew {
                    Some((room, held)) => format!(
                        "stopped: the host's state filesystem {nearly} while this job's {} \
                         grew most (it held {})",
                        match room {
                            Room::Work => "/work",
                            Room::Log => "output (its log)",
                        },
                        silo_proto::values::size_phrase(held)
                    ),
                    None => format!(
                        "stopped: the host's state filesystem {nearly} and filling while this \
                         job could write to it directly (a runtime build's step, a job without \
                         a disk of its own, a workflow's job through /shared)"
                    ),
                };
                (JobState::Failed, EndCause::DiskFull, reason)
            }
            None => match (exit_code, signal) {
                (Some(0), _) => (JobState::Completed, EndCause::Exited, String::new()),
                (Some(c), _) => (
                    JobState::Failed,
                    EndCause::Exited,
                    format!("exited with code {c}"),
                ),
                (None, Some(s)) if exit.is_some() => (
                    JobState::Failed,
                    EndCause::Signaled,
                    format!("killed by signal {}", signal_name(s)),
                ),
                (None, s) => (
                    JobState::Failed,
                    EndCause::Killed,
                    format!(
                        "the job's init process ended without reporting an exit (signal {})",
                        s.map(signal_name).unwrap_or_else(|| "unknown".into())
                    ),
                ),
            },
        };
        Outcome {
            state,
            cause,
            reason,
            exit_code,
            signal,
            start_failure: None,
        }
    }

    /// This outcome, told as an OOM kill when the kernel killed a process of the job at its
    /// memory limit and the job did not complete or get stopped anyway.
    pub fn with_oom(mut self, oom_kills: u64, limit_bytes: Option<u64>) -> Outcome {
        let endured = matches!(self.state, JobState::Completed | JobState::Stopped);
        if oom_kills > 0 && !endured && self.cause != EndCause::StartFailed {
            self.cause = EndCause::OutOfMemory;
            self.reason = match limit_bytes {
                Some(bytes) => format!(
                    "out of memory (limit {})",
                    silo_proto::values::size_phrase(bytes)
                ),
                None => "out of memory".into(),
            };
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init_error(kind: ErrorKind, step: &str, errno: i32) -> InitError {
        InitError {
            kind,
            message: "m".into(),
            step: Some(step.into()),
            errno: Some(errno),
        }
    }

    #[test]
    fn start_failures_are_typed_from_the_inits_error() {
        let kind = |e: InitError| Outcome::start_failed(&e).start_failure.unwrap().kind;
        assert_eq!(
            kind(init_error(ErrorKind::Exec, "exec", libc::ENOENT)),
            StartFailure::CommandNotFound
        );
        assert_eq!(
            kind(init_error(ErrorKind::Exec, "exec", libc::EACCES)),
            StartFailure::NotExecutable
        );
        assert_eq!(
            kind(init_error(ErrorKind::Setup, "chdir", libc::ENOENT)),
            StartFailure::WorkingDirectory
        );
        assert_eq!(
            kind(init_error(ErrorKind::Setup, "setresuid", libc::EPERM)),
            StartFailure::Setup
        );
        assert_eq!(kind(InitError::protocol("x")), StartFailure::Internal);
    }

    #[test]
    fn runs_end_with_their_cause() {
        let of = |stop, exit, init| Outcome::of_run(stop, exit, init);
        let o = of(None, Some(ExitStatus::Code(0)), None);
        assert_eq!((o.state, o.cause), (JobState::Completed, EndCause::Exited));
        let o = of(None, Some(ExitStatus::Code(3)), None);
        assert_eq!(
            (o.state, o.cause, o.exit_code),
            (JobState::Failed, EndCause::Exited, Some(3))
        );
        let o = of(None, Some(ExitStatus::Signal(11)), None);
        assert_eq!((o.cause, o.signal), (EndCause::Signaled, Some(11)));
        let o = of(Some(StopCause::Request), None, Some((None, Some(9))));
        assert_eq!((o.state, o.cause), (JobState::Stopped, EndCause::Stopped));
        let o = of(
            Some(StopCause::Timeout(std::time::Duration::from_secs(5))),
            None,
            None,
        );
        assert_eq!(
            (o.cause, o.reason.as_str()),
            (EndCause::TimedOut, "timed out after 5s")
        );
        let o = of(None, None, Some((None, Some(9))));
        assert_eq!(o.cause, EndCause::Killed);
        let o = of(None, Some(ExitStatus::Signal(9)), None).with_oom(1, Some(32 << 20));
        assert_eq!(
            (o.cause, o.reason.as_str()),
            (EndCause::OutOfMemory, "out of memory (limit 32 MiB)")
        );
        let o = of(None, Some(ExitStatus::Code(0)), None).with_oom(1, None);
        assert_eq!(o.cause, EndCause::Exited);
    }
}
