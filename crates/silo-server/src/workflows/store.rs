//! The workflows' tables: one row per workflow, one per job of it ("node"), in the server's
//! SQLite store (migration 0006). The engine writes a node's row before the step it
//! describes takes effect.

use silo_workflow::schedule::{Node, NodeState};
use sqlx::{Row, SqlitePool};

use crate::store::StoreError;

/// One workflow as stored.
#[derive(Debug, Clone)]
pub struct WorkflowRow {
    /// 32 lowercase hex digits.
    pub id: String,
    /// Its name (the YAML's, or the one RunWorkflow gave).
    pub name: String,
    /// The CN of the client that ran it.
    pub owner: String,
    /// The YAML as submitted.
    pub yaml: String,
    /// silo.v1.WorkflowState.
    pub state: i32,
    /// Why it is in its state.
    pub reason: String,
    /// The reason it was canceled, once it was.
    pub canceled: Option<String>,
    /// Microseconds since the epoch.
    pub created_at: i64,
    /// When it ended.
    pub ended_at: Option<i64>,
}

/// One node as stored: the scheduler's state, and the job id of each attempt.
#[derive(Debug, Clone)]
pub struct NodeRow {
    /// The scheduler's view.
    pub node: Node,
    /// The job of each attempt, oldest first.
    pub job_ids: Vec<String>,
}

/// The workflow tables.
#[derive(Clone)]
pub struct WorkflowStore {
    pool: SqlitePool,
}

fn state_name(state: &NodeState) -> (&'static str, Option<i64>) {
    match state {
        NodeState::Waiting => ("waiting", None),
        NodeState::Running => ("running", None),
        NodeState::Backoff { until_ms } => ("backoff", i64::try_from(*until_ms).ok()),
        NodeState::Completed => ("completed", None),
        NodeState::Failed => ("failed", None),
        NodeState::Stopped => ("stopped", None),
        NodeState::Skipped => ("skipped", None),
    }
}

fn state_from(name: &str, until_ms: Option<i64>) -> Result<NodeState, StoreError> {
    Ok(match name {
        "waiting" => NodeState::Waiting,
        "running" => NodeState::Running,
        "backoff" => NodeState::Backoff {
            until_ms: until_ms.and_then(|u| u64::try_from(u).ok()).unwrap_or(0),
        },
        "completed" => NodeState::Completed,
        "failed" => NodeState::Failed,
        "stopped" => NodeState::Stopped,
        "skipped" => NodeState::Skipped,
        other => {
            return Err(StoreError::Corrupt {
                id: "a workflow node".into(),
                what: format!("unknown state {other:?}"),
            });
        }
    })
}

impl WorkflowStore {
    /// The tables in the store behind `pool`.
    pub fn new(pool: SqlitePool) -> WorkflowStore {
        WorkflowStore { pool }
    }

