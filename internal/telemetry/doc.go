// Package telemetry holds what the components of Perch share to be observed: a set of
// Prometheus collectors that a component registers when it starts and removes when it stops,
// so that a part restarted in the same process (perch dev, the tests) starts clean; the
// OpenTelemetry tracer provider a process exports its spans with (OTLP/HTTP, off by default);
// W3C trace context carried in NATS message headers from edge to core and back; a log
// handler that puts the trace id of a line's context on it; and the redaction of passwords
// from URLs and DSNs that are logged or printed.
package telemetry
