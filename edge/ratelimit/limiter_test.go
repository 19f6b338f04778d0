package ratelimit

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// clock is a controllable clock for the tests of the algorithm.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func mustPolicies(tb testing.TB, specs ...string) []Policy {
	tb.Helper()
	ps := make([]Policy, len(specs))
	for i, s := range specs {
		p, err := ParsePolicy(s)
		if err != nil {
			tb.Fatal(err)
		}
		ps[i] = p
	}
	return ps
}

// newLimiter returns a limiter on a controllable clock, without transport.
func newLimiter(tb testing.TB, c *clock, specs ...string) *Limiter {
	tb.Helper()
	l, err := New(Config{Policies: mustPolicies(tb, specs...), Now: c.Now})
	if err != nil {
		tb.Fatal(err)
	}
	return l
}

// trackedKeys is the number of keys tracked over all policies.
func trackedKeys(l *Limiter) int {
	n := 0
	for _, st := range l.set.Load().list {
		n += int(st.keys.Load())
	}
	return n
}

func ip(s string) Keys { return Keys{IP: []byte(s)} }

// admit calls Allow n times and counts the allowed requests.
func admit(l *Limiter, group string, k Keys, n int) int {
	ok := 0
	for range n {
		if l.Allow(group, k).Allowed {
			ok++
		}
	}
	return ok
}

func TestRateAndBurst(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, "ip:10/s:5")
	a := ip("192.0.2.1")
	if n := admit(l, "", a, 100); n != 5 {
		t.Fatalf("admitted %d at once, want the burst of 5", n)
	}
	d := l.Allow("", a)
	if d.Allowed || d.RetryAfter != 100*time.Millisecond || d.RetryAfterSeconds() != 1 {
		t.Fatalf("over the burst: %+v", d)
	}
	c.Advance(99 * time.Millisecond)
	if l.Allow("", a).Allowed {
		t.Fatal("admitted before a token was due")
	}
	c.Advance(time.Millisecond)
	if !l.Allow("", a).Allowed || l.Allow("", a).Allowed {
		t.Fatal("want exactly one token after 100ms")
	}
	// A long pause fills the bucket to the burst, no more.
	c.Advance(time.Hour)
	if n := admit(l, "", a, 100); n != 5 {
		t.Fatalf("admitted %d after an hour, want 5", n)
	}
	// At a steady pace over the rate, exactly the rate gets through: 20 tries per second
	// for 10 seconds.
	ok := 0
	for range 200 {
		c.Advance(50 * time.Millisecond)
		ok += admit(l, "", a, 1)
	}
	if ok != 100 {
		t.Fatalf("admitted %d in 10s at 10/s, want 100", ok)
	}
	// Other keys have their own buckets.
	if n := admit(l, "", ip("192.0.2.2"), 100); n != 5 {
		t.Fatalf("another address: %d, want 5", n)
	}
}

func TestPerMinute(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, "key:6/m")
	k := Keys{APIKey: []byte("app-1")}
	if n := admit(l, "", k, 10); n != 6 {
		t.Fatalf("admitted %d, want 6", n)
	}
	d := l.Allow("", k)
	if d.Allowed || d.RetryAfter != 10*time.Second || d.RetryAfterSeconds() != 10 {
		t.Fatalf("%+v", d)
	}
	c.Advance(10 * time.Second)
	if n := admit(l, "", k, 10); n != 1 {
		t.Fatalf("admitted %d after 10s, want 1", n)
	}
}

func TestScopes(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, "ip:1/s", "user:2/s", "key:3/s")
	// Each scope counts by its own key; a scope without a key does not count.
	if n := admit(l, "", Keys{User: []byte("u1")}, 10); n != 2 {
		t.Fatalf("user only: %d, want 2", n)
	}
	if n := admit(l, "", Keys{APIKey: []byte("u1")}, 10); n != 3 {
		t.Fatalf("key only: %d, want 3 (the same bytes as a user are another key)", n)
	}
	if n := admit(l, "", Keys{}, 10); n != 10 {
		t.Fatalf("no keys: %d, want every request", n)
	}
	d := l.Allow("", Keys{})
	if _, ok := d.Policy(); ok || !d.Allowed || d.AppendPolicyHeader(nil) != nil || d.AppendRateLimitHeader(nil) != nil {
		t.Fatalf("a request no policy counts: %+v", d)
	}
}

