-- An opaque token the caller of the job manager gave the job (a workflow's engine:
-- "<workflow>:<node>:<attempt>"), unique, so that a caller that crashed after asking for a
-- job can tell whether the job exists.
ALTER TABLE jobs ADD COLUMN request_token TEXT;
CREATE UNIQUE INDEX jobs_request_token ON jobs (request_token) WHERE request_token IS NOT NULL;
