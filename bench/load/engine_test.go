package load_test

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/bench/load"
)

// fakeEdge is a fasthttp server on a loopback port that answers the document reads and
// writes of the API from a map, and calls hook (when set) before answering each request of
// the run (not of the seed).
type fakeEdge struct {
	url  string
	mu   sync.Mutex
	docs map[string]int64
	hook func(ctx *fasthttp.RequestCtx)
}

func startFakeEdge(t *testing.T, hook func(ctx *fasthttp.RequestCtx)) *fakeEdge {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeEdge{url: "http://" + ln.Addr().String(), docs: map[string]int64{}, hook: hook}
	srv := &fasthttp.Server{Handler: f.serve, Concurrency: 100000}
	go srv.Serve(ln) //nolint:errcheck // ends with Shutdown
	t.Cleanup(func() { _ = srv.Shutdown() })
	return f
}

func (f *fakeEdge) serve(ctx *fasthttp.RequestCtx) {
	if f.hook != nil && string(ctx.UserAgent()) != "perch-bench-seed" {
		f.hook(ctx)
	}
	path := string(ctx.Path())
	id := path[strings.LastIndexByte(path, '/')+1:]
	ctx.SetContentType("application/json")
	f.mu.Lock()
	defer f.mu.Unlock()
	switch string(ctx.Method()) {
	case "PUT":
		f.docs[id]++
		if f.docs[id] == 1 {
			ctx.SetStatusCode(201)
		}
		fmt.Fprintf(ctx, `{"id":%q,"version":%d}`, id, f.docs[id])
	case "GET":
		v, ok := f.docs[id]
		if !ok {
			ctx.SetStatusCode(404)
			return
		}
		fmt.Fprintf(ctx, `{"id":%q,"version":%d,"data":{"pad":"%s"}}`, id, v, strings.Repeat("x", 900))
	default:
		ctx.SetStatusCode(405)
	}
}

func readHot(t *testing.T, docs int) *load.Scenario {
	t.Helper()
	s, err := load.Builtin("read-hot")
	if err != nil {
		t.Fatal(err)
	}
	s.Docs = docs
	return s
}

