package edge

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/perchhq/perch/internal/natsembed"
	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/wire"
)

// slowFirstRead answers the core's reads on ns: the first with version first, once release
// is closed (it has been asked when asked is), every later one at once with version later.
// It returns how many reads it has had.
func slowFirstRead(t *testing.T, ns *natsembed.Server, first, later int64) (asked, release chan struct{}, reads *atomic.Int32) {
	t.Helper()
	core := natstest.Connect(t, ns.URL())
	asked, release, reads = make(chan struct{}), make(chan struct{}), new(atomic.Int32)
	if _, err := core.Subscribe(wire.ReadSubject, func(m *nats.Msg) {
		var req wire.ReadRequest
		_ = json.Unmarshal(m.Data, &req)
		v := later
		if reads.Add(1) == 1 {
			close(asked)
			<-release
			v = first
		}
		data, _ := json.Marshal(wire.ReadResponse{Doc: docVersion(req.ID, v)})
		_ = m.Respond(data)
	}); err != nil {
		t.Fatal(err)
	}
	if err := core.Flush(); err != nil {
		t.Fatal(err)
	}
	return asked, release, reads
}

// raceFill starts a miss of notes/d on e whose core read answers version 4 once change has
// run and the change's own entry has left the cache (refused by ristretto's admission, or
// evicted: the fault the test injects), and returns how the next read is answered and how
// many reads the core had.
func raceFill(t *testing.T, change func(e *Edge)) (status int, tag, cacheStatus string, reads int32) {
	t.Helper()
	ns := natstest.Start(t)
	e := newTestEdgeOn(t, natstest.Connect(t, ns.URL()), nil)
	asked, release, n := slowFirstRead(t, ns, 4, 5)
	done := make(chan struct{})
	go func() {
		defer close(done)
		served(e, "d")
	}()
	<-asked
	change(e)
	e.cache.flush()
	e.cache.c.Del("notes/d")
	e.cache.c.Wait()
	close(release)
	<-done
	e.cache.flush()
	status, tag, cacheStatus = served(e, "d")
	return status, tag, cacheStatus, n.Load()
}

// TestFillOlderThanOwnWriteNotStored: a fill that began before this edge's write committed
// reads the version before it. When the write's own entry has not stayed in the cache, the
// fill must not store that older version: it reads again, and the writer reads its write.
func TestFillOlderThanOwnWriteNotStored(t *testing.T) {
	status, tag, cs, reads := raceFill(t, func(e *Edge) {
		data, _ := json.Marshal(wire.Outcomes{Batch: "b", Outcomes: []wire.Outcome{{WriteID: "w", Status: 200, Doc: docVersion("d", 5)}}})
		e.onOutcomes(&nats.Msg{Data: data})
	})
	if status != 200 || tag != `"5"` || reads != 2 {
		t.Fatalf("the writer's read after its write of version 5: %d %s %q, %d core reads; want version 5 after a second read",
			status, tag, cs, reads)
	}
}

// TestFillOlderThanChangeNotStored: the same with another edge's write, heard of as a change
// event while the fill reads: there is no floor, only what the fill heard.
func TestFillOlderThanChangeNotStored(t *testing.T) {
	status, tag, cs, reads := raceFill(t, func(e *Edge) {
		deliverTo(t, e)(eventOf(docVersion("d", 5), 1, true))
	})
	if status != 200 || tag != `"5"` || reads != 2 {
		t.Fatalf("the read after the event of version 5: %d %s %q, %d core reads; want version 5 after a second read",
			status, tag, cs, reads)
	}
}

