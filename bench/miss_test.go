package bench

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/internal/clustertest"
	"github.com/perchhq/perch/internal/pgtest"
	"github.com/perchhq/perch/internal/wire"
)

// missDocs is how many documents BenchmarkGetMiss reads, over and over.
const missDocs = 1000

// BenchmarkGetMiss measures cache misses, GETs of 1 KB documents through one edge whose
// cache holds nothing (its cost bound is one byte): each read is a fill, edge → NATS → core
// → store and back, rendered. Beside it, in alternating rounds as BenchmarkWritePath does
// (PERCH_BENCH_ROUNDS), the same reads straight from the same store, with clients
// goroutines each. It reports reads/s, p50 and p99 of both (direct_…), and x_store, the
// misses' reads/s ÷ the store's: what the path costs beyond the database. The store is
// PostgreSQL when PERCH_TEST_POSTGRES is set, else SQLite (perch dev's).
func BenchmarkGetMiss(b *testing.B) {
	opts := clustertest.Options{Regions: []string{"bench"}}
	if os.Getenv("PERCH_TEST_POSTGRES") != "" {
		opts.DB = pgtest.DSN(b)
	}
	ecfg := edge.DefaultConfig()
	ecfg.CacheBytes = 1
	opts.Edge = &ecfg
	c := clustertest.Start(b, opts)
	ctx := context.Background()
	ids := make([]string, missDocs)
	for i := range ids {
		ids[i] = fmt.Sprintf("d%04d", i)
		data := fmt.Appendf(nil, `{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", 850))
		batch := &wire.Batch{ID: "seed-" + ids[i], Partition: wire.Partition("bench", ids[i], wire.DefaultPartitions),
			Commands: []wire.Command{{WriteID: "w-" + ids[i], Op: wire.OpPut, Collection: "bench", ID: ids[i], Data: data}}}
		if outs, _, err := c.Store().ApplyBatch(ctx, batch, time.Now()); err != nil || len(outs) != 1 || outs[0].Status != 201 {
			b.Fatalf("seed %s: %+v %v", ids[i], outs, err)
		}
	}
	base := c.Edge(0) + "/v1/collections/bench/docs/"
	hc := &fasthttp.Client{MaxConnsPerHost: clients}
	miss := func(i int) error {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(base + ids[i%missDocs])
		if err := hc.Do(req, resp); err != nil {
			return err
		}
		if resp.StatusCode() != 200 || strings.HasPrefix(string(resp.Header.Peek("Cache-Status")), "perch; hit") {
			return fmt.Errorf("GET %s: %d, Cache-Status %q; want a 200 miss", ids[i%missDocs], resp.StatusCode(), resp.Header.Peek("Cache-Status"))
		}
		return nil
	}
	get := func(i int) error {
		_, err := c.Store().Get(ctx, "bench", ids[i%missDocs])
		return err
	}
	before := c.Metric("perch_edge_cache_fills_total", "source")["core"]
	var path, direct result
	b.ResetTimer()
	b.StopTimer()
	inRounds(b.N, func(n int) {
		b.StartTimer()
		path.add(measure(b, n, miss, nil))
		b.StopTimer()
	}, func(n int) { direct.add(measure(b, n, get, nil)) })
	fills := c.Metric("perch_edge_cache_fills_total", "source")["core"] - before
	path.report(b, "", "reads/s")
	direct.report(b, "direct_", "reads/s")
	b.ReportMetric(path.rate()/direct.rate(), "x_store")
	b.ReportMetric(fills/float64(b.N), "core_fills/read")
}