// TestStallIsNotHidden runs 400 reads/s for 3 s against a server that stalls once for
// 500 ms, as a GC pause or a lock would: every request waits until the stall ends. The
// sends due during the stall (a sixth of them) wait for it too, so the p99 must show it,
// although only the 8 workers' requests were at the server when it stalled: a load
// generator that measured from the actual send (coordinated omission) would report a p99
// of a few milliseconds.
func TestStallIsNotHidden(t *testing.T) {
	var n atomic.Int64
	var stallMu sync.Mutex
	var stallEnd time.Time
	edge := startFakeEdge(t, func(ctx *fasthttp.RequestCtx) {
		if n.Add(1) == 200 {
			stallMu.Lock()
			stallEnd = time.Now().Add(500 * time.Millisecond)
			stallMu.Unlock()
		}
		stallMu.Lock()
		wait := time.Until(stallEnd)
		stallMu.Unlock()
		if wait > 0 {
			time.Sleep(wait)
		}
	})
	rep, err := load.Run(t.Context(), load.Config{
		Targets: []string{edge.url}, Scenario: readHot(t, 20), Rate: 400, Duration: 3 * time.Second, Workers: 8,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms; late %d, dropped %d, send delay p99 %.2f ms",
		rep.P50, rep.P90, rep.P99, rep.Max, rep.Late, rep.Dropped, rep.SendDelay.P99)
	if rep.Scheduled != 1200 || rep.Requests != 1200 || rep.Errors != 0 || rep.Dropped != 0 {
		t.Fatalf("%d scheduled, %d requests, %d errors, %d dropped: want 1200, 1200, 0, 0", rep.Scheduled, rep.Requests, rep.Errors, rep.Dropped)
	}
	if rep.P99 < 400 || rep.Max < 450 {
		t.Errorf("p99 %.1f ms, max %.1f ms: the 500 ms stall is hidden (coordinated omission)", rep.P99, rep.Max)
	}
	if rep.P90 < 100 {
		t.Errorf("p90 %.1f ms: a sixth of the sends were due during the stall", rep.P90)
	}
	if rep.P50 > 100 {
		t.Errorf("p50 %.1f ms: most sends were not near the stall", rep.P50)
	}
	if rep.Late < 100 {
		t.Errorf("%d late sends: the sends due during the stall found no free worker", rep.Late)
	}
	if rep.SendDelay.Max < 400 {
		t.Errorf("send delay max %.1f ms: the late sends waited for the stall", rep.SendDelay.Max)
	}
	// The interval of the stall shows it too.
	worst := 0.0
	for _, iv := range rep.Intervals {
		worst = max(worst, iv.Max)
	}
	if worst < 450 {
		t.Errorf("no interval shows the stall: %+v", rep.Intervals)
	}
}

// TestAchievedRateWhenTargetCannotKeepUp asks for 600/s of a server that serves one
// request at a time in 5 ms (200/s at best): the report must say it achieved about that,
// with the sends it could not make dropped and the others late, not claim the target.
func TestAchievedRateWhenTargetCannotKeepUp(t *testing.T) {
	var one sync.Mutex
	edge := startFakeEdge(t, func(ctx *fasthttp.RequestCtx) {
		one.Lock()
		time.Sleep(5 * time.Millisecond)
		one.Unlock()
	})
	rep, err := load.Run(t.Context(), load.Config{
		Targets: []string{edge.url}, Scenario: readHot(t, 20), Rate: 600, Duration: 2 * time.Second, Workers: 16,
		MaxBacklog: 100,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("target %.0f/s, achieved %.1f/s over %.2f s: %d requests, %d late, %d dropped (%d at the end), p99 %.0f ms",
		rep.TargetRate, rep.AchievedRate, rep.WallSeconds, rep.Requests, rep.Late, rep.Dropped, rep.DroppedAtEnd, rep.P99)
	if rep.TargetRate != 600 || rep.Scheduled != 1200 {
		t.Fatalf("target %.0f/s, %d scheduled", rep.TargetRate, rep.Scheduled)
	}
	if rep.AchievedRate > 230 || rep.AchievedRate < 50 {
		t.Errorf("achieved %.1f/s of a server that can do 200/s at best", rep.AchievedRate)
	}
	if got := float64(rep.Requests) / rep.WallSeconds; got < rep.AchievedRate*0.99 || got > rep.AchievedRate*1.01 {
		t.Errorf("achieved %.1f/s is not requests ÷ wall time (%.1f/s)", rep.AchievedRate, got)
	}
	if rep.Dropped < 500 || rep.Late == 0 || rep.Requests+rep.Dropped != rep.Scheduled {
		t.Errorf("%d dropped, %d late, %d requests of %d scheduled", rep.Dropped, rep.Late, rep.Requests, rep.Scheduled)
	}
	if !strings.Contains(strings.Join(rep.Notes, " "), "could not keep up") {
		t.Errorf("notes %q do not say the target could not keep up", rep.Notes)
	}
}

// TestNewConnections: in new-connection mode every request opens a connection of its own.
func TestNewConnections(t *testing.T) {
	edge := startFakeEdge(t, nil)
	rep, err := load.Run(t.Context(), load.Config{
		Targets: []string{edge.url}, Scenario: readHot(t, 10), Rate: 200, Duration: 500 * time.Millisecond, Workers: 4,
		NewConnections: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "new-connection" || rep.Errors != 0 || rep.Connections < rep.Requests || rep.Requests != 100 {
		t.Fatalf("%s: %d connections for %d requests, errors %v %v", rep.Mode, rep.Connections, rep.Requests, rep.ErrorsByStatus, rep.ErrorSamples)
	}
	// Keep-alive reuses them.
	rep, err = load.Run(t.Context(), load.Config{
		Targets: []string{edge.url}, Scenario: readHot(t, 10), Rate: 200, Duration: 500 * time.Millisecond, Workers: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "keep-alive" || rep.Connections > 4 {
		t.Fatalf("%s: %d connections, at most one per worker", rep.Mode, rep.Connections)
	}
}

// TestCapacitySearch searches the capacity of a server that serves one request at a time
// in 2 ms (500/s at best): the highest rate that held is below that, at least the first step.
func TestCapacitySearch(t *testing.T) {
	var one sync.Mutex
	edge := startFakeEdge(t, func(ctx *fasthttp.RequestCtx) {
		one.Lock()
		time.Sleep(2 * time.Millisecond)
		one.Unlock()
	})
	th, err := load.ParseThreshold("p99<100ms")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := load.Run(t.Context(), load.Config{
		Targets: []string{edge.url}, Scenario: readHot(t, 10), Rate: 50, Duration: 500 * time.Millisecond, Workers: 8,
		MaxBacklog: 50, Drain: 200 * time.Millisecond, Thresholds: []load.Threshold{th},
		Search: &load.Search{MaxSteps: 6, Pause: 50 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := rep.Capacity
	t.Logf("capacity %.0f/s: %+v", c.Rate, c.Steps)
	if c == nil || len(c.Steps) < 3 || c.Rate < 50 || c.Rate > 500 {
		t.Fatalf("capacity %+v", c)
	}
	held, broke := false, false
	for _, s := range c.Steps {
		held = held || s.Held
		broke = broke || !s.Held && len(s.Broken) > 0
	}
	if !held || !broke || !rep.Passed || rep.TargetRate != c.Rate {
		t.Errorf("held %v, broke %v, passed %v, report of the %.0f/s step for capacity %.0f/s", held, broke, rep.Passed, rep.TargetRate, c.Rate)
	}
	if !strings.Contains(rep.Text(), "the highest rate that held") {
		t.Errorf("summary:\n%s", rep.Text())
	}
}