func TestGroups(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, "ip:2/s@writes", "ip:5/s")
	a := ip("192.0.2.1")
	if n := admit(l, "writes", a, 10); n != 2 {
		t.Fatalf("writes: %d, want 2", n)
	}
	// The ungrouped policy counted the two writes (and not the refused ones).
	if n := admit(l, "reads", a, 10); n != 3 {
		t.Fatalf("reads: %d, want 5-2", n)
	}
	c.Advance(time.Second)
	if n := admit(l, "", a, 10); n != 5 {
		t.Fatalf("no group: %d, want 5 (only the ungrouped policy applies)", n)
	}
}

// TestAllOrNothing: a request refused by one policy takes no token from the others.
func TestAllOrNothing(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, "ip:3/s", "user:1/s")
	k := Keys{IP: []byte("192.0.2.1"), User: []byte("alice")}
	if !l.Allow("", k).Allowed {
		t.Fatal("first request refused")
	}
	for range 5 {
		d := l.Allow("", k)
		if d.Allowed || d.PolicyName() != "user" {
			t.Fatalf("want a refusal by the user policy: %+v", d)
		}
	}
	// The address still has the two tokens the refused requests did not take.
	if n := admit(l, "", ip("192.0.2.1"), 10); n != 2 {
		t.Fatalf("address: %d left, want 2", n)
	}
}

// TestMostRestrictive: the decision reports the policy with the fewest requests left, and
// among refusals the longest wait.
func TestMostRestrictive(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, "ip:100/s", "ip:3/s@writes", "key:10/m")
	k := Keys{IP: []byte("192.0.2.1"), APIKey: []byte("app")}
	d := l.Allow("writes", k)
	if !d.Allowed || d.PolicyName() != "ip-writes" || d.Remaining != 2 {
		t.Fatalf("%+v %s", d, d.PolicyName())
	}
	d = l.Allow("reads", k)
	if !d.Allowed || d.PolicyName() != "key-minute" || d.Remaining != 8 {
		t.Fatalf("%+v %s", d, d.PolicyName())
	}
	admit(l, "writes", Keys{IP: []byte("192.0.2.1")}, 2) // the write limit of the address: 0 left
	admit(l, "reads", Keys{APIKey: []byte("app")}, 8)    // the key's limit: 0 left
	// Both the write limit (a token every 333ms) and the key limit (every 6s) refuse: the
	// decision is the key's, the longer wait.
	d = l.Allow("writes", k)
	if d.Allowed || d.PolicyName() != "key-minute" || d.RetryAfterSeconds() != 6 {
		t.Fatalf("%+v %s", d, d.PolicyName())
	}
}

func TestHeaders(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, "ip:50/s", "ip:10/s:20@writes", "key:6000/m")
	check := func(d Decision, policy, limit string) {
		t.Helper()
		if got := string(d.AppendPolicyHeader(nil)); got != policy {
			t.Errorf("RateLimit-Policy %s, want %s", got, policy)
		}
		if got := string(d.AppendRateLimitHeader([]byte("x"))); got != "x"+limit {
			t.Errorf("RateLimit %s, want x%s", got, limit)
		}
	}
	a := ip("192.0.2.1")
	check(l.Allow("", a), `"ip";q=50;w=1`, `"ip";r=49;t=1`)
	admit(l, "", a, 49)
	d := l.Allow("", a)
	check(d, `"ip";q=50;w=1`, `"ip";r=0;t=1`)
	if d.RetryAfterSeconds() != 1 || d.Allowed {
		t.Fatalf("%+v", d)
	}
	w := ip("192.0.2.2")
	check(l.Allow("writes", w), `"ip-writes";q=10;w=1;perch-burst=20`, `"ip-writes";r=19;t=1`)
	admit(l, "writes", w, 19)
	check(l.Allow("writes", w), `"ip-writes";q=10;w=1;perch-burst=20`, `"ip-writes";r=0;t=1`)
	k := Keys{APIKey: []byte("app")}
	admit(l, "", k, 3000)
	// 3001 taken, 2999 left; the bucket is full again in 3001 × 10ms = 30.01s.
	check(l.Allow("", k), `"key-minute";q=6000;w=60`, `"key-minute";r=2999;t=31`)
}

