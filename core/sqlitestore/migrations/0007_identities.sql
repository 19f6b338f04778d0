-- 0007: external identities (core.IdentityStore): the accounts at OpenID Connect providers
-- that are linked to users, by the provider's name and its sub claim. A new table only, which
-- the previous release does not read. Times are unix microseconds (UTC).

-- One row per linked identity; a provider's sub is linked to at most one user. identities_user
-- finds a user's identities when the user is deleted.
CREATE TABLE identities (
    provider   TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    user_id    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (provider, subject)
) STRICT;

CREATE INDEX identities_user ON identities (user_id);
