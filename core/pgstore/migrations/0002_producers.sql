-- The last applied batch of each producer (one edge process's write lane): a batch applies
-- only right after the one before it, so a core can take many of a partition's batches at once
-- whatever the order JetStream redelivers them in (core.Fence). Written with every batch, so
-- it stays REGIONAL BY TABLE beside the core on CockroachDB; rows of producers idle for
-- core.ProducerRetention are expired. txn is the token of the transaction attempt that wrote
-- the row, like writes.txn: a fenced batch's write ids are not read back, so after an
-- ambiguous commit finding the attempt's token here proves that it committed.
CREATE TABLE producers (
    producer   TEXT COLLATE "C" NOT NULL,
    seq        BIGINT           NOT NULL CHECK (seq >= 1),
    updated_at TIMESTAMPTZ      NOT NULL,
    txn        TEXT             NOT NULL,
    CONSTRAINT producers_pkey PRIMARY KEY (producer)
);