// TestGapNotRefilledFromLaggingOwner: edge a finds a gap (seq 10, version 5 of the document,
// lost) and distrusts its cache. Its owner b has not reached the gap, and still trusts
// version 4: a's fill must not copy it, and b reads the core instead. And when the lost
// event comes again (the outbox sweeper), it is not dropped as one a had already.
func TestGapNotRefilledFromLaggingOwner(t *testing.T) {
	ns := natstest.Start(t)
	a, b, id := ownerPair(t, ns, nil)
	reads := answerAsCore(t, ns, 5)
	for _, e := range []*Edge{a, b} {
		e.cache.putDocument(docVersion(id, 4))
		e.cache.flush()
	}
	deliver := deliverTo(t, a)
	deliver(eventOf(docVersion("other", 1), 9, true))
	deliver(eventOf(docVersion("other", 2), 11, true))
	if st, tag, cs := served(a, id); st != 200 || tag != `"5"` {
		t.Fatalf("a's read after the gap: %d %s %q, want version 5 (b read the core)", st, tag, cs)
	}
	// Once: b takes what it has just read from the core, however soon after the distrust.
	if n := len(reads); n != 1 {
		t.Fatalf("the core read %d times for one fill, want 1", n)
	}
	if got := <-reads; got != id {
		t.Fatalf("the core read %q", got)
	}

	// The lost event, republished, reaches an edge that filled from the lagging owner anyway
	// (here: a's entry put back to version 4 by hand).
	a.cache.c.Del(docKey("notes", id))
	a.cache.c.Wait()
	a.cache.putDocument(docVersion(id, 4))
	a.cache.flush()
	deliver(eventOf(docVersion(id, 5), 10, true))
	if st, tag, cs := served(a, id); tag == `"4"` {
		t.Fatalf("a's read after seq 10 came again: %d %s %q; version 4 still served", st, tag, cs)
	}
	if n := testCounter(t, a.metrics.events.WithLabelValues("repeated")); n != 1 {
		t.Fatalf("%v repeated events, want 1", n)
	}
}

// TestDistrustedAskerDoesNotJoinAnOlderRead: the owner's own miss has begun a core read when
// an asker that has just distrusted its cache asks for the key. That read may be from before
// the change the asker lost: the owner does not hand it over, however fresh, but reads again.
func TestDistrustedAskerDoesNotJoinAnOlderRead(t *testing.T) {
	ns := natstest.Start(t)
	a, b, id := ownerPair(t, ns, nil)
	asked, release, reads := slowFirstRead(t, ns, 4, 5)
	var owners sync.WaitGroup
	owners.Go(func() { served(b, id) })
	<-asked
	a.cache.distrust()
	var tag, cs string
	var asker sync.WaitGroup
	asker.Go(func() { _, tag, cs = served(a, id) })
	// b has taken a's request (its slot of peer fills) and joins its own read.
	for len(b.peerFills) == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	owners.Wait()
	asker.Wait()
	if tag != `"5"` {
		t.Fatalf("a's fill: %s %q, want version 5, read for it", tag, cs)
	}
	if n := reads.Load(); n != 2 {
		t.Fatalf("the core read %d times, want 2: b's own, and one for a", n)
	}
}

// TestDistrustedAskersShareTheNextRead: eight distrusted askers join a core read the owner
// began before they asked, and turn it down; they share one read after it, not one each (a
// region's edges all ask so after a distrust of the whole region).
func TestDistrustedAskersShareTheNextRead(t *testing.T) {
	ns := natstest.Start(t)
	_, b, id := ownerPair(t, ns, nil)
	asked, release, reads := slowFirstRead(t, ns, 4, 5)
	var wg sync.WaitGroup
	wg.Go(func() { served(b, id) })
	<-asked
	versions := make([]int64, 8)
	for i := range versions {
		wg.Go(func() {
			ent, p := b.fillFromCoreFresh(context.Background(), docKey("notes", id), "notes", id, 0, -1)
			if p != nil {
				t.Errorf("asker %d: %v", i, p)
				return
			}
			versions[i] = ent.version
		})
	}
	time.Sleep(50 * time.Millisecond) // for the askers to join b's read
	close(release)
	wg.Wait()
	for i, v := range versions {
		if v != 5 {
			t.Errorf("asker %d got version %d, want 5", i, v)
		}
	}
	if n := reads.Load(); n != 2 {
		t.Fatalf("the core read %d times, want 2: b's own, and one the askers share", n)
	}
}

