-- 0002: the producers' fence of ApplyBatches. Times are unix microseconds (UTC), as in 0001.

-- The last applied batch sequence of every producer (wire.Batch.Producer) the store has seen,
-- written in the transaction that applies the batch. A producer without a row is at 0.
-- updated_at is the now of the batch that last advanced it; Expire forgets producers idle
-- for core.ProducerRetention past the write records' retention.
CREATE TABLE producers (
    producer   TEXT    PRIMARY KEY,
    seq        INTEGER NOT NULL CHECK (seq > 0),
    updated_at INTEGER NOT NULL
) STRICT;

CREATE INDEX producers_updated ON producers (updated_at);
