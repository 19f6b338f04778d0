-- 0003: the account store (core.AccountStore): users, the signing keys of access tokens,
-- refresh tokens in families, the revocations the edges must hear of, and the counters that
-- throttle logins. Times are unix microseconds (UTC), as in 0001; text compares byte by byte
-- (BINARY).

-- One row per account. Emails are compared as given (the account service normalises them).
CREATE TABLE users (
    id            TEXT    PRIMARY KEY,
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

-- The signing keys of access tokens, private part included (auth.Key.MarshalPrivate). A
-- handful of rows, sorted in memory.
CREATE TABLE signing_keys (
    kid         TEXT    PRIMARY KEY,
    private_key BLOB    NOT NULL,
    created_at  INTEGER NOT NULL
) STRICT;

-- One row per login: the chain of refresh tokens it starts. Revoking a family is the update
-- of this one row; revoking a user, of its families through refresh_families_user.
CREATE TABLE refresh_families (
    family     TEXT    PRIMARY KEY,
    user_id    TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

CREATE INDEX refresh_families_user ON refresh_families (user_id);
CREATE INDEX refresh_families_expires ON refresh_families (expires_at);

-- Every refresh token, by its SHA-256. used_at is set when it is rotated; family_expires_at
-- is its family's expires_at, so that ExpireAccounts needs no join.
CREATE TABLE refresh_tokens (
    hash              BLOB    PRIMARY KEY,
    family            TEXT    NOT NULL,
    user_id           TEXT    NOT NULL,
    issued_at         INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    family_expires_at INTEGER NOT NULL,
    used_at           INTEGER
) STRICT;

CREATE INDEX refresh_tokens_expires ON refresh_tokens (family_expires_at);

-- The ends of access tokens that edges must hear of (kind "session": a family; "subject": a
-- user), read in order of at.
CREATE TABLE revocations (
    kind TEXT    NOT NULL,
    id   TEXT    NOT NULL,
    at   INTEGER NOT NULL,
    PRIMARY KEY (kind, id, at)
) STRICT;

CREATE INDEX revocations_at ON revocations (at);

-- The failed logins of each key (an email) in its current fixed window.
CREATE TABLE login_failures (
    key          TEXT    PRIMARY KEY,
    window_start INTEGER NOT NULL,
    failures     INTEGER NOT NULL CHECK (failures >= 1)
) STRICT;

CREATE INDEX login_failures_window ON login_failures (window_start);
