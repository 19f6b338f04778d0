package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/edge/ratelimit"
	"github.com/perchhq/perch/internal/clustertest"
	"github.com/perchhq/perch/internal/telemetry"
)

// docBody is the data of the benchmark document, sized so that the API's answer is about 1 KB.
var docBody = []byte(`{"pad":"` + strings.Repeat("x", 860) + `"}`)

// BenchmarkGetHit compares a cache-hit GET of a 1 KB document through one edge with a bare
// fasthttp server answering the same bytes (the ceiling of this machine and client). Both run
// for the whole benchmark and the rounds alternate, so that neither gets a quieter machine
// (the cluster's own background work lands on both). Report edge ns/op ÷ ceiling ns/op.
func BenchmarkGetHit(b *testing.B) {
	url, hit := cachedDocument(b)
	answer := hit.Body
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.Response.SetBodyRaw(answer)
	}}
	go srv.Serve(ln) //nolint:errcheck // ends with Shutdown
	defer srv.Shutdown()
	ceiling := "http://" + ln.Addr().String() + "/v1/collections/bench/docs/doc"
	for round := range 3 {
		b.Run(fmt.Sprintf("edge/round=%d", round), func(b *testing.B) { load(b, url, len(answer)) })
		b.Run(fmt.Sprintf("ceiling/round=%d", round), func(b *testing.B) { load(b, ceiling, len(answer)) })
	}
}

// BenchmarkGetHitRateLimit compares the cache-hit GET of BenchmarkGetHit through one edge
// without a rate limit and with a per-address limit in force, which counts every request
// (and admits them all: its rate is far above what this machine can send). One cluster
// serves both, the limit switched on and off between rounds (a reload), and the rounds
// alternate, so that neither side gets a quieter machine. Report ip-limit ns/op ÷ none ns/op.
func BenchmarkGetHitRateLimit(b *testing.B) {
	limit, err := ratelimit.ParsePolicy("ip:1000000000/s")
	if err != nil {
		b.Fatal(err)
	}
	c, url, hit := cachedDocumentCluster(b)
	for round := range 3 {
		for _, bc := range []struct {
			name     string
			policies []ratelimit.Policy
		}{{"none", nil}, {"ip-limit", []ratelimit.Policy{limit}}} {
			if err := c.SetRateLimits(bc.policies); err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("%s/round=%d", bc.name, round), func(b *testing.B) { load(b, url, len(hit.Body)) })
		}
	}
}

// BenchmarkGetHitBearer is BenchmarkGetHit with a valid access token on every request (the
// edge verifies it: a hit of its token cache, no signature check) beside the same without
// one, in alternating rounds on one running cluster. Report the ratio of bearer ns/op to
// anonymous ns/op, summed over the rounds.
func BenchmarkGetHitBearer(b *testing.B) {
	c, url, hit := cachedDocumentCluster(b)
	r := clustertest.Do(b, "POST", c.Edge(0)+"/v1/auth/signup", nil, []byte(`{"email":"bench@example.com","password":"a long enough password"}`))
	var tokens struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(r.Body, &tokens); r.Status != 201 || err != nil {
		b.Fatalf("signup: %d %s", r.Status, r.Body)
	}
	for round := range 3 {
		for _, bc := range []struct{ name, authorization string }{{"anonymous", ""}, {"bearer", "Bearer " + tokens.AccessToken}} {
			b.Run(fmt.Sprintf("%s/round=%d", bc.name, round), func(b *testing.B) { loadWith(b, url, len(hit.Body), bc.authorization) })
		}
	}
}

