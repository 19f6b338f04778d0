package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/internal/clustertest"
	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/wire"
)

// memoryDocs is the number of documents BenchmarkEdgeMemory caches; PERCH_BENCH_DOCS
// changes it.
const memoryDocs = 100_000

// memoryConns is the number of concurrent connections that seed and read the documents.
const memoryConns = 32

// BenchmarkEdgeMemory measures the peak resident memory of an edge process holding 100k
// cached documents of about 1 KB (target: at most 1.5× the bytes of the cached responses).
// It runs once whatever b.N is: run it with -benchtime 1x (make bench-memory).
//
// The edge must be a process of its own for its RSS to mean anything, so this builds
// cmd/perch and starts `perch dev` (embedded NATS, core, SQLite, one edge: it takes the
// writes) and, once every write is applied, `perch edge` against the dev's NATS: the edge
// measured, started after the writes so that only reads fill its cache. Each document is
// read through it once (misses that fill the cache), then again until every read is a hit
// (cached_docs; a refused or dropped Set costs a second fill). Then it reports, from
// /proc/<pid>/status of the edge alone:
//
//	peak_rss_bytes  VmHWM, the peak resident set
//	rss_bytes       VmRSS at the end
//	idle_rss_bytes  VmRSS of the edge before its first read
//	payload_bytes   the bytes of the cached response bodies
//	hwm/payload     peak_rss_bytes ÷ payload_bytes: the figure to hold to ≤ 1.5
//	(hwm-idle)/payload
//	                what the cached documents added to the peak, ÷ payload_bytes: the cost
//	                of a cached byte, without what the process holds before its first read
//	                (the binary's pages, the runtime, the empty cache). With the idle RSS it
//	                sizes an edge: peak ≈ idle_rss_bytes + this × the bytes cached.
//
// and heap_inuse_bytes (the Go runtime's view at the end), live_heap_bytes (the heap left
// after a forced collection: what the cache and the rest of the edge really hold; the rest
// of the peak is the collector's headroom, GOGC), cache_bytes (the edge's CacheBytes bound,
// its default, --cache-bytes), evictions (should be 0: the cache held it all), and over the
// reads the edge's edge_cpu_s (CPU seconds) and gc_cycles, with its gogc: the cost of the
// collector's settings. PERCH_BENCH_HEAP=FILE saves the edge's heap profile (go tool pprof
// FILE); PERCH_BENCH_EDGE_ENV adds environment variables to the edge's alone, to try runtime
// settings, which win over perch edge's own: PERCH_BENCH_EDGE_ENV="GOGC=50 GOMEMLIMIT=150MiB".
//
// The reads send no Accept-Encoding, so the entries hold no compressed forms: with clients
// that ask for them, an entry holds up to half its body more (what the cache charges it for
// its forms).
func BenchmarkEdgeMemory(b *testing.B) {
	docs := memoryDocs
	if v := os.Getenv("PERCH_BENCH_DOCS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("PERCH_BENCH_DOCS=%q: want a positive number", v)
		}
		docs = n
	}
	dir := b.TempDir()
	bin := buildPerch(b, dir)
	devURL, natsURL := startDev(b, bin, dir)
	seed(b, devURL, docs)
	applied(b, natsURL)

	// perch edge: the process measured, started after the writes so that only reads fill its
	// cache.
	ep, edgeURL, adminAddr := startEdge(b, bin, dir, natsURL, nil, strings.Fields(os.Getenv("PERCH_BENCH_EDGE_ENV")))
	pid := ep.cmd.Process.Pid
	idle := procStatus(b, pid)["VmRSS"]
	before := scrape(b, "http://"+adminAddr+"/metrics")

	b.ResetTimer()
	first := readAll(b, edgeURL, docs)
	if first.other > 0 {
		b.Fatalf("first pass: %d of %d reads not answered 200", first.other, docs)
	}
	cached := 0
	for range 3 {
		p := readAll(b, edgeURL, docs)
		cached = p.hits
		if p.hits == docs {
			break
		}
	}
	b.StopTimer()
	ep.alive(b)

	mem := procStatus(b, pid)
	m := scrape(b, "http://"+adminAddr+"/metrics")
	// A heap profile with gc=1 collects first: what is left is what the cache holds.
	heap := clustertest.Do(b, "GET", "http://"+adminAddr+"/debug/pprof/heap?gc=1", nil, nil)
	if f := os.Getenv("PERCH_BENCH_HEAP"); f != "" {
		if err := os.WriteFile(f, heap.Body, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	live := scrape(b, "http://"+adminAddr+"/metrics")["go_memstats_heap_alloc_bytes"]
	payload := first.bytes
	b.ReportMetric(float64(docs), "docs")
	b.ReportMetric(float64(cached), "cached_docs")
	b.ReportMetric(float64(payload), "payload_bytes")
	b.ReportMetric(float64(mem["VmHWM"]), "peak_rss_bytes")
	b.ReportMetric(float64(mem["VmRSS"]), "rss_bytes")
	// RSS at the end in its two parts: the process's own memory, and pages of the binary
	// (and other files) mapped in, clean and shared with the page cache. The peak of the
	// first is about VmHWM less the second (the binary's pages are touched at start).
	b.ReportMetric(float64(mem["RssAnon"]), "rss_anon_bytes")
	b.ReportMetric(float64(mem["RssFile"]), "rss_file_bytes")
	b.ReportMetric(float64(mem["VmHWM"]-mem["RssFile"])/float64(payload), "(hwm-file)/payload")
	b.ReportMetric(float64(idle), "idle_rss_bytes")
	b.ReportMetric(float64(mem["VmHWM"])/float64(payload), "hwm/payload")
	b.ReportMetric(float64(mem["VmHWM"]-idle)/float64(payload), "(hwm-idle)/payload")
	b.ReportMetric(m["go_memstats_heap_inuse_bytes"], "heap_inuse_bytes")
	b.ReportMetric(live, "live_heap_bytes")
	b.ReportMetric(float64(edge.DefaultConfig().CacheBytes), "cache_bytes")
	b.ReportMetric(m["perch_edge_cache_evictions_total"], "evictions")
	b.ReportMetric(m["process_cpu_seconds_total"]-before["process_cpu_seconds_total"], "edge_cpu_s")
	b.ReportMetric(m["go_gc_duration_seconds_count"]-before["go_gc_duration_seconds_count"], "gc_cycles")
	if v, ok := m["go_gc_gogc_percent"]; ok {
		b.ReportMetric(v, "gogc")
	}
}

// buildPerch builds cmd/perch into dir and returns the binary's path.
func buildPerch(b *testing.B, dir string) string {
	b.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		b.Skip("no go command on PATH to build cmd/perch with")
	}
	bin := filepath.Join(dir, "perch")
	out, err := exec.Command(goBin, "build", "-o", bin, "github.com/perchhq/perch/cmd/perch").CombinedOutput()
	if err != nil {
		b.Fatalf("go build ./cmd/perch: %v\n%s", err, out)
	}
	return bin
}

