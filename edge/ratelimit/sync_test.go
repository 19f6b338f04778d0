package ratelimit

import (
	"bytes"
	"log/slog"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fakePeer builds the messages another limiter would publish; the tests hand them to
// Limiter.receive, the entry point of the transport.
type fakePeer struct {
	node string
	inc  uint64
	seq  uint64
}

// round returns the messages of the peer's next round: demand (requests per second) per
// policy and key.
func (p *fakePeer) round(tb testing.TB, ids []string, demand map[string]map[string]float64) [][]byte {
	tb.Helper()
	p.seq++
	var items []reportItem
	for i, id := range ids {
		keys := make([]string, 0, len(demand[id]))
		for k := range demand[id] {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			items = append(items, reportItem{policy: i, key: k, demand: demand[id][k]})
		}
	}
	var msgs [][]byte
	encodeUsage(nil, usageHeader{node: p.node, incarnation: p.inc, seq: p.seq, interval: DefaultSyncInterval},
		ids, items, maxMessageBytes, func(m []byte) { msgs = append(msgs, bytes.Clone(m)) })
	return msgs
}

func (p *fakePeer) send(tb testing.TB, l *Limiter, ids []string, demand map[string]map[string]float64) {
	tb.Helper()
	for _, m := range p.round(tb, ids, demand) {
		l.receive(m)
	}
}

func (p *fakePeer) leave(l *Limiter) {
	p.seq++
	encodeUsage(nil, usageHeader{node: p.node, incarnation: p.inc, seq: p.seq, interval: DefaultSyncInterval, leave: true},
		nil, nil, maxMessageBytes, func(m []byte) { l.receive(m) })
}

func TestEncodeDecode(t *testing.T) {
	ids := []string{"ip:50/s", "user:10/m@sync", "key:5/s"}
	var items []reportItem
	for i := range 3000 {
		items = append(items, reportItem{policy: i * 2 / 3000, key: strings.Repeat("k", i%64+1), demand: float64(i) / 7})
	}
	h := usageHeader{node: "edge-1", incarnation: 0xfeedface, seq: 42, interval: 50 * time.Millisecond}
	for _, limit := range []int{maxMessageBytes, 4096, 100} {
		var got []reportItem
		listed := map[string]bool{}
		msgs := 0
		encodeUsage(nil, h, ids, items, limit, func(m []byte) {
			msgs++
			if len(m) > limit && limit >= 200 {
				t.Fatalf("message of %d bytes over the limit of %d", len(m), limit)
			}
			u, err := decodeUsage(m)
			if err != nil {
				t.Fatal(err)
			}
			if u.node != h.node || u.incarnation != h.incarnation || u.seq != h.seq || u.interval != h.interval || u.leave {
				t.Fatalf("header %+v", u)
			}
			for _, s := range u.sections {
				pi := slices.Index(ids, string(s.policy))
				listed[string(s.policy)] = true
				for _, it := range s.items {
					got = append(got, reportItem{policy: pi, key: string(it.key), demand: float64(it.demand) / 1000})
				}
			}
		})
		if len(listed) != len(ids) {
			t.Fatalf("limit %d: policies listed %v", limit, listed)
		}
		if len(got) != len(items) {
			t.Fatalf("limit %d: %d items, want %d", limit, len(got), len(items))
		}
		for i := range items {
			w := items[i]
			if got[i].policy != w.policy || got[i].key != w.key || math.Abs(got[i].demand-max(w.demand, 0.001)) > 0.0006 {
				t.Fatalf("limit %d: item %d %+v, want %+v", limit, i, got[i], w)
			}
		}
		t.Logf("limit %d: %d items in %d messages", limit, len(items), msgs)
		if limit == maxMessageBytes && msgs != 2 {
			t.Fatalf("%d messages for %d items, want 2", msgs, len(items))
		}
	}
	// A heartbeat: no items, every policy listed; and a limiter without policies.
	n := 0
	encodeUsage(nil, h, ids, nil, maxMessageBytes, func(m []byte) {
		n++
		u, err := decodeUsage(m)
		if err != nil || len(u.sections) != 3 {
			t.Fatalf("%+v %v", u, err)
		}
	})
	encodeUsage(nil, h, nil, nil, maxMessageBytes, func(m []byte) {
		n++
		if u, err := decodeUsage(m); err != nil || len(u.sections) != 0 {
			t.Fatalf("%+v %v", u, err)
		}
	})
	if n != 2 {
		t.Fatalf("%d heartbeats", n)
	}
}

func validMessage() []byte {
	var msg []byte
	encodeUsage(nil, usageHeader{node: "n", incarnation: 1, seq: 1, interval: 50 * time.Millisecond},
		[]string{"ip:1/s"}, []reportItem{{key: "a", demand: 1}}, maxMessageBytes, func(m []byte) { msg = bytes.Clone(m) })
	return msg
}

func TestDecodeRejects(t *testing.T) {
	good := validMessage()
	if _, err := decodeUsage(good); err != nil {
		t.Fatal(err)
	}
	// Every proper prefix is truncated.
	for i := range len(good) {
		if _, err := decodeUsage(good[:i]); err == nil {
			t.Fatalf("prefix of %d bytes accepted", i)
		}
	}
	header := func(rest ...byte) []byte {
		return append([]byte{1, 0, 1, 'n', 1, 0, 0, 0, 0, 0, 0, 0, 1, 50}, rest...)
	}
	if _, err := decodeUsage(header(0)); err != nil {
		t.Fatalf("header of the table: %v", err)
	}
	for name, msg := range map[string][]byte{
		"version":         {2, 0},
		"flags":           {1, 2},
		"empty node":      {1, 0, 0},
		"long node":       append([]byte{1, 0, 200, 1}, make([]byte, 200)...),
		"zero interval":   {1, 0, 1, 'n', 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0},
		"long interval":   {1, 0, 1, 'n', 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0},
		"sections":        header(0xff, 0x7f),
		"empty policy":    header(1, 0, 0),
		"items":           header(1, 1, 'p', 100, 1, 'k', 1),
		"empty key":       header(1, 1, 'p', 1, 0, 1),
		"long key":        append(header(1, 1, 'p', 1, 65), make([]byte, 66)...),
		"zero demand":     header(1, 1, 'p', 1, 1, 'k', 0),
		"huge demand":     header(1, 1, 'p', 1, 1, 'k', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f),
		"overlong varint": header(1, 1, 'p', 1, 1, 'k', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1),
		"trailing":        append(bytes.Clone(good), 0),
	} {
		if _, err := decodeUsage(msg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestReceiveMalformed(t *testing.T) {
	var logs syncBuffer
	c := newClock()
	l, err := New(Config{Policies: mustPolicies(t, "ip:1/s"), Now: c.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if err := l.Collectors().Register(reg); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		l.receive([]byte("not a usage message"))
	}
	c.Advance(l.interval)
	l.tick()
	for range 5 {
		l.receive([]byte{1})
	}
	c.Advance(l.interval)
	l.tick() // within errorLogEvery of the first line: not logged yet
	if n := strings.Count(logs.String(), "dropped malformed"); n != 1 {
		t.Fatalf("%d log lines, want 1:\n%s", n, logs.String())
	}
	c.Advance(errorLogEvery)
	l.tick()
	if n := strings.Count(logs.String(), "dropped malformed"); n != 2 || !strings.Contains(logs.String(), "count=5") {
		t.Fatalf("want a second line counting 5:\n%s", logs.String())
	}
	if n := gather(t, reg)[`perch_ratelimit_sync_errors_total{kind="decode"}`]; n != 10 {
		t.Fatalf("%v decode errors counted, want 10", n)
	}
	if l.live.Load() != 0 {
		t.Fatal("a malformed message made a peer")
	}
}

// tickFor advances the clock tick by tick for d, calling each between ticks, and returns
// the requests each admitted in total.
func tickFor(c *clock, l *Limiter, d time.Duration, each func() int) int {
	n := 0
	for range int(d / l.interval) {
		n += each()
		c.Advance(l.interval)
		l.tick()
	}
	return n
}

func TestShares(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, "ip:100/s")
	ids := []string{"ip:100/s"}
	b := &fakePeer{node: "b", inc: 7}
	a := ip("192.0.2.1")
	// Alone, the limiter admits the whole rate.
	got := tickFor(c, l, 2*time.Second, func() int { return admit(l, "", a, 20) })
	if got < 294 || got > 296 {
		t.Fatalf("alone: %d in 2s, want the burst (100) and 1.95s of refill (195)", got)
	}
	// A peer with the same demand (400/s, like this limiter's 20 per 50ms): half the rate.
	demand := map[string]map[string]float64{ids[0]: {"192.0.2.1": 400}}
	got = tickFor(c, l, 10*time.Second, func() int {
		b.send(t, l, ids, demand)
		return admit(l, "", a, 20)
	})
	if l.set.Load().list[0].live.Load() != 2 {
		t.Fatal("the peer is not counted")
	}
	if math.Abs(float64(got)-500) > 10 {
		t.Fatalf("with an equal peer: %d in 10s, want about 500", got)
	}
	// A peer with three times the demand: weights 400+50 and 1200+50, 26.5%.
	demand[ids[0]]["192.0.2.1"] = 1200
	b.send(t, l, ids, demand)
	got = tickFor(c, l, 10*time.Second, func() int {
		b.send(t, l, ids, demand)
		return admit(l, "", a, 20)
	})
	if want := 1000 * 450.0 / 1700; math.Abs(float64(got)-want) > 10 {
		t.Fatalf("with a busier peer: %d in 10s, want about %.0f", got, want)
	}
	// The peer goes silent: after peerTimeout intervals its share returns.
	tickFor(c, l, (peerTimeout+2)*l.interval, func() int { return admit(l, "", a, 20) })
	if l.live.Load() != 0 {
		t.Fatal("silent peer still counted")
	}
	got = tickFor(c, l, 5*time.Second, func() int { return admit(l, "", a, 20) })
	if math.Abs(float64(got)-500) > 5 {
		t.Fatalf("after the peer's timeout: %d in 5s, want 500", got)
	}
	// A peer enforcing another policy (another burst) does not count.
	other := &fakePeer{node: "c", inc: 8}
	got = tickFor(c, l, 5*time.Second, func() int {
		other.send(t, l, []string{"ip:100/s:200"}, map[string]map[string]float64{"ip:100/s:200": {"192.0.2.1": 10000}})
		return admit(l, "", a, 20)
	})
	if l.live.Load() != 1 || l.set.Load().list[0].live.Load() != 1 || math.Abs(float64(got)-500) > 5 {
		t.Fatalf("a peer with another policy: %d in 5s, live %d", got, l.set.Load().list[0].live.Load())
	}
}

func TestPeerLeaves(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, "ip:100/s")
	ids := []string{"ip:100/s"}
	b := &fakePeer{node: "b", inc: 7}
	a := ip("192.0.2.1")
	demand := map[string]map[string]float64{ids[0]: {"192.0.2.1": 400}}
	tickFor(c, l, time.Second, func() int {
		b.send(t, l, ids, demand)
		return admit(l, "", a, 20)
	})
	b.leave(l)
	if l.live.Load() != 0 {
		t.Fatal("the peer that left is still counted")
	}
	// The next tick gives this limiter the whole rate.
	tickFor(c, l, l.interval, func() int { return admit(l, "", a, 20) })
	got := tickFor(c, l, 2*time.Second, func() int { return admit(l, "", a, 20) })
	if math.Abs(float64(got)-200) > 3 {
		t.Fatalf("after the peer left: %d in 2s, want 200", got)
	}
	// A message of this limiter's own is ignored.
	self := &fakePeer{node: l.nodeID, inc: l.incarnation}
	self.send(t, l, ids, demand)
	if l.live.Load() != 0 {
		t.Fatal("its own message made a peer")
	}
}

// TestFirstSeen: a key new to the fleet starts with a 1/N part of the burst, and gets the
// rest when no other limiter turns out to use it.
func TestFirstSeen(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, "ip:10/s:60")
	ids := []string{"ip:10/s:60"}
	b, d := &fakePeer{node: "b", inc: 1}, &fakePeer{node: "d", inc: 2}
	heartbeat := func() {
		b.send(t, l, ids, nil)
		d.send(t, l, ids, nil)
	}
	heartbeat()
	c.Advance(l.interval)
	l.tick()
	if n := l.set.Load().list[0].live.Load(); n != 3 {
		t.Fatalf("%d limiters counted, want 3", n)
	}
	// Alone with the key: 20 at once, the other 40 after probation.
	a := ip("192.0.2.1")
	if n := admit(l, "", a, 100); n != 20 {
		t.Fatalf("first seen: %d admitted, want 60/3", n)
	}
	for range probationIntervals + 1 {
		heartbeat()
		c.Advance(l.interval)
		l.tick()
	}
	if n := admit(l, "", a, 100); n < 40 || n > 43 {
		t.Fatalf("after probation: %d admitted, want the rest of the burst (40) and the refill", n)
	}
	// Another key, which a peer reports too during probation: no top-up.
	e := ip("192.0.2.2")
	if n := admit(l, "", e, 100); n != 20 {
		t.Fatalf("first seen: %d admitted, want 20", n)
	}
	for range probationIntervals + 1 {
		b.send(t, l, ids, map[string]map[string]float64{ids[0]: {"192.0.2.2": 50}})
		d.send(t, l, ids, nil)
		c.Advance(l.interval)
		l.tick()
	}
	if n := admit(l, "", e, 100); n > 2 {
		t.Fatalf("shared key after probation: %d admitted, want only the refill", n)
	}
}
