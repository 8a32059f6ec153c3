//! The schedules table (migration 0008), in the server's one SQLite store.

use prost::Message;
use silo_proto::v1::{JobSpec, MissedPolicy, OverlapPolicy};
use sqlx::Row;
use sqlx::sqlite::{SqlitePool, SqliteRow};

use crate::store::StoreError;

/// One schedule as stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScheduleRow {
    /// Full id (32 lowercase hex digits).
    pub id: String,
    /// The CN of the client that created it; its jobs' owner.
    pub owner: String,
    /// The job each firing runs.
    pub spec: JobSpec,
    /// The cron expression, as given.
    pub cron: String,
    /// The IANA zone it is read in.
    pub tz: String,
    /// Never UNSPECIFIED.
    pub missed: MissedPolicy,
    /// Never UNSPECIFIED.
    pub overlap: OverlapPolicy,
    /// Whether it is paused.
    pub paused: bool,
    /// The next firing; `None` while paused.
    pub next_at: Option<i64>,
    /// The last firing that started a job.
    pub last_fired_at: Option<i64>,
    /// That firing's job.
    pub last_job_id: Option<String>,
    /// Jobs its firings created.
    pub fired: u64,
    /// Firings skipped (overlap) or dropped (missed).
    pub skipped: u64,
    /// Why the last firing started no job; empty after one that did.
    pub last_error: String,
    /// Microseconds since the epoch.
    pub created_at: i64,
}

const COLUMNS: &str = "id, owner, spec, cron, tz, missed, overlap, paused, next_at, \
                       last_fired_at, last_job_id, fired, skipped, last_error, created_at";

/// The schedules table.
#[derive(Clone)]
pub struct ScheduleStore {
    pool: SqlitePool,
}

impl ScheduleStore {
    /// The table in the store whose pool is `pool`.
    pub fn new(pool: SqlitePool) -> ScheduleStore {
        ScheduleStore { pool }
    }

    /// Stores a new schedule.
    pub async fn insert(&self, row: &ScheduleRow) -> Result<(), StoreError> {
        self.insert_with_secrets(row, &[]).await
    }

    /// Stores a new schedule and its sealed secret variables, all or nothing.
    pub async fn insert_with_secrets(
        &self,
        row: &ScheduleRow,
        secrets: &[crate::secrets::Sealed],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO schedules ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&row.id)
        .bind(&row.owner)
        .bind(row.spec.encode_to_vec())
        .bind(&row.cron)
        .bind(&row.tz)
        .bind(row.missed as i32)
        .bind(row.overlap as i32)
        .bind(row.paused)
        .bind(row.next_at)
        .bind(row.last_fired_at)
        .bind(&row.last_job_id)
        .bind(row.fired as i64)
        .bind(row.skipped as i64)
        .bind(&row.last_error)
        .bind(row.created_at)
        .execute(&mut *tx)
        .await?;
        crate::secrets::store_sealed(&mut tx, "schedule_secrets", "schedule_id", &row.id, secrets)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The full id of the one schedule whose id starts with `prefix`.
    pub async fn resolve(&self, prefix: &str) -> Result<String, StoreError> {
        crate::store::resolve_id(&self.pool, "schedules", prefix).await
    }

