-- 0001: the initial schema. Times are unix microseconds (UTC); JSON is stored as TEXT so that
-- the sqlite3 shell's json functions work on it.

-- Store-wide settings fixed at creation, such as the partition count.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- The latest version of every document, tombstones included. seq is the partition sequence
-- number of the change that produced this version; it moves forward on every change, so
-- (partition, seq) is unique and a sync reads the changes of a partition in order from it.
CREATE TABLE documents (
    collection TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    deleted    INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    data       TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    partition  INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    PRIMARY KEY (collection, id)
) STRICT;

CREATE UNIQUE INDEX documents_sync ON documents (partition, seq);
CREATE INDEX documents_list_updated ON documents (collection, updated_at, id) WHERE deleted = 0;

-- The change counter of each partition: the seq of its last change, 0 before the first.
CREATE TABLE partitions (
    p   INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL CHECK (seq >= 0)
) STRICT;

-- The outcome of every applied write id, so that a redelivered command replays it.
CREATE TABLE writes (
    write_id   TEXT    PRIMARY KEY,
    outcome    TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX writes_created ON writes (created_at);

-- The first outcome of every Idempotency-Key and the fingerprint of the request it came with.
CREATE TABLE idempotency (
    key         TEXT    PRIMARY KEY,
    fingerprint TEXT    NOT NULL,
    outcome     TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX idempotency_created ON idempotency (created_at);

-- Change events committed with their change and not yet confirmed published.
CREATE TABLE outbox (
    partition  INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    event      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (partition, seq)
) STRICT;
