package edge

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/perchhq/perch/internal/wire"
)

// TestEntrySize: an entry is one allocation of 48 bytes beside its body; every byte more is
// paid once per cached key.
func TestEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(entry{}); n > 48 {
		t.Fatalf("an entry takes %d bytes, more than 48", n)
	}
}

// TestExpiry: an entry past its TTL is a miss, though the cache still holds it; the fill
// that follows replaces it, of the same version; and while no core answers it is served
// stale-if-error for one TTL more, then not at all.
func TestExpiry(t *testing.T) {
	e := newTestEdge(t) // no core on its NATS: every fill fails for want of one
	d := cacheDocument(t, e, "doc", 200)
	ttl := e.cache.ttl
	ent, _ := e.cache.get([]byte("bench/doc"))
	if ent.expires-ttl > e.cache.now.Load() || !e.cache.valid(ent) {
		t.Fatalf("expires at %d, now %d, TTL %d s", ent.expires, e.cache.now.Load(), ttl)
	}

	// The clock past the expiry: a miss, answered stale for want of a core.
	e.cache.now.Add(ttl)
	if e.cache.valid(ent) {
		t.Fatal("an entry is served past its TTL")
	}
	ctx := getRequest("/v1/collections/bench/docs/doc")
	e.dispatch(ctx, "")
	if ctx.Response.StatusCode() != 200 || string(ctx.Response.Header.Peek("Cache-Status")) != "perch; fwd=stale; fwd-status=503" {
		t.Fatalf("expired, no core: %d %q", ctx.Response.StatusCode(), ctx.Response.Header.Peek("Cache-Status"))
	}

	// One TTL past the expiry it is not served at all.
	e.cache.now.Add(ttl)
	ctx = getRequest("/v1/collections/bench/docs/doc")
	e.dispatch(ctx, "")
	if ctx.Response.StatusCode() != 503 {
		t.Fatalf("expired a TTL ago, no core: %d %q", ctx.Response.StatusCode(), ctx.Response.Header.Peek("Cache-Status"))
	}

	// A fill of the same version replaces the expired entry and is a hit again.
	e.cache.fill("bench/doc", documentEntry(d), e.cache.epoch.Load())
	got, ok := e.cache.get([]byte("bench/doc"))
	if !ok || got == ent || !e.cache.valid(got) {
		t.Fatalf("the refill of an expired entry was not installed: %+v", got)
	}
	ctx = getRequest("/v1/collections/bench/docs/doc")
	e.dispatch(ctx, "")
	if string(ctx.Response.Header.Peek("Cache-Status")) != "perch; hit" {
		t.Fatalf("after the refill: %q", ctx.Response.Header.Peek("Cache-Status"))
	}
	// An older version does not replace it, expired or not.
	e.cache.now.Add(ttl)
	old := *d
	old.Version--
	e.cache.fill("bench/doc", documentEntry(&old), e.cache.epoch.Load())
	if got, _ := e.cache.get([]byte("bench/doc")); got.version != d.Version {
		t.Fatalf("version went back to %d", got.version)
	}
}

// TestCacheItemsBoundedByBytes: counters are sized for no more entries than fit in
// CacheBytes (none costs less than its 48-byte struct), however many CacheItems asks for, so
// a mistyped --cache-items cannot allocate terabytes of counters.
func TestCacheItemsBoundedByBytes(t *testing.T) {
	cfg := DefaultConfig()
	cfg.CacheBytes, cfg.CacheItems = 1<<20, 1<<40
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	dc, err := newDocCache(&cfg, newMetrics())
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	dc.close()
	// 1 MiB / 48 bytes is 21,845 entries: 218,450 counters, under 1 MB. 64 MiB leaves room
	// for whatever else the process allocated meanwhile.
	if n := after.TotalAlloc - before.TotalAlloc; n > 64<<20 {
		t.Fatalf("a 1 MiB cache allocated %d bytes of counters", n)
	}
}

// TestCacheClock: the cache's clock follows the time since the cache was made, to the
// second, and stops with the cache.
func TestCacheClock(t *testing.T) {
	cfg := DefaultConfig()
	dc, err := newDocCache(&cfg, newMetrics())
	if err != nil {
		t.Fatal(err)
	}
	defer dc.close()
	deadline := time.Now().Add(10 * time.Second)
	for dc.now.Load() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the clock did not move in 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if now, since := dc.now.Load(), time.Since(dc.start); time.Duration(now)*time.Second > since {
		t.Fatalf("clock %d s after %v", now, since)
	}
	dc.close()
	dc.close()
}

// BenchmarkClock compares what a hit pays to check an entry's expiry: the cache's clock,
// one atomic load, against reading the time.
func BenchmarkClock(b *testing.B) {
	cfg := DefaultConfig()
	dc, err := newDocCache(&cfg, newMetrics())
	if err != nil {
		b.Fatal(err)
	}
	defer dc.close()
	ent := &entry{expires: 1 << 30}
	b.Run("coarse", func(b *testing.B) {
		n := 0
		for b.Loop() {
			if dc.now.Load() < ent.expires {
				n++
			}
		}
	})
	b.Run("monotonic", func(b *testing.B) {
		n := 0
		for b.Loop() {
			if uint32(time.Since(dc.start)/time.Second) < ent.expires {
				n++
			}
		}
	})
	b.Run("wall", func(b *testing.B) {
		n := 0
		for b.Loop() {
			if uint32(time.Now().Unix()) < ent.expires {
				n++
			}
		}
	})
}

// BenchmarkCacheMemory measures what the cache holds per document: 100k documents of about
// 1 KB rendered (those of bench/BenchmarkEdgeMemory), counted from the live heap after a
// collection. It reports entry_bytes (the heap per entry, all told), overhead_bytes (that
// less the body), fixed_bytes (an empty cache: ristretto's counters and shards) and
// body_bytes (the rendered size).
func BenchmarkCacheMemory(b *testing.B) {
	const n = 100_000
	for b.Loop() {
		before := liveHeap()
		cfg := DefaultConfig()
		dc, err := newDocCache(&cfg, newMetrics())
		if err != nil {
			b.Fatal(err)
		}
		empty := liveHeap()
		now := time.Now().UTC()
		pad := strings.Repeat("x", 850)
		var body int
		for i := range n {
			d := &wire.Document{Collection: "mem", ID: fmt.Sprintf("d%06d", i), Version: 1, CreatedAt: now, UpdatedAt: now,
				Data: fmt.Appendf(nil, `{"n":%d,"pad":"%s"}`, i, pad)}
			ent := documentEntry(d)
			body += len(ent.body)
			dc.fill(docKey(d.Collection, d.ID), ent, dc.epoch.Load())
		}
		full := liveHeap()
		held := 0
		for i := range n {
			if _, ok := dc.get(fmt.Appendf(nil, "mem/d%06d", i)); ok {
				held++
			}
		}
		if held < n*99/100 {
			b.Fatalf("the cache holds %d of %d documents", held, n)
		}
		perEntry := float64(full-before) / float64(held)
		b.ReportMetric(perEntry, "entry_bytes")
		b.ReportMetric(perEntry-float64(body)/n, "overhead_bytes")
		b.ReportMetric(float64(empty-before), "fixed_bytes")
		b.ReportMetric(float64(body)/n, "body_bytes")
		dc.close()
	}
}

// liveHeap returns the bytes of the heap in use after a collection.
func liveHeap() int64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
