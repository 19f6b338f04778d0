-- 0001: the initial schema, in the SQL that PostgreSQL and CockroachDB share. Two marks are
-- rendered differently on CockroachDB (see crdb.go, forCockroach): COLLATE "C" is dropped
-- (CockroachDB compares strings byte by byte already), and /*crdb: ...*/ comments become SQL
-- (hash-sharded keys). Times are timestamptz (microseconds, UTC); JSON is jsonb.

-- Store-wide settings fixed at creation, such as the partition count.
CREATE TABLE meta (
    name  TEXT NOT NULL,
    value TEXT NOT NULL,
    CONSTRAINT meta_pkey PRIMARY KEY (name)
);

-- The latest version of every document, tombstones included (data NULL). seq is the partition
-- sequence number of the change that produced this version; it moves forward on every change,
-- so (part, seq) is unique and a sync reads the changes of a partition in order from it. Keys
-- compare byte by byte (COLLATE "C"), like Go strings, whatever the database's locale.
CREATE TABLE documents (
    collection TEXT COLLATE "C" NOT NULL,
    id         TEXT COLLATE "C" NOT NULL,
    version    BIGINT           NOT NULL,
    deleted    BOOLEAN          NOT NULL DEFAULT false,
    data       JSONB,
    created_at TIMESTAMPTZ      NOT NULL,
    updated_at TIMESTAMPTZ      NOT NULL,
    part       INT              NOT NULL,
    seq        BIGINT           NOT NULL,
    CONSTRAINT documents_pkey PRIMARY KEY (collection, id)
);

-- Not hash-sharded on CockroachDB: the partition leads the key, so changes are appended at
-- one place per partition (16 by default), which ranges can split between; the sync's ordered
-- range scan stays a single span.
CREATE UNIQUE INDEX documents_sync ON documents (part, seq);
CREATE INDEX documents_list_updated ON documents (collection, updated_at, id) WHERE NOT deleted;

-- The change counter of each partition: the seq of its last change, 0 before the first. One
-- row per partition, locked by the batch that applies in it.
CREATE TABLE partitions (
    part INT    NOT NULL,
    seq  BIGINT NOT NULL CHECK (seq >= 0),
    CONSTRAINT partitions_pkey PRIMARY KEY (part)
);

-- The outcome of every applied write id, so that a redelivered command replays it. txn is the
-- random token of the transaction attempt that recorded it: after an ambiguous commit, finding
-- the attempt's token here proves that the attempt committed. Write ids are ULIDs, which grow
-- with time: on CockroachDB the key and the created_at index are hash-sharded so that new rows
-- do not all land at the end of one range.
CREATE TABLE writes (
    write_id   TEXT COLLATE "C" NOT NULL,
    outcome    JSONB            NOT NULL,
    created_at TIMESTAMPTZ      NOT NULL,
    txn        TEXT             NOT NULL,
    CONSTRAINT writes_pkey PRIMARY KEY (write_id) /*crdb: USING HASH*/
);

CREATE INDEX writes_created ON writes (created_at) /*crdb: USING HASH*/;

-- The first outcome of every Idempotency-Key and the fingerprint of the request it came with.
CREATE TABLE idempotency (
    idem_key    TEXT COLLATE "C" NOT NULL,
    fingerprint TEXT             NOT NULL,
    outcome     JSONB            NOT NULL,
    created_at  TIMESTAMPTZ      NOT NULL,
    CONSTRAINT idempotency_pkey PRIMARY KEY (idem_key)
);

CREATE INDEX idempotency_created ON idempotency (created_at) /*crdb: USING HASH*/;

-- Change events committed with their change and not yet confirmed published. Keyed like
-- documents_sync, by partition first, for the same reason.
CREATE TABLE outbox (
    part       INT         NOT NULL,
    seq        BIGINT      NOT NULL,
    event      JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    CONSTRAINT outbox_pkey PRIMARY KEY (part, seq)
);
