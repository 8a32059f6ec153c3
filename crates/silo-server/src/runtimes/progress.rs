//! What a build or an install tells its client while it works.

use silo_proto::v1::{Runtime, RuntimeProgress};
use tokio::sync::mpsc;
use tonic::Status;

/// The sending end of a build's or install's progress stream. Sending never fails: a
/// client that went away stops hearing, and the work goes on (a half-done build or install
/// is never left behind because nobody listened).
#[derive(Clone)]
pub struct Progress {
    tx: mpsc::Sender<Result<RuntimeProgress, Status>>,
}

impl Progress {
    /// A progress stream into `tx`.
    pub fn new(tx: mpsc::Sender<Result<RuntimeProgress, Status>>) -> Progress {
        Progress { tx }
    }

    async fn send(&self, message: RuntimeProgress) {
        let _ = self.tx.send(Ok(message)).await;
    }

    /// A phase begins.
    pub async fn phase(&self, phase: &str) {
        self.send(RuntimeProgress {
            phase: phase.to_owned(),
            ..RuntimeProgress::default()
        })
        .await;
    }

    /// A line of a phase's output.
    pub async fn line(&self, phase: &str, line: &str) {
        self.send(RuntimeProgress {
            phase: phase.to_owned(),
            log_line: line.to_owned(),
            ..RuntimeProgress::default()
        })
        .await;
    }

    /// A count from blocking code, without waiting for a slow client (a count that does
    /// not fit is dropped; the next one says more anyway).
    pub fn count_now(&self, phase: &str, done: u64, total: u64, unit: &str) {
        let _ = self.tx.try_send(Ok(RuntimeProgress {
            phase: phase.to_owned(),
            done,
            total,
            unit: unit.to_owned(),
            ..RuntimeProgress::default()
        }));
    }

    /// The end: the installed runtime.
    pub async fn done(&self, runtime: Runtime) {
        self.send(RuntimeProgress {
            phase: "done".to_owned(),
            runtime: Some(runtime),
            ..RuntimeProgress::default()
        })
        .await;
    }

    /// The end: a failure.
    pub async fn failed(&self, status: Status) {
        let _ = self.tx.send(Err(status)).await;
    }
}
