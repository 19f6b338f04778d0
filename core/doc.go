// Package core is Perch's source of truth: stateless workers that consume write batches from
// JetStream, apply them to the store in order per partition, publish each command's outcome to
// the edge that sent it and a change event per applied change to every edge, and answer the
// edges' reads over NATS request/reply.
//
// Guarantees:
//   - A command published to the write stream is applied exactly once: the store records every
//     write id in the transaction that applies it, so a redelivered batch replays its outcomes.
//   - The commands of one partition are applied in stream order: each partition has one durable
//     consumer with one message in flight, whatever the number of cores.
//   - A committed change is announced at least once: its event is written to the store's outbox
//     in the same transaction and removed only after it was published.
//
// The store is an interface (Store) with one conformance suite (core/storetest) and two
// implementations: core/sqlitestore (embedded) and core/pgstore (CockroachDB, PostgreSQL).
// ApplyCommand is the one place that decides what a write does.
package core
