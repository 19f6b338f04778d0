package main

import (
	"log/slog"
	"math"
	"runtime/debug"
)

// The collector's settings of an edge process. An edge's heap is mostly its cache: entries
// that live for minutes, not garbage. The collector lets the heap grow by GOGC per cent of
// what it found live before it collects again, so at the runtime's default of 100 an edge
// holding 100 MB of documents takes 200 MB and more. An edge sets a lower GOGC and a soft
// memory limit instead; GOGC and GOMEMLIMIT in the environment win (the runtime has applied
// them already, and they are left alone).

// edgeGCPercent is an edge's GOGC: the heap grows by a tenth of what is live before the next
// collection. Collections then come ten times as often as at 100. Each marks what holds
// pointers: the entries and ristretto's maps, not the bodies (byte arrays are not scanned),
// and a cache hit allocates nothing. So the cost falls on what allocates (misses, which fill
// the cache, writes, change events), in proportion to the entries cached. Over 100k misses
// and the hits after them, 10 against 25 took about 10% more of the edge's CPU and 8% less
// peak memory (bench/README.md, "Memory"); 5 took 25% more CPU for 1% less memory.
const edgeGCPercent = 10

// edgeLimitAllowance is what the soft memory limit leaves an edge beside its cache: the
// process itself, connections (each open one holds a read buffer of MaxHeaderBytes and a
// write buffer), requests and fills in flight, and NATS's buffers.
const edgeLimitAllowance = 256 << 20

// gcSettings are the collector's settings a role asks for; -1 leaves one as it is.
type gcSettings struct {
	// gcPercent is GOGC (debug.SetGCPercent).
	gcPercent int
	// memoryLimit is the soft memory limit in bytes, GOMEMLIMIT (debug.SetMemoryLimit).
	memoryLimit int64
}

// edgeGC returns the collector's settings of an edge whose cache is bounded by cacheBytes:
// GOGC edgeGCPercent, and a soft memory limit of twice cacheBytes plus edgeLimitAllowance,
// each unless the environment sets it (GOGC, GOMEMLIMIT; getenv reads it).
//
// The limit is where the collector starts to work harder than GOGC asks, not a bound: a
// heap that cannot shrink below it is collected again and again, up to half the CPU (the
// runtime's cap), and grows on. So it stands well above what the cache can take: the cost
// bound counts an entry's body and fields, and the allocator and ristretto's bookkeeping add
// up to a third to that for small entries, a tenth more again being GOGC's headroom. Give
// the process at least that much memory; with a container limit that is larger, setting
// GOMEMLIMIT to 90% of it lets the edge use more before collecting harder.
func edgeGC(getenv func(string) string, cacheBytes int64) gcSettings {
	s := gcSettings{gcPercent: -1, memoryLimit: -1}
	if getenv("GOGC") == "" {
		s.gcPercent = edgeGCPercent
	}
	if getenv("GOMEMLIMIT") == "" {
		s.memoryLimit = math.MaxInt64
		if cacheBytes < (math.MaxInt64-edgeLimitAllowance)/2 {
			s.memoryLimit = 2*cacheBytes + edgeLimitAllowance
		}
	}
	return s
}

// apply sets what s asks for and returns the settings it replaced, so that apply of those
// undoes it. Settings that are -1 are left as they are.
func (s gcSettings) apply() gcSettings {
	old := gcSettings{gcPercent: -1, memoryLimit: -1}
	if s.gcPercent >= 0 {
		old.gcPercent = debug.SetGCPercent(s.gcPercent)
	}
	if s.memoryLimit >= 0 {
		old.memoryLimit = debug.SetMemoryLimit(s.memoryLimit)
	}
	return old
}

// log records s at start: "environment" for what the environment sets.
func (s gcSettings) log(log *slog.Logger) {
	gogc, limit := any("environment"), any("environment")
	if s.gcPercent >= 0 {
		gogc = s.gcPercent
	}
	if s.memoryLimit >= 0 {
		limit = s.memoryLimit
	}
	log.Info("garbage collector", "gogc", gogc, "memory_limit_bytes", limit)
}