// TestOwnerFillKeepsAge: an entry copied from the owner's cache is served for what is left
// of the TTL of the owner's, not a TTL of its own: a version whose change event was lost is
// served no longer than the TTL after it was read from the core.
func TestOwnerFillKeepsAge(t *testing.T) {
	ns := natstest.Start(t)
	a, b, id := ownerPair(t, ns, func(c *Config) { c.CacheTTL = 10 * time.Second })
	answerAsCore(t, ns, 5)
	b.cache.putDocument(docVersion(id, 4)) // its event of version 5 lost
	b.cache.flush()
	b.cache.advance(b.cache.now.Load() + 7)
	if _, tag, cs := served(a, id); tag != `"4"` {
		t.Fatalf("a's fill: %s %q, want b's version 4", tag, cs)
	}
	ent, ok := a.cache.current(docKey("notes", id))
	if !ok || a.cache.age(ent) != 7 {
		t.Fatalf("a's copy %+v (%v): want it 7 s old", ent, ok)
	}
	a.cache.advance(a.cache.now.Load() + 4) // 11 s after b read version 4
	if _, ok := a.cache.current(docKey("notes", id)); ok {
		t.Fatal("a's copy is trusted 11 s after b read it from the core, with a TTL of 10 s")
	}
}

// TestOwnerCopyOlderThanTheAskersTTL: an owner whose TTL is longer than the asker's holds
// entries older than the asker may keep. For such an asker it reads the core, rather than
// hand over a copy the asker would store expired and ask for again at every read.
func TestOwnerCopyOlderThanTheAskersTTL(t *testing.T) {
	ns := natstest.Start(t)
	a, b, id := ownerPair(t, ns, func(c *Config) {
		c.CacheTTL = time.Minute
		if c.ID == "test-a" {
			c.CacheTTL = 10 * time.Second
		}
	})
	reads := answerAsCore(t, ns, 5)
	key := docKey("notes", id)
	b.cache.putDocument(docVersion(id, 4))
	b.cache.flush()
	b.cache.advance(b.cache.now.Load() + 20)
	if _, tag, cs := served(a, id); tag != `"5"` {
		t.Fatalf("a's fill: %s %q, want version 5 read from the core by b", tag, cs)
	}
	if n := len(reads); n != 1 {
		t.Fatalf("the core read %d times, want 1", n)
	}
	if ent, ok := a.cache.current(key); !ok || a.cache.age(ent) != 0 {
		t.Fatalf("a's copy %+v (%v): want it stored, fresh", ent, ok)
	}
	if ent, ok := b.cache.current(key); !ok || ent.version != 5 {
		t.Fatalf("b's entry %+v (%v): want the version it read", ent, ok)
	}
	if _, _, cs := served(a, id); cs != "perch; hit" {
		t.Fatalf("a's next read: %q, want a hit", cs)
	}
	// An entry young enough for a is copied as it is.
	b.cache.advance(b.cache.now.Load() + 5)
	a.cache.c.Del(key)
	a.cache.c.Wait()
	if _, tag, cs := served(a, id); tag != `"5"` || len(reads) != 1 {
		t.Fatalf("a's fill of b's 5 s old entry: %s %q, %d core reads, want b's copy", tag, cs, len(reads))
	}
	if ent, ok := a.cache.current(key); !ok || a.cache.age(ent) != 5 {
		t.Fatalf("a's copy %+v (%v): want it 5 s old", ent, ok)
	}
}

// TestReplayedOutcomeSeenByWriter: a write retried through this edge with its
// Idempotency-Key (the first attempt went through another edge) is answered with the
// replayed document, version 5, while this edge holds version 4 (the change event is still on
// its way). The writer's next read must not be a hit on version 4.
func TestReplayedOutcomeSeenByWriter(t *testing.T) {
	ns := natstest.Start(t)
	e := newTestEdgeOn(t, natstest.Connect(t, ns.URL()), nil)
	answerAsCore(t, ns, 5)
	e.cache.putDocument(docVersion("r", 4))
	e.cache.flush()
	data, _ := json.Marshal(wire.Outcomes{Batch: "b", Outcomes: []wire.Outcome{{WriteID: "w", Status: 200, Doc: docVersion("r", 5), Replayed: true}}})
	e.onOutcomes(&nats.Msg{Data: data})
	e.cache.flush()
	if st, tag, cs := served(e, "r"); st != 200 || tag != `"5"` {
		t.Fatalf("after a replayed answer of version 5: %d %s %q, want version 5", st, tag, cs)
	}
}

