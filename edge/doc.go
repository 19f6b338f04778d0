// Package edge is the HTTP front of Perch: a fasthttp server that mobile apps talk to. An edge
// answers reads from its in-memory cache (ristretto, bounded by bytes), fills misses from the
// core over NATS request/reply, and turns writes into commands that it batches per partition
// and publishes to the JetStream write stream. It learns of every committed change from the
// core's change events and updates its cache in place.
//
// Guarantees (DESIGN §2):
//   - A write is answered 2xx only once JetStream has stored its command: 200/201/204 with the
//     outcome when the core applied it within the write timeout, else 202 with a receipt
//     (GET /v1/writes/{id} tells what became of it).
//   - Read-your-writes: after a write through an edge is answered with its outcome, reads
//     through that edge see it or a later version.
//   - Versions never go backwards in an edge's cache: an event or a fill never replaces a
//     higher version with a lower one.
//
// An edge keeps no state that it shares with other edges by memory: everything goes through
// NATS and gossip, so `perch dev` and separate processes behave the same.
package edge
