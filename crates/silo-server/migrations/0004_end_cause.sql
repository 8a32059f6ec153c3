-- Why a job ended, as data (silo.v1.EndCause), and for a start failure its kind
-- (silo.v1.StartFailure), the step that failed and the errno. 0 / NULL for jobs that have
-- not ended, and for jobs that ended before these columns existed.
ALTER TABLE jobs ADD COLUMN end_cause INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN start_failure INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN failed_step TEXT;
ALTER TABLE jobs ADD COLUMN errno INTEGER;
