-- Scheduled and recurring jobs. Times are microseconds since the Unix epoch.

-- The instant a job was scheduled to start at (a one-shot's start_at, or a schedule's
-- firing), and the schedule whose firing created it.
ALTER TABLE jobs ADD COLUMN scheduled_at INTEGER;
ALTER TABLE jobs ADD COLUMN schedule_id TEXT;
CREATE INDEX jobs_schedule ON jobs (schedule_id, created_at DESC) WHERE schedule_id IS NOT NULL;

-- Cron schedules: each firing creates an ordinary job.
CREATE TABLE schedules (
    id            TEXT PRIMARY KEY NOT NULL,
    owner         TEXT NOT NULL,
    -- The JobSpec as protobuf bytes (silo.v1.JobSpec).
    spec          BLOB NOT NULL,
    cron          TEXT NOT NULL,
    -- IANA zone name.
    tz            TEXT NOT NULL,
    -- silo.v1.MissedPolicy and silo.v1.OverlapPolicy (never UNSPECIFIED here).
    missed        INTEGER NOT NULL,
    overlap       INTEGER NOT NULL,
    paused        INTEGER NOT NULL DEFAULT 0,
    -- The next firing instant; NULL while paused.
    next_at       INTEGER,
    last_fired_at INTEGER,
    last_job_id   TEXT,
    fired         INTEGER NOT NULL DEFAULT 0,
    skipped       INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL
);