// TestOutcomeAfterADistrustIsNotTrusted: the outcome of a write taken before the cache was
// distrusted (change events lost meanwhile, which may be later than the write) installs its
// document in the write's epoch, distrusted: only its version is kept. The outcome of a write
// taken since is a hit, and one of a write the edge no longer tracks keeps only its version.
func TestOutcomeAfterADistrustIsNotTrusted(t *testing.T) {
	ns := natstest.Start(t)
	e := newTestEdgeOn(t, natstest.Connect(t, ns.URL()), nil)
	wait := func(writeID string) {
		e.writes.mu.Lock()
		e.writes.waiting[writeID] = &pending{cmd: wire.Command{WriteID: writeID}, outcome: make(chan wire.Outcome, 1), epoch: e.cache.epoch.Load()}
		e.writes.mu.Unlock()
	}
	outcome := func(writeID string, d *wire.Document) {
		data, _ := json.Marshal(wire.Outcomes{Batch: "b", Outcomes: []wire.Outcome{{WriteID: writeID, Status: 200, Doc: d}}})
		e.onOutcomes(&nats.Msg{Data: data})
		e.cache.flush()
	}
	wait("before")
	e.cache.distrust()
	wait("since")
	outcome("before", docVersion("x", 3))
	outcome("since", docVersion("y", 3))
	outcome("gone", docVersion("z", 3))
	for _, c := range []struct {
		id      string
		trusted bool
	}{{"x", false}, {"y", true}, {"z", false}} {
		ent, ok := e.cache.get([]byte(docKey("notes", c.id)))
		if !ok || ent.version != 3 || e.cache.valid(ent) != c.trusted {
			t.Errorf("%s's entry %+v (%v): want version 3, trusted %v", c.id, ent, ok, c.trusted)
		}
	}
}

