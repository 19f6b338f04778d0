package edge

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/wire"
)

// TestTwoSetsOfANewKeyKeepTheHigherVersion: two Sets in a row of a key the cache does not
// hold yet (a fill's and a change event's, a fill's and a write outcome's) both go through
// ristretto's admission buffer, which admits the first new item of a key and drops later
// ones whatever their version; docCache.set must still end with the higher version.
func TestTwoSetsOfANewKeyKeepTheHigherVersion(t *testing.T) {
	e := newTestEdge(t)
	lost := 0
	for i := range 1000 {
		id := fmt.Sprintf("k%d", i)
		e.cache.putDocument(docVersion(id, 1)) // a fill that read version 1
		e.cache.putDocument(docVersion(id, 2)) // the change event of version 2, just after
		e.cache.flush()
		if ent, ok := e.cache.get([]byte("notes/" + id)); ok && ent.version == 1 && e.cache.valid(ent) {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of 1000 keys serve version 1 as a trusted hit after the event of version 2", lost)
	}
}

// TestRepublishedEventDoesNotBringBackAnOldVersion: an event published again by the outbox
// sweeper (a sequence the edge has had) does not install its document, which would bring an
// old version back as a trusted hit when the key is no longer cached.
func TestRepublishedEventDoesNotBringBackAnOldVersion(t *testing.T) {
	e := newTestEdge(t)
	deliver := deliverTo(t, e)
	deliver(eventOf(docVersion("d", 1), 1, true))
	deliver(eventOf(docVersion("d", 2), 2, true))
	e.cache.c.Del("notes/d") // evicted under the cost bound
	e.cache.flush()
	deliver(eventOf(docVersion("d", 1), 1, true)) // seq 1 again: the sweeper's duplicate
	if st, tag, cs := served(e, "d"); st == 200 && tag == `"1"` && cs == "perch; hit" {
		t.Fatalf("version 1 served as a trusted hit; version 2 exists and was heard of")
	}
}

// TestStaleAnswersOfPrivateCollectionsStayPrivate: an answer marked stale (here, a hit while
// NATS is lost) of a collection not read by everyone is private, as its fresh answers are.
func TestStaleAnswersOfPrivateCollectionsStayPrivate(t *testing.T) {
	ns := natstest.Start(t)
	e := newTestEdgeOn(t, natstest.Connect(t, ns.URL()), func(c *Config) {
		c.Rules = &Rules{Default: Rule{Read: AccessAuthenticated, Write: AccessOwner}}
	})
	cacheDocument(t, e, "doc", 100)
	ctx := getRequest("/v1/collections/bench/docs/doc")
	e.dispatch(ctx, "alice")
	if cc := string(ctx.Response.Header.Peek("Cache-Control")); cc != "private, no-cache" {
		t.Fatalf("fresh hit: %q", cc)
	}
	e.disconnected.Store(true)
	ctx = getRequest("/v1/collections/bench/docs/doc")
	e.dispatch(ctx, "alice")
	if cc := string(ctx.Response.Header.Peek("Cache-Control")); ctx.Response.StatusCode() == 200 && cc == "no-cache" {
		t.Fatalf("hit while disconnected, of a collection read by authenticated users only: Cache-Control %q (not private)", cc)
	}
}

// TestStaleHiddenDocumentLooksMissing: in a collection read by owner, a stranger's answers
// for someone else's document and for a missing one are alike when their entries are stale
// and the core is away (stale-if-error), as when they are fresh.
func TestStaleHiddenDocumentLooksMissing(t *testing.T) {
	e, ask := secretAndMissing(t)
	s1, c1 := ask("secret")
	s2, c2 := ask("missing")
	if s1 != s2 || c1 != c2 {
		t.Fatalf("fresh: secret %d %q, missing %d %q", s1, c1, s2, c2)
	}
	e.cache.distrust()
	s1, c1 = ask("secret")
	s2, c2 = ask("missing")
	if s1 != s2 || c1 != c2 {
		t.Fatalf("stale: alice's document %d %q, a missing one %d %q: bob learns it exists", s1, c1, s2, c2)
	}
}

// TestEventWithABadDocumentRetiresTheOldVersion: an event whose header is valid but whose
// document does not match it still counts as the change it announces: its sequence is
// counted (no gap follows), so the older version must not stay a trusted hit.
func TestEventWithABadDocumentRetiresTheOldVersion(t *testing.T) {
	e := newTestEdge(t)
	deliver := deliverTo(t, e)
	deliver(eventOf(docVersion("d", 1), 1, true))
	bad := eventOf(docVersion("d", 2), 2, true)
	bad.Doc.Data = json.RawMessage(`{"v":2}`)
	msg := changeMsg(t, bad)
	// The document says version 9: the header (version 2) is valid, the document is not.
	msg.Data = []byte(`{"partition":1,"seq":2,"collection":"notes","id":"d","version":2,"updated_at":"2024-01-01T00:00:00Z","doc":{"collection":"notes","id":"d","version":9,"data":{}}}`)
	e.onChange(msg)
	e.cache.flush()
	deliver(eventOf(docVersion("other", 1), 3, true)) // the next event of the partition: no gap
	if st, tag, cs := served(e, "d"); st == 200 && tag == `"1"` && cs == "perch; hit" {
		t.Fatalf("version 1 still a trusted hit after the (undecodable) event of version 2")
	}
}

// TestCreateAndUpdateInOneMessageServeTheUpdate: a create and an update of one document
// applied in one transaction come as one change message of two events (and, on the writing
// edge, as one outcomes message of two outcomes); the update is what is then served.
func TestCreateAndUpdateInOneMessageServeTheUpdate(t *testing.T) {
	e := newTestEdge(t)
	lost := 0
	for i := range 100 {
		id := fmt.Sprintf("n%d", i)
		evs := []wire.ChangeEvent{eventOf(docVersion(id, 1), int64(2*i+1), true), eventOf(docVersion(id, 2), int64(2*i+2), true)}
		data, _ := json.Marshal(evs)
		msg := changeMsg(t, evs[0])
		msg.Data = data
		e.onChange(msg)
		e.cache.flush()
		if st, tag, cs := served(e, id); st == 200 && tag == `"1"` && cs == "perch; hit" {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("events: %d of 100 new documents serve version 1 as a trusted hit after the event of version 2", lost)
	}
	lost = 0
	for i := range 100 {
		id := fmt.Sprintf("w%d", i)
		out := wire.Outcomes{Batch: "b", Outcomes: []wire.Outcome{{WriteID: "x1", Status: 201, Doc: docVersion(id, 1)}, {WriteID: "x2", Status: 200, Doc: docVersion(id, 2)}}}
		data, _ := json.Marshal(out)
		msg := changeMsg(t, eventOf(docVersion(id, 1), 1, false))
		msg.Data = data
		e.onOutcomes(msg)
		e.cache.flush()
		if st, tag, cs := served(e, id); st == 200 && tag == `"1"` && cs == "perch; hit" {
			lost++
		}
	}
	if lost > 0 {
		t.Errorf("outcomes: %d of 100 documents serve version 1 to their writer, who was answered version 2", lost)
	}
}

// TestHiddenDocumentLooksMissingWhileDisconnected: while the edge has lost NATS, a
// stranger's hit on someone else's document is answered as a hit on a missing one.
func TestHiddenDocumentLooksMissingWhileDisconnected(t *testing.T) {
	e, ask := secretAndMissing(t)
	e.disconnected.Store(true)
	s1, c1 := ask("secret")
	s2, c2 := ask("missing")
	if s1 != s2 || c1 != c2 {
		t.Fatalf("disconnected: alice's document %d %q, a missing one %d %q", s1, c1, s2, c2)
	}
}

// TestStrangersFillKeepsTheVersionBound: a stranger's miss on an owner-read document keeps the version of the entry it may not see
// as the fill's bound: an owner edge that answers an older version than this edge holds is
// not believed (an "older" fallback to the core), since that older entry is what the fill
// would hand to every request sharing it, the owner's included.
func TestStrangersFillKeepsTheVersionBound(t *testing.T) {
	a, b, id := ownerPair(t, natstest.Start(t), func(c *Config) {
		c.Rules = &Rules{Default: Rule{Read: AccessOwner, Write: AccessOwner}}
	})
	v2, v3 := docVersion(id, 2), docVersion(id, 3)
	v2.Owner, v3.Owner = "alice", "alice"
	b.cache.putDocument(v2) // the owner's event of 3 is late
	b.cache.flush()
	a.cache.putDocument(v3)
	a.cache.flush()
	a.cache.advance(a.cache.now.Load() + a.cache.ttl) // expired (a distrust would make b read the core)
	ctx := getRequest("/v1/collections/notes/docs/" + id)
	a.dispatch(ctx, "bob")
	if st := ctx.Response.StatusCode(); st != 404 {
		t.Fatalf("bob, a stranger: %d", st)
	}
	if n := testCounter(t, a.metrics.peerFallback("older")); n != 1 {
		t.Fatalf("bob's fill took the owner's version 2 although this edge held 3 (older fallbacks: %v)", n)
	}
}

// TestFillReadBeforeADistrustIsNotTrusted: a fill stores its entry in the epoch it began to
// read in, so a distrust while it read (a gap: the change it would have heard of may be lost)
// leaves the entry distrusted too.
func TestFillReadBeforeADistrustIsNotTrusted(t *testing.T) {
	e := newTestEdge(t)
	began := e.cache.epoch.Load()
	e.cache.distrust()
	e.cache.fill("notes/d", documentEntry(docVersion("d", 1)), began)
	ent, ok := e.cache.get([]byte("notes/d"))
	if !ok {
		t.Fatal("the fill was not stored")
	}
	if e.cache.valid(ent) {
		t.Fatal("an entry read before the distrust is trusted after it")
	}
	e.cache.fill("notes/d", documentEntry(docVersion("d", 1)), e.cache.epoch.Load())
	if ent, _ := e.cache.get([]byte("notes/d")); !e.cache.valid(ent) {
		t.Fatal("a fill in the current epoch did not replace the distrusted entry")
	}
}

// TestEventBeforeTheFirstSeenIsNotSkipped: the first event of a partition after a start or a
// reconnection sets where the edge's knowledge of its sequence begins. An event before it
// (its first publish failed and the outbox sweeper sent it again, or it crossed another
// core's) may be one the edge never had: it is not skipped as a repeat, and its version
// retires the older one the cache holds.
func TestEventBeforeTheFirstSeenIsNotSkipped(t *testing.T) {
	e := newTestEdge(t)
	e.cache.fill("notes/k", documentEntry(docVersion("k", 1)), e.cache.epoch.Load())
	deliver := deliverTo(t, e)
	deliver(eventOf(docVersion("other", 1), 11, true))
	deliver(eventOf(docVersion("k", 2), 10, true))
	if _, tag, cs := served(e, "k"); tag == `"1"` && cs == "perch; hit" {
		t.Fatal("version 1 served as a trusted hit after the event of version 2, which came before the first event seen")
	}
	// A true repeat, at or after the first event seen, leaves what the edge holds a hit.
	deliver(eventOf(docVersion("other", 1), 11, true))
	if _, tag, cs := served(e, "other"); tag != `"1"` || cs != "perch; hit" {
		t.Fatalf("after a repeat of seq 11: %s %q, want a hit on version 1", tag, cs)
	}
}

// TestRefusedSetKeepsTheCost: a Set that the version order refuses (a marker of the version
// the cache holds, an older fill) does not reach ristretto, whose policy would take the
// refused entry's cost for the key's and so stop bounding the cache by what it holds.
func TestRefusedSetKeepsTheCost(t *testing.T) {
	e := newTestEdge(t)
	d := docVersion("big", 2)
	d.Data = json.RawMessage(`{"pad":"` + strings.Repeat("x", 100<<10) + `"}`)
	e.cache.putDocument(d)
	e.cache.flush()
	used := e.cache.c.MaxCost() - e.cache.c.RemainingCost()
	e.cache.markVersion("notes", "big", 2)    // the event of a version held, without its document
	e.cache.putDocument(docVersion("big", 1)) // an older fill
	e.cache.flush()
	if now := e.cache.c.MaxCost() - e.cache.c.RemainingCost(); now != used {
		t.Fatalf("the cache's cost went from %d to %d for refused Sets", used, now)
	}
}

// deliverTo returns a function that delivers a change event to e through its subscription's
// handler and waits until the cache has taken what it set.
func deliverTo(t *testing.T, e *Edge) func(wire.ChangeEvent) {
	return func(ev wire.ChangeEvent) {
		e.onChange(changeMsg(t, ev))
		e.cache.flush()
	}
}

// secretAndMissing starts an edge whose collections are read by owner, caches alice's
// document "secret" and an absent "missing", and returns the edge and how bob's read of an
// id is answered: its status and Cache-Status.
func secretAndMissing(t *testing.T) (*Edge, func(id string) (int, string)) {
	ns := natstest.Start(t) // no core: reads fail at once with no responders
	e := newTestEdgeOn(t, natstest.Connect(t, ns.URL()), func(c *Config) {
		c.Rules = &Rules{Default: Rule{Read: AccessOwner, Write: AccessOwner}}
	})
	d := docVersion("secret", 3)
	d.Owner = "alice"
	e.cache.putDocument(d)
	e.cache.set("notes/missing", answerEntry(0, 404, nil, ""))
	e.cache.flush()
	return e, func(id string) (int, string) {
		ctx := getRequest("/v1/collections/notes/docs/" + id)
		e.dispatch(ctx, "bob")
		return ctx.Response.StatusCode(), string(ctx.Response.Header.Peek("Cache-Status"))
	}
}

// TestFillAfterAFillTakesItsEntry: a miss that found no entry just before another fill of
// the key stored one starts its own fill once that one has ended (singleflight joins only
// fills that overlap). It takes the stored entry instead of reading again: this edge has no
// core to read from, so a read would fail.
func TestFillAfterAFillTakesItsEntry(t *testing.T) {
	e := newTestEdge(t)
	stored := documentEntry(docVersion("d", 2))
	e.cache.fill("notes/d", stored, e.cache.epoch.Load())
	ent, _, p := e.fillDocument(t.Context(), "notes/d", "notes", "d", nil)
	if p != nil || ent != stored {
		t.Fatalf("fill after a fill: %v %+v, want the stored entry", p, ent)
	}
	ent, p = e.fillFromCore(t.Context(), "notes/d", "notes", "d", 2)
	if p != nil || ent != stored {
		t.Fatalf("core fill after a fill: %v %+v, want the stored entry", p, ent)
	}
	// An entry older than the fill's bound, or one no longer trusted, is read again.
	if _, p = e.fillFromCore(t.Context(), "notes/d", "notes", "d", 3); p == nil {
		t.Fatal("a core fill bound to version 3 took version 2")
	}
	e.cache.distrust()
	if _, _, p = e.fillDocument(t.Context(), "notes/d", "notes", "d", stored); p == nil {
		t.Fatal("a fill took a distrusted entry")
	}
}
