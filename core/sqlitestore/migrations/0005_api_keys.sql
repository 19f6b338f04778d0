-- 0005: the apps' API keys (core.APIKeyStore), each by its SHA-256: the key itself is shown
-- once when it is made and never stored. Revoked keys stay, with the time of their
-- revocation. Times are unix microseconds (UTC), as in 0001.
CREATE TABLE api_keys (
    id         TEXT    PRIMARY KEY,
    name       TEXT    NOT NULL,
    hash       BLOB    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;
