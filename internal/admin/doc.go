// Package admin serves the operator's side of a Perch process on its own listener, apart
// from the public API: Prometheus metrics at /metrics, Go profiles at /debug/pprof/, and
// /healthz. It is plain net/http; nothing here is on a request hot path.
package admin
