-- 0006: the second factor (core.TOTPStore): a TOTP secret per user, pending or in force, the
-- step of the last code accepted, and the hashes of the unused recovery codes. New tables
-- only, which the previous release does not read. Marked as in 0001: COLLATE "C" on text
-- keys. No hash-sharded keys: rows are written at enrollment and login, keyed by user ids of
-- every age, so no range's tail is hot.

-- One row per user who enrolled. secret and pending are sealed by the account service (the
-- store never sees a secret in clear); secret is NULL until an enrollment is confirmed, and
-- pending NULL once it is. last_step is the RFC 6238 step of the last code accepted: a code is
-- accepted only for a later step, by a conditional update.
CREATE TABLE totp (
    user_id    TEXT COLLATE "C" NOT NULL,
    secret     BYTEA,
    pending    BYTEA,
    last_step  BIGINT           NOT NULL,
    enabled_at TIMESTAMPTZ,
    updated_at TIMESTAMPTZ      NOT NULL,
    CONSTRAINT totp_pkey PRIMARY KEY (user_id)
);

-- The hashes of a user's unused recovery codes (auth.NewRecoveryCodes); a code is used by
-- deleting its row.
CREATE TABLE recovery_codes (
    user_id TEXT COLLATE "C" NOT NULL,
    hash    BYTEA            NOT NULL,
    CONSTRAINT recovery_codes_pkey PRIMARY KEY (user_id, hash)
);
