-- 0005: the apps' API keys (core.APIKeyStore), each by its SHA-256: the key itself is shown
-- once when it is made and never stored. Revoked keys stay, with the time of their
-- revocation. A new table, which the previous release does not read. Marked as in 0001.
--
-- A handful of rows, written by an operator now and then and read whole by every core every
-- few seconds: no index beyond the keys, none hash-sharded on CockroachDB (ids are ULIDs, but
-- nothing writes them fast enough to make a hot spot), and GLOBAL on a multi-region
-- CockroachDB (crdb.go).
CREATE TABLE api_keys (
    id         TEXT COLLATE "C" NOT NULL,
    name       TEXT             NOT NULL,
    hash       BYTEA            NOT NULL,
    created_at TIMESTAMPTZ      NOT NULL,
    revoked_at TIMESTAMPTZ,
    CONSTRAINT api_keys_pkey PRIMARY KEY (id),
    CONSTRAINT api_keys_hash UNIQUE (hash)
);
