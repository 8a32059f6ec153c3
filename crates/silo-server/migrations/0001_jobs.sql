-- Every job the server has accepted. Times are microseconds since the Unix epoch.
CREATE TABLE jobs (
    id           TEXT PRIMARY KEY NOT NULL,
    name         TEXT NOT NULL DEFAULT '',
    owner        TEXT NOT NULL,
    -- The JobSpec as protobuf bytes (silo.v1.JobSpec).
    spec         BLOB NOT NULL,
    -- Uploaded paths, one per line.
    uploads      TEXT NOT NULL DEFAULT '',
    state        INTEGER NOT NULL,
    reason       TEXT NOT NULL DEFAULT '',
    exit_code    INTEGER,
    signal       INTEGER,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    ended_at     INTEGER,
    -- The init process while the job runs: its pid and its start time in clock ticks
    -- after boot (field 22 of /proc/PID/stat), so a restarted server can tell it from a
    -- reused pid.
    init_pid     INTEGER,
    init_start   INTEGER
);

CREATE INDEX jobs_created ON jobs (created_at DESC);
CREATE INDEX jobs_state ON jobs (state);
