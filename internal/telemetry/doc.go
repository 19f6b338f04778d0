// Package telemetry holds what the components of Perch share to expose their metrics: a set of
// Prometheus collectors that a component registers when it starts and removes when it stops,
// so that a part restarted in the same process (perch dev, the tests) starts clean.
package telemetry
