package system_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/internal/clustertest"
	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/wire"
)

// propagation bounds how long the other edges may take to see a change. The contract's
// target is 100 ms at p99 on one machine; the test allows for a loaded CI machine under -race.
const propagation = 5 * time.Second

type doc struct {
	ID         string          `json:"id"`
	Collection string          `json:"collection"`
	Version    int64           `json:"version"`
	Data       json.RawMessage `json:"data"`
}

func decode(t *testing.T, r clustertest.Response) doc {
	t.Helper()
	var d doc
	if err := json.Unmarshal(r.Body, &d); err != nil {
		t.Fatalf("decode %d %s: %v", r.Status, r.Body, err)
	}
	return d
}

// expectVersion waits until GET url answers 200 with the version, or 404 when version is 0.
func expectVersion(t *testing.T, url string, version int64, within time.Duration) {
	t.Helper()
	clustertest.Eventually(t, within, func() error {
		r := clustertest.Do(t, "GET", url, nil, nil)
		if version == 0 {
			if r.Status != 404 {
				return fmt.Errorf("GET %s: %d %s, want 404", url, r.Status, r.Body)
			}
			return nil
		}
		if r.Status != 200 {
			return fmt.Errorf("GET %s: %d %s", url, r.Status, r.Body)
		}
		var d doc
		if err := json.Unmarshal(r.Body, &d); err != nil {
			return err
		}
		if d.Version != version {
			return fmt.Errorf("GET %s: version %d, want %d", url, d.Version, version)
		}
		return nil
	})
}

func TestChangesReachEveryEdge(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{})
	path := "/v1/collections/notes/docs/n1"
	others := func(writer int) []int {
		var o []int
		for i := range c.EdgeURLs() {
			if i != writer {
				o = append(o, i)
			}
		}
		return o
	}
	steps := []struct {
		name    string
		writer  int
		method  string
		body    string
		status  int
		version int64 // 0: deleted
	}{
		{"create", 0, "PUT", `{"title":"first"}`, 201, 1},
		{"update", 1, "PATCH", `{"body":"more"}`, 200, 2},
		{"replace", 2, "PUT", `{"title":"second"}`, 200, 3},
		{"delete", 0, "DELETE", "", 204, 0},
		{"recreate", 1, "PUT", `{"title":"again"}`, 201, 5},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			var body []byte
			if s.body != "" {
				body = []byte(s.body)
			}
			r := clustertest.Do(t, s.method, c.Edge(s.writer)+path, nil, body)
			if r.Status != s.status {
				t.Fatalf("%s: %d %s, want %d", s.method, r.Status, r.Body, s.status)
			}
			// Read-your-writes: the writing edge answers with the new version at once.
			got := clustertest.Do(t, "GET", c.Edge(s.writer)+path, nil, nil)
			if s.version == 0 {
				if got.Status != 404 {
					t.Fatalf("writer's read after delete: %d %s", got.Status, got.Body)
				}
			} else if d := decode(t, got); got.Status != 200 || d.Version != s.version {
				t.Fatalf("writer's read: %d version %d, want version %d", got.Status, d.Version, s.version)
			}
			if cs := got.Header["Cache-Status"]; !strings.HasPrefix(cs, "perch;") {
				t.Errorf("Cache-Status %q", cs)
			}
			for _, i := range others(s.writer) {
				expectVersion(t, c.Edge(i)+path, s.version, propagation)
			}
		})
	}
	t.Run("data", func(t *testing.T) {
		d := decode(t, clustertest.Do(t, "GET", c.Edge(2)+path, nil, nil))
		if string(d.Data) != `{"title":"again"}` {
			t.Fatalf("data %s", d.Data)
		}
	})
}

func TestRestartKeepsAcknowledgedDocuments(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{})
	acked := map[string]doc{}
	for i := range 40 {
		edgeURL := c.Edge(i % 3)
		var r clustertest.Response
		if i%2 == 0 {
			r = clustertest.Do(t, "PUT", fmt.Sprintf("%s/v1/collections/items/docs/put-%d", edgeURL, i), nil, fmt.Appendf(nil, `{"n":%d}`, i))
		} else {
			r = clustertest.Do(t, "POST", edgeURL+"/v1/collections/items/docs", nil, fmt.Appendf(nil, `{"n":%d}`, i))
		}
		if r.Status != 201 {
			t.Fatalf("write %d: %d %s", i, r.Status, r.Body)
		}
		d := decode(t, r)
		acked[d.ID] = d
	}
	c.Restart()
	for id, want := range acked {
		r := clustertest.Do(t, "GET", c.Edge(rand.IntN(3))+"/v1/collections/items/docs/"+id, nil, nil)
		if r.Status != 200 {
			t.Fatalf("after restart %s: %d %s", id, r.Status, r.Body)
		}
		if got := decode(t, r); got.Version != want.Version || string(got.Data) != string(want.Data) {
			t.Fatalf("after restart %s: %+v, want %+v", id, got, want)
		}
	}
}

