-- One row that the store's background checkpoint rewrites right after it has copied the
-- whole WAL into the database: that write starts the WAL over and pays the fsync of the
-- new WAL's header, which would otherwise fall on the next request's write (a launch's
-- insert, once a second under load).
CREATE TABLE wal_restart (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    at INTEGER NOT NULL
);
INSERT INTO wal_restart (id, at) VALUES (0, 0);
