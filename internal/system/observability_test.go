package system_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/edge/ratelimit"
	"github.com/perchhq/perch/internal/clustertest"
	"github.com/perchhq/perch/internal/pgtest"
	"github.com/perchhq/perch/internal/telemetry"
)

// scrape GETs url (an admin listener's /metrics) and parses the text format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return mfs
}

// family is a scraped metric family, for the checks of one test.
type family struct {
	t  *testing.T
	mf *dto.MetricFamily
}

func (f family) labelsMatch(m *dto.Metric, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == want[i] && l.GetValue() == want[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// sum adds the values (counter, gauge, untyped) or sample counts (histogram) of the series
// whose labels include the name/value pairs of labels.
func (f family) sum(labels ...string) float64 {
	var v float64
	for _, m := range f.mf.GetMetric() {
		if !f.labelsMatch(m, labels) {
			continue
		}
		switch {
		case m.Histogram != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Untyped != nil:
			v += m.GetUntyped().GetValue()
		}
	}
	return v
}

// histSum adds the sums of the histogram series whose labels include labels.
func (f family) histSum(labels ...string) float64 {
	var v float64
	for _, m := range f.mf.GetMetric() {
		if f.labelsMatch(m, labels) && m.Histogram != nil {
			v += m.GetHistogram().GetSampleSum()
		}
	}
	return v
}

type scraped map[string]*dto.MetricFamily

// get returns the family name, failing the test when the scrape has none.
func (s scraped) get(t *testing.T, name string) family {
	t.Helper()
	mf, ok := s[name]
	if !ok || len(mf.GetMetric()) == 0 {
		t.Errorf("no metric family %s", name)
		return family{t: t, mf: &dto.MetricFamily{}}
	}
	return family{t: t, mf: mf}
}

// TestMetricsAfterTraffic drives reads (misses, hits, 304s), writes (applied, answered 202,
// rejected, replayed by Idempotency-Key) and a rate-limited request through a two-region
// cluster, then scrapes its admin listener and checks that every family of the edge's and
// the core's metrics is there with values that follow from that traffic.
func TestMetricsAfterTraffic(t *testing.T) {
	limit, err := ratelimit.ParsePolicy("ip:1/m@sync")
	if err != nil {
		t.Fatal(err)
	}
	ecfg := edge.DefaultConfig()
	ecfg.RateLimits = []ratelimit.Policy{limit}
	c := clustertest.Start(t, clustertest.Options{Regions: []string{"east", "west"}, Admin: true, Edge: &ecfg})
	a, b := c.Edge(0), c.Edge(1)
	doc := "/v1/collections/notes/docs/n1"
	body := []byte(`{"title":"hello"}`)

	// Gossip: both edges see each other.
	clustertest.Eventually(t, 10*time.Second, func() error {
		mfs := scraped(scrape(t, c.MetricsURL()))
		if n := mfs.get(t, "perch_edge_gossip_members").sum("state", "healthy"); n != 4 {
			return fmt.Errorf("%v healthy members seen by the two edges, want 4", n)
		}
		return nil
	})

	// Writes.
	if r := clustertest.Do(t, "PUT", a+doc, nil, body); r.Status != 201 {
		t.Fatalf("PUT: %d %s", r.Status, r.Body)
	}
	if r := clustertest.Do(t, "PUT", a+"/v1/collections/notes/docs/n2", map[string]string{"Prefer": "respond-async"}, body); r.Status != 202 {
		t.Fatalf("async PUT: %d %s", r.Status, r.Body)
	}
	if r := clustertest.Do(t, "PUT", a+doc, map[string]string{"If-Match": `"99"`}, body); r.Status != 412 {
		t.Fatalf("stale If-Match: %d %s", r.Status, r.Body)
	}
	idem := map[string]string{"Idempotency-Key": "k-1"}
	if r := clustertest.Do(t, "PUT", a+"/v1/collections/notes/docs/n3", idem, body); r.Status != 201 {
		t.Fatalf("PUT with key: %d %s", r.Status, r.Body)
	}
	if r := clustertest.Do(t, "PUT", a+"/v1/collections/notes/docs/n3", idem, body); r.Status != 201 || r.Header["Idempotent-Replayed"] != "true" {
		t.Fatalf("replay: %d %v %s", r.Status, r.Header, r.Body)
	}

	// Reads: a hit after the write (read-your-writes), a 304, a miss and its hit on the other
	// edge once the change has reached it.
	r := clustertest.Do(t, "GET", a+doc, nil, nil)
	if r.Status != 200 {
		t.Fatalf("GET: %d %s", r.Status, r.Body)
	}
	if r := clustertest.Do(t, "GET", a+doc, map[string]string{"If-None-Match": r.Header["Etag"]}, nil); r.Status != 304 {
		t.Fatalf("If-None-Match: %d", r.Status)
	}
	clustertest.Eventually(t, 5*time.Second, func() error {
		if r := clustertest.Do(t, "GET", b+doc, nil, nil); r.Header["Cache-Status"] != "perch; hit" {
			return fmt.Errorf("west: %d %q", r.Status, r.Header["Cache-Status"])
		}
		return nil
	})
	if r := clustertest.Do(t, "GET", b+"/v1/collections/notes/docs/absent", nil, nil); r.Status != 404 {
		t.Fatalf("absent: %d", r.Status)
	}

	// A rate-limited request: the second sync within a minute.
	clustertest.Do(t, "GET", a+"/v1/sync?collections=notes", nil, nil)
	if r := clustertest.Do(t, "GET", a+"/v1/sync?collections=notes", nil, nil); r.Status != 429 {
		t.Fatalf("second sync: %d, want 429", r.Status)
	}

	// The 202's write is applied and the core's consumers have been read (every second).
	var mfs scraped
	clustertest.Eventually(t, 10*time.Second, func() error {
		mfs = scrape(t, c.MetricsURL())
		if _, ok := mfs["perch_core_consumer_lag_batches"]; !ok {
			return fmt.Errorf("no consumer lag yet")
		}
		if n := mfs.get(t, "perch_core_commands_total").sum("outcome", "applied"); n < 3 {
			return fmt.Errorf("%v commands applied", n)
		}
		if n := mfs.get(t, "perch_edge_change_event_delay_seconds").sum("region", "west"); n < 3 {
			return fmt.Errorf("%v change events timed at west", n)
		}
		return nil
	})

	type check struct {
		name   string
		labels []string
		min    float64
	}
	for _, ck := range []check{
		// RED of the edge, by route and status.
		{"perch_edge_requests_total", []string{"route", "/v1/collections/{collection}/docs/{id}", "method", "GET", "code", "200"}, 2},
		{"perch_edge_requests_total", []string{"code", "304"}, 1},
		{"perch_edge_requests_total", []string{"code", "412"}, 1},
		{"perch_edge_requests_total", []string{"code", "202"}, 1},
		{"perch_edge_requests_total", []string{"code", "429"}, 1},
		{"perch_edge_request_duration_seconds", []string{"method", "GET", "code", "200", "cache", "hit"}, 2},
		{"perch_edge_request_duration_seconds", []string{"code", "404", "cache", "miss"}, 1},
		{"perch_edge_request_duration_seconds", []string{"method", "PUT", "cache", "none"}, 5},
		// The cache.
		{"perch_edge_cache_requests_total", []string{"result", "hit"}, 2},
		{"perch_edge_cache_requests_total", []string{"result", "miss"}, 1},
		{"perch_edge_cache_requests_total", []string{"result", "stale"}, 0},
		{"perch_edge_cache_fills_total", nil, 1},
		{"perch_edge_cache_evictions_total", nil, 0},
		{"perch_edge_cache_bytes", nil, 1},
		{"perch_edge_cache_max_bytes", nil, float64(ecfg.CacheBytes)},
		// Protection.
		{"perch_ratelimit_decisions_total", []string{"result", "limited"}, 1},
		{"perch_ratelimit_decisions_total", []string{"result", "allowed"}, 1},
		{"perch_edge_rate_limited_total", nil, 1},
		// Gossip.
		{"perch_edge_gossip_members", []string{"state", "healthy"}, 4},
		{"perch_edge_ring_members", nil, 2},
		{"perch_edge_ring_changes_total", nil, 0},
		// Writes through NATS.
		{"perch_edge_write_publish_seconds", nil, 5},
		{"perch_edge_write_batch_commands", nil, 1},
		{"perch_edge_writes_total", []string{"result", "applied"}, 2},
		{"perch_edge_writes_total", []string{"result", "queued"}, 1},
		{"perch_edge_writes_total", []string{"result", "rejected"}, 1},
		{"perch_edge_writes_total", []string{"result", "replayed"}, 1},
		{"perch_core_consumer_lag_batches", []string{"state", "undelivered"}, 0},
		{"perch_core_redeliveries_total", nil, 0},
		{"perch_core_consumer_errors_total", nil, 0},
		// The core and its store.
		{"perch_core_commands_total", []string{"outcome", "applied"}, 3},
		{"perch_core_commands_total", []string{"outcome", "rejected"}, 1},
		{"perch_core_commands_total", []string{"outcome", "replayed"}, 1},
		{"perch_core_batches_total", []string{"result", "applied"}, 1},
		{"perch_core_apply_seconds", nil, 1},
		{"perch_core_apply_retries_total", nil, 0},
		{"perch_core_batch_commands", nil, 1},
		{"perch_core_transaction_batches", nil, 1},
		{"perch_core_reads_total", nil, 1},
		{"perch_core_change_events_total", []string{"source", "commit"}, 3},
		{"perch_db_pool_connections", []string{"pool", "writer"}, 0},
		{"perch_db_pool_max_connections", []string{"pool", "writer"}, 1},
		{"perch_db_pool_waits_total", nil, 0},
		// Propagation of changes to the other edge.
		{"perch_edge_change_event_delay_seconds", []string{"region", "west"}, 3},
	} {
		if got := mfs.get(t, ck.name).sum(ck.labels...); got < ck.min {
			t.Errorf("%s%v = %v, want at least %v", ck.name, ck.labels, got, ck.min)
		}
	}

	// Exact: every request counted is timed, per edge.
	for _, region := range []string{"east", "west"} {
		n := mfs.get(t, "perch_edge_requests_total").sum("region", region)
		h := mfs.get(t, "perch_edge_request_duration_seconds").sum("region", region)
		if n == 0 || n != h {
			t.Errorf("%s: %v requests counted, %v timed", region, n, h)
		}
	}
	// Sane: latencies and delays of a loopback cluster are below seconds, not zero or wild.
	lat := mfs.get(t, "perch_edge_request_duration_seconds")
	if s, n := lat.histSum(), lat.sum(); s <= 0 || s/n > 1 {
		t.Errorf("mean request latency %v s over %v requests", s/n, n)
	}
	delay := mfs.get(t, "perch_edge_change_event_delay_seconds")
	if s, n := delay.histSum("region", "west"), delay.sum("region", "west"); s/n > 5 {
		t.Errorf("mean change-event delay %v s over %v events", s/n, n)
	}
	if pub := mfs.get(t, "perch_edge_write_publish_seconds"); pub.histSum() <= 0 {
		t.Errorf("publish latency sums to %v", pub.histSum())
	}
}

// spanNames is the names of spans, sorted.
func spanNames(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	slices.Sort(out)
	return out
}

// TestOneTraceEdgeToDatabase: a write that carries a sampled traceparent makes one trace:
// the edge's server span, the publish of its batch to JetStream, the core's transaction and,
// on PostgreSQL, its SQL statements, and the outcome's arrival back at the edge, each the
// child of the one before. A read miss makes one trace through the core's read.
func TestOneTraceEdgeToDatabase(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			opts := clustertest.Options{Regions: []string{"east"}}
			if backend == "postgres" {
				opts.DB = pgtest.DSN(t) // skips without PERCH_TEST_POSTGRES
			}
			exp := tracetest.NewInMemoryExporter()
			tp := telemetry.NewSDKProvider(sdktrace.NewSimpleSpanProcessor(exp), telemetry.TraceConfig{Service: "perch-test"})
			t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			opts.TracerProvider = tp
			c := clustertest.Start(t, opts)
			exp.Reset()

			const traceID = "0af7651916cd43dd8448eb211c80319c"
			tp1 := "00-" + traceID + "-b7ad6b7169203331-01"
			r := clustertest.Do(t, "PUT", c.Edge(0)+"/v1/collections/notes/docs/t1", map[string]string{"traceparent": tp1}, []byte(`{"a":1}`))
			if r.Status != 201 {
				t.Fatalf("PUT: %d %s", r.Status, r.Body)
			}
			want := []string{"PUT /v1/collections/{collection}/docs/{id}", "perch.core.apply", "perch.outcomes receive", "perch.writes publish"}
			var spans tracetest.SpanStubs
			clustertest.Eventually(t, 5*time.Second, func() error {
				spans = exp.GetSpans()
				got := spanNames(spans)
				for _, w := range want {
					if !slices.Contains(got, w) {
						return fmt.Errorf("spans %v, want %v", got, want)
					}
				}
				return nil
			})
			byName := map[string]tracetest.SpanStub{}
			for _, s := range spans {
				if s.SpanContext.TraceID().String() != traceID {
					t.Errorf("span %q is in trace %s, want %s", s.Name, s.SpanContext.TraceID(), traceID)
				}
				if _, ok := byName[s.Name]; !ok {
					byName[s.Name] = s
				}
			}
			parentOf := func(child, parent string) {
				t.Helper()
				if byName[child].Parent.SpanID() != byName[parent].SpanContext.SpanID() {
					t.Errorf("%q is not the child of %q", child, parent)
				}
			}
			if byName[want[0]].Parent.SpanID().String() != "b7ad6b7169203331" {
				t.Errorf("the edge's span is not the child of the client's")
			}
			parentOf("perch.writes publish", want[0])
			parentOf("perch.core.apply", "perch.writes publish")
			parentOf("perch.outcomes receive", "perch.core.apply")
			if byName["perch.writes publish"].SpanKind != trace.SpanKindProducer || byName["perch.core.apply"].SpanKind != trace.SpanKindConsumer {
				t.Errorf("kinds: publish %v, apply %v", byName["perch.writes publish"].SpanKind, byName["perch.core.apply"].SpanKind)
			}
			if backend == "postgres" {
				sql := 0
				for _, s := range spans {
					if s.Parent.SpanID() == byName["perch.core.apply"].SpanContext.SpanID() && s.SpanKind == trace.SpanKindClient {
						sql++
					}
				}
				if sql < 3 { // BEGIN, the load and write batches, COMMIT
					t.Errorf("%d SQL spans below the transaction; spans %v", sql, spanNames(spans))
				}
			}

			// A read miss: the edge's span, its read, the core's.
			exp.Reset()
			const readTrace = "5b8aa5a2d2c872e8321cf37308d69df2"
			r = clustertest.Do(t, "GET", c.Edge(0)+"/v1/collections/notes/docs/absent", map[string]string{"traceparent": "00-" + readTrace + "-051581bf3cb55c13-01"}, nil)
			if r.Status != 404 {
				t.Fatalf("GET: %d", r.Status)
			}
			got := spanNames(exp.GetSpans())
			for _, w := range []string{"GET /v1/collections/{collection}/docs/{id}", "perch.read get", "perch.core.read get"} {
				if !slices.Contains(got, w) {
					t.Errorf("read spans %v, want %s", got, w)
				}
			}
			for _, s := range exp.GetSpans() {
				if s.SpanContext.TraceID().String() != readTrace {
					t.Errorf("read span %q in trace %s", s.Name, s.SpanContext.TraceID())
				}
			}
			if r.Header["X-Request-Id"] == "" {
				t.Errorf("no X-Request-Id")
			}
		})
	}
}
