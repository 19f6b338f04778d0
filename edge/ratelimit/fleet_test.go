package ratelimit

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/perchhq/perch/internal/natstest"
)

// member is one limiter of a fleet, on its own NATS connection, as in its own edge.
type member struct {
	l      *Limiter
	nc     *nats.Conn
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// stop ends the member's Run and waits for it.
func (m *member) stop() error {
	m.once.Do(func() {
		m.cancel()
		m.err = <-m.done
	})
	return m.err
}

// startFleet starts n limiters enforcing specs over one real NATS server and waits until each
// counts the others.
func startFleet(t *testing.T, n int, specs ...string) []*member {
	t.Helper()
	srv := natstest.Start(t)
	fleet := make([]*member, n)
	for i := range fleet {
		nc := natstest.Connect(t, srv.URL())
		logs := &syncBuffer{}
		l, err := New(Config{
			NodeID:    fmt.Sprintf("edge-%d", i),
			Policies:  mustPolicies(t, specs...),
			Transport: NewNATSTransport(nc, ""),
			Logger:    slog.New(slog.NewTextHandler(logs, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		m := &member{l: l, nc: nc, logs: logs, cancel: cancel, done: make(chan error, 1)}
		go func() { m.done <- l.Run(ctx) }()
		t.Cleanup(func() { _ = m.stop() })
		fleet[i] = m
	}
	waitFor(t, 10*time.Second, func() bool {
		for _, m := range fleet {
			for _, st := range m.l.set.Load().list {
				if st.live.Load() != int32(n) {
					return false
				}
			}
		}
		return true
	})
	return fleet
}

// load sends requests for k to l from one goroutine, about one every 2ms, until stop is
// closed, and counts the allowed ones. Each request's time goes into sent, for reference.
func load(wg *sync.WaitGroup, l *Limiter, k Keys, admitted *atomic.Int64, stop <-chan struct{}) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			sentAt.add(time.Now())
			if l.Allow("", k).Allowed {
				admitted.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
}

// requests records when the load goroutines sent their requests. A machine starved of CPU by
// other tests runs them less often than their 2ms pace, and may send fewer requests than the
// rate; what one bucket would admit is then computed from the requests actually sent
// (reference), not from the rate alone. The fleet tests do not run in parallel.
type requests struct {
	mu sync.Mutex
	at []time.Time
}

var sentAt requests

func (r *requests) add(t time.Time) {
	r.mu.Lock()
	r.at = append(r.at, t)
	r.mu.Unlock()
}

// reset forgets the requests of an earlier test.
func (r *requests) reset() {
	r.mu.Lock()
	r.at = nil
	r.mu.Unlock()
}

// reference returns how many of the requests sent one token bucket of the fleet's rate and
// burst, full at the first request, would admit; and how many of those after from.
func (r *requests) reference(burst float64, from time.Time) (all, after int64) {
	r.mu.Lock()
	at := slices.Clone(r.at)
	r.mu.Unlock()
	slices.SortFunc(at, func(a, b time.Time) int { return a.Compare(b) })
	tokens := burst
	for i, t := range at {
		if i > 0 {
			tokens = min(burst, tokens+fleetRate*t.Sub(at[i-1]).Seconds())
		}
		if tokens >= 1 {
			tokens--
			all++
			if !t.Before(from) {
				after++
			}
		}
	}
	return all, after
}

const (
	fleetRate  = 50
	fleetBurst = 50
	fleetRun   = 5 * time.Second
)

// checkAdmitted compares what the fleet admitted with what one bucket would have: no more than
// 5% over the rate times the time plus the burst, the bound a limit must hold; no more than 15%
// under what one bucket would have admitted of the requests sent (the rate times the time plus
// the burst, when the load keeps up). Run alone these tests land within 2%; on a machine
// starved of CPU by other tests the limiters hear each other late, shares swing, and the
// tokens a shrinking share cannot hold are dropped, which costs admissions, not safety.
func checkAdmitted(t *testing.T, admitted int64, elapsed time.Duration, burst float64) {
	t.Helper()
	allowed := fleetRate*elapsed.Seconds() + burst
	ref, _ := sentAt.reference(burst, time.Time{})
	over := (float64(admitted) - allowed) / allowed
	under := (float64(admitted) - float64(ref)) / float64(max(ref, 1))
	t.Logf("admitted %d in %v, allowed %.1f (%+.1f%%); one bucket would have admitted %d of the requests sent (%+.1f%%)",
		admitted, elapsed.Round(time.Millisecond), allowed, 100*over, ref, 100*under)
	if over > 0.05 {
		t.Fatalf("admitted %d, allowed %.1f: more than 5%% over", admitted, allowed)
	}
	if under < -0.15 {
		t.Fatalf("admitted %d, one bucket would have admitted %d of the same requests: more than 15%% under", admitted, ref)
	}
}

// TestFleetSpread: one address's requests spread over three edges, well over the limit,
// from six goroutines: the fleet admits what one bucket would.
func TestFleetSpread(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 5s")
	}
	fleet := startFleet(t, 3, fmt.Sprintf("ip:%d/s", fleetRate))
	sentAt.reset()
	k := ip("198.51.100.7")
	var (
		wg       sync.WaitGroup
		admitted [3]atomic.Int64
		stop     = make(chan struct{})
	)
	start := time.Now()
	for i, m := range fleet {
		load(&wg, m.l, k, &admitted[i], stop)
		load(&wg, m.l, k, &admitted[i], stop)
	}
	time.Sleep(fleetRun)
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	total := admitted[0].Load() + admitted[1].Load() + admitted[2].Load()
	t.Logf("per edge: %d %d %d", admitted[0].Load(), admitted[1].Load(), admitted[2].Load())
	checkAdmitted(t, total, elapsed, fleetBurst)
}

// TestFleetEdgeLost: as TestFleetSpread, but one edge dies halfway (its NATS connection
// closes, it says no goodbye): the other two take over its share.
func TestFleetEdgeLost(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 5s")
	}
	fleet := startFleet(t, 3, fmt.Sprintf("ip:%d/s", fleetRate))
	sentAt.reset()
	k := ip("198.51.100.7")
	var (
		wg, lostWG sync.WaitGroup
		admitted   [3]atomic.Int64
		stop       = make(chan struct{})
		stopLost   = make(chan struct{})
	)
	start := time.Now()
	for i, m := range fleet[:2] {
		load(&wg, m.l, k, &admitted[i], stop)
		load(&wg, m.l, k, &admitted[i], stop)
	}
	load(&lostWG, fleet[2].l, k, &admitted[2], stopLost)
	load(&lostWG, fleet[2].l, k, &admitted[2], stopLost)
	time.Sleep(fleetRun / 2)
	close(stopLost)
	lostWG.Wait()
	fleet[2].nc.Close()
	lostAt := time.Now()
	waitFor(t, 2*time.Second, func() bool {
		return fleet[0].l.live.Load() == 1 && fleet[1].l.live.Load() == 1
	})
	t.Logf("the others dropped the lost edge after %v", time.Since(lostAt).Round(time.Millisecond))
	time.Sleep(time.Until(start.Add(fleetRun)))
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	total := admitted[0].Load() + admitted[1].Load() + admitted[2].Load()
	t.Logf("per edge: %d %d %d (lost at %v)", admitted[0].Load(), admitted[1].Load(), admitted[2].Load(),
		lostAt.Sub(start).Round(time.Millisecond))
	checkAdmitted(t, total, elapsed, fleetBurst)
}

// TestFleetOneBusyEdge: all of a key's requests reach one edge of three: after its first
// syncs it admits the whole rate, and its burst.
func TestFleetOneBusyEdge(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 5s")
	}
	fleet := startFleet(t, 3, fmt.Sprintf("ip:%d/s", fleetRate))
	sentAt.reset()
	k := ip("198.51.100.7")
	var (
		wg       sync.WaitGroup
		admitted atomic.Int64
		stop     = make(chan struct{})
	)
	start := time.Now()
	for range 3 {
		load(&wg, fleet[0].l, k, &admitted, stop)
	}
	time.Sleep(time.Second)
	atOne, oneAt := admitted.Load(), time.Now()
	time.Sleep(fleetRun - time.Second)
	close(stop)
	wg.Wait()
	end := time.Now()
	total := admitted.Load()
	window := float64(total - atOne)
	want := fleetRate * end.Sub(oneAt).Seconds()
	_, ref := sentAt.reference(fleetBurst, oneAt)
	t.Logf("after the first second: %.0f admitted in %v, the rate allows %.1f (%+.1f%%), one bucket would have admitted %d of the requests sent",
		window, end.Sub(oneAt).Round(time.Millisecond), want, 100*(window-want)/want, ref)
	if off := (window - want) / want; off > 0.05 {
		t.Fatalf("the busy edge admitted %.0f after its first second, the rate allows %.1f: more than 5%% over", window, want)
	}
	if off := (window - float64(ref)) / float64(max(ref, 1)); off < -0.15 {
		t.Fatalf("the busy edge admitted %.0f after its first second, one bucket would have admitted %d of the same requests: more than 15%% under", window, ref)
	}
	checkAdmitted(t, total, end.Sub(start), fleetBurst)
	for _, m := range fleet[1:] {
		if n := trackedKeys(m.l); n != 1 {
			t.Errorf("an idle edge tracks %d keys, want the busy edge's one", n)
		}
	}
}

// TestFleetLeave: an edge that stops says goodbye, and the others count it out at once
// (rather than after its timeout).
func TestFleetLeave(t *testing.T) {
	fleet := startFleet(t, 3, "ip:50/s", "key:10/m@writes")
	if err := fleet[2].stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool {
		for _, m := range fleet[:2] {
			if !strings.Contains(m.logs.String(), `msg="rate limit peer left" peer=edge-2`) {
				return false
			}
			for _, st := range m.l.set.Load().list {
				if st.live.Load() != 2 {
					return false
				}
			}
		}
		return true
	})
	for _, m := range fleet[:2] {
		if strings.Contains(m.logs.String(), "peer lost") {
			t.Fatalf("the leaving edge timed out rather than said goodbye:\n%s", m.logs.String())
		}
	}
}

// TestFleetMove: a key's traffic moves from one edge to another halfway (a client that
// changes networks). The fleet admits no more than one bucket would (within 5%); the move
// costs some of the allowance, as README.md says: the old edge gives its share up as its
// demand average decays, over a few intervals.
func TestFleetMove(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 5s")
	}
	fleet := startFleet(t, 3, fmt.Sprintf("ip:%d/s", fleetRate))
	sentAt.reset()
	k := ip("198.51.100.7")
	var (
		wg, firstWG sync.WaitGroup
		admitted    [2]atomic.Int64
		stop        = make(chan struct{})
		stopFirst   = make(chan struct{})
	)
	start := time.Now()
	for range 3 {
		load(&firstWG, fleet[0].l, k, &admitted[0], stopFirst)
	}
	time.Sleep(fleetRun / 2)
	close(stopFirst)
	firstWG.Wait()
	movedAt := time.Now()
	for range 3 {
		load(&wg, fleet[1].l, k, &admitted[1], stop)
	}
	time.Sleep(time.Until(start.Add(fleetRun)))
	close(stop)
	wg.Wait()
	end := time.Now()
	before, after := admitted[0].Load(), admitted[1].Load()
	total := float64(before + after)
	allowed := fleetRate*end.Sub(start).Seconds() + fleetBurst
	afterAllowed := fleetRate * end.Sub(movedAt).Seconds()
	t.Logf("before the move: %d; after: %d of %.1f (the move cost %.1f, %.0fms of the rate); in all %.0f of %.1f (%+.1f%%)",
		before, after, afterAllowed, afterAllowed-float64(after), 1000*(afterAllowed-float64(after))/fleetRate,
		total, allowed, 100*(total-allowed)/allowed)
	if total > 1.05*allowed {
		t.Fatalf("admitted %.0f, more than 5%% over the %.1f allowed", total, allowed)
	}
	// Bound on the cost of the move: half a second of the rate.
	if lost := afterAllowed - float64(after); lost > fleetRate/2 {
		t.Fatalf("the move cost %.1f requests, more than half a second of the rate", lost)
	}
}

