-- Secret environment variables of cron schedules, sealed (AES-256-GCM) with the key in
-- <state>/secrets.key like jobs', each bound to its schedule and name; removed with their
-- schedule. Each firing's job gets them, sealed again under its own id.
CREATE TABLE schedule_secrets (
    schedule_id TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL,
    PRIMARY KEY (schedule_id, name)
);
