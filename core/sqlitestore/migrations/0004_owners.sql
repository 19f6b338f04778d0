-- 0004: documents record their owner (wire.Document.Owner): the user whose write created the
-- document, NULL for a document written anonymously.
ALTER TABLE documents ADD COLUMN owner TEXT;

-- Keyed by owner first: List with an owner reads one owner's live documents of one collection
-- in id order, either direction, and Owned (a user's export, an account's deletion) all of
-- them in (collection, id) order; the updated_at orders sort the owner's documents read through it (a user's own
-- documents are few, and an index keyed by updated_at would be rewritten by every update).
-- Partial, so that anonymous documents and tombstones add nothing to it.
CREATE INDEX documents_owner ON documents (owner, collection, id) WHERE owner IS NOT NULL AND deleted = 0;
