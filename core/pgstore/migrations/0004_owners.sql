-- 0004: documents record their owner (wire.Document.Owner): the user whose write created the
-- document, NULL for a document written anonymously. A nullable column and an index, nothing
-- the previous release reads or writes: its statements name their columns, so its reads do
-- not see owner, its inserts leave it NULL, and its upsert's ON CONFLICT DO UPDATE does not
-- list it, so that an update by an older core keeps the owner it finds. Owners are user ids,
-- compared byte by byte like the other keys.
ALTER TABLE documents ADD COLUMN owner TEXT COLLATE "C";

-- Keyed by owner first: List with an owner (a collection whose read rule is owner) reads one
-- owner's live documents of one collection, in id order from the index, either direction, and
-- a user's export and the deletion of an account (Owned) read all of them, in (collection, id)
-- order. The updated_at orders read the
-- owner's documents of the collection through it too and sort them: a user's own documents are
-- few next to a collection's, and an index keyed by updated_at would take a new entry at every
-- update of an owned document.
--
-- Partial on NOT deleted only, not on owner IS NOT NULL as well (which sqlitestore has):
-- CockroachDB refuses, in the transaction that adds a column, a partial index whose predicate
-- names that column ("cannot create partial index on column ... which is not public",
-- cockroach#83593), and this migration is one transaction. Anonymous live documents therefore
-- have entries here, with a NULL owner; where documents are written under the owner rule
-- (the default outside perch dev) nearly all have an owner, so the narrower predicate would
-- spare little. A later migration may add the narrower index and drop this one.
CREATE INDEX documents_owner ON documents (owner, collection, id) WHERE NOT deleted;
