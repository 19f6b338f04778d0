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

// rounds is how many alternating rounds of the whole path and the direct upserts each
// whole-path benchmark runs: 4, or PERCH_BENCH_ROUNDS.
var rounds = func() int {
	if n, err := strconv.Atoi(os.Getenv("PERCH_BENCH_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 4
}()

// BenchmarkWritePath measures acknowledged writes per second through the whole write path
// (HTTP → edge → JetStream, fsync on every write → core → PostgreSQL) beside single-row
// upserts straight into the same PostgreSQL, all with 16 concurrent clients
// (PERCH_BENCH_CLIENTS=N for another number), in one run:
//
//	direct-upserts            the baseline, alone
//	edge-jetstream-core       each write waits for the core's outcome (200/201)
//	edge-jetstream-core-async Prefer: respond-async: 202 once JetStream stored the write; the
//	                          time until the core has applied every write is included
//
// Each whole-path benchmark alternates its writes with as many direct upserts, in rounds
// (PERCH_BENCH_ROUNDS, default 4; direct first in every other round), and reports x_direct:
// its writes/s ÷ the direct upserts' writes/s over those rounds, so that a shared machine's
// drift between the two weighs on both. Needs PERCH_TEST_POSTGRES (make bench-writes starts
// one).
func BenchmarkWritePath(b *testing.B) { writePath(b, nil) }

// writePath runs BenchmarkWritePath's three benchmarks; on the two tiers of t when t is set
// (BenchmarkWritePathTiers).
func writePath(b *testing.B, t *tiers) {
	direct := pgtest.DSN(b)
	path := pgtest.DSN(b)
	if t != nil {
		t.pin(b, direct)
	}
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
	upsert := func(i int) error {
		_, err := pool.Exec(ctx, `INSERT INTO direct_docs (collection, id, version, data, updated_at)
			VALUES ('bench', $1, 1, $2, now())
			ON CONFLICT (collection, id) DO UPDATE SET version = direct_docs.version + 1, data = excluded.data, updated_at = excluded.updated_at`,
			key(), fmt.Sprintf(`{"n":%d}`, i))
		return err
	}
	b.Run("direct-upserts", func(b *testing.B) {
		var r result
		db := cpuMeter{read: dbCPU}
		b.ResetTimer()
		b.StopTimer()
		db.around(func() {
			b.StartTimer()
			r = measure(b, b.N, upsert, nil)
			b.StopTimer()
		})
		db.report(b, b.N, "db_cpu_µs/write")
		r.report(b, "", "writes/s")
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
	if t != nil {
		t.moveCore(b, c, path)
	}
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
			drained := drainer(b, c)
			before := pathStats(b, c, t)
			var whole, baseline result
			wholeDB, baselineDB := cpuMeter{read: dbCPU}, cpuMeter{read: dbCPU}
			var coreCPU cpuMeter // the core's CPU, when it is a process of its own (tiers)
			if t != nil {
				coreCPU.read = t.coreCPU
			}
			b.ResetTimer()
			b.StopTimer()
			inRounds(b.N, func(n int) {
				// The timer counts the whole path's rounds alone.
				coreCPU.around(func() {
					wholeDB.around(func() {
						b.StartTimer()
						whole.add(measure(b, n, write, drained))
						b.StopTimer()
					})
				})
			}, func(n int) { baselineDB.around(func() { baseline.add(measure(b, n, upsert, nil)) }) })
			wholeDB.report(b, b.N, "db_cpu_µs/write")
			coreCPU.report(b, b.N, "core_cpu_µs/write")
			baselineDB.report(b, baseline.writes, "direct_db_cpu_µs/write")
			whole.report(b, "", "writes/s")
			baseline.report(b, "direct_", "writes/s")
			b.ReportMetric(whole.rate()/baseline.rate(), "x_direct")
			pathStats(b, c, t).since(before).report(b)
		})
	}
}

// inRounds splits n operations into rounds (PERCH_BENCH_ROUNDS) and runs each round's share
// on both sides: direct and then path in the first round and every other one after it, path
// and then direct in the others.
func inRounds(n int, path, direct func(n int)) {
	for r, k := range split(n, rounds) {
		if r%2 == 0 {
			direct(k)
			path(k)
		} else {
			path(k)
			direct(k)
		}
	}
}

// split divides n writes into k rounds (fewer when n < k), the rest in the last.
func split(n, k int) []int {
	k = max(1, min(k, n))
	out := make([]int, k)
	for i := range out {
		out[i] = n / k
	}
	out[k-1] += n % k
	return out
}

// drainer returns a function that waits until the core has applied every write in the
// stream: every partition's consumer has delivered everything and had it all acknowledged
// (after commit). It looks every millisecond, on one connection, so that the wait it adds
// to a round is the core's and not the benchmark's.
func drainer(b *testing.B, c *clustertest.Cluster) func() {
	js, err := jetstream.New(natstest.Connect(b, c.NATSURL()))
	if err != nil {
		b.Fatal(err)
	}
	pending := func() error {
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
	}
	return func() {
		deadline := time.Now().Add(time.Minute)
		for {
			err := pending()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				b.Fatalf("writes not applied after a minute: %v", err)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func key() string { return fmt.Sprintf("k%06d", rand.IntN(1_000_000)) }

// result is what measure saw of some writes.
type result struct {
	writes  int
	elapsed time.Duration
	lat     []time.Duration
	// drains and drained are how many times measure waited for the core after the last
	// answer, and how long in all.
	drains  int
	drained time.Duration
}

func (r *result) add(o result) {
	r.writes += o.writes
	r.elapsed += o.elapsed
	r.lat = append(r.lat, o.lat...)
	r.drains += o.drains
	r.drained += o.drained
}

func (r *result) rate() float64 { return float64(r.writes) / r.elapsed.Seconds() }

// report reports the rate over the whole time (in unit, writes/s or reads/s), the latency
// percentiles and mean, and the mean wait for the core after a round's last answer
// (drain_ms), each metric's unit prefixed by prefix.
func (r *result) report(b *testing.B, prefix, unit string) {
	if r.writes == 0 {
		return
	}
	slices.Sort(r.lat)
	pct := func(p float64) float64 {
		return float64(r.lat[min(len(r.lat)-1, int(p*float64(len(r.lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(r.rate(), prefix+unit)
	b.ReportMetric(pct(.50), prefix+"p50_ms")
	b.ReportMetric(pct(.99), prefix+"p99_ms")
	// The mean is what ties latency to the rate: each client has one write in flight, so
	// the rate is about clients ÷ the mean.
	var sum time.Duration
	for _, l := range r.lat {
		sum += l
	}
	b.ReportMetric(float64(sum.Microseconds())/1000/float64(len(r.lat)), prefix+"mean_ms")
	if r.drains > 0 {
		b.ReportMetric(float64(r.drained.Microseconds())/1000/float64(r.drains), prefix+"drain_ms")
	}
}

// measure calls write n times from clients goroutines, then drain (when not nil), and
// returns the time that took and the latency of each write.
func measure(b *testing.B, n int, write func(i int) error, drain func()) result {
	var next atomic.Int64
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	var failed atomic.Value
	start := time.Now()
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > n {
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
	r := result{writes: n, lat: slices.Concat(lat...)}
	if drain != nil {
		answered := time.Now()
		drain()
		r.drains, r.drained = 1, time.Since(answered)
	}
	r.elapsed = time.Since(start)
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	return r
}

// stats are the sums of the histograms that explain a write-path figure.
type stats struct{ publishes, commands, publishSeconds, txns, batches, txnSeconds float64 }

// pathStats reads the stats from the cluster's metrics, and the core's from `perch core`'s
// on two tiers.
func pathStats(b *testing.B, c *clustertest.Cluster, t *tiers) stats {
	fams, err := c.Metrics().Gather()
	if err != nil {
		b.Fatal(err)
	}
	var s stats
	if t != nil {
		m := scrape(b, t.coreMetrics)
		s.txns, s.batches = m["perch_core_transaction_batches_count"], m["perch_core_transaction_batches_sum"]
		s.txnSeconds = m["perch_core_apply_seconds_sum"]
	}
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
	var sum time.Duration
	found := false
	for _, f := range stats {
		if st, ok := readStat(f); ok && st.comm == "postgres" {
			sum += st.cpu
			found = true
		}
	}
	if !found {
		return -1
	}
	return sum
}

// procStat is what the benchmarks read of /proc/<pid>/stat.
type procStat struct {
	comm string
	ppid int
	cpu  time.Duration // user and system time
}

// readStat reads a /proc/<pid>/stat file (proc(5)); false when the process is gone.
func readStat(file string) (procStat, bool) {
	data, err := os.ReadFile(file)
	if err != nil {
		return procStat{}, false
	}
	open, end := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return procStat{}, false
	}
	fields := bytes.Fields(data[end+1:])
	if len(fields) < 13 {
		return procStat{}, false
	}
	// After the command: state and ppid are fields 3 and 4 of stat(5); utime and stime 14
	// and 15.
	ppid, _ := strconv.Atoi(string(fields[1]))
	u, _ := strconv.ParseInt(string(fields[11]), 10, 64)
	st, _ := strconv.ParseInt(string(fields[12]), 10, 64)
	return procStat{comm: string(data[open+1 : end]), ppid: ppid,
		cpu: time.Duration(u+st) * (time.Second / 100)}, true // USER_HZ is 100 on Linux
}

// cpuMeter adds up the CPU time of some processes over the runs it measures, such as the
// database's (dbCPU). A backend that exits between two readings takes its ticks with it, so
// the figure can fall short by them; the benchmark's connections stay open throughout.
type cpuMeter struct {
	// read returns the CPU time used so far, or -1 when it cannot be seen; nil for nothing
	// to measure.
	read func() time.Duration
	used time.Duration
	// blind is set when read saw nothing: there is no figure.
	blind bool
}

// around runs f and adds the CPU time over it.
func (m *cpuMeter) around(f func()) {
	if m.read == nil {
		m.blind = true
		f()
		return
	}
	start := m.read()
	f()
	end := m.read()
	if start < 0 || end < 0 {
		m.blind = true
		return
	}
	m.used += end - start
}

// report reports the CPU time per write over writes, as metric.
func (m *cpuMeter) report(b *testing.B, writes int, metric string) {
	if m.blind || writes == 0 {
		return
	}
	b.ReportMetric(float64(m.used.Microseconds())/float64(writes), metric)
}
