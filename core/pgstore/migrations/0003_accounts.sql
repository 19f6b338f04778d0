-- 0003: the account store (core.AccountStore): users, the signing keys of access tokens,
-- refresh tokens in families, the revocations the edges must hear of, and the counters that
-- throttle logins. New tables only, which the previous release does not read. Marked as in
-- 0001: COLLATE "C" on text keys, /*crdb: ...*/ for the hash-sharded keys of CockroachDB.

-- One row per account. ids are ULIDs, which grow with time: on CockroachDB the key is
-- hash-sharded, like writes_pkey, so that signups do not all land at the end of one range.
-- Emails are compared byte by byte (the account service normalises them first).
CREATE TABLE users (
    id            TEXT COLLATE "C" NOT NULL,
    email         TEXT COLLATE "C" NOT NULL,
    password_hash TEXT             NOT NULL,
    created_at    TIMESTAMPTZ      NOT NULL,
    updated_at    TIMESTAMPTZ      NOT NULL,
    CONSTRAINT users_pkey PRIMARY KEY (id) /*crdb: USING HASH*/,
    CONSTRAINT users_email UNIQUE (email)
);

-- The signing keys of access tokens, private part included (auth.Key.MarshalPrivate): a
-- handful of rows, read by every core, written once a rotation (GLOBAL on a multi-region
-- CockroachDB, see crdb.go). Sorted in memory, so no index beyond the key.
CREATE TABLE signing_keys (
    kid         TEXT COLLATE "C" NOT NULL,
    private_key BYTEA            NOT NULL,
    created_at  TIMESTAMPTZ      NOT NULL,
    CONSTRAINT signing_keys_pkey PRIMARY KEY (kid)
);

-- One row per login: the chain of refresh tokens it starts. Revoking a family (a logout, a
-- reused token) is the update of this one row, whatever the length of its chain; revoking a
-- user is an update of its families through refresh_families_user. Family ids are random.
CREATE TABLE refresh_families (
    family     TEXT COLLATE "C" NOT NULL,
    user_id    TEXT COLLATE "C" NOT NULL,
    expires_at TIMESTAMPTZ      NOT NULL,
    revoked_at TIMESTAMPTZ,
    CONSTRAINT refresh_families_pkey PRIMARY KEY (family)
);

CREATE INDEX refresh_families_user ON refresh_families (user_id);
-- For ExpireAccounts. Written at now plus the family's life: hash-sharded on CockroachDB.
CREATE INDEX refresh_families_expires ON refresh_families (expires_at) /*crdb: USING HASH*/;

-- Every refresh token of every family, by its SHA-256 (random, so no hot spot). used_at is
-- set when the token is rotated; a second use revokes the family. family_expires_at is the
-- family's expires_at, kept on each token so that ExpireAccounts removes tokens without a
-- join.
CREATE TABLE refresh_tokens (
    hash              BYTEA            NOT NULL,
    family            TEXT COLLATE "C" NOT NULL,
    user_id           TEXT COLLATE "C" NOT NULL,
    issued_at         TIMESTAMPTZ      NOT NULL,
    expires_at        TIMESTAMPTZ      NOT NULL,
    family_expires_at TIMESTAMPTZ      NOT NULL,
    used_at           TIMESTAMPTZ,
    CONSTRAINT refresh_tokens_pkey PRIMARY KEY (hash)
);

CREATE INDEX refresh_tokens_expires ON refresh_tokens (family_expires_at) /*crdb: USING HASH*/;

-- The ends of access tokens that edges must hear of (kind "session": a family; "subject": a
-- user), read by Revocations(since) in order of at. revocations_at is not hash-sharded on
-- CockroachDB: revocations are rare (logouts, password changes), so its tail is no hot spot,
-- while its readers want one ordered span.
CREATE TABLE revocations (
    kind TEXT COLLATE "C" NOT NULL,
    id   TEXT COLLATE "C" NOT NULL,
    at   TIMESTAMPTZ      NOT NULL,
    CONSTRAINT revocations_pkey PRIMARY KEY (kind, id, at)
);

CREATE INDEX revocations_at ON revocations (at);

-- The failed logins of each key (an email) in its current fixed window, which started at
-- window_start. Hash-sharded window index on CockroachDB: a new window starts at now, and a
-- credential-stuffing attack starts many.
CREATE TABLE login_failures (
    key          TEXT COLLATE "C" NOT NULL,
    window_start TIMESTAMPTZ      NOT NULL,
    failures     INT              NOT NULL CHECK (failures >= 1),
    CONSTRAINT login_failures_pkey PRIMARY KEY (key)
);

CREATE INDEX login_failures_window ON login_failures (window_start) /*crdb: USING HASH*/;