// startDev starts `perch dev` of bin (embedded NATS, core, SQLite, one edge in region
// "seed", data under dir) and returns its edge's URL and its NATS URL, once it is ready.
func startDev(b *testing.B, bin, dir string, prefix ...string) (devURL, natsURL string) {
	b.Helper()
	dev := startProcess(b, command(prefix, bin, "dev", "--data", filepath.Join(dir, "dev"), "--regions", "seed",
		"--port-base", strconv.Itoa(freePort(b)), "--admin", "", "--log-level", "warn"), syscall.SIGTERM)
	edgeLine, natsLine := regexp.MustCompile(`edge seed\s+(http://\S+)`), regexp.MustCompile(`nats\s+(nats://\S+)`)
	clustertest.Eventually(b, time.Minute, func() error {
		dev.alive(b)
		out := dev.out.String()
		e, n := edgeLine.FindStringSubmatch(out), natsLine.FindStringSubmatch(out)
		if e == nil || n == nil {
			return fmt.Errorf("perch dev has not printed its URLs yet: %q", out)
		}
		devURL, natsURL = e[1], n[1]
		return nil
	})
	clustertest.WaitReady(b, devURL)
	return devURL, natsURL
}

// startEdge starts `perch edge` of bin in region "mem" against the NATS at natsURL, every
// collection public (the reads measured carry no access token), run under prefix (see
// command) and with env added to its environment. It returns the process, its URL and its admin address, once it is ready.
func startEdge(b *testing.B, bin, dir, natsURL string, prefix, env []string) (*process, string, string) {
	b.Helper()
	edgeAddr, adminAddr := freeAddr(b), freeAddr(b)
	rules := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rules, []byte("default: {read: public, write: public}\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	cmd := command(prefix, bin, "edge", "--nats", natsURL, "--region", "mem", "--id", "mem-bench",
		"--listen", edgeAddr, "--gossip", "127.0.0.1:0", "--admin", adminAddr, "--stream-replicas", "1",
		"--drain-delay", "0s", "--log-level", "warn", "--rules", rules)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	ep := startProcess(b, cmd, syscall.SIGTERM)
	edgeURL := "http://" + edgeAddr
	clustertest.Eventually(b, 30*time.Second, func() error {
		ep.alive(b)
		r, err := clustertest.Send("GET", edgeURL+"/readyz", nil, nil)
		if err == nil && r.Status != 200 {
			err = fmt.Errorf("readyz %d: %s", r.Status, r.Body)
		}
		return err
	})
	return ep, edgeURL, adminAddr
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(b *testing.B) int {
	b.Helper()
	_, port, _ := strings.Cut(freeAddr(b), ":")
	n, err := strconv.Atoi(port)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// memoryPath is the path of document i of BenchmarkEdgeMemory.
func memoryPath(i int) string { return fmt.Sprintf("/v1/collections/mem/docs/d%06d", i) }

// seed writes n documents of about 1 KB through the edge at base, each answered 202 as soon
// as JetStream has it (Prefer: respond-async).
func seed(b *testing.B, base string, n int) {
	b.Helper()
	hc := &fasthttp.HostClient{Addr: strings.TrimPrefix(base, "http://"), MaxConns: memoryConns,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	forEach(b, n, func(i int, req *fasthttp.Request, resp *fasthttp.Response) error {
		req.Header.SetMethod(fasthttp.MethodPut)
		req.SetRequestURI(base + memoryPath(i))
		req.Header.SetContentType("application/json")
		req.Header.Set("Prefer", "respond-async")
		req.SetBody(invalidationBody(i))
		if err := hc.Do(req, resp); err != nil {
			return err
		}
		if s := resp.StatusCode(); s != 202 && s != 201 && s != 200 {
			return fmt.Errorf("PUT %s answered %d: %s", memoryPath(i), s, resp.Body())
		}
		return nil
	})
}

// pass counts the answers of one read of every document.
type pass struct {
	hits, misses, other int
	// bytes is the sum of the bodies of the 200 answers.
	bytes int64
}

// readAll reads every document once through the edge at base.
func readAll(b *testing.B, base string, n int) pass {
	b.Helper()
	hc := &fasthttp.HostClient{Addr: strings.TrimPrefix(base, "http://"), MaxConns: memoryConns,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	var hits, misses, other, size atomic.Int64
	forEach(b, n, func(i int, req *fasthttp.Request, resp *fasthttp.Response) error {
		req.SetRequestURI(base + memoryPath(i))
		if err := hc.Do(req, resp); err != nil {
			return err
		}
		switch {
		case resp.StatusCode() != 200:
			other.Add(1)
		case strings.HasPrefix(string(resp.Header.Peek("Cache-Status")), "perch; hit"):
			hits.Add(1)
		default:
			misses.Add(1)
		}
		if resp.StatusCode() == 200 {
			size.Add(int64(len(resp.Body())))
		}
		return nil
	})
	return pass{hits: int(hits.Load()), misses: int(misses.Load()), other: int(other.Load()), bytes: size.Load()}
}

// forEach calls f(i) for i in [0, n) from memoryConns goroutines, each with a request and a
// response of its own, and fails the benchmark with the first error.
func forEach(b *testing.B, n int, f func(i int, req *fasthttp.Request, resp *fasthttp.Response) error) {
	b.Helper()
	var next atomic.Int64
	var failed atomic.Value
	var wg sync.WaitGroup
	for range memoryConns {
		wg.Go(func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for failed.Load() == nil {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				req.Reset()
				if err := f(i, req, resp); err != nil {
					failed.Store(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
}

// applied waits until the core has applied every write in the stream of the NATS server at
// url: every partition's consumer has delivered everything and had it acknowledged.
func applied(b *testing.B, url string) {
	b.Helper()
	js, err := jetstream.New(natstest.Connect(b, url))
	if err != nil {
		b.Fatal(err)
	}
	clustertest.Eventually(b, 5*time.Minute, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, wire.WriteStream)
		if err != nil {
			return err
		}
		lister := s.ListConsumers(ctx)
		for info := range lister.Info() {
			if n := info.NumPending + uint64(info.NumAckPending); n > 0 {
				return fmt.Errorf("%s: %d batches not applied", info.Name, n)
			}
		}
		return lister.Err()
	})
}

// scrape returns the samples of a Prometheus text page, summed by metric name (labels
// dropped).
func scrape(b *testing.B, url string) map[string]float64 {
	b.Helper()
	r := clustertest.Do(b, "GET", url, nil, nil)
	if r.Status != 200 {
		b.Fatalf("GET %s: %d", url, r.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(r.Body)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		name, _, _ := strings.Cut(line[:sp], "{")
		if v, err := strconv.ParseFloat(line[sp+1:], 64); err == nil {
			out[name] += v
		}
	}
	return out
}
