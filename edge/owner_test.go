package edge_test

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/perchhq/perch/internal/clustertest"
	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/wire"
)

// storeQuietly writes documents straight to the store, as a core would, and drops their
// change events: no edge hears of them, so the first read of each is a miss everywhere.
func storeQuietly(t *testing.T, c *clustertest.Cluster, collection string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		b := &wire.Batch{ID: "quiet-" + id, Partition: wire.Partition(collection, id, wire.DefaultPartitions),
			Commands: []wire.Command{{WriteID: "w-quiet-" + id, Op: wire.OpPut, Collection: collection, ID: id, Data: []byte(`{"n":1}`)}}}
		outs, events, err := c.Store().ApplyBatch(t.Context(), b, time.Now())
		if err != nil || len(outs) != 1 || outs[0].Status != 201 {
			t.Fatalf("apply %s: %+v %v", id, outs, err)
		}
		if err := c.Store().DeleteEvents(t.Context(), events); err != nil {
			t.Fatal(err)
		}
	}
}

// coreReads counts the document reads the core is asked for, by document id.
type coreReads struct {
	mu  sync.Mutex
	ids map[string]int
}

func tapCoreReads(t *testing.T, c *clustertest.Cluster) *coreReads {
	t.Helper()
	nc := natstest.Connect(t, c.NATSURL())
	r := &coreReads{ids: map[string]int{}}
	if _, err := nc.Subscribe(wire.ReadSubject, func(m *nats.Msg) {
		var req wire.ReadRequest
		if json.Unmarshal(m.Data, &req) == nil && req.Kind == wire.ReadGet {
			r.mu.Lock()
			r.ids[req.ID]++
			r.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *coreReads) of(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ids[id]
}

// waitForRings waits until every edge's hash ring holds the edges of its region. It is the
// tests' starting point, not what they measure: the bound is wide enough for a start of
// five edges on a machine busy with other test packages under -race.
func waitForRings(t *testing.T, c *clustertest.Cluster, want map[string]float64) {
	t.Helper()
	clustertest.Eventually(t, 30*time.Second, func() error {
		got := c.Metric("perch_edge_ring_members", "region")
		for region, n := range want {
			if got[region] != n {
				return fmt.Errorf("ring members by region %v, want %v", got, want)
			}
		}
		return nil
	})
}

// TestOwnerFillOneCoreReadPerRegion: 100 requests at once for a document no edge has, spread
// over two regions of three and two edges, cost one core read per region. The edges that do
// not own the key fill from its owner, which reads the core once.
func TestOwnerFillOneCoreReadPerRegion(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Regions: []string{"a", "a", "a", "b", "b"}})
	// Each edge's gauge sums over a region: 3 edges × 3 members, 2 × 2.
	waitForRings(t, c, map[string]float64{"a": 9, "b": 4})
	reads := tapCoreReads(t, c)
	storeQuietly(t, c, "notes", "hot")

	var wg sync.WaitGroup
	var bad atomic.Int32
	for i := range 100 {
		wg.Go(func() {
			r, err := clustertest.Send("GET", c.Edge(i%5)+"/v1/collections/notes/docs/hot", nil, nil)
			if err != nil || r.Status != 200 || r.Header["Etag"] != `"1"` {
				bad.Add(1)
				t.Errorf("edge %d: %d %s %v", i%5, r.Status, r.Body, err)
			}
		})
	}
	wg.Wait()
	if bad.Load() > 0 {
		t.FailNow()
	}
	if n := reads.of("hot"); n != 2 {
		t.Errorf("%d core reads of the document for two regions, want 2", n)
	}
	// The non-owners of each region filled from the owner: two in a, one in b.
	peer := c.Metric("perch_edge_cache_fills_total", "region", "source")
	served := c.Metric("perch_edge_peer_fills_served_total", "region", "result")
	if peer["a,peer"] != 2 || peer["b,peer"] != 1 || peer["a,core"] != 1 || peer["b,core"] != 1 {
		t.Errorf("fills by region and source %v, want a: 2 peer, 1 core; b: 1 peer, 1 core", peer)
	}
	if served["a,fill"]+served["a,hit"] != 2 || served["b,fill"]+served["b,hit"] != 1 {
		t.Errorf("peer fills served %v", served)
	}
	if fb := c.Metric("perch_edge_peer_fill_fallbacks_total"); fb[""] != 0 {
		t.Errorf("%v fills fell back to the core", fb[""])
	}
}

// TestKilledOwnerLeavesTheRing: when the owner of a key dies, the region's other edges drop
// it from their rings within 5 s and keep answering the key's misses, from the core or its
// next owner, meanwhile too.
func TestKilledOwnerLeavesTheRing(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Regions: []string{"a", "a", "a"}})
	waitForRings(t, c, map[string]float64{"a": 9})
	ids := make([]string, 30)
	for i := range ids {
		ids[i] = fmt.Sprintf("k%02d", i)
	}
	storeQuietly(t, c, "notes", ids...)

	c.KillEdge(2)
	killed := time.Now()
	// Misses while the ring still names the dead edge: the edges fall back to the core.
	for _, id := range ids[:15] {
		for _, i := range []int{0, 1} {
			if r := clustertest.Do(t, "GET", c.Edge(i)+"/v1/collections/notes/docs/"+id, nil, nil); r.Status != 200 {
				t.Fatalf("edge %d, %s while an owner is dead: %d %s", i, id, r.Status, r.Body)
			}
		}
	}
	clustertest.Eventually(t, 5*time.Second-time.Since(killed), func() error {
		if got := c.Metric("perch_edge_ring_members")[""]; got != 4 {
			return fmt.Errorf("ring members summed over the survivors: %v, want 2×2", got)
		}
		return nil
	})
	// Once the ring is rebuilt, every miss goes to a live owner: none falls back.
	before := c.Metric("perch_edge_peer_fill_fallbacks_total")[""]
	for _, id := range ids[15:] {
		for _, i := range []int{0, 1} {
			if r := clustertest.Do(t, "GET", c.Edge(i)+"/v1/collections/notes/docs/"+id, nil, nil); r.Status != 200 {
				t.Fatalf("edge %d, %s: %d %s", i, id, r.Status, r.Body)
			}
		}
	}
	if after := c.Metric("perch_edge_peer_fill_fallbacks_total")[""]; after != before {
		t.Errorf("%v fills fell back to the core after the ring dropped the dead edge", after-before)
	}
}
