// Package pgstore is the core.Store of production: CockroachDB, or PostgreSQL (tests, CI and
// single-region deployments), through pgx v5 and a pgxpool connection pool. It is what
// `--db postgres://...` (or postgresql://) selects; core/sqlitestore is the embedded
// alternative, and core/storetest the conformance suite both pass, so that the core cannot
// tell them apart.
//
// Guarantees:
//   - Every write decision is core.ApplyCommand's: the store loads the state the batch's
//     commands name, lets ApplyCommand decide each in order (each seeing the ones before it),
//     and records what it decided, in the batch's transaction.
//   - Group commit: ApplyBatches applies batches of one partition in one SERIALIZABLE
//     transaction of a constant number of round trips (three on PostgreSQL, six on
//     CockroachDB, whatever the number of batches and commands): one pgx.Batch loads the partition counter (locked), write ids,
//     Idempotency-Keys, documents and producers' sequences; one writes the results, each
//     statement taking its rows as arrays. The producers' sequences (core.Fence) keep each
//     producer's batches in order and applied once.
//   - Retries: every transaction runs through cockroach-go's crdbpgxv5.ExecuteTx; conflicts
//     (40001) are retried, on PostgreSQL in a new transaction. What is retryable is decided in
//     one place, sqlerrors.go.
//   - Ambiguous commits (40003, crdb.AmbiguousCommitError, a connection lost during COMMIT) are
//     resolved, not retried blindly: the next attempt reads back the batch's write ids and
//     producers; if the ambiguous attempt recorded them, ApplyBatches returns exactly what that
//     attempt committed, otherwise it applies the batches. Either way each write is applied once.
//   - Change events are stored in the outbox in the same transaction as their change.
//   - The account store (core.AccountStore): every change is one SERIALIZABLE transaction
//     retried like the others; a refresh locks its token and family, so concurrent uses of one
//     token rotate it once; and a retry after an ambiguous commit answers what the committed
//     attempt did (accounts.go).
//   - Reads see committed data only. Sync reads its page and the partition counters in one
//     read-only transaction, so they are one snapshot; List, Get, WriteOutcome and
//     PendingEvents are single statements.
//   - Ordering matches Go's: ids compare byte by byte (COLLATE "C" on PostgreSQL, CockroachDB's
//     only order). Times are timestamptz, returned in UTC to the microsecond; JSON is jsonb, so
//     documents come back with the same meaning but not always the same text (key order,
//     spacing, number spelling).
//
// Schema: versioned, embedded, forward-only migrations (migrations/NNNN_name.sql), in the SQL
// subset PostgreSQL and CockroachDB share, applied by Open (unless WithoutMigrate) or Migrate
// under a lease-row lock, so that any number of cores may start at once. Every migration is
// backward compatible with the previous release's code, so a newer schema than a build knows
// is accepted. On CockroachDB the hash-sharded keys of the schema and, with WithRegions, the
// multi-region configuration are applied too (crdb.go).
//
// README.md explains the choices.
package pgstore
