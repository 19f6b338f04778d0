// Package clustertest starts a whole Perch system in-process for tests: real NATS with
// JetStream, a core on SQLite, and edges joined by real gossip on loopback, each on a free
// port, all stopped at the end of the test. It also has the small HTTP client and the polling
// helper the end-to-end tests share.
package clustertest