    /// Stores a new workflow and its nodes (and its sealed YAML, when it has secrets), all
    /// at once.
    pub async fn insert(
        &self,
        row: &WorkflowRow,
        nodes: &[NodeRow],
        sealed_yaml: Option<&crate::secrets::Sealed>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO workflows (id, name, owner, yaml, state, reason, canceled, created_at, \
             ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&row.id)
        .bind(&row.name)
        .bind(&row.owner)
        .bind(&row.yaml)
        .bind(row.state)
        .bind(&row.reason)
        .bind(&row.canceled)
        .bind(row.created_at)
        .bind(row.ended_at)
        .execute(&mut *tx)
        .await?;
        for (idx, node) in nodes.iter().enumerate() {
            let (state, until) = state_name(&node.node.state);
            sqlx::query(
                "INSERT INTO workflow_nodes (workflow_id, idx, state, until_ms, attempts, reason, \
                 job_ids) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&row.id)
            .bind(idx as i64)
            .bind(state)
            .bind(until)
            .bind(node.node.attempts)
            .bind(&node.node.reason)
            .bind(node.job_ids.join(" "))
            .execute(&mut *tx)
            .await?;
        }
        if let Some(sealed) = sealed_yaml {
            sqlx::query(
                "INSERT INTO workflow_secrets (workflow_id, nonce, ciphertext) VALUES (?, ?, ?)",
            )
            .bind(&row.id)
            .bind(&sealed.nonce)
            .bind(&sealed.ciphertext)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The sealed YAML of workflow `id`, when its YAML is stored sealed.
    pub async fn sealed_yaml(
        &self,
        id: &str,
    ) -> Result<Option<crate::secrets::Sealed>, StoreError> {
        let row =
            sqlx::query("SELECT nonce, ciphertext FROM workflow_secrets WHERE workflow_id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|row| {
            Ok(crate::secrets::Sealed {
                name: crate::secrets::WORKFLOW_YAML.to_owned(),
                nonce: row.try_get("nonce")?,
                ciphertext: row.try_get("ciphertext")?,
            })
        })
        .transpose()
    }

    /// Records nodes' states, attempts, reasons and jobs, all in one transaction.
    pub async fn update_nodes(
        &self,
        id: &str,
        nodes: &[(usize, NodeRow)],
    ) -> Result<(), StoreError> {
        // One multi-row upsert per chunk: a usual step (one node ended, the next started)
        // is a single statement, one trip to the database's thread instead of four.
        const ROWS_PER_STATEMENT: usize = 500;
        let mut tx = None;
        if nodes.len() > ROWS_PER_STATEMENT {
            tx = Some(self.pool.begin().await?);
        }
        for chunk in nodes.chunks(ROWS_PER_STATEMENT) {
            let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
                "INSERT INTO workflow_nodes \
                 (workflow_id, idx, state, until_ms, attempts, reason, job_ids) ",
            );
            query.push_values(chunk, |mut row, (idx, node)| {
                let (state, until) = state_name(&node.node.state);
                row.push_bind(id)
                    .push_bind(*idx as i64)
                    .push_bind(state)
                    .push_bind(until)
                    .push_bind(node.node.attempts)
                    .push_bind(node.node.reason.clone())
                    .push_bind(node.job_ids.join(" "));
            });
            query.push(
                " ON CONFLICT (workflow_id, idx) DO UPDATE SET state = excluded.state, \
                 until_ms = excluded.until_ms, attempts = excluded.attempts, \
                 reason = excluded.reason, job_ids = excluded.job_ids",
            );
            match tx.as_mut() {
                Some(tx) => query.build().execute(&mut **tx).await?,
                None => query.build().execute(&self.pool).await?,
            };
        }
        if let Some(tx) = tx {
            tx.commit().await?;
        }
        Ok(())
    }

    /// Records the workflow's state, reason, cancel and end.
    pub async fn update(&self, row: &WorkflowRow) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE workflows SET state = ?, reason = ?, canceled = ?, ended_at = ? WHERE id = ?",
        )
        .bind(row.state)
        .bind(&row.reason)
        .bind(&row.canceled)
        .bind(row.ended_at)
        .bind(&row.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The full id of the one workflow whose id starts with `prefix`.
    pub async fn resolve(&self, prefix: &str) -> Result<String, StoreError> {
        crate::store::resolve_id(&self.pool, "workflows", prefix).await
    }

    /// One workflow and its nodes by full id.
    pub async fn get(&self, id: &str) -> Result<(WorkflowRow, Vec<NodeRow>), StoreError> {
        let row = sqlx::query(
            "SELECT id, name, owner, yaml, state, reason, canceled, created_at, ended_at \
             FROM workflows WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
        let workflow = decode_workflow(&row)?;
        let nodes = self.nodes(id).await?;
        Ok((workflow, nodes))
    }

    async fn nodes(&self, id: &str) -> Result<Vec<NodeRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, until_ms, attempts, reason, job_ids FROM workflow_nodes \
             WHERE workflow_id = ? ORDER BY idx",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let job_ids: String = r.try_get("job_ids")?;
                Ok(NodeRow {
                    node: Node {
                        state: state_from(
                            &r.try_get::<String, _>("state")?,
                            r.try_get("until_ms")?,
                        )?,
                        attempts: r.try_get::<i64, _>("attempts")?.try_into().unwrap_or(0),
                        reason: r.try_get("reason")?,
                    },
                    job_ids: job_ids.split_whitespace().map(str::to_owned).collect(),
                })
            })
            .collect()
    }

    /// The newest `limit` workflows (without their nodes' details beyond counts).
    pub async fn list_ids(&self, limit: u32) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar(
                "SELECT id FROM workflows ORDER BY created_at DESC, id DESC LIMIT ?",
            )
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?,
        )
    }

    /// Ids of the workflows that have not ended.
    pub async fn running(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM workflows WHERE ended_at IS NULL ORDER BY created_at",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Ids of at most `limit` workflows that ended before `cutoff` (µs since the epoch),
    /// oldest first.
    pub async fn ended_before(&self, cutoff: i64, limit: u32) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM workflows WHERE ended_at IS NOT NULL AND ended_at < ? \
             ORDER BY ended_at LIMIT ?",
        )
        .bind(cutoff)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Removes a workflow and its nodes.
    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM workflows WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn decode_workflow(row: &sqlx::sqlite::SqliteRow) -> Result<WorkflowRow, StoreError> {
    Ok(WorkflowRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        owner: row.try_get("owner")?,
        yaml: row.try_get("yaml")?,
        state: row.try_get("state")?,
        reason: row.try_get("reason")?,
        canceled: row.try_get("canceled")?,
        created_at: row.try_get("created_at")?,
        ended_at: row.try_get("ended_at")?,
    })
}
