package edge

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/edge/ratelimit"
	"github.com/perchhq/perch/internal/auth"
	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/wire"
)

// newTestEdge is an edge on a real NATS server, not serving: enough to drive its handlers
// directly.
func newTestEdge(tb testing.TB) *Edge {
	tb.Helper()
	ns := natstest.Start(tb)
	return newTestEdgeOn(tb, natstest.Connect(tb, ns.URL()), nil)
}

// newTestEdgeOn is newTestEdge on a given connection, its config adjusted by adjust (if not
// nil).
func newTestEdgeOn(tb testing.TB, nc *nats.Conn, adjust func(*Config)) *Edge {
	tb.Helper()
	cfg := DefaultConfig()
	cfg.Region = "test"
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if adjust != nil {
		adjust(&cfg)
	}
	e, err := New(cfg, nc, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.cache.close)
	return e
}

// cacheDocument puts a document of about size bytes in the edge's cache and waits until
// ristretto has taken it.
func cacheDocument(tb testing.TB, e *Edge, id string, size int) *wire.Document {
	tb.Helper()
	data, _ := json.Marshal(map[string]string{"pad": strings.Repeat("x", max(size-10, 0))})
	now := time.Now().UTC()
	d := &wire.Document{Collection: "bench", ID: id, Version: 3, CreatedAt: now, UpdatedAt: now, Data: data}
	for range 100 {
		e.cache.putDocument(d)
		e.cache.flush()
		if ent, ok := e.cache.get([]byte("bench/" + id)); ok && ent.version == d.Version {
			return d
		}
	}
	tb.Fatal("ristretto did not admit the document")
	return nil
}

func getRequest(path string) *fasthttp.RequestCtx {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(fasthttp.MethodGet)
	ctx.Request.SetRequestURI(path)
	return &ctx
}

func TestGetHit(t *testing.T) {
	e := newTestEdge(t)
	d := cacheDocument(t, e, "doc", 1024)
	ctx := getRequest("/v1/collections/bench/docs/doc")
	e.dispatch(ctx, "")
	if ctx.Response.StatusCode() != 200 || string(ctx.Response.Header.Peek("Cache-Status")) != "perch; hit" {
		t.Fatalf("hit: %d %q", ctx.Response.StatusCode(), ctx.Response.Header.Peek("Cache-Status"))
	}
	var got docJSON
	if err := json.Unmarshal(ctx.Response.Body(), &got); err != nil || got.Version != d.Version || string(got.Data) != string(d.Data) {
		t.Fatalf("body %s: %v", ctx.Response.Body(), err)
	}
	if string(ctx.Response.Header.Peek("ETag")) != `"3"` {
		t.Fatalf("ETag %q", ctx.Response.Header.Peek("ETag"))
	}

	// A cache hit allocates nothing.
	if !raceEnabled {
		allocs := testing.AllocsPerRun(200, func() {
			ctx.Response.Reset()
			e.dispatch(ctx, "")
		})
		if allocs != 0 {
			t.Fatalf("a cache hit allocates %.1f times", allocs)
		}
	}
	// Nor does it with what every request gets first: its request id.
	ctx.Response.Reset()
	e.serveHTTP(ctx)
	if id := ctx.Response.Header.Peek("X-Request-Id"); len(id) != requestIDLen {
		t.Fatalf("X-Request-Id %q", id)
	}
	if !raceEnabled {
		if allocs := testing.AllocsPerRun(200, func() {
			ctx.Response.Reset()
			e.serveHTTP(ctx)
		}); allocs != 0 {
			t.Fatalf("a cache hit allocates %.1f times with its request id", allocs)
		}
	}

	// Versions never go backwards: an older version is refused, a newer one replaces.
	old := *d
	old.Version = 2
	old.Data = json.RawMessage(`{"old":true}`)
	e.cache.putDocument(&old)
	e.cache.flush()
	if ent, _ := e.cache.get([]byte("bench/doc")); ent.version != 3 {
		t.Fatalf("version went back to %d", ent.version)
	}
	e.cache.markVersion("bench", "doc", 4)
	e.cache.flush()
	if ent, _ := e.cache.get([]byte("bench/doc")); !ent.stale || ent.version != 4 {
		t.Fatalf("marker not installed: %+v", ent)
	}
	newer := *d
	newer.Version = 4
	e.cache.putDocument(&newer)
	e.cache.flush()
	if ent, _ := e.cache.get([]byte("bench/doc")); ent.stale || ent.version != 4 {
		t.Fatalf("fill of the marked version not installed: %+v", ent)
	}
}

