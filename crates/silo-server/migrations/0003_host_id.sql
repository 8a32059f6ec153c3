-- The host uid and gid a job's user namespace maps its user to, from the server's reserved
-- range (--host-ids). Kept while the job may still have processes, so that a restarted
-- server never hands the same id to another job.
ALTER TABLE jobs ADD COLUMN host_id INTEGER;
