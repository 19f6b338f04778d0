package gossip

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"
)

// convergeTimeout bounds every wait for the cluster to agree on something.
const convergeTimeout = 5 * time.Second

// testConfig is LocalConfig with a Meta derived from id. Set
// PERCH_TEST_GOSSIP_LOG=1 to see the logs on stderr.
func testConfig(tb testing.TB, id string) Config {
	tb.Helper()
	cfg := LocalConfig()
	cfg.Meta = Meta{ID: id, Region: "region-" + id, URL: "http://" + id + ".test"}
	if os.Getenv("PERCH_TEST_GOSSIP_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return cfg
}

// startMember starts a member and shuts it down when the test ends.
func startMember(tb testing.TB, cfg Config) *Gossip {
	tb.Helper()
	g, err := New(cfg)
	if err != nil {
		tb.Fatalf("New(%s): %v", cfg.Meta.ID, err)
	}
	tb.Cleanup(func() {
		if err := g.Shutdown(); err != nil {
			tb.Errorf("Shutdown(%s): %v", cfg.Meta.ID, err)
		}
	})
	return g
}

// startCluster starts n members m0..m(n-1), each joining m0, and waits
// until every one sees all n.
func startCluster(tb testing.TB, n int) []*Gossip {
	tb.Helper()
	gs := make([]*Gossip, n)
	for i := range n {
		cfg := testConfig(tb, "m"+strconv.Itoa(i))
		if i > 0 {
			cfg.Join = []string{gs[0].LocalAddr()}
		}
		gs[i] = startMember(tb, cfg)
	}
	waitFor(tb, convergeTimeout, "every member sees all", func() error {
		for _, g := range gs {
			if got := len(g.Members()); got != n {
				return fmt.Errorf("%s sees %d members, want %d", g.Self().ID, got, n)
			}
		}
		return nil
	})
	return gs
}

// waitFor polls cond until it returns nil, failing the test with cond's
// last error once timeout has passed.
func waitFor(tb testing.TB, timeout time.Duration, what string, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: not reached within %v: %v", what, timeout, err)
		}
		time.Sleep(5 * time.Millisecond) // polling period, not a wait for convergence
	}
}

func findMember(ms []Member, id string) (Member, bool) {
	for _, m := range ms {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

// freePort returns a port free for both TCP and UDP on 127.0.0.1 when
// called; nothing holds it afterwards.
func freePort(tb testing.TB) int {
	tb.Helper()
	for range 10 {
		tl, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("listen tcp: %v", err)
		}
		port := tl.Addr().(*net.TCPAddr).Port
		ul, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		tl.Close()
		if err == nil {
			ul.Close()
			return port
		}
	}
	tb.Fatalf("no port free for both TCP and UDP")
	return 0
}

// recorder is a Watcher that counts calls and keeps what Members returned
// at each call. Its first call waits for attach: a Watcher may be called
// before New has returned the Gossip it would read.
type recorder struct {
	ready chan struct{} // closed by attach
	g     *Gossip       // set before ready is closed

	mu    sync.Mutex
	calls int
	seen  [][]Member
}

func newRecorder() *recorder { return &recorder{ready: make(chan struct{})} }

func (r *recorder) MembersChanged() {
	<-r.ready
	ms := r.g.Members()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	r.seen = append(r.seen, ms)
}

func (r *recorder) attach(g *Gossip) {
	r.g = g
	close(r.ready)
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// sawSince reports whether a call after the first from calls saw a member
// list satisfying cond.
func (r *recorder) sawSince(from int, cond func([]Member) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ms := range r.seen[from:] {
		if cond(ms) {
			return true
		}
	}
	return false
}

// sawMember reports whether some call saw member id with the given health.
func (r *recorder) sawMember(id string, healthy bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ms := range r.seen {
		if m, ok := findMember(ms, id); ok && m.Healthy == healthy {
			return true
		}
	}
	return false
}