// BenchmarkGetHit measures the edge's handler for a GET answered from the cache, without the
// network: the part of a request Perch's code owns.
func BenchmarkGetHit(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		b.Run(fmt.Sprintf("doc=%dB", size), func(b *testing.B) {
			e := newTestEdge(b)
			cacheDocument(b, e, "doc", size)
			ctx := getRequest("/v1/collections/bench/docs/doc")
			b.ReportAllocs()
			for b.Loop() {
				ctx.Response.Reset()
				e.dispatch(ctx, "")
			}
		})
	}
}

// TestGetHitCompressed: a hit that wants a coding is served the form the first one made, with
// no allocation and no compression.
func TestGetHitCompressed(t *testing.T) {
	e := newTestEdge(t)
	cacheDocument(t, e, "doc", 4096)
	ent, _ := e.cache.get([]byte("bench/doc"))
	for _, tc := range []struct {
		accept string
		c      coding
		decode func(dst, src []byte) ([]byte, error)
	}{
		{"gzip, deflate, br", codingBrotli, fasthttp.AppendUnbrotliBytes},
		{"gzip", codingGzip, fasthttp.AppendGunzipBytes},
	} {
		t.Run(string(codingNames[tc.c]), func(t *testing.T) {
			ctx := getRequest("/v1/collections/bench/docs/doc")
			ctx.Request.Header.Set("Accept-Encoding", tc.accept)
			e.dispatch(ctx, "")
			r := &ctx.Response
			if string(r.Header.ContentEncoding()) != string(codingNames[tc.c]) || string(r.Header.Peek("ETag")) != string(ent.tag(tc.c)) {
				t.Fatalf("Content-Encoding %q ETag %q", r.Header.ContentEncoding(), r.Header.Peek("ETag"))
			}
			if body, err := tc.decode(nil, r.Body()); err != nil || string(body) != string(ent.body) {
				t.Fatalf("decoded %d bytes, want %d: %v", len(body), len(ent.body), err)
			}
			made := ent.form(tc.c)
			if made == nil || len(made.body) >= len(ent.body) {
				t.Fatalf("form %v", made)
			}
			if !raceEnabled {
				allocs := testing.AllocsPerRun(200, func() {
					ctx.Response.Reset()
					e.dispatch(ctx, "")
				})
				if allocs != 0 {
					t.Fatalf("a compressed cache hit allocates %.1f times", allocs)
				}
			}
			if ent.form(tc.c) != made || string(ctx.Response.Header.ContentEncoding()) != string(codingNames[tc.c]) {
				t.Fatal("a hit made the form again")
			}
		})
	}
}

// BenchmarkGetHitCompressed is BenchmarkGetHit for a client that accepts compression, once the
// entry's form is made.
func BenchmarkGetHitCompressed(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		for _, accept := range []string{"br", "gzip"} {
			b.Run(fmt.Sprintf("doc=%dB/%s", size, accept), func(b *testing.B) {
				e := newTestEdge(b)
				cacheDocument(b, e, "doc", size)
				ctx := getRequest("/v1/collections/bench/docs/doc")
				ctx.Request.Header.Set("Accept-Encoding", "gzip, deflate, "+accept)
				if accept == "gzip" {
					ctx.Request.Header.Set("Accept-Encoding", "gzip, deflate")
				}
				e.dispatch(ctx, "")
				if string(ctx.Response.Header.ContentEncoding()) != accept {
					b.Fatalf("Content-Encoding %q", ctx.Response.Header.ContentEncoding())
				}
				b.ReportAllocs()
				for b.Loop() {
					ctx.Response.Reset()
					e.dispatch(ctx, "")
				}
			})
		}
	}
}