// TestKilledCoreLosesNoAcknowledgedWrite kills the core while writes stream in, through all
// edges, and starts it again. Every write answered 2xx (202 included) must then be in the
// store exactly once: each created document exists, and each writer's counter document has
// seen exactly its acknowledged patches.
func TestKilledCoreLosesNoAcknowledgedWrite(t *testing.T) {
	ecfg := edge.DefaultConfig()
	ecfg.WriteTimeout = 300 * time.Millisecond
	ccfg := core.LocalConfig()
	ccfg.AckWait = time.Second
	c := clustertest.Start(t, clustertest.Options{Edge: &ecfg, Core: &ccfg})

	const writers = 6
	type ledger struct {
		created  []string // ids of acknowledged creates
		patches  int      // acknowledged patches of the writer's counter
		failed   int      // patches answered with an error: they may or may not apply
		writeIDs []string // receipts of 202 answers
	}
	ledgers := make([]ledger, writers)
	for w := range writers {
		r := clustertest.Do(t, "PUT", fmt.Sprintf("%s/v1/collections/counters/docs/w%d", c.Edge(w%3), w), nil, []byte(`{"n":0}`))
		if r.Status != 201 {
			t.Fatalf("counter %d: %d %s", w, r.Status, r.Body)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := &ledgers[w]
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				base := c.Edge((w + i) % 3)
				if i%2 == 0 {
					r, err := clustertest.Send("POST", base+"/v1/collections/ledger/docs", nil, fmt.Appendf(nil, `{"w":%d,"i":%d}`, w, i))
					if err != nil || r.Status/100 != 2 {
						continue
					}
					var got struct {
						ID      string `json:"id"`
						WriteID string `json:"write_id"`
					}
					if json.Unmarshal(r.Body, &got) != nil || got.ID == "" {
						t.Errorf("create answered %d without an id: %s", r.Status, r.Body)
						return
					}
					l.created = append(l.created, got.ID)
					if r.Status == 202 {
						l.writeIDs = append(l.writeIDs, got.WriteID)
					}
				} else {
					r, err := clustertest.Send("PATCH", fmt.Sprintf("%s/v1/collections/counters/docs/w%d", base, w), nil, fmt.Appendf(nil, `{"last":%d}`, i))
					switch {
					case err == nil && r.Status/100 == 2:
						l.patches++
						if r.Status == 202 {
							var got struct {
								WriteID string `json:"write_id"`
							}
							_ = json.Unmarshal(r.Body, &got)
							l.writeIDs = append(l.writeIDs, got.WriteID)
						}
					default:
						l.failed++
					}
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond) // let writes flow before the crash
	c.KillCore()
	time.Sleep(800 * time.Millisecond) // writes keep coming: the edges answer 202
	if err := c.StartCore(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()

	store := c.Store()
	var queued int
	for _, l := range ledgers {
		queued += len(l.writeIDs)
		for _, id := range l.writeIDs {
			clustertest.Eventually(t, 30*time.Second, func() error {
				if _, err := store.WriteOutcome(t.Context(), id); err != nil {
					return fmt.Errorf("write %s: %w", id, err)
				}
				return nil
			})
		}
	}
	if queued == 0 {
		t.Fatal("no write was answered 202: the core was not down while writes came")
	}
	total := 0
	for w, l := range ledgers {
		total += len(l.created) + l.patches
		for _, id := range l.created {
			d, err := store.Get(t.Context(), "ledger", id)
			if err != nil || d.Version != 1 || d.Deleted {
				t.Fatalf("acknowledged create %s: %+v, %v", id, d, err)
			}
		}
		d, err := store.Get(t.Context(), "counters", fmt.Sprintf("w%d", w))
		if err != nil {
			t.Fatal(err)
		}
		applied := int(d.Version) - 1
		if applied < l.patches || applied > l.patches+l.failed {
			t.Fatalf("writer %d: %d patches applied, %d acknowledged, %d failed", w, applied, l.patches, l.failed)
		}
	}
	t.Logf("%d acknowledged writes, %d of them answered 202 while the core was down", total, queued)
}

// TestOutboxDeliversAfterCrash commits a change the way a core does and then "dies" before
// publishing its event: a later core finds the event in the outbox and announces it, and the
// edges learn of the change without asking for it.
func TestOutboxDeliversAfterCrash(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{})
	if err := c.StopCore(); err != nil {
		t.Fatal(err)
	}
	data := []byte(`{"from":"outbox"}`)
	batch := &wire.Batch{ID: "crash-1", Partition: wire.Partition("notes", "o1", wire.DefaultPartitions), Commands: []wire.Command{
		{WriteID: "w-crash-1", Op: wire.OpPut, Collection: "notes", ID: "o1", Data: data},
	}}
	outs, events, err := c.Store().ApplyBatch(t.Context(), batch, time.Now())
	if err != nil || len(outs) != 1 || outs[0].Status != 201 || len(events) != 1 {
		t.Fatalf("apply: %+v %+v %v", outs, events, err)
	}
	nc := natstest.Connect(t, c.NATSURL())
	heard, err := nc.SubscribeSync(wire.ChangeSubject("notes"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.StartCore(); err != nil {
		t.Fatal(err)
	}
	msg, err := heard.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no change event from the outbox: %v", err)
	}
	var evs []wire.ChangeEvent
	if err := json.Unmarshal(msg.Data, &evs); err != nil || len(evs) != 1 || evs[0].ID != "o1" || evs[0].Version != 1 {
		t.Fatalf("events %s: %v", msg.Data, err)
	}
	clustertest.Eventually(t, 10*time.Second, func() error {
		pending, err := c.Store().PendingEvents(t.Context(), time.Now().Add(time.Hour), 10)
		if err != nil || len(pending) != 0 {
			return fmt.Errorf("outbox still holds %d events (%v)", len(pending), err)
		}
		return nil
	})
	// With no core to fill a miss, only the event can have put the document in the caches.
	if err := c.StopCore(); err != nil {
		t.Fatal(err)
	}
	for i := range c.EdgeURLs() {
		url := c.Edge(i) + "/v1/collections/notes/docs/o1"
		clustertest.Eventually(t, propagation, func() error {
			r := clustertest.Do(t, "GET", url, nil, nil)
			if r.Status != 200 || r.Header["Cache-Status"] != "perch; hit" {
				return fmt.Errorf("edge %d: %d %q: the event did not reach its cache", i, r.Status, r.Header["Cache-Status"])
			}
			return nil
		})
	}
}

// TestMetrics scrapes the admin listener after traffic and finds every family with values
// that add up.
func TestMetrics(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Admin: true})
	url := c.Edge(0) + "/v1/collections/m/docs/d"
	clustertest.Do(t, "PUT", url, nil, []byte(`{"a":1}`))
	for range 5 {
		clustertest.Do(t, "GET", url, nil, nil)
	}
	clustertest.Do(t, "GET", c.Edge(0)+"/v1/collections/m/docs/absent", nil, nil)
	clustertest.Do(t, "GET", c.Edge(0)+"/nope", nil, nil)

	scrape := func() map[string]float64 {
		r := clustertest.Do(t, "GET", c.MetricsURL(), nil, nil)
		if r.Status != 200 {
			t.Fatalf("metrics: %d", r.Status)
		}
		sums := map[string]float64{}
		for _, line := range strings.Split(string(r.Body), "\n") {
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			series, value, ok := strings.Cut(line, " ")
			if !ok {
				t.Fatalf("metrics line %q", line)
			}
			var v float64
			if _, err := fmt.Sscan(value, &v); err != nil {
				t.Fatalf("metrics line %q: %v", line, err)
			}
			name, labels, _ := strings.Cut(series, "{")
			sums[name] += v
			sums[name+"{"+labels] += v
		}
		return sums
	}
	// Change events are announced after the write is answered: wait for all three edges.
	var sums map[string]float64
	clustertest.Eventually(t, propagation, func() error {
		sums = scrape()
		if n := sums["perch_edge_change_events_total"]; n < 3 {
			return fmt.Errorf("%v change events received", n)
		}
		return nil
	})
	want := map[string]float64{
		"perch_edge_requests_total":                 8,
		"perch_edge_request_duration_seconds_count": 8,
		"perch_edge_writes_total":                   1,
		"perch_edge_write_batch_commands_count":     1,
		"perch_edge_cache_fills_total":              1,
		"perch_edge_change_events_total":            3,
		"perch_core_commands_total":                 1,
		"perch_core_batches_total":                  1,
		"perch_core_reads_total":                    1,
		"perch_core_apply_seconds_count":            1,
		"go_goroutines":                             1,
	}
	for name, least := range want {
		if sums[name] < least {
			t.Errorf("%s = %v, want at least %v", name, sums[name], least)
		}
	}
	count := func(prefix string, labels ...string) float64 {
		var n float64
	series:
		for k, v := range sums {
			if !strings.HasPrefix(k, prefix+"{") {
				continue
			}
			for _, l := range labels {
				if !strings.Contains(k, l) {
					continue series
				}
			}
			n += v
		}
		return n
	}
	// The first read after the write may miss (the cache takes new keys asynchronously);
	// the others hit. The unknown route is counted under its own label.
	if hits, misses := count("perch_edge_cache_requests_total", `result="hit"`), count("perch_edge_cache_requests_total", `result="miss"`); hits < 4 || hits+misses < 6 {
		t.Errorf("cache hits %v, misses %v", hits, misses)
	}
	if n := count("perch_edge_requests_total", `route="unknown"`, `code="404"`); n != 1 {
		t.Errorf("unknown route counted %v times", n)
	}
	if n := count("perch_edge_requests_total", `route="/v1/collections/{collection}/docs/{id}"`, `method="PUT"`, `code="201"`); n != 1 {
		t.Errorf("PUT 201 counted %v times", n)
	}
}
