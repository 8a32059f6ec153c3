-- Secret environment variables of jobs, sealed (AES-256-GCM) with the key in
-- <state>/secrets.key, each bound to its job and name; removed with their job.
CREATE TABLE job_secrets (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    -- 96-bit random nonce, one per value.
    nonce BLOB NOT NULL,
    -- The value, encrypted, with its 16-byte tag appended.
    ciphertext BLOB NOT NULL,
    PRIMARY KEY (job_id, name)
);

-- The YAML of a workflow that has secret_environment values, sealed the same way (bound to
-- the workflow); its `workflows.yaml` then holds only a note that it is sealed.
CREATE TABLE workflow_secrets (
    workflow_id TEXT PRIMARY KEY REFERENCES workflows (id) ON DELETE CASCADE,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL
);
