//! The exit status of `silo job run`, following the shell's and `docker run`'s
//! conventions so scripts can treat a remote job like a local command.

use silo_proto::v1::{EndCause, Job, JobState, StartFailure};
use silo_proto::values::signal_name;

use crate::format::job_state;

/// `silo job run` could not get an exit status for the job (it failed to start for a
/// reason other than the two below, or was stopped before it started).
pub const EXIT_NO_STATUS: i32 = 125;
/// The command was found but could not be executed (as in the shell).
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// The command was not found (as in the shell).
pub const EXIT_NOT_FOUND: i32 = 127;
/// The user pressed Ctrl-C twice and `silo` stopped waiting (128 + SIGINT).
pub const EXIT_INTERRUPTED: i32 = 130;
/// Standard output was closed by its reader (128 + SIGPIPE).
pub const EXIT_BROKEN_PIPE: i32 = 141;

/// The exit status `silo job run` ends with for a job that has ended:
///
/// - killed by signal N: 128 + N (137 for SIGKILL, 143 for SIGTERM);
/// - exited with code N: N;
/// - failed to start: 127 when the command was not found, 126 when it could not be
///   executed (permission denied, not executable), else 125;
/// - no exit status otherwise: 0 for a completed job, else 125.
pub fn job_exit_code(job: &Job) -> i32 {
    if job.end_cause() == EndCause::StartFailed {
        return match job.start_failure() {
            StartFailure::CommandNotFound => EXIT_NOT_FOUND,
            StartFailure::NotExecutable => EXIT_CANNOT_EXECUTE,
            _ => EXIT_NO_STATUS,
        };
    }
    if let Some(signal) = job.signal {
        return (128 + signal).clamp(129, 255);
    }
    if let Some(code) = job.exit_code {
        return if (0..=255).contains(&code) { code } else { 1 };
    }
    match job_state(job) {
        JobState::Completed => 0,
        _ => EXIT_NO_STATUS,
    }
}

pub fn end_message(job: &Job) -> Option<String> {
    let state = job_state(job);
    let timed_out = job.end_cause() == EndCause::TimedOut;
    let exited_by_itself = job.exit_code.is_some() && state != JobState::Stopped && !timed_out;
    if state == JobState::Completed || exited_by_itself {
        return None;
    }
    if !job.reason.is_empty() {
        return Some(job.reason.clone());
    }
    Some(match (state, job.signal) {
        (JobState::Stopped, _) => "the job was stopped".to_owned(),
        (_, Some(signal)) => format!("the job was killed by {}", signal_name(signal)),
        _ => format!(
            "the job ended in state {}",
            crate::format::state_name(state)
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState, exit_code: Option<i32>, signal: Option<i32>, reason: &str) -> Job {
        Job {
            state: state as i32,
            exit_code,
            signal,
            reason: reason.to_owned(),
            ..Job::default()
        }
    }

    /// A job that failed to start, as the server sends it.
    fn not_started(failure: StartFailure, reason: &str) -> Job {
        Job {
            end_cause: EndCause::StartFailed as i32,
            start_failure: failure as i32,
            ..job(JobState::Failed, None, None, reason)
        }
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        use JobState::*;
        let cases = [
            (job(Completed, Some(0), None, ""), 0),
            (job(Failed, Some(3), None, "exited with code 3"), 3),
            (job(Failed, None, Some(9), "killed by SIGKILL"), 137),
            (job(Stopped, None, Some(15), "stopped by admin"), 143),
            (
                not_started(StartFailure::CommandNotFound, "command not found: nosuch"),
                127,
            ),
            (
                not_started(StartFailure::NotExecutable, "permission denied"),
                126,
            ),
            // The sentence is for people: only the typed cause decides.
            (
                not_started(
                    StartFailure::WorkingDirectory,
                    "working directory /nope does not exist (command not found)",
                ),
                125,
            ),
            (not_started(StartFailure::Setup, "cannot pivot_root"), 125),
            (
                job(Failed, None, None, "command not found: from an old server"),
                125,
            ),
            (job(Stopped, None, None, "stopped before it started"), 125),
            (job(Completed, None, None, ""), 0),
            (job(Failed, Some(300), None, ""), 1),
        ];
        for (job, code) in cases {
            assert_eq!(job_exit_code(&job), code, "{job:?}");
        }
    }

    #[test]
    fn the_reason_is_printed_only_when_the_job_did_not_exit_by_itself() {
        use JobState::*;
        assert_eq!(end_message(&job(Completed, Some(0), None, "")), None);
        assert_eq!(
            end_message(&job(Failed, Some(1), None, "exited with code 1")),
            None
        );
        assert_eq!(
            end_message(&job(Failed, None, None, "command not found: x")).as_deref(),
            Some("command not found: x")
        );
        assert_eq!(
            end_message(&Job {
                end_cause: EndCause::TimedOut as i32,
                ..job(Failed, Some(1), None, "timed out after 5s")
            })
            .as_deref(),
            Some("timed out after 5s")
        );
        assert_eq!(
            end_message(&job(Stopped, Some(0), None, "")).as_deref(),
            Some("the job was stopped")
        );
        assert_eq!(
            end_message(&job(Failed, None, Some(11), "")).as_deref(),
            Some("the job was killed by SIGSEGV")
        );
    }
}
