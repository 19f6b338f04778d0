package edge

import (
	"strings"
	"testing"

	"github.com/perchhq/perch/internal/natstest"
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
	e.dispatch(ctx)
	if got := string(ctx.Response.Header.Peek("Cache-Control")); ctx.Response.StatusCode() != 200 || got != "public, max-age=60, stale-if-error=600" {
		t.Fatalf("hit: %d, Cache-Control %q", ctx.Response.StatusCode(), got)
	}
	ctx = getRequest("/v1/collections/bench/docs/doc")
	ctx.Request.Header.Set("If-None-Match", `"3"`)
	e.dispatch(ctx)
	if got := string(ctx.Response.Header.Peek("Cache-Control")); ctx.Response.StatusCode() != 304 || got != "public, max-age=60, stale-if-error=600" {
		t.Fatalf("304: %d, Cache-Control %q", ctx.Response.StatusCode(), got)
	}
	ctx = getRequest("/v1/collections/other/docs/doc") // no core: a 503 problem
	e.dispatch(ctx)
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