func changeMsg(t *testing.T, ev wire.ChangeEvent) *nats.Msg {
	t.Helper()
	data, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return &nats.Msg{Subject: wire.ChangeSubject(ev.Collection), Data: data}
}

// TestSequenceGapDistrustsCache: a jump in a partition's change sequence means events were
// lost, so nothing cached before may be served.
func TestSequenceGapDistrustsCache(t *testing.T) {
	e := newTestEdge(t)
	d := cacheDocument(t, e, "doc", 100)
	now := time.Now().UTC()
	other := func(seq int64) wire.ChangeEvent {
		od := &wire.Document{Collection: "bench", ID: "other", Version: seq, CreatedAt: now, UpdatedAt: now, Data: json.RawMessage(`{}`)}
		return wire.ChangeEvent{Partition: 2, Seq: seq, Collection: "bench", ID: "other", Version: seq, UpdatedAt: now, Doc: od}
	}
	hit := func() bool {
		ent, ok := e.cache.get([]byte("bench/" + d.ID))
		return ok && e.cache.valid(ent)
	}
	e.onChange(changeMsg(t, other(1)))
	e.onChange(changeMsg(t, other(2)))
	e.onChange(changeMsg(t, other(2))) // published twice: harmless
	if !hit() {
		t.Fatal("contiguous events distrusted the cache")
	}
	e.onChange(changeMsg(t, other(5)))
	if hit() {
		t.Fatal("a gap in the sequence left old entries served")
	}
}

// TestReplayedOutcomeNotCached: the outcome of a replayed Idempotency-Key carries the
// document as the first write left it; caching it could serve a superseded version. Only its
// version is kept (a marker, and the writer's floor), which never lowers what is cached.
func TestReplayedOutcomeNotCached(t *testing.T) {
	e := newTestEdge(t)
	now := time.Now().UTC()
	old := &wire.Document{Collection: "c", ID: "r", Version: 1, CreatedAt: now, UpdatedAt: now, Data: json.RawMessage(`{"v":1}`)}
	replay := func(d *wire.Document) {
		t.Helper()
		data, _ := json.Marshal(wire.Outcomes{Batch: "b", Outcomes: []wire.Outcome{{WriteID: "w", Status: 201, Doc: d, Replayed: true}}})
		e.onOutcomes(&nats.Msg{Data: data})
		e.cache.flush()
	}
	replay(old)
	if ent, ok := e.cache.get([]byte("c/r")); ok && !ent.stale {
		t.Fatalf("a replayed outcome's document went into the cache: %+v", ent)
	}
	if f := e.cache.floor("c/r", time.Now()); f != 1 {
		t.Fatalf("a replayed outcome of version 1 left the floor at %d", f)
	}
	// Never lower than what the cache holds.
	newer := *old
	newer.Version = 3
	e.cache.putDocument(&newer)
	e.cache.flush()
	replay(old)
	if ent, ok := e.cache.current("c/r"); !ok || ent.version != 3 {
		t.Fatalf("after a replay of version 1, the cache holds %+v (%v), want version 3", ent, ok)
	}
}

// TestVersionFloor: a write's version floor holds for floorTTL and never goes down.
func TestVersionFloor(t *testing.T) {
	e := newTestEdge(t)
	now := time.Now()
	e.cache.raiseFloor("c/d", 5, now)
	e.cache.raiseFloor("c/d", 3, now)
	if f := e.cache.floor("c/d", now); f != 5 {
		t.Fatalf("floor %d, want 5", f)
	}
	if f := e.cache.floor("c/other", now); f != 0 {
		t.Fatalf("floor of an unwritten key %d", f)
	}
	if f := e.cache.floor("c/d", now.Add(floorTTL+time.Second)); f != 5 {
		t.Fatalf("floor %d within its second generation, want 5", f)
	}
	if f := e.cache.floor("c/d", now.Add(3*floorTTL)); f != 0 {
		t.Fatalf("floor %d after its time", f)
	}
}

