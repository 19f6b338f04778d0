package edge_test

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/edge/ratelimit"
	"github.com/perchhq/perch/internal/clustertest"
)

func limitedCluster(t *testing.T, regions []string, policies ...string) *clustertest.Cluster {
	t.Helper()
	return limitedClusterWith(t, regions, func(*edge.Config) {}, policies...)
}

func limitedClusterWith(t *testing.T, regions []string, adjust func(*edge.Config), policies ...string) *clustertest.Cluster {
	t.Helper()
	cfg := edge.DefaultConfig()
	adjust(&cfg)
	for _, s := range policies {
		p, err := ratelimit.ParsePolicy(s)
		if err != nil {
			t.Fatal(err)
		}
		cfg.RateLimits = append(cfg.RateLimits, p)
	}
	return clustertest.Start(t, clustertest.Options{Regions: regions, Edge: &cfg})
}

// offer sends GETs of one path from one client address at perEdge requests per second to
// each edge whose index live returns true, until stop, and counts the answers: admitted
// (anything but 429) and limited (429). A request to an edge that is gone goes to the next
// live one.
type offered struct {
	admitted, limited, failed atomic.Int64
	mu                        sync.Mutex
	sent                      []time.Time // when each answered request was sent
}

func (o *offered) run(c *clustertest.Cluster, edges int, perEdge int, d time.Duration, live func(int) bool) time.Duration {
	const workers = 4
	var wg sync.WaitGroup
	start := time.Now()
	for i := range edges {
		for range workers {
			wg.Go(func() {
				t := time.NewTicker(time.Second * workers / time.Duration(perEdge))
				defer t.Stop()
				for time.Since(start) < d {
					<-t.C
					target := i
					for n := 0; !live(target) && n < edges; n++ {
						target = (target + 1) % edges
					}
					at := time.Now()
					r, err := clustertest.Send("GET", c.Edge(target)+"/v1/collections/notes/docs/absent", nil, nil)
					if err == nil {
						o.mu.Lock()
						o.sent = append(o.sent, at)
						o.mu.Unlock()
					}
					switch {
					case err != nil:
						o.failed.Add(1)
					case r.Status == 429:
						o.limited.Add(1)
					default:
						o.admitted.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	return time.Since(start)
}

// checkAdmitted: the fleet admitted no more than one token bucket of the limit would have,
// fed the same requests at the times they were sent, plus 5%, and not far under it (15%).
// That is the limit's rate over the run plus its burst when the load never pauses; a pause
// (this machine's other work can stall it) lets a bucket fill up and waste what it cannot
// hold, in one bucket as in the fleet's. Over-admission is what a limit must not do. A fleet
// starved of CPU (other test packages running beside this one) hears its peers' usage late:
// its shares swing, and the tokens a shrinking share cannot hold are dropped, so it admits
// less (measured: 12% under once, with three other packages' tests running).
func checkAdmitted(t *testing.T, o *offered, took time.Duration, rate, burst float64) {
	t.Helper()
	slices.SortFunc(o.sent, func(a, b time.Time) int { return a.Compare(b) })
	allowed, tokens := 0.0, burst
	for i, at := range o.sent {
		if i > 0 {
			tokens = min(burst, tokens+rate*at.Sub(o.sent[i-1]).Seconds())
		}
		if tokens >= 1 {
			tokens--
			allowed++
		}
	}
	got := float64(o.admitted.Load())
	t.Logf("admitted %v; one bucket would have admitted %v of the %d requests, and %.0f at the limit's rate over %v; %d limited, %d failed",
		got, allowed, len(o.sent), rate*took.Seconds()+burst, took.Round(time.Millisecond), o.limited.Load(), o.failed.Load())
	if got > 1.05*allowed {
		t.Errorf("admitted %v, one bucket %.0f: more than 5%% over", got, allowed)
	}
	if got < 0.85*allowed {
		t.Errorf("admitted %v, one bucket %.0f: more than 15%% under", got, allowed)
	}
	if o.limited.Load() == 0 {
		t.Error("nothing was limited: the load did not exceed the limit")
	}
}

// TestRateLimitHoldsAcrossEdges: a 50/s limit for one address, with its load spread over
// three edges for 5 s, admits 50/s plus the burst over the fleet, not per edge.
func TestRateLimitHoldsAcrossEdges(t *testing.T) {
	c := limitedCluster(t, nil, "ip:50/s")
	var o offered
	took := o.run(c, 3, 100, 5*time.Second, func(int) bool { return true })
	checkAdmitted(t, &o, took, 50, 50)
}

// TestRateLimitHoldsWhenAnEdgeDies: the same with one edge killed halfway; its clients move
// to the others, which take over its share of the limit.
func TestRateLimitHoldsWhenAnEdgeDies(t *testing.T) {
	c := limitedCluster(t, nil, "ip:50/s")
	var dead atomic.Bool
	time.AfterFunc(2500*time.Millisecond, func() {
		dead.Store(true)
		c.KillEdge(2)
	})
	var o offered
	took := o.run(c, 3, 100, 5*time.Second, func(i int) bool { return i != 2 || !dead.Load() })
	checkAdmitted(t, &o, took, 50, 50)
}

// TestRateLimitAnswers: the exact answer over a limit, the headers under it (with
// RateLimitHeaders), groups, API keys, and a reload.
func TestRateLimitAnswers(t *testing.T) {
	c := limitedClusterWith(t, []string{"test"}, func(c *edge.Config) { c.RateLimitHeaders = true }, "ip:3/m", "key:2/m:2@writes")
	url := c.Edge(0) + "/v1/collections/notes/docs/"
	for i := range 3 {
		r := clustertest.Do(t, "GET", url+"absent", nil, nil)
		if r.Status != 404 || r.Header["Ratelimit-Policy"] != `"ip-minute";q=3;w=60` || !strings.HasPrefix(r.Header["Ratelimit"], `"ip-minute";r=`+strconv.Itoa(2-i)+";t=") {
			t.Fatalf("request %d: %d, RateLimit-Policy %q, RateLimit %q", i, r.Status, r.Header["Ratelimit-Policy"], r.Header["Ratelimit"])
		}
	}
	r := clustertest.Do(t, "GET", url+"absent", nil, nil)
	var p problemBody
	if err := json.Unmarshal(r.Body, &p); err != nil || r.Status != 429 || p.Code != "rate_limited" || p.Status != 429 {
		t.Fatalf("over the limit: %d %s", r.Status, r.Body)
	}
	retry, err := strconv.Atoi(r.Header["Retry-After"])
	if err != nil || retry < 1 || retry > 20 {
		t.Errorf("Retry-After %q: 3/m refills a request in 20 s", r.Header["Retry-After"])
	}
	want := map[string]string{
		"Content-Type":     "application/problem+json",
		"Cache-Control":    "no-store",
		"Ratelimit-Policy": `"ip-minute";q=3;w=60`,
		"Ratelimit":        `"ip-minute";r=0;t=` + r.Header["Retry-After"],
	}
	for k, v := range want {
		if r.Header[k] != v {
			t.Errorf("429 %s: %q, want %q", k, r.Header[k], v)
		}
	}
	// Health checks are never limited.
	if r := clustertest.Do(t, "GET", c.Edge(0)+"/readyz", nil, nil); r.Status != 200 || r.Header["Ratelimit"] != "" {
		t.Errorf("readyz while limited: %d %q", r.Status, r.Header["Ratelimit"])
	}

	// A reload: the address limit goes, an API-key limit of writes stays.
	if err := c.SetRateLimits([]ratelimit.Policy{mustPolicy(t, "key:2/m:2@writes")}); err != nil {
		t.Fatal(err)
	}
	if r := clustertest.Do(t, "GET", url+"absent", nil, nil); r.Status != 404 || r.Header["Ratelimit"] != "" {
		t.Fatalf("after the reload: %d %q", r.Status, r.Header["Ratelimit"])
	}
	put := func(key, id string) int {
		return clustertest.Do(t, "PUT", url+id, map[string]string{"X-Api-Key": key}, []byte(`{"n":1}`)).Status
	}
	for i := range 2 {
		if st := put("app-1", "k"+strconv.Itoa(i)); st != 201 {
			t.Fatalf("write %d of app-1: %d", i, st)
		}
	}
	if st := put("app-1", "k9"); st != 429 {
		t.Fatalf("third write of app-1: %d, want 429", st)
	}
	if st := put("app-2", "k9"); st != 201 {
		t.Fatalf("another key's write: %d", st)
	}
	if r := clustertest.Do(t, "GET", url+"k0", map[string]string{"X-Api-Key": "app-1"}, nil); r.Status != 200 {
		t.Fatalf("a read with the limited key (writes only): %d", r.Status)
	}
	if st := clustertest.Do(t, "PUT", url+"anon", nil, []byte(`{}`)).Status; st != 201 {
		t.Fatalf("a write without a key: %d", st)
	}
}

// TestRateLimitHeadersOnlyWhenLimited: by default an admitted request carries no RateLimit
// headers, and a refused one carries them all.
func TestRateLimitHeadersOnlyWhenLimited(t *testing.T) {
	c := limitedCluster(t, []string{"test"}, "ip:1/m")
	url := c.Edge(0) + "/v1/collections/notes/docs/absent"
	if r := clustertest.Do(t, "GET", url, nil, nil); r.Status != 404 || r.Header["Ratelimit"] != "" || r.Header["Ratelimit-Policy"] != "" {
		t.Fatalf("admitted: %d, RateLimit %q, RateLimit-Policy %q", r.Status, r.Header["Ratelimit"], r.Header["Ratelimit-Policy"])
	}
	if r := clustertest.Do(t, "GET", url, nil, nil); r.Status != 429 || r.Header["Ratelimit"] == "" || r.Header["Ratelimit-Policy"] != `"ip-minute";q=1;w=60` || r.Header["Retry-After"] == "" {
		t.Fatalf("refused: %d, RateLimit %q, RateLimit-Policy %q, Retry-After %q", r.Status, r.Header["Ratelimit"], r.Header["Ratelimit-Policy"], r.Header["Retry-After"])
	}
	// Refusals are in the request metrics, and counted as such.
	if n := c.Metric("perch_edge_requests_total", "code")["429"]; n != 1 {
		t.Errorf("%v requests answered 429 in perch_edge_requests_total, want 1", n)
	}
	if n := c.Metric("perch_edge_rate_limited_total")[""]; n != 1 {
		t.Errorf("perch_edge_rate_limited_total %v, want 1", n)
	}
}

func mustPolicy(t *testing.T, s string) ratelimit.Policy {
	t.Helper()
	p, err := ratelimit.ParsePolicy(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
