// Package system runs the whole of Perch in one process: an embedded NATS server with
// JetStream, a core on a store, and one edge per region joined by gossip. It is what
// `perch dev` runs and what the end-to-end tests drive. Each part talks to the others only
// through NATS and gossip on loopback, exactly as separate processes would, and each can be
// stopped and started alone to test what happens when it fails.
package system