// TestFleetNearLimit: demand close to the limit, where the shares are noisiest (a few
// requests per interval per edge). Three edges send one key 25 requests/s each (75/s
// against 50/s) and another key 15/s each (45/s, under the limit) for 5s: the first gets
// what one bucket would give, within 5%, the second (nearly) every request.
func TestFleetNearLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 5s")
	}
	fleet := startFleet(t, 3, fmt.Sprintf("ip:%d/s", fleetRate))
	sentAt.reset()
	over, under := ip("198.51.100.7"), ip("198.51.100.8")
	var (
		wg                 sync.WaitGroup
		overSent, overOK   atomic.Int64
		underSent, underOK atomic.Int64
		stop               = make(chan struct{})
	)
	paced := func(l *Limiter, k Keys, every time.Duration, sent, ok *atomic.Int64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk := time.NewTicker(every)
			defer tk.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tk.C:
				}
				sent.Add(1)
				if k.IP[len(k.IP)-1] == over.IP[len(over.IP)-1] {
					sentAt.add(time.Now())
				}
				if l.Allow("", k).Allowed {
					ok.Add(1)
				}
			}
		}()
	}
	start := time.Now()
	for _, m := range fleet {
		paced(m.l, over, 40*time.Millisecond, &overSent, &overOK)
		paced(m.l, under, 66*time.Millisecond, &underSent, &underOK)
	}
	time.Sleep(fleetRun)
	close(stop)
	wg.Wait()
	elapsed := time.Since(start)
	t.Logf("over the limit: sent %d (%.0f/s)", overSent.Load(), float64(overSent.Load())/elapsed.Seconds())
	checkAdmitted(t, overOK.Load(), elapsed, fleetBurst)
	t.Logf("under the limit: sent %d (%.0f/s), admitted %d", underSent.Load(), float64(underSent.Load())/elapsed.Seconds(), underOK.Load())
	if refused := underSent.Load() - underOK.Load(); refused > underSent.Load()/100 {
		t.Fatalf("under the limit: %d of %d requests refused, more than 1%%", refused, underSent.Load())
	}
}

// TestFleetKeyMovesAtLowRate: a key of a low-rate policy (30 a minute) whose first request
// was on one edge is admitted at once on another that knew it only from the first's report:
// a client whose requests move to another edge is not refused until its share there grows,
// which at this rate would take most of a minute.
func TestFleetKeyMovesAtLowRate(t *testing.T) {
	fleet := startFleet(t, 2, "ip:30/m:10")
	k := ip("198.51.100.9")
	if !fleet[0].l.Allow("", k).Allowed {
		t.Fatal("the first request was refused")
	}
	waitFor(t, 5*time.Second, func() bool { return trackedKeys(fleet[1].l) == 1 })
	if d := fleet[1].l.Allow("", k); !d.Allowed {
		t.Fatalf("the key's first request on the other edge was refused: %+v", d)
	}
	// The grant is once per key and edge: its share of the burst (10/2), not more.
	admitted := 1
	for range 20 {
		if fleet[1].l.Allow("", k).Allowed {
			admitted++
		}
	}
	if admitted > 5 {
		t.Fatalf("the other edge admitted %d at once, more than its half of the burst (5)", admitted)
	}
}