// TestSlowConsumerDistrustsTheCache: change events that the NATS client drops for want of
// buffer (a slow consumer) are events the edge will never have, on partitions that may stay
// quiet: the cache is distrusted at once, not when a later event shows the gap.
func TestSlowConsumerDistrustsTheCache(t *testing.T) {
	ns := natstest.Start(t)
	e := newTestEdgeOn(t, natstest.Connect(t, ns.URL()), nil)
	if err := e.subscribe(); err != nil {
		t.Fatal(err)
	}
	ch := e.changes.Load()
	if err := ch.SetPendingLimits(1, 1<<20); err != nil {
		t.Fatal(err)
	}
	epoch := e.cache.epoch.Load()
	pub := natstest.Connect(t, ns.URL())
	// One partition's events in order, far more at once than one pending message allows.
	for i := range 2000 {
		ev := eventOf(docVersion("burst", int64(i+1)), int64(i+1), true)
		data, _ := json.Marshal(ev)
		if err := pub.Publish(wire.ChangeSubject(ev.Collection), data); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, _ := ch.Dropped(); n > 0 && e.cache.epoch.Load() > epoch {
			break
		}
		if time.Now().After(deadline) {
			n, _ := ch.Dropped()
			t.Fatalf("%d events dropped; epoch %d, was %d", n, e.cache.epoch.Load(), epoch)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := testCounter(t, e.metrics.events.WithLabelValues("dropped")); n < 1 {
		t.Fatalf("dropped events counted %v times", n)
	}
}

// TestEventsQueuedBeforeADropStayDistrusted: a slow consumer drops version 2 of b, while
// the message of version 1, published before it, waits in the queue. Version 1 is applied
// after the drop distrusted the cache, and would be served as current (the partition is
// quiet: no later event shows the gap); only its version is kept. An event published after
// the drop is installed. The change subscription's handler is held at the first message,
// either before onChange counts it (the drain ends at the count of messages queued at the
// drop) or inside it, while it applies the event (then counted twice, in onChange's count and
// in the queue's: the queue's emptying ends the drain). Held inside, an event of the same
// partition is received before the drop is reported: the gap it shows is the drop's, and
// does not distrust the cache again.
func TestEventsQueuedBeforeADropStayDistrusted(t *testing.T) {
	for _, inside := range []bool{false, true} {
		t.Run(map[bool]string{false: "held before onChange", true: "held inside onChange"}[inside], func(t *testing.T) {
			ns := natstest.Start(t)
			nc := natstest.Connect(t, ns.URL())
			e := newTestEdgeOn(t, nc, nil)
			release := make(chan struct{})
			var held atomic.Bool
			var once sync.Once
			unhold := func() { once.Do(func() { close(release) }) }
			t.Cleanup(unhold)
			if inside {
				// applyEvent takes pendingMu (heard) after onChange has counted the message.
				e.cache.pendingMu.Lock()
				go func() {
					<-release
					e.cache.pendingMu.Unlock()
				}()
			}
			// The edge's change subscription (subscribe), held at the first message.
			ch, err := nc.Subscribe(wire.ChangeSubjectPrefix+">", func(m *nats.Msg) {
				if held.CompareAndSwap(false, true) && !inside {
					<-release
				}
				e.onChange(m)
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := ch.SetPendingLimits(2, 1<<20); err != nil { // the held message and one more
				t.Fatal(err)
			}
			e.changes.Store(ch)
			// The drop's report, held too when inside, till a later event is queued.
			report := make(chan struct{})
			if !inside {
				close(report)
			}
			nc.SetErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
				<-report
				e.onAsyncError(c, sub, err)
			})
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			pub := natstest.Connect(t, ns.URL())
			publish := func(ev wire.ChangeEvent) {
				t.Helper()
				data, _ := json.Marshal(ev)
				if err := pub.Publish(wire.ChangeSubject(ev.Collection), data); err != nil {
					t.Fatal(err)
				}
				if err := pub.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(10 * time.Second)
			waitFor := func(what string, done func() bool) {
				t.Helper()
				for !done() {
					if time.Now().After(deadline) {
						t.Fatalf("waiting for %s", what)
					}
					time.Sleep(time.Millisecond)
				}
			}
			publish(eventOf(docVersion("a", 1), 1, true))
			waitFor("the first message", func() bool { n, _ := ch.Delivered(); return n == 1 })
			publish(eventOf(docVersion("b", 1), 2, true)) // queued
			epoch := e.cache.epoch.Load()
			publish(eventOf(docVersion("b", 2), 3, true)) // dropped
			if inside {
				// Received before the drop is reported: the gap it shows is the drop's, which
				// distrusts the cache already.
				waitFor("the drop", func() bool { n, _ := ch.Dropped(); return n == 1 })
				if err := ch.SetPendingLimits(100, 1<<20); err != nil {
					t.Fatal(err)
				}
				publish(eventOf(docVersion("g", 1), 4, true))
				waitFor("g's event in the queue", func() bool { q, _, _ := ch.Pending(); return q == 3 })
				close(report)
			}
			waitFor("the drop's distrust", func() bool { return e.cache.epoch.Load() != epoch })
			c := eventOf(docVersion("c", 1), 1, true)
			c.Partition = 2
			if !inside {
				// Behind b's version 1 when it is applied: only the count ends the drain.
				if err := ch.SetPendingLimits(100, 1<<20); err != nil {
					t.Fatal(err)
				}
				publish(c)
			}
			unhold()
			want := int64(3)
			waitFor("the queue", func() bool {
				n, _ := ch.Delivered()
				q, _, _ := ch.Pending()
				return n == want && q == 0
			})
			if inside {
				publish(c) // after the drain
				waitFor("c's event", func() bool { n, _ := ch.Delivered(); q, _, _ := ch.Pending(); return n == 4 && q == 0 })
				if n := testCounter(t, e.metrics.events.WithLabelValues("gap_after_drop")); n != 1 {
					t.Fatalf("%v gaps counted as the drop's, want 1", n)
				}
				if ent, ok := e.cache.current(docKey("notes", "g")); ok {
					t.Fatalf("g's entry %+v, received before the drop was reported, is trusted", ent)
				}
			}
			e.cache.flush()
			if ent, ok := e.cache.get([]byte(docKey("notes", "b"))); !ok || ent.version != 1 || e.cache.valid(ent) {
				t.Fatalf("b's entry %+v (%v): want version 1 kept as a version only", ent, ok)
			}
			if ent, ok := e.cache.current(docKey("notes", "c")); !ok || ent.version != 1 {
				t.Fatalf("c's entry %+v (%v): want version 1, published after the drop, installed", ent, ok)
			}
			if n := e.cache.epoch.Load() - epoch; n != 1 {
				t.Fatalf("the cache was distrusted %d times, want once", n)
			}
			if n := testCounter(t, e.metrics.events.WithLabelValues("queued_before_drop")); n < 1 {
				t.Fatalf("%v events counted as queued before the drop", n)
			}
		})
	}
}

// TestDropWithNothingQueued: a drop reported once the queue is empty leaves nothing to
// drain: the next event is installed.
func TestDropWithNothingQueued(t *testing.T) {
	ns := natstest.Start(t)
	nc := natstest.Connect(t, ns.URL())
	e := newTestEdgeOn(t, nc, nil)
	if err := e.subscribe(); err != nil {
		t.Fatal(err)
	}
	ch := e.changes.Load()
	epoch := e.cache.epoch.Load()
	e.onAsyncError(nc, ch, nats.ErrSlowConsumer)
	if e.cache.epoch.Load() != epoch+1 || e.dropDrain.Load() != 0 {
		t.Fatalf("epoch %d (was %d), drain mark %d: want one distrust, nothing to drain", e.cache.epoch.Load(), epoch, e.dropDrain.Load())
	}
	deliverTo(t, e)(eventOf(docVersion("d", 1), 1, true))
	if ent, ok := e.cache.current(docKey("notes", "d")); !ok || ent.version != 1 {
		t.Fatalf("d's entry %+v (%v): want the event's document installed", ent, ok)
	}
}

// TestStaleWindowCountsFromTheOutage: after a reconnection, what was cached counts as stale
// from the moment NATS was lost: an outage longer than a collection's
// stale-while-revalidate window leaves nothing to serve stale, though the entries were
// trusted until the outage began.
func TestStaleWindowCountsFromTheOutage(t *testing.T) {
	e := newTestEdgeOn(t, natstest.Connect(t, natstest.Start(t).URL()), func(c *Config) {
		c.CacheControl = map[string]string{"bench": "max-age=0, stale-while-revalidate=30"}
	})
	cacheDocument(t, e, "doc", 100)
	e.onDisconnect(nil, nil)
	e.cache.advance(e.cache.now.Load() + 120) // a two-minute outage
	e.onReconnect(nil)
	ctx := getRequest("/v1/collections/bench/docs/doc")
	e.dispatch(ctx, "")
	if cs := string(ctx.Response.Header.Peek("Cache-Status")); cs == "perch; hit; detail=stale" {
		t.Fatalf("after a 120 s outage, with a window of 30 s: %d %q", ctx.Response.StatusCode(), cs)
	}
	// A short outage leaves the entry within the window.
	cacheDocument(t, e, "doc", 100)
	e.onDisconnect(nil, nil)
	e.cache.advance(e.cache.now.Load() + 5)
	e.onReconnect(nil)
	ctx = getRequest("/v1/collections/bench/docs/doc")
	e.dispatch(ctx, "")
	if cs := string(ctx.Response.Header.Peek("Cache-Status")); cs != "perch; hit; detail=stale" {
		t.Fatalf("after a 5 s outage, with a window of 30 s: %d %q", ctx.Response.StatusCode(), cs)
	}
}
