-- Workflows and the state of each of their jobs ("nodes"). Written before each step takes
-- effect, so that a restarted server finishes every workflow with every job run once.
CREATE TABLE workflows (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    -- The YAML as submitted (the engine parses it again after a restart).
    yaml TEXT NOT NULL,
    -- silo.v1.WorkflowState.
    state INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    -- Set once the workflow is canceled (the reason); NULL otherwise.
    canceled TEXT,
    created_at INTEGER NOT NULL,
    ended_at INTEGER
);
CREATE INDEX workflows_created ON workflows (created_at DESC, id DESC);

CREATE TABLE workflow_nodes (
    workflow_id TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    -- The job's index in the YAML's jobs, in file order.
    idx INTEGER NOT NULL,
    -- waiting, running, backoff, completed, failed, stopped, skipped.
    state TEXT NOT NULL,
    -- For backoff: when the next attempt starts (ms since the epoch).
    until_ms INTEGER,
    -- Jobs started for it; the running attempt's job has the request token
    -- "<workflow_id>:<idx>:<attempts>".
    attempts INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    -- The job id of each attempt, space-separated.
    job_ids TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (workflow_id, idx)
);
