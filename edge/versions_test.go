package edge

import (
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/perchhq/perch/gossip"
	"github.com/perchhq/perch/internal/natsembed"
	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/wire"
)

func docVersion(id string, v int64) *wire.Document {
	now := time.Now().UTC()
	return &wire.Document{Collection: "notes", ID: id, Version: v, CreatedAt: now, UpdatedAt: now,
		Data: json.RawMessage(`{"v":` + strconv.FormatInt(v, 10) + `}`)}
}

func eventOf(d *wire.Document, seq int64, withDoc bool) wire.ChangeEvent {
	ev := wire.ChangeEvent{Partition: 1, Seq: seq, Collection: d.Collection, ID: d.ID, Version: d.Version, UpdatedAt: d.UpdatedAt}
	if withDoc {
		ev.Doc = d
	}
	return ev
}

// served answers a GET of notes/id from the edge's cache only, and returns its status and
// ETag.
func served(e *Edge, id string) (int, string, string) {
	ctx := getRequest("/v1/collections/notes/docs/" + id)
	e.dispatch(ctx, "")
	return ctx.Response.StatusCode(), string(ctx.Response.Header.Peek("ETag")), string(ctx.Response.Header.Peek("Cache-Status"))
}

// TestVersionsNeverGoBackUnderReorderedEvents: change events of one document arriving out
// of order (republished by the outbox sweeper, crossing another core's) never replace a
// version with an older one, whether they carry the document or only mark its version.
func TestVersionsNeverGoBackUnderReorderedEvents(t *testing.T) {
	e := newTestEdge(t)
	deliver := deliverTo(t, e)
	deliver(eventOf(docVersion("d", 3), 3, true))
	deliver(eventOf(docVersion("d", 1), 1, true))
	deliver(eventOf(docVersion("d", 2), 2, true))
	if st, tag, cs := served(e, "d"); st != 200 || tag != `"3"` || cs != "perch; hit" {
		t.Fatalf("after 3, 1, 2: %d %s %q, want a hit of version 3", st, tag, cs)
	}
	// A marker (a document too large to carry) of version 5, then the document of version 4:
	// the edge knows 5 exists, so it serves neither 3 nor 4 from its cache.
	deliver(eventOf(docVersion("d", 5), 5, false))
	deliver(eventOf(docVersion("d", 4), 4, true))
	ent, ok := e.cache.get([]byte("notes/d"))
	if !ok || ent.version != 5 || !ent.stale {
		t.Fatalf("after the marker of 5 and the document of 4: %+v %v", ent, ok)
	}
	// The document of 6 replaces the marker.
	deliver(eventOf(docVersion("d", 6), 6, true))
	if st, tag, _ := served(e, "d"); st != 200 || tag != `"6"` {
		t.Fatalf("after 6: %d %s", st, tag)
	}
}

// staticMembers is a fleet that does not change: edges that know each other without gossip.
type staticMembers []gossip.Member

func (s staticMembers) Members() []gossip.Member { return s }

// ownerPair starts two edges of one region on the NATS server ns, each configured by
// configure too (when not nil), and returns them with the id of a document in collection
// "notes" that b owns.
func ownerPair(t *testing.T, ns *natsembed.Server, configure func(*Config)) (a, b *Edge, id string) {
	t.Helper()
	nc := natstest.Connect(t, ns.URL())
	fleet := staticMembers{
		{ID: "test-a", Region: "test", Weight: 1, Healthy: true},
		{ID: "test-b", Region: "test", Weight: 1, Healthy: true},
	}
	with := func(edgeID string) func(*Config) {
		return func(c *Config) {
			c.ID = edgeID
			if configure != nil {
				configure(c)
			}
		}
	}
	a, b = newTestEdgeOn(t, nc, with("test-a")), newTestEdgeOn(t, nc, with("test-b"))
	for _, e := range []*Edge{a, b} {
		e.SetMembership(fleet)
		if err := e.subscribe(); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; id == ""; i++ {
		if o, ok := a.remoteOwner("notes/" + strconv.Itoa(i)); ok && o.ID == "test-b" {
			id = strconv.Itoa(i)
		}
	}
	return a, b, id
}

// answerAsCore answers the document reads of the edges on ns as a core holding version v of
// every document would (no core runs on these tests' NATS server), and returns the ids read,
// in a channel of room for ten.
func answerAsCore(t *testing.T, ns *natsembed.Server, v int64) <-chan string {
	t.Helper()
	core := natstest.Connect(t, ns.URL())
	reads := make(chan string, 10)
	if _, err := core.Subscribe(wire.ReadSubject, func(m *nats.Msg) {
		var req wire.ReadRequest
		_ = json.Unmarshal(m.Data, &req)
		select {
		case reads <- req.ID:
		default:
		}
		data, _ := json.Marshal(wire.ReadResponse{Doc: docVersion(req.ID, v)})
		_ = m.Respond(data)
	}); err != nil {
		t.Fatal(err)
	}
	if err := core.Flush(); err != nil {
		t.Fatal(err)
	}
	return reads
}

// TestOwnerOlderThanKnownReadsTheCore: an owner that has not yet heard of a version this
// edge knows exists (its change event is late there) answers with an older one; the edge
// does not serve it but reads the core.
func TestOwnerOlderThanKnownReadsTheCore(t *testing.T) {
	ns := natstest.Start(t)
	a, b, id := ownerPair(t, ns, nil)
	reads := answerAsCore(t, ns, 3)
	// The owner holds version 2; this edge has heard that 3 exists.
	b.cache.putDocument(docVersion(id, 2))
	b.cache.flush()
	a.cache.markVersion("notes", id, 3)
	a.cache.flush()

	if st, tag, cs := served(a, id); st != 200 || tag != `"3"` || cs != "perch; fwd=miss; stored" {
		t.Fatalf("%d %s %q, want version 3 from the core", st, tag, cs)
	}
	if got := <-reads; got != id {
		t.Fatalf("core read %q", got)
	}
	m := testCounter(t, a.metrics.peerFallback("older"))
	if m != 1 {
		t.Fatalf("fallbacks for an older owner %v, want 1", m)
	}
	// A key it owns and has, the owner answers from its cache, without the core.
	other := ""
	for i := 0; other == ""; i++ {
		k := fmt.Sprintf("o%d", i)
		if o, ok := a.remoteOwner("notes/" + k); ok && o.ID == "test-b" {
			other = k
		}
	}
	b.cache.putDocument(docVersion(other, 7))
	b.cache.flush()
	if st, tag, _ := served(a, other); st != 200 || tag != `"7"` {
		t.Fatalf("from the owner: %d %s", st, tag)
	}
	select {
	case got := <-reads:
		t.Fatalf("the core was read (%s) for a key its owner had", got)
	default:
	}
}

func testCounter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestDisconnectedOwnerReadsTheCore: an owner that has lost NATS cannot hear of changes, so
// a fill another edge asks of it reads the core rather than pass off what it cached before
// the outage as current.
func TestDisconnectedOwnerReadsTheCore(t *testing.T) {
	ns := natstest.Start(t)
	a, b, id := ownerPair(t, ns, nil)
	answerAsCore(t, ns, 5)
	b.cache.putDocument(docVersion(id, 3)) // from before the outage
	b.cache.flush()
	b.disconnected.Store(true)
	if st, tag, _ := served(a, id); st != 200 || tag != `"5"` {
		t.Fatalf("%d %s, want version 5: the disconnected owner read the core", st, tag)
	}
}
