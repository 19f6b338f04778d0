package edge

import (
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/wire"
)

func TestParseCacheControl(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{in: "no-cache", want: "no-cache"},
		{in: " Public , MAX-AGE=60,stale-while-revalidate=30, stale-if-error=86400", want: "public, max-age=60, stale-while-revalidate=30, stale-if-error=86400"},
		{in: "private, max-age=0, must-revalidate", want: "private, max-age=0, must-revalidate"},
		{in: "public, immutable, max-age=31536000", want: "public, immutable, max-age=31536000"},
		{in: "no-store", want: "no-store"},
		{in: "", err: "no directive"},
		{in: "public, private", err: "exclude"},
		{in: "no-store, max-age=5", err: "excludes"},
		{in: "max-age", err: "seconds"},
		{in: "max-age=-1", err: "seconds"},
		{in: "max-age=1e3", err: "seconds"},
		{in: "public=1", err: "no argument"},
		{in: "max-age=1, max-age=2", err: "twice"},
		{in: "s-maxage=10, proxy-revalidate", want: "s-maxage=10, proxy-revalidate"},
		{in: "only-if-cached", err: "unknown"},
	} {
		got, err := ParseCacheControl(tc.in)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: %q, %v; want an error saying %q", tc.in, got, err, tc.err)
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("%q: %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestCacheControlPerCollection: a collection's policy is on its 200s and 304s, the fallback
// on the others, no-store on problems; a bad policy stops the edge from starting.
func TestCacheControlPerCollection(t *testing.T) {
	ns := natstest.Start(t)
	nc := natstest.Connect(t, ns.URL())
	e := newTestEdgeOn(t, nc, func(c *Config) {
		c.CacheControl = map[string]string{"bench": "public, max-age=60, stale-if-error=600", AnyCollection: "private, no-cache"}
	})
	cacheDocument(t, e, "doc", 100)

	ctx := getRequest("/v1/collections/bench/docs/doc")
	e.dispatch(ctx, "")
	if got := string(ctx.Response.Header.Peek("Cache-Control")); ctx.Response.StatusCode() != 200 || got != "public, max-age=60, stale-if-error=600" {
		t.Fatalf("hit: %d, Cache-Control %q", ctx.Response.StatusCode(), got)
	}
	ctx = getRequest("/v1/collections/bench/docs/doc")
	ctx.Request.Header.Set("If-None-Match", `"3"`)
	e.dispatch(ctx, "")
	if got := string(ctx.Response.Header.Peek("Cache-Control")); ctx.Response.StatusCode() != 304 || got != "public, max-age=60, stale-if-error=600" {
		t.Fatalf("304: %d, Cache-Control %q", ctx.Response.StatusCode(), got)
	}
	ctx = getRequest("/v1/collections/other/docs/doc") // no core: a 503 problem
	e.dispatch(ctx, "")
	if got := string(ctx.Response.Header.Peek("Cache-Control")); ctx.Response.StatusCode() != 503 || got != "no-store" {
		t.Fatalf("problem: %d, Cache-Control %q", ctx.Response.StatusCode(), got)
	}
	if got := string(e.cc.of([]byte("other"))); got != "private, no-cache" {
		t.Fatalf("fallback %q", got)
	}

	cfg := DefaultConfig()
	cfg.Region = "test"
	cfg.CacheControl = map[string]string{"bench": "max-age=soon"}
	if _, err := New(cfg, nc, nil); err == nil {
		t.Fatal("an edge started with a bad Cache-Control")
	}
}

// TestStaleWhileRevalidate: a collection with stale-while-revalidate=N has a document that
// went stale (its change events may have been missed) answered at once, marked stale, while
// one background fill fetches the current version; beyond N seconds, or without the
// directive, the miss waits for its fill.
func TestStaleWhileRevalidate(t *testing.T) {
	ns := natstest.Start(t)
	nc := natstest.Connect(t, ns.URL())
	e := newTestEdgeOn(t, nc, func(c *Config) {
		c.CacheControl = map[string]string{"bench": "max-age=0, stale-while-revalidate=30"}
	})
	// The core's answers, held until release is closed. (No core runs on this NATS server;
	// this answers for it.)
	core := natstest.Connect(t, ns.URL())
	release := make(chan struct{})
	var reads atomic.Int32
	if _, err := core.Subscribe(wire.ReadSubject, func(m *nats.Msg) {
		var req wire.ReadRequest
		_ = json.Unmarshal(m.Data, &req)
		reads.Add(1)
		<-release
		d := docVersion(req.ID, 4)
		d.Collection = req.Collection
		data, _ := json.Marshal(wire.ReadResponse{Doc: d})
		_ = m.Respond(data)
	}); err != nil {
		t.Fatal(err)
	}
	if err := core.Flush(); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (string, string, string) {
		ctx := getRequest(path)
		e.dispatch(ctx, "")
		if ctx.Response.StatusCode() != 200 {
			t.Fatalf("GET %s: %d %s", path, ctx.Response.StatusCode(), ctx.Response.Body())
		}
		return string(ctx.Response.Header.Peek("Cache-Status")), string(ctx.Response.Header.Peek("ETag")), string(ctx.Response.Header.Peek("Cache-Control"))
	}

	cacheDocument(t, e, "doc", 100) // version 3
	e.cache.distrust()
	for range 10 {
		if cs, tag, cc := get("/v1/collections/bench/docs/doc"); cs != "perch; hit; detail=stale" || tag != `"3"` || cc != "no-cache" {
			t.Fatalf("within the window: %q %s %q", cs, tag, cc)
		}
	}
	close(release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		cs, tag, _ := get("/v1/collections/bench/docs/doc")
		if cs == "perch; hit" && tag == `"4"` {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the background fill did not land: %q %s", cs, tag)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := reads.Load(); n != 1 {
		t.Fatalf("%d core reads for ten stale answers, want one", n)
	}

	// Stale for longer than the window: the miss waits for its fill.
	cacheDocument(t, e, "old", 100)
	e.cache.distrust()
	e.cache.advance(e.cache.now.Load() + 31)
	if cs, tag, _ := get("/v1/collections/bench/docs/old"); cs != "perch; fwd=miss; stored" || tag != `"4"` {
		t.Fatalf("beyond the window: %q %s", cs, tag)
	}
	// A collection without the directive: likewise.
	d := docVersion("plain", 3)
	e.cache.putDocument(d)
	e.cache.flush()
	e.cache.distrust()
	if cs, tag, _ := get("/v1/collections/notes/docs/plain"); cs != "perch; fwd=miss; stored" || tag != `"4"` {
		t.Fatalf("without stale-while-revalidate: %q %s", cs, tag)
	}
}
