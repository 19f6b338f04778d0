package bench

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/internal/clustertest"
)

// pollPause is how long an edge's poller waits between two reads that still see the old
// version: short beside the target (20 ms p50) and long enough that three pollers leave the
// two cores to the system under test.
const pollPause = 200 * time.Microsecond

// convergeTimeout bounds the wait for one write to reach every edge: far above the target,
// so that a run reports a slow tail instead of failing, and still ends if events are lost.
const convergeTimeout = 10 * time.Second

// BenchmarkInvalidation measures how long after a write is acknowledged every edge serves the
// new version: the invalidation bound of the design (target p99 ≤ 100 ms, p50 ≤ 20 ms, over
// at least 500 writes, so run it with -benchtime 500x; make bench-invalidation does).
//
// A cluster of three edges (the default regions) on SQLite holds one document, cached by
// every edge. Each of the b.N iterations replaces it through edge 0 and waits for the 200
// (the core applied it); from that moment one poller per edge reads it every 200 µs until
// the edge answers with the new ETag. It reports, in milliseconds, the percentiles of the
// time until the last edge had it (p50_ms, p90_ms, p99_ms, max_ms) and the p99 of each edge
// alone (e0 is the writer's edge, which reads its own writes at once), and:
//
//	hit_frac      the fraction of all the pollers' reads answered from the cache
//	new_hit_frac  the fraction of first reads of a new version answered from the cache: 1
//	              when change events update the cache in place, lower when misses fill it
func BenchmarkInvalidation(b *testing.B) {
	c := clustertest.Start(b, clustertest.Options{})
	const path = "/v1/collections/bench/docs/invalidation"
	edges := c.EdgeURLs()
	if r := clustertest.Do(b, "PUT", edges[0]+path, nil, invalidationBody(0)); r.Status != 201 && r.Status != 200 {
		b.Fatalf("seed: %d %s", r.Status, r.Body)
	}
	pollers := make([]*poller, len(edges))
	for i, base := range edges {
		clustertest.Eventually(b, 10*time.Second, func() error {
			if r := clustertest.Do(b, "GET", base+path, nil, nil); r.Header["Cache-Status"] != "perch; hit" {
				return fmt.Errorf("edge %d: %d, Cache-Status %q", i, r.Status, r.Header["Cache-Status"])
			}
			return nil
		})
		pollers[i] = newPoller(base + path)
		b.Cleanup(pollers[i].release)
	}
	writer := &fasthttp.HostClient{Addr: pollers[0].client.Addr, MaxConns: 1}
	put := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(put)
	defer fasthttp.ReleaseResponse(resp)
	put.Header.SetMethod(fasthttp.MethodPut)
	put.SetRequestURI(edges[0] + path)
	put.Header.SetContentType("application/json")

	all := make([]time.Duration, 0, b.N)
	perEdge := make([][]time.Duration, len(edges))
	var wg sync.WaitGroup
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		put.SetBody(invalidationBody(i))
		if err := writer.Do(put, resp); err != nil {
			b.Fatalf("PUT %d: %v", i, err)
		}
		if s := resp.StatusCode(); s != 200 && s != 201 {
			b.Fatalf("PUT %d answered %d (want the outcome, 200): %s", i, s, resp.Body())
		}
		ack := time.Now()
		want := string(resp.Header.Peek(fasthttp.HeaderETag))
		if want == "" {
			b.Fatalf("PUT %d answered without an ETag", i)
		}
		for _, p := range pollers {
			wg.Go(func() { p.await(ack, []byte(want)) })
		}
		wg.Wait()
		var last time.Duration
		for e, p := range pollers {
			if p.err != nil {
				b.Fatalf("write %d, edge %d: %v", i, e, p.err)
			}
			perEdge[e] = append(perEdge[e], p.latency)
			last = max(last, p.latency)
		}
		all = append(all, last)
	}
	b.StopTimer()

	slices.Sort(all)
	b.ReportMetric(percentileMs(all, .50), "p50_ms")
	b.ReportMetric(percentileMs(all, .90), "p90_ms")
	b.ReportMetric(percentileMs(all, .99), "p99_ms")
	b.ReportMetric(percentileMs(all, 1), "max_ms")
	var reads, hits, firsts, firstHits int
	for e, p := range pollers {
		slices.Sort(perEdge[e])
		b.ReportMetric(percentileMs(perEdge[e], .99), fmt.Sprintf("e%d_p99_ms", e))
		reads += p.reads
		hits += p.hits
		firsts += p.firsts
		firstHits += p.firstHits
	}
	b.ReportMetric(float64(hits)/float64(reads), "hit_frac")
	b.ReportMetric(float64(firstHits)/float64(firsts), "new_hit_frac")
}

// invalidationBody is the data of the document's version i: about 1 KB, like the hit
// benchmarks'.
func invalidationBody(i int) []byte {
	return fmt.Appendf(nil, `{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", 850))
}

// poller reads one edge's copy of the document until it has a given version. Not safe for
// concurrent use: one await at a time; the fields are read between awaits.
type poller struct {
	client *fasthttp.HostClient
	req    *fasthttp.Request
	resp   *fasthttp.Response

	// latency and err are the outcome of the last await.
	latency time.Duration
	err     error
	// reads and hits count every read; firsts and firstHits the reads that first saw a new
	// version.
	reads, hits, firsts, firstHits int
}

func newPoller(url string) *poller {
	p := &poller{req: fasthttp.AcquireRequest(), resp: fasthttp.AcquireResponse()}
	p.req.SetRequestURI(url)
	p.client = &fasthttp.HostClient{Addr: string(p.req.URI().Host()), MaxConns: 1}
	return p
}

func (p *poller) release() {
	fasthttp.ReleaseRequest(p.req)
	fasthttp.ReleaseResponse(p.resp)
}

var hitStatus = []byte("perch; hit")

// await reads until the edge answers with etag, and records the time since ack.
func (p *poller) await(ack time.Time, etag []byte) {
	deadline := ack.Add(convergeTimeout)
	for {
		if err := p.client.Do(p.req, p.resp); err != nil {
			p.err = err
			return
		}
		p.reads++
		hit := bytes.Equal(p.resp.Header.Peek("Cache-Status"), hitStatus)
		if hit {
			p.hits++
		}
		if p.resp.StatusCode() == 200 && bytes.Equal(p.resp.Header.Peek(fasthttp.HeaderETag), etag) {
			p.latency = time.Since(ack)
			p.err = nil
			p.firsts++
			if hit {
				p.firstHits++
			}
			return
		}
		if time.Now().After(deadline) {
			p.err = fmt.Errorf("still %d with ETag %s after %s, want %s", p.resp.StatusCode(),
				p.resp.Header.Peek(fasthttp.HeaderETag), convergeTimeout, etag)
			return
		}
		time.Sleep(pollPause)
	}
}

// percentileMs returns the p-quantile of sorted latencies (nearest rank), in milliseconds.
func percentileMs(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := min(len(sorted)-1, int(p*float64(len(sorted))))
	return float64(sorted[i].Microseconds()) / 1000
}
