-- The retention sweep (--keep-ended) looks for jobs that ended long ago and that no caller
-- of the job manager holds (no request token): without an index, each sweep read every row.
CREATE INDEX jobs_ended ON jobs (ended_at) WHERE request_token IS NULL AND ended_at IS NOT NULL;