func TestReloadKeepsState(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, "ip:5/s", "user:5/s")
	a := ip("192.0.2.1")
	admit(l, "", a, 5)
	u := Keys{User: []byte("bob")}
	admit(l, "", u, 5)
	// ip:5/s stays (written another way), user changes, key is new.
	if err := l.SetPolicies(mustPolicies(t, "ip:5/s:5", "user:6/s", "key:1/s")); err != nil {
		t.Fatal(err)
	}
	if n := admit(l, "", a, 10); n != 0 {
		t.Fatalf("the unchanged policy forgot its state: %d admitted", n)
	}
	if n := admit(l, "", u, 10); n != 6 {
		t.Fatalf("the changed policy: %d admitted, want a fresh burst of 6", n)
	}
	var got []string
	for _, p := range l.Policies() {
		got = append(got, p.String())
	}
	if strings.Join(got, " ") != "ip:5/s user:6/s key:1/s" {
		t.Fatalf("policies %q", got)
	}
	// A bad set is refused and the policies in force stay.
	if err := l.SetPolicies(mustPolicies(t, "ip:5/s", "ip:6/s")); err == nil {
		t.Fatal("two per-second ip limits on every route accepted")
	}
	if err := l.SetPolicies([]Policy{{Scope: "host", Limit: 1, Period: time.Second}}); err == nil {
		t.Fatal("bad scope accepted")
	}
	if len(l.Policies()) != 3 {
		t.Fatal("a refused reload changed the policies")
	}
	if err := l.SetPolicies(nil); err != nil {
		t.Fatal(err)
	}
	if n := admit(l, "", a, 10); n != 10 {
		t.Fatalf("no policies: %d admitted", n)
	}
}

func TestLongKeys(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, "key:2/s")
	long1 := strings.Repeat("k", 200) + "1"
	long2 := strings.Repeat("k", 200) + "2"
	if n := admit(l, "", Keys{APIKey: []byte(long1)}, 5); n != 2 {
		t.Fatalf("first long key: %d", n)
	}
	if n := admit(l, "", Keys{APIKey: []byte(long2)}, 5); n != 2 {
		t.Fatalf("second long key shares a bucket with the first: %d", n)
	}
	st := l.set.Load().list[0]
	for i := range st.shards {
		for k := range st.shards[i].m {
			if len(k) > maxKeyLen {
				t.Fatalf("kept a key of %d bytes", len(k))
			}
		}
	}
}

func TestSweep(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, "ip:10/s", "user:1/m")
	for i := range 100 {
		l.Allow("", Keys{IP: []byte{byte(i)}, User: []byte{byte(i)}})
	}
	busy := Keys{IP: []byte("busy")}
	if n := trackedKeys(l); n != 200 {
		t.Fatalf("%d keys, want 200", n)
	}
	// The ip keys are forgotten once their bucket would be full again (after 1s, noticed
	// within the second the sweep takes), the user keys after a minute; a key in use stays.
	for range 50 {
		c.Advance(l.interval)
		l.Allow("", busy)
		l.tick()
	}
	if n := trackedKeys(l); n != 101 {
		t.Fatalf("%d keys after 2.5s, want the 100 user keys and the busy one", n)
	}
	for range 62 * 20 {
		c.Advance(l.interval)
		l.Allow("", busy)
		l.tick()
	}
	if n := trackedKeys(l); n != 1 {
		t.Fatalf("%d keys after a minute, want the busy one", n)
	}
	// A forgotten key starts again with a full bucket.
	if n := admit(l, "", Keys{IP: []byte{7}}, 20); n != 10 {
		t.Fatalf("a forgotten key: %d admitted, want 10", n)
	}
}