// TestStaleIfError: with no core to answer, a miss on an entry the cache holds but no longer
// trusts is answered with that entry, marked stale; a miss on nothing is a 503 with
// Retry-After; and once trusted again the entry is a hit.
func TestStaleIfError(t *testing.T) {
	e := newTestEdge(t) // no core on its NATS: every fill fails for want of one
	d := cacheDocument(t, e, "doc", 200)
	e.cache.distrust()

	ctx := getRequest("/v1/collections/bench/docs/doc")
	e.dispatch(ctx, "")
	if ctx.Response.StatusCode() != 200 || string(ctx.Response.Header.Peek("Cache-Status")) != "perch; fwd=stale; fwd-status=503" {
		t.Fatalf("stale: %d %q %s", ctx.Response.StatusCode(), ctx.Response.Header.Peek("Cache-Status"), ctx.Response.Body())
	}
	var got docJSON
	if err := json.Unmarshal(ctx.Response.Body(), &got); err != nil || got.Version != d.Version {
		t.Fatalf("stale body %s: %v", ctx.Response.Body(), err)
	}
	if n := testCounter(t, e.metrics.staleServed); n != 1 {
		t.Fatalf("stale answers counted %v, want 1", n)
	}

	ctx = getRequest("/v1/collections/bench/docs/absent")
	e.dispatch(ctx, "")
	if ctx.Response.StatusCode() != 503 || len(ctx.Response.Header.Peek("Retry-After")) == 0 {
		t.Fatalf("miss without a core: %d, Retry-After %q", ctx.Response.StatusCode(), ctx.Response.Header.Peek("Retry-After"))
	}

	cacheDocument(t, e, "doc", 200) // an event or fill of the current epoch
	ctx = getRequest("/v1/collections/bench/docs/doc")
	e.dispatch(ctx, "")
	if string(ctx.Response.Header.Peek("Cache-Status")) != "perch; hit" {
		t.Fatalf("after refresh: %q", ctx.Response.Header.Peek("Cache-Status"))
	}
}

// TestHitWhileDisconnected: once the edge has lost NATS it cannot hear of changes, so its hits
// are marked stale and not to be kept downstream.
func TestHitWhileDisconnected(t *testing.T) {
	ns := natstest.Start(t)
	nc, err := nats.Connect(ns.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	e := newTestEdgeOn(t, nc, nil)
	if err := e.subscribe(); err != nil {
		t.Fatal(err)
	}
	cacheDocument(t, e, "doc", 100)
	status := func() (string, string) {
		ctx := getRequest("/v1/collections/bench/docs/doc")
		e.dispatch(ctx, "")
		return string(ctx.Response.Header.Peek("Cache-Status")), string(ctx.Response.Header.Peek("Cache-Control"))
	}
	if cs, _ := status(); cs != "perch; hit" {
		t.Fatalf("connected: %q", cs)
	}
	ns.Shutdown()
	deadline := time.Now().Add(5 * time.Second)
	for !e.disconnected.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the edge did not notice that NATS is gone")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if cs, cc := status(); cs != "perch; hit; detail=disconnected" || cc != "no-cache" {
		t.Fatalf("disconnected: Cache-Status %q, Cache-Control %q", cs, cc)
	}
}

// limitedRequest is a GET of path from a client address, for the rate limiter to count.
func limitedRequest(path string) *fasthttp.RequestCtx {
	var req fasthttp.Request
	req.Header.SetMethod(fasthttp.MethodGet)
	req.SetRequestURI(path)
	var ctx fasthttp.RequestCtx
	ctx.Init(&req, &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 40000}, nil)
	return &ctx
}

// TestGetHitRateLimited: a hit counted by a rate limit carries its headers and still
// allocates nothing.
func TestGetHitRateLimited(t *testing.T) {
	e := newTestEdgeOn(t, natstest.Connect(t, natstest.Start(t).URL()), func(c *Config) {
		p, _ := ratelimit.ParsePolicy("ip:1000000000/s")
		c.RateLimits = []ratelimit.Policy{p}
		c.RateLimitHeaders = true
	})
	cacheDocument(t, e, "doc", 1024)
	ctx := limitedRequest("/v1/collections/bench/docs/doc")
	e.serveHTTP(ctx)
	if ctx.Response.StatusCode() != 200 || len(ctx.Response.Header.Peek("RateLimit")) == 0 || len(ctx.Response.Header.Peek("RateLimit-Policy")) == 0 {
		t.Fatalf("%d, RateLimit %q, RateLimit-Policy %q", ctx.Response.StatusCode(), ctx.Response.Header.Peek("RateLimit"), ctx.Response.Header.Peek("RateLimit-Policy"))
	}
	if !raceEnabled {
		if allocs := testing.AllocsPerRun(200, func() {
			ctx.Response.Reset()
			e.serveHTTP(ctx)
		}); allocs != 0 {
			t.Fatalf("a rate-limited cache hit allocates %.1f times", allocs)
		}
	}
}

