// Package natsembed runs a real NATS server with JetStream inside the Perch process, for
// `perch dev` and for tests. It is the same server a production fleet runs as a cluster, with
// the settings Perch's promises rest on: JetStream stores with fsync on every write
// (SyncAlways), so a write acknowledged by the stream survives a crash of the process.
package natsembed