func TestMaxKeys(t *testing.T) {
	c := newClock()
	l, err := New(Config{Policies: mustPolicies(t, "ip:1/s"), Now: c.Now, MaxKeys: 2 * numShards})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := l.Collectors().Register(reg); err != nil {
		t.Fatal(err)
	}
	for i := range 10_000 {
		c.Advance(time.Microsecond)
		l.Allow("", Keys{IP: []byte{byte(i), byte(i >> 8)}})
	}
	st := l.set.Load().list[0]
	if n := st.keys.Load(); n > 2*numShards {
		t.Fatalf("%d keys tracked, more than MaxKeys", n)
	}
	if n := gather(t, reg)["perch_ratelimit_evictions_total"]; n < 10_000-2*numShards {
		t.Fatalf("%v evictions", n)
	}
	// The most recent keys are the ones kept.
	if n := admit(l, "", Keys{IP: []byte{byte(9999 & 0xff), byte(9999 >> 8)}}, 3); n != 0 {
		t.Fatalf("the last key was forgotten: %d admitted", n)
	}
	if n := gather(t, reg)["perch_ratelimit_keys"]; n != 2*numShards {
		t.Fatalf("perch_ratelimit_keys %v, want %d", n, 2*numShards)
	}
}

func TestConfig(t *testing.T) {
	for _, cfg := range []Config{
		{SyncInterval: 101 * time.Millisecond},
		{SyncInterval: time.Millisecond},
		{MaxKeys: -1},
		{NodeID: strings.Repeat("n", 200)},
		{Policies: []Policy{{Scope: ScopeIP, Limit: 0, Period: time.Second}}},
		{Policies: []Policy{{Scope: ScopeIP, Limit: 1, Period: time.Hour}}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
	l, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if l.interval != DefaultSyncInterval || l.maxKeys != DefaultMaxKeys || !strings.HasPrefix(l.nodeID, "limiter-") {
		t.Fatalf("defaults: %v %v %q", l.interval, l.maxKeys, l.nodeID)
	}
}

func TestMetrics(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, "ip:2/s", "ip:1/s@writes")
	reg := prometheus.NewRegistry()
	if err := l.Collectors().Register(reg); err != nil {
		t.Fatal(err)
	}
	admit(l, "writes", ip("a"), 3)
	m := gather(t, reg)
	for series, want := range map[string]float64{
		`perch_ratelimit_decisions_total{policy="ip",result="allowed"}`:        3,
		`perch_ratelimit_decisions_total{policy="ip",result="limited"}`:        0,
		`perch_ratelimit_decisions_total{policy="ip-writes",result="allowed"}`: 1,
		`perch_ratelimit_decisions_total{policy="ip-writes",result="limited"}`: 2,
		`perch_ratelimit_keys`:  2,
		`perch_ratelimit_peers`: 0,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}
	// A reload drops the series of a removed policy and keeps those of a changed one.
	if err := l.SetPolicies(mustPolicies(t, "ip:3/s")); err != nil {
		t.Fatal(err)
	}
	n := 0
	for series := range gather(t, reg) {
		if strings.HasPrefix(series, "perch_ratelimit_decisions_total") {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d decision series after the reload, want 2", n)
	}
}

// gather returns every series of reg by its text name, e.g. `name{a="1",b="2"}`.
func gather(tb testing.TB, reg *prometheus.Registry) map[string]float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			if len(m.GetLabel()) > 0 {
				var labels []string
				for _, lp := range m.GetLabel() {
					labels = append(labels, lp.GetName()+`="`+lp.GetValue()+`"`)
				}
				name += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[name] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[name] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}
