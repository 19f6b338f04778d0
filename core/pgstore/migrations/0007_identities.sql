-- 0007: external identities (core.IdentityStore): the accounts at OpenID Connect providers
-- that are linked to users, by the provider's name and its sub claim. A new table only, which
-- the previous release does not read. Marked as in 0001: COLLATE "C" on text keys. No
-- hash-sharded keys: rows are written at a user's first login through a provider, keyed by
-- the provider's subjects, which are not sequential.

-- One row per linked identity; a provider's sub is linked to at most one user. identities_user
-- finds a user's identities when the user is deleted.
CREATE TABLE identities (
    provider   TEXT COLLATE "C" NOT NULL,
    subject    TEXT COLLATE "C" NOT NULL,
    user_id    TEXT COLLATE "C" NOT NULL,
    created_at TIMESTAMPTZ      NOT NULL,
    CONSTRAINT identities_pkey PRIMARY KEY (provider, subject)
);

CREATE INDEX identities_user ON identities (user_id);
