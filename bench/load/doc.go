// Package load is Perch's load generator, the library behind `perch bench`: an open-model
// runner that sends requests at a constant (or ramped, or bursty) arrival rate whatever the
// target does, and measures every latency from the request's intended send time, so that a
// stalled server cannot hide its stall by slowing the load down (coordinated omission, as
// wrk2 corrects it).
//
// A run is a Scenario of mobile traffic (read-hot, feed, write-burst, sync, ratelimit, or a
// scenario file) against one or more edges. The scenario seeds its own documents through the
// API before measuring. The result is a Report: achieved against target rate, the sends that
// were late (no worker free at their intended time) or dropped (backlog over its bound),
// errors by status, bytes, connections, and HDR latency histograms per endpoint and per
// interval. Reports are written as report.json, report.html (self-contained, inline SVG),
// .hgrm percentile distributions and a text summary. Thresholds ("p99<20ms",
// "errors<0.1%") decide whether a run passed; a capacity search raises the rate until one
// breaks. Baselines (a bare fasthttp ceiling, nginx proxy_cache, direct PostgreSQL upserts)
// run the same load in the same process, so that results read as ratios to what this machine
// can do at all.
//
// Every write a run sends carries an Idempotency-Key; each one acknowledged (2xx) is
// recorded in a ledger, which Verify checks against the database: every acknowledged write
// applied, exactly once.
//
// Concurrency: Run owns its goroutines (one scheduler, Config.Workers senders, one
// collector) and returns once they have all ended. A Report is plain data.
package load
