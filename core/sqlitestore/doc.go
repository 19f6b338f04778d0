// Package sqlitestore is the embedded core.Store: one SQLite database file, through the
// pure-Go modernc.org/sqlite driver (no cgo). It is the default store of `perch dev` and of
// single-node deployments (`--db sqlite:PATH`), and the backend the conformance suite
// (core/storetest) always runs against.
//
// Guarantees:
//   - Durability: the database runs in WAL mode with synchronous=FULL, so a batch whose
//     ApplyBatch returned is on disk and survives a crash or power loss.
//   - Single writer: every write (ApplyBatch, ApplyBatches, DeleteEvents, Expire, and every
//     change of the account store) goes through one connection in a BEGIN IMMEDIATE
//     transaction, so writes are serialised in the process and take the file's write lock up
//     front; they never need to retry. A second process on the same file waits up to
//     busyTimeout for the lock.
//   - Group commit: ApplyBatches applies a group of one partition's batches, and advances
//     their producers' sequences, in one transaction: all of it commits or none. ApplyBatch is
//     ApplyBatches of one batch. Which batch a producer's sequence admits is core.Fence's.
//   - Snapshot reads: reads use a separate pool of read-only connections; under WAL they see
//     the last committed state and never wait for the writer. Sync reads its page and the
//     partition counters in one read transaction, so they are one snapshot.
//   - Every write decision is core.ApplyCommand's; the store only reads the state it asks for
//     and records what it decides, in the batch's transaction.
//
// Layout: documents holds the latest version of each document (tombstones included), its
// owner, and the partition sequence number of its last change; partitions holds each partition's counter;
// writes and idempotency hold outcomes for replay; outbox holds committed events until they
// are published; producers holds each producer's last applied batch sequence; users,
// signing_keys, refresh_families, refresh_tokens, revocations and login_failures are the
// account store's (core.AccountStore). Times are unix microseconds, returned in UTC. The
// schema is created and upgraded at Open by the forward-only migrations embedded from
// migrations/, each in its own transaction, recorded in schema_migrations. See README.md for
// the trade-offs.
package sqlitestore
