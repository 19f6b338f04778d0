package bench

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/internal/clustertest"
	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/pgtest"
	"github.com/perchhq/perch/internal/wire"
)

// clients is the number of concurrent writers of the write benchmarks: 16, or
// PERCH_BENCH_CLIENTS.
var clients = func() int {
	if n, err := strconv.Atoi(os.Getenv("PERCH_BENCH_CLIENTS")); err == nil && n > 0 {
		return n
	}
	return 16
}()

// BenchmarkWritePath measures acknowledged writes per second through the whole write path
// (HTTP → edge → JetStream, fsync on every write → core → PostgreSQL) beside single-row
// upserts straight into the same PostgreSQL, all with 16 concurrent clients
// (PERCH_BENCH_CLIENTS=N for another number), in one run:
//
//	direct-upserts            the baseline
//	edge-jetstream-core       each write waits for the core's outcome (200/201)
//	edge-jetstream-core-async Prefer: respond-async: 202 once JetStream stored the write; the
//	                          time until the core has applied every write is included
//
// Report each writes/s ÷ direct-upserts writes/s. Needs PERCH_TEST_POSTGRES (make
// bench-writes starts one).
func BenchmarkWritePath(b *testing.B) {
	direct := pgtest.DSN(b)
	path := pgtest.DSN(b)
	b.Run("direct-upserts", func(b *testing.B) {
		ctx := context.Background()
		pool, err := pgxpool.New(ctx, fmt.Sprintf("%s&pool_max_conns=%d", direct, clients))
		if err != nil {
			b.Fatal(err)
		}
		defer pool.Close()
		if _, err := pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS direct_docs (
			collection text NOT NULL, id text NOT NULL, version bigint NOT NULL, data jsonb NOT NULL,
			updated_at timestamptz NOT NULL, PRIMARY KEY (collection, id))`); err != nil {
			b.Fatal(err)
		}
		defer reportDBCPU(b, dbCPU())
		run(b, func(i int) error {
			_, err := pool.Exec(ctx, `INSERT INTO direct_docs (collection, id, version, data, updated_at)
				VALUES ('bench', $1, 1, $2, now())
				ON CONFLICT (collection, id) DO UPDATE SET version = direct_docs.version + 1, data = excluded.data, updated_at = excluded.updated_at`,
				key(), fmt.Sprintf(`{"n":%d}`, i))
			return err
		}, nil)
	})
	ecfg := edge.DefaultConfig()
	if v := os.Getenv("PERCH_BENCH_LANES"); v != "" {
		// The edge's write lanes (partitions in parallel); default 1, the edge's default.
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatalf("PERCH_BENCH_LANES=%q: %v", v, err)
		}
		ecfg.WriteLanes = n
	}
	if v := os.Getenv("PERCH_BENCH_BATCH_WINDOW"); v != "" {
		// The edge's BatchWindow; default the edge's default.
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("PERCH_BENCH_BATCH_WINDOW=%q: %v", v, err)
		}
		ecfg.BatchWindow = d
	}
	c := clustertest.Start(b, clustertest.Options{Regions: []string{"bench"}, DB: path, Edge: &ecfg})
	for _, async := range []bool{false, true} {
		name := "edge-jetstream-core"
		if async {
			name += "-async"
		}
		b.Run(name, func(b *testing.B) {
			base := c.Edge(0) + "/v1/collections/bench/docs/"
			hc := &fasthttp.Client{MaxConnsPerHost: clients}
			write := func(i int) error {
				req := fasthttp.AcquireRequest()
				resp := fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				req.Header.SetMethod(fasthttp.MethodPut)
				req.SetRequestURI(base + key())
				req.Header.SetContentType("application/json")
				if async {
					req.Header.Set("Prefer", "respond-async")
				}
				req.SetBodyString(fmt.Sprintf(`{"n":%d}`, i))
				if err := hc.Do(req, resp); err != nil {
					return err
				}
				if s := resp.StatusCode(); s != 200 && s != 201 && s != 202 {
					return fmt.Errorf("PUT answered %d: %s", s, resp.Body())
				}
				return nil
			}
			before, cpu := pathStats(b, c), dbCPU()
			run(b, write, func() { drained(b, c) })
			reportDBCPU(b, cpu)
			pathStats(b, c).since(before).report(b)
		})
	}
}

// drained waits until the core has applied every write in the stream: every partition's
// consumer has delivered everything and had it all acknowledged (after commit).
func drained(b *testing.B, c *clustertest.Cluster) {
	nc := natstest.Connect(b, c.NATSURL())
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	clustertest.Eventually(b, time.Minute, func() error {
		s, err := js.Stream(context.Background(), wire.WriteStream)
		if err != nil {
			return err
		}
		lister := s.ListConsumers(context.Background())
		for info := range lister.Info() {
			if n := info.NumPending + uint64(info.NumAckPending); n > 0 {
				return fmt.Errorf("%s: %d batches not applied", info.Name, n)
			}
		}
		return lister.Err()
	})
}

func key() string { return fmt.Sprintf("k%06d", rand.IntN(1_000_000)) }

// run calls write b.N times from clients goroutines, then drain (when not nil), and reports
// writes/s over the whole time and the latency percentiles of the writes.
func run(b *testing.B, write func(i int) error, drain func()) {
	var next atomic.Int64
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > b.N {
					return
				}
				t0 := time.Now()
				if err := write(i); err != nil {
					failed.Store(err)
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	if drain != nil {
		drain()
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	pct := func(p float64) float64 {
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds()) / 1000
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "writes/s")
	b.ReportMetric(pct(.50), "p50_ms")
	b.ReportMetric(pct(.99), "p99_ms")
}

// stats are the sums of the histograms that explain a write-path figure.
type stats struct{ publishes, commands, publishSeconds, txns, batches, txnSeconds float64 }

func pathStats(b *testing.B, c *clustertest.Cluster) stats {
	fams, err := c.Metrics().Gather()
	if err != nil {
		b.Fatal(err)
	}
	var s stats
	for _, f := range fams {
		for _, m := range f.GetMetric() {
			h := m.GetHistogram()
			if h == nil {
				continue
			}
			switch f.GetName() {
			case "perch_edge_write_batch_commands":
				s.publishes += float64(h.GetSampleCount())
				s.commands += h.GetSampleSum()
			case "perch_edge_write_publish_seconds":
				s.publishSeconds += h.GetSampleSum()
			case "perch_core_transaction_batches":
				s.txns += float64(h.GetSampleCount())
				s.batches += h.GetSampleSum()
			case "perch_core_apply_seconds":
				s.txnSeconds += h.GetSampleSum()
			}
		}
	}
	return s
}

func (s stats) since(t stats) stats {
	return stats{s.publishes - t.publishes, s.commands - t.commands, s.publishSeconds - t.publishSeconds,
		s.txns - t.txns, s.batches - t.batches, s.txnSeconds - t.txnSeconds}
}

// report adds how the writes were grouped: commands per stream message, messages per
// transaction, and the mean transaction time.
func (s stats) report(b *testing.B) {
	if s.publishes > 0 {
		b.ReportMetric(s.commands/s.publishes, "cmds/msg")
		b.ReportMetric(1000*s.publishSeconds/s.publishes, "publish_ms")
	}
	if s.txns > 0 {
		b.ReportMetric(s.batches/s.txns, "msgs/txn")
		b.ReportMetric(1000*s.txnSeconds/s.txns, "txn_ms")
	}
}

// dbCPU returns the CPU time used so far by the PostgreSQL processes of this machine, or -1
// when there are none to see (a remote database): the database's own cost of the writes,
// which is what group commit saves, apart from the CPU that the rest of the path takes from a
// machine it shares.
func dbCPU() time.Duration {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var ticks int64
	found := false
	for _, f := range stats {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		open, end := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
		if open < 0 || end < open || string(data[open+1:end]) != "postgres" {
			continue
		}
		fields := bytes.Fields(data[end+1:])
		if len(fields) < 13 {
			continue
		}
		// After the command: state is field 3 of stat(5); utime and stime are 14 and 15.
		u, _ := strconv.ParseInt(string(fields[11]), 10, 64)
		st, _ := strconv.ParseInt(string(fields[12]), 10, 64)
		ticks += u + st
		found = true
	}
	if !found {
		return -1
	}
	return time.Duration(ticks) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// reportDBCPU reports the database's CPU time per write since start (a dbCPU reading).
func reportDBCPU(b *testing.B, start time.Duration) {
	end := dbCPU()
	if start < 0 || end < 0 {
		return
	}
	b.ReportMetric(float64((end-start).Microseconds())/float64(b.N), "db_cpu_µs/write")
}