// BenchmarkGetHitRateLimit: a cache hit of a 1 KiB document without a rate limit, with
// one, and with one and its headers on every answer (Config.RateLimitHeaders) (a per-address policy that admits everything: the request's time, fasthttp's, does not
// move on in this loop, so the bucket must hold every request), side by side. Report limited ns/op ÷
// none ns/op.
func BenchmarkGetHitRateLimit(b *testing.B) {
	p, _ := ratelimit.ParsePolicy("ip:1000000000/s")
	for _, bc := range []struct {
		name     string
		policies []ratelimit.Policy
		headers  bool
	}{{"none", nil, false}, {"ip-limit", []ratelimit.Policy{p}, false}, {"ip-limit-headers", []ratelimit.Policy{p}, true}} {
		b.Run(bc.name, func(b *testing.B) {
			e := newTestEdgeOn(b, natstest.Connect(b, natstest.Start(b).URL()), func(c *Config) {
				c.RateLimits, c.RateLimitHeaders = bc.policies, bc.headers
			})
			cacheDocument(b, e, "doc", 1024)
			ctx := limitedRequest("/v1/collections/bench/docs/doc")
			b.ReportAllocs()
			for b.Loop() {
				ctx.Response.Reset()
				e.serveHTTP(ctx)
			}
		})
	}
}

// bearerRequest is limitedRequest with a valid access token of a key the edge trusts.
func bearerRequest(tb testing.TB, e *Edge, path string) *fasthttp.RequestCtx {
	tb.Helper()
	key := auth.GenerateKey(time.Now().Add(-time.Minute))
	ks, err := auth.NewKeySet(key.Public())
	if err != nil {
		tb.Fatal(err)
	}
	e.tokens.verifier.SetKeys(ks)
	ctx := limitedRequest(path)
	ctx.Request.Header.Set("Authorization", "Bearer "+signedToken(tb, e.cfg.Tokens, key))
	return ctx
}

// TestGetHitBearer: a hit with a valid access token (verified once, then from the token
// cache) allocates nothing either.
func TestGetHitBearer(t *testing.T) {
	e := newTestEdge(t)
	cacheDocument(t, e, "doc", 1024)
	ctx := bearerRequest(t, e, "/v1/collections/bench/docs/doc")
	e.serveHTTP(ctx)
	if ctx.Response.StatusCode() != 200 || string(ctx.Response.Header.Peek("Cache-Status")) != "perch; hit" {
		t.Fatalf("hit with a token: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	if !raceEnabled {
		if allocs := testing.AllocsPerRun(200, func() {
			ctx.Response.Reset()
			e.serveHTTP(ctx)
		}); allocs != 0 {
			t.Fatalf("a cache hit with a token allocates %.1f times", allocs)
		}
	}
}

// BenchmarkGetHitBearer: the handler of a hit without a token and with a valid one (a hit of
// the token cache: no signature check), in alternating rounds on one edge. Report the sum of
// bearer ns/op ÷ the sum of anonymous ns/op.
func BenchmarkGetHitBearer(b *testing.B) {
	e := newTestEdge(b)
	cacheDocument(b, e, "doc", 1024)
	anonymous := limitedRequest("/v1/collections/bench/docs/doc")
	withToken := bearerRequest(b, e, "/v1/collections/bench/docs/doc")
	for round := range 3 {
		for _, v := range []struct {
			name string
			ctx  *fasthttp.RequestCtx
		}{{"anonymous", anonymous}, {"bearer", withToken}} {
			b.Run(fmt.Sprintf("%s/round=%d", v.name, round), func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					v.ctx.Response.Reset()
					e.serveHTTP(v.ctx)
				}
			})
		}
	}
}
