// Package natstest starts real NATS servers with JetStream for tests: in-process, on a free
// port, storing in the test's temporary directory, stopped when the test ends.
package natstest
