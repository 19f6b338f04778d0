-- 0006: the second factor (core.TOTPStore): a TOTP secret per user, pending or in force, the
-- step of the last code accepted, and the hashes of the unused recovery codes. New tables
-- only, which the previous release does not read. Times are unix microseconds (UTC).

-- One row per user who enrolled. secret and pending are sealed by the account service (the
-- store never sees a secret in clear); secret is NULL until an enrollment is confirmed, and
-- pending NULL once it is. last_step is the RFC 6238 step of the last code accepted: a code is
-- accepted only for a later step, by a conditional update.
CREATE TABLE totp (
    user_id    TEXT    PRIMARY KEY,
    secret     BLOB,
    pending    BLOB,
    last_step  INTEGER NOT NULL,
    enabled_at INTEGER,
    updated_at INTEGER NOT NULL
) STRICT;

-- The hashes of a user's unused recovery codes (auth.NewRecoveryCodes); a code is used by
-- deleting its row.
CREATE TABLE recovery_codes (
    user_id TEXT NOT NULL,
    hash    BLOB NOT NULL,
    PRIMARY KEY (user_id, hash)
) STRICT;
