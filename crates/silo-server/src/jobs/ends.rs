//! The store's record of jobs' ends, written by one task in batches, a moment after each end
//! was told.
//!
//! A job's end is published (to its clients, its workflow) before it is stored; what the
//! end lets happen next comes right after: a workflow's next job, a client's next job. Both
//! store a new row, and the end's own write met them at SQLite's write lock (the three
//! writes of a workflow's step took 0.65 ms where a lone insert takes 0.25). So the end's
//! record waits [`END_WRITE_DELAY`], and the ends of that moment go in one transaction.
//! Nothing is lost meanwhile: the job stays in the live table (where GetJob and ListJobs
//! read it) until its end is stored, and a server that dies first finds the exit in the
//! job's log (the init writes it there) when it reconciles.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::store::{JobRow, Store};

/// How long an end's record waits for what the end lets start.
pub const END_WRITE_DELAY: Duration = Duration::from_millis(1);

/// The queue of ends to store; [`EndWriter::record`] answers once the end is stored (a
/// failed write is logged and tried again until it succeeds).
#[derive(Clone)]
pub struct EndWriter {
    tx: mpsc::UnboundedSender<(JobRow, oneshot::Sender<()>)>,
}

impl EndWriter {
    /// Starts the task that writes ends to `store`.
    pub fn start(store: Store) -> EndWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_ends(store, rx));
        EndWriter { tx }
    }

    /// Stores `row` (an ended job) with the ends that come with it; returns once it is.
    pub async fn record(&self, row: JobRow) {
        let (done, stored) = oneshot::channel();
        let id = row.id.clone();
        if self.tx.send((row, done)).is_err() {
            tracing::error!(job = %id, "cannot record the job's end: the store's writer is gone");
            return;
        }
        let _ = stored.await;
    }
}

async fn write_ends(store: Store, mut rx: mpsc::UnboundedReceiver<(JobRow, oneshot::Sender<()>)>) {
    while let Some(first) = rx.recv().await {
        tokio::time::sleep(END_WRITE_DELAY).await;
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        // An end that cannot be stored now (the state filesystem full, the database busy
        // beyond its timeout) is tried again until it is: its job stays live, answered from
        // memory, until then. Ends that come meanwhile join the retry.
        crate::store::until_stored("jobs' ends", || {
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let rows: Vec<JobRow> = batch.iter().map(|(row, _)| row.clone()).collect();
            let store = store.clone();
            async move { store.update_all(&rows).await }
        })
        .await;
        for (_, done) in batch {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use silo_proto::v1::JobState;

    use super::*;

    #[tokio::test]
    async fn ends_recorded_together_are_each_stored_once_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).await.unwrap();
        let ends = EndWriter::start(store.clone());
        let mut rows = Vec::new();
        for i in 0..5 {
            let row = JobRow {
                id: format!("{i:032x}"),
                state: JobState::Running,
                created_at: i,
                init: Some((42, 1234)),
                ..JobRow::default()
            };
            store.insert(&row).await.unwrap();
            rows.push(row);
        }
        let ended = |row: &JobRow, code: i32| JobRow {
            state: JobState::Completed,
            exit_code: Some(code),
            ended_at: Some(100 + i64::from(code)),
            init: None,
            ..row.clone()
        };
        // Four ends at once (one transaction), then one alone (one statement).
        let records = rows[..4]
            .iter()
            .enumerate()
            .map(|(i, row)| ends.record(ended(row, i as i32)));
        futures::future::join_all(records).await;
        for (i, row) in rows[..4].iter().enumerate() {
            let stored = store.get(&row.id).await.unwrap();
            assert_eq!(stored.state, JobState::Completed);
            assert_eq!(stored.exit_code, Some(i as i32));
            assert_eq!(stored.init, None);
        }
        assert_eq!(
            store.get(&rows[4].id).await.unwrap().state,
            JobState::Running
        );
        ends.record(ended(&rows[4], 9)).await;
        assert_eq!(store.get(&rows[4].id).await.unwrap().exit_code, Some(9));
    }

    #[tokio::test]
    async fn an_end_whose_write_fails_is_written_once_the_store_takes_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).await.unwrap();
        let row = JobRow {
            id: format!("{:032x}", 7),
            state: JobState::Running,
            init: Some((42, 1234)),
            ..JobRow::default()
        };
        store.insert(&row).await.unwrap();
        // Every update of a job fails while `blocked` has a row, as writes do while the
        // state filesystem is full.
        for statement in [
            "CREATE TABLE blocked (x)",
            "INSERT INTO blocked VALUES (1)",
            "CREATE TRIGGER no_updates BEFORE UPDATE ON jobs \
             WHEN (SELECT COUNT(*) FROM blocked) > 0 BEGIN SELECT RAISE(ABORT, 'full'); END",
        ] {
            sqlx::query(statement).execute(&store.pool()).await.unwrap();
        }
        let ends = EndWriter::start(store.clone());
        let ended = JobRow {
            state: JobState::Completed,
            exit_code: Some(3),
            init: None,
            ..row.clone()
        };
        let recording = tokio::spawn(async move { ends.record(ended).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!recording.is_finished(), "the end was given up");
        assert_eq!(store.get(&row.id).await.unwrap().state, JobState::Running);
        sqlx::query("DELETE FROM blocked")
            .execute(&store.pool())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), recording)
            .await
            .unwrap()
            .unwrap();
        let stored = store.get(&row.id).await.unwrap();
        assert_eq!(
            (stored.state, stored.exit_code),
            (JobState::Completed, Some(3))
        );
    }
}