    /// The schedule with this full id, if it exists.
    pub async fn find(&self, id: &str) -> Result<Option<ScheduleRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM schedules WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(decode).transpose()
    }

    /// Every schedule, newest first.
    pub async fn list(&self) -> Result<Vec<ScheduleRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM schedules ORDER BY created_at DESC, id DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(decode).collect()
    }

    /// Pauses (`next_at` none) or resumes (`next_at` set) a schedule.
    pub async fn set_paused(
        &self,
        id: &str,
        paused: bool,
        next_at: Option<i64>,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE schedules SET paused = ?, next_at = ? WHERE id = ?")
            .bind(paused)
            .bind(next_at)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves a schedule that is still due at `due` (not paused, resumed or deleted
    /// meanwhile) on to `next`, recording what the firing at `due` did. False when it was
    /// no longer due at `due` (nothing changes then).
    pub async fn advance(
        &self,
        id: &str,
        due: i64,
        next: Option<i64>,
        firing: &Firing,
    ) -> Result<bool, StoreError> {
        let (fired, skipped) = match firing {
            Firing::Started { .. } => (1, 0),
            Firing::Skipped(n) => (0, *n),
            Firing::Failed(_) => (0, 0),
        };
        let mut sql = String::from(
            "UPDATE schedules SET next_at = ?, fired = fired + ?, skipped = skipped + ?",
        );
        match firing {
            Firing::Started { .. } => {
                sql.push_str(", last_fired_at = ?, last_job_id = ?, last_error = ''");
            }
            Firing::Failed(_) => sql.push_str(", last_error = ?"),
            Firing::Skipped(_) => {}
        }
        sql.push_str(" WHERE id = ? AND paused = 0 AND next_at = ?");
        let mut query = sqlx::query(&sql)
            .bind(next)
            .bind(fired)
            .bind(skipped as i64);
        match firing {
            Firing::Started { at, job } => query = query.bind(at).bind(job),
            Firing::Failed(why) => query = query.bind(why),
            Firing::Skipped(_) => {}
        }
        let done = query.bind(id).bind(due).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }

    /// The sealed secret variables of schedule `id` (none once it is deleted).
    pub async fn secrets_of(&self, id: &str) -> Result<Vec<crate::secrets::Sealed>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, nonce, ciphertext FROM schedule_secrets WHERE schedule_id = ? \
             ORDER BY rowid",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(crate::secrets::sealed_rows(&rows)?)
    }

    /// Removes a schedule; false when there was none.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM schedules WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

/// What one firing did, for [`ScheduleStore::advance`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firing {
    /// It started the job `job` for the instant `at`.
    Started {
        /// The firing's instant.
        at: i64,
        /// The job's id.
        job: String,
    },
    /// It started nothing: this many firings were skipped (overlap) or dropped (missed).
    Skipped(u64),
    /// It could not start a job, for this reason.
    Failed(String),
}

fn decode(row: &SqliteRow) -> Result<ScheduleRow, StoreError> {
    let id: String = row.try_get("id")?;
    let spec: Vec<u8> = row.try_get("spec")?;
    let spec = JobSpec::decode(spec.as_slice()).map_err(|e| StoreError::Corrupt {
        id: id.clone(),
        what: format!("schedule spec: {e}"),
    })?;
    Ok(ScheduleRow {
        owner: row.try_get("owner")?,
        spec,
        cron: row.try_get("cron")?,
        tz: row.try_get("tz")?,
        missed: MissedPolicy::try_from(row.try_get::<i32, _>("missed")?)
            .unwrap_or(MissedPolicy::Once),
        overlap: OverlapPolicy::try_from(row.try_get::<i32, _>("overlap")?)
            .unwrap_or(OverlapPolicy::Skip),
        paused: row.try_get("paused")?,
        next_at: row.try_get("next_at")?,
        last_fired_at: row.try_get("last_fired_at")?,
        last_job_id: row.try_get("last_job_id")?,
        fired: row.try_get::<i64, _>("fired")?.max(0) as u64,
        skipped: row.try_get::<i64, _>("skipped")?.max(0) as u64,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, ScheduleStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("silo.db"))
            .await
            .unwrap();
        (dir, ScheduleStore::new(store.pool()))
    }

    fn schedule(id: &str, next_at: i64) -> ScheduleRow {
        ScheduleRow {
            id: id.into(),
            owner: "admin".into(),
            spec: JobSpec {
                command: vec!["true".into()],
                ..JobSpec::default()
            },
            cron: "* * * * * *".into(),
            tz: "UTC".into(),
            missed: MissedPolicy::Once,
            overlap: OverlapPolicy::Skip,
            next_at: Some(next_at),
            created_at: 1,
            ..ScheduleRow::default()
        }
    }

    #[tokio::test]
    async fn a_firing_advances_only_a_schedule_still_due_at_its_instant() {
        let (_dir, store) = store().await;
        store.insert(&schedule("ab", 1_000)).await.unwrap();
        let started = Firing::Started {
            at: 1_000,
            job: "j1".into(),
        };
        assert!(
            store
                .advance("ab", 1_000, Some(2_000), &started)
                .await
                .unwrap()
        );
        // The same firing again (a stale timer) changes nothing.
        assert!(
            !store
                .advance("ab", 1_000, Some(2_000), &started)
                .await
                .unwrap()
        );
        let row = store.find("ab").await.unwrap().unwrap();
        assert_eq!(
            (row.next_at, row.fired, row.last_job_id.as_deref()),
            (Some(2_000), 1, Some("j1"))
        );
        // Paused meanwhile: the firing in flight does not resume it.
        store.set_paused("ab", true, None).await.unwrap();
        assert!(
            !store
                .advance("ab", 2_000, Some(3_000), &Firing::Skipped(1))
                .await
                .unwrap()
        );
        let row = store.find("ab").await.unwrap().unwrap();
        assert!(row.paused && row.next_at.is_none());
        assert!(store.delete("ab").await.unwrap());
        assert!(store.find("ab").await.unwrap().is_none());
    }
}
