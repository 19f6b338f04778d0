// Package wire holds the messages that edges and the core exchange over NATS, and the names of
// the subjects and streams they travel on. It is the only package both sides import, so a
// change here is a change of the protocol between them: fields are only ever added, and every
// decoder tolerates fields it does not know (a newer peer) and rejects input that would make the
// receiver misbehave (see Validate methods and the fuzz tests).
//
// Subjects:
//
//	perch.writes.<partition>   JetStream stream WriteStream: write batches from edges (durable,
//	                           fsync on every write, deduplicated by Nats-Msg-Id)
//	perch.outcomes.<edge>      core → edge: the outcome of each command of a batch (core NATS)
//	perch.changes.<collection> core → all edges: a JSON array of ChangeEvents, consecutive
//	                           changes of a partition in the collection (core NATS)
//	perch.read                 edge → core request/reply in queue group CoreQueue
//	perch.fill.<edge>          edge → the edge that owns a cache key in its region:
//	                           request "<collection>/<id>", reply the cached answer, with
//	                           headers Perch-Version and Perch-Status (edge/owner.go)
//
// Messages are JSON: small, debuggable with `nats sub`, and fast enough next to an fsync.
package wire
