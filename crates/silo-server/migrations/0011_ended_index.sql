-- The retention sweep (--keep-ended) looks for ended jobs that no caller of the job manager
-- holds: no request token (a workflow's jobs have one), or a schedule's firing (which has
-- one too, and is a plain job). Without an index, each sweep read every row.
CREATE INDEX jobs_ended ON jobs (ended_at)
    WHERE ended_at IS NOT NULL AND (request_token IS NULL OR schedule_id IS NOT NULL);