// BenchmarkGetHitObservability compares the cache-hit GET of BenchmarkGetHit through an edge
// with what it records of every request turned off (Config.DisableRequestMetrics, no tracer)
// and through one with its request metrics and a tracer whose sampling is off (ratio 0, no
// traceparent sent: what a production edge with tracing on does for most requests). Each
// runs in a cluster of its own, both clusters up for the whole benchmark, and the rounds
// alternate, so that neither side gets a quieter machine. Both give every request its
// request id. Report observed ns/op ÷ off ns/op (the target: at most 1/0.95).
func BenchmarkGetHitObservability(b *testing.B) {
	off := edge.DefaultConfig()
	off.DisableRequestMetrics = true
	_, offURL, offHit := cachedDocumentIn(b, clustertest.Options{Edge: &off})
	tp := telemetry.NewSDKProvider(sdktrace.NewSimpleSpanProcessor(tracetest.NewNoopExporter()), telemetry.TraceConfig{Service: "perch-bench"})
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	on := edge.DefaultConfig()
	// Each its own answer's length: the documents' timestamps may differ in digits.
	_, onURL, onHit := cachedDocumentIn(b, clustertest.Options{Edge: &on, TracerProvider: tp})
	for round := range 3 {
		b.Run(fmt.Sprintf("off/round=%d", round), func(b *testing.B) { load(b, offURL, len(offHit.Body)) })
		b.Run(fmt.Sprintf("metrics+tracing/round=%d", round), func(b *testing.B) { load(b, onURL, len(onHit.Body)) })
	}
}

// load sends b.N GETs over 64 keep-alive connections from parallel goroutines and checks
// every answer.
func load(b *testing.B, url string, size int) { loadWith(b, url, size, "") }

// loadWith is load with an Authorization header on every request, unless authorization is
// empty.
func loadWith(b *testing.B, url string, size int, authorization string) {
	uri := fasthttp.AcquireURI()
	defer fasthttp.ReleaseURI(uri)
	if err := uri.Parse(nil, []byte(url)); err != nil {
		b.Fatal(err)
	}
	hc := &fasthttp.HostClient{Addr: string(uri.Host()), MaxConns: 64}
	// The edge caps the connections of one client address (MaxConnsPerIP): b.N rounds must not
	// leave theirs open.
	defer hc.CloseIdleConnections()
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(url)
		if authorization != "" {
			req.Header.Set("Authorization", authorization)
		}
		for pb.Next() {
			if err := hc.Do(req, resp); err != nil {
				b.Error(err)
				return
			}
			if resp.StatusCode() != 200 || len(resp.Body()) != size || !bytes.HasPrefix(resp.Body(), []byte("{")) {
				b.Errorf("answer %d with %d bytes", resp.StatusCode(), len(resp.Body()))
				return
			}
		}
	})
}

// cachedDocument starts a one-edge cluster, writes the 1 KB document and reads it until the
// edge answers from its cache; it returns the document's URL and a cache hit.
func cachedDocument(b *testing.B) (string, clustertest.Response) {
	b.Helper()
	_, url, hit := cachedDocumentCluster(b)
	return url, hit
}

// cachedDocumentCluster is cachedDocument that also returns the cluster.
func cachedDocumentCluster(b *testing.B) (*clustertest.Cluster, string, clustertest.Response) {
	b.Helper()
	return cachedDocumentIn(b, clustertest.Options{})
}

// cachedDocumentIn is cachedDocumentCluster on a cluster of opts (its regions set to one).
func cachedDocumentIn(b *testing.B, opts clustertest.Options) (*clustertest.Cluster, string, clustertest.Response) {
	b.Helper()
	opts.Regions = []string{"bench"}
	c := clustertest.Start(b, opts)
	url := c.Edge(0) + "/v1/collections/bench/docs/doc"
	if r := clustertest.Do(b, "PUT", url, nil, docBody); r.Status != 201 {
		b.Fatalf("seed: %d %s", r.Status, r.Body)
	}
	clustertest.Eventually(b, 5*time.Second, func() error {
		if r := clustertest.Do(b, "GET", url, nil, nil); r.Header["Cache-Status"] != "perch; hit" {
			return fmt.Errorf("Cache-Status %q", r.Header["Cache-Status"])
		}
		return nil
	})
	return c, url, clustertest.Do(b, "GET", url, nil, nil)
}
