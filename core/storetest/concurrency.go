package storetest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

var concurrencyTests = []test{
	{"IfMatchRace", testIfMatchRace},
	{"PartitionsInParallel", testPartitionsInParallel},
}

// testIfMatchRace has several writers patch one document with If-Match set to the version they
// all read: at every version exactly one of them wins and the others get 412, and no update
// is lost.
func testIfMatchRace(h *harness) {
	const writers, rounds = 6, 5
	h.mustApply(h.put("notes", "x", `{}`))
	wantKeys := []string{}
	for round := range rounds {
		v := h.get("notes", "x").Version
		outs := make([]wire.Outcome, writers)
		errs := make([]error, writers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for w := range writers {
			cmd := ifMatch(h.patch("notes", "x", fmt.Sprintf(`{"w%dr%d":true}`, w, round)), v)
			b := h.batch(cmd)
			now := h.now
			wg.Go(func() {
				<-start
				o, _, err := h.store.ApplyBatch(h.ctx, b, now)
				if err == nil && len(o) != 1 {
					err = fmt.Errorf("%d outcomes for one command", len(o))
				}
				if err == nil {
					outs[w] = o[0]
				}
				errs[w] = err
			})
		}
		close(start)
		wg.Wait()
		winners := 0
		for w := range writers {
			if errs[w] != nil {
				h.tb.Fatalf("round %d writer %d: %v", round, w, errs[w])
			}
			switch o := outs[w]; {
			case o.Status == http.StatusOK && o.Problem == nil:
				winners++
				if o.Doc.Version != v+1 {
					h.tb.Fatalf("round %d: winner wrote version %d, want %d", round, o.Doc.Version, v+1)
				}
				wantKeys = append(wantKeys, fmt.Sprintf("w%dr%d", w, round))
			case o.Problem != nil && o.Problem.Code == problem.PreconditionFailed:
			default:
				h.tb.Fatalf("round %d writer %d: status %d problem %v", round, w, o.Status, o.Problem)
			}
		}
		if winners != 1 {
			h.tb.Fatalf("round %d: %d writers won at version %d, want exactly 1", round, winners, v)
		}
	}
	d := h.get("notes", "x")
	if d.Version != 1+rounds {
		h.tb.Fatalf("version %d after %d rounds, want %d", d.Version, rounds, 1+rounds)
	}
	var data map[string]any
	if err := json.Unmarshal(d.Data, &data); err != nil {
		h.tb.Fatalf("data %s: %v", d.Data, err)
	}
	var got []string
	for k := range data {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(wantKeys)
	if !slices.Equal(got, wantKeys) {
		h.tb.Fatalf("data keys %v, want the winners' %v", got, wantKeys)
	}
}

// testPartitionsInParallel applies batches on every partition at once, with readers running
// beside them: every batch applies, each partition numbers its changes 1, 2, 3... and the
// reads succeed throughout.
func testPartitionsInParallel(h *harness) {
	const batches, perBatch = 8, 3
	ids := make([][]string, h.parts)
	for i := 0; slices.ContainsFunc(ids, func(s []string) bool { return len(s) < batches*perBatch }); i++ {
		id := fmt.Sprintf("d%d", i)
		if p := wire.Partition("notes", id, h.parts); len(ids[p]) < batches*perBatch {
			ids[p] = append(ids[p], id)
		}
	}
	type result struct {
		outs []wire.Outcome
		evs  []wire.ChangeEvent
		err  error
	}
	results := make([]result, h.parts)
	bs := make([][]*wire.Batch, h.parts)
	for p := range h.parts {
		for b := range batches {
			var cmds []wire.Command
			for _, id := range ids[p][b*perBatch : (b+1)*perBatch] {
				cmds = append(cmds, h.put("notes", id, fmt.Sprintf(`{"p":%d}`, p)))
			}
			bs[p] = append(bs[p], h.batch(cmds...))
		}
	}
	now := h.tick()
	start := make(chan struct{})
	var writers, readers sync.WaitGroup
	for p := range h.parts {
		writers.Go(func() {
			<-start
			for _, b := range bs[p] {
				outs, evs, err := h.store.ApplyBatch(h.ctx, b, now)
				if err != nil {
					results[p].err = err
					return
				}
				results[p].outs = append(results[p].outs, outs...)
				results[p].evs = append(results[p].evs, evs...)
			}
		})
	}
	done := make(chan struct{})
	readErrs := make([]error, 2)
	readers.Go(func() {
		<-start
		for {
			select {
			case <-done:
				return
			default:
			}
			if _, err := h.store.List(h.ctx, wire.ListQuery{Collection: "notes", Limit: 10}); err != nil {
				readErrs[0] = fmt.Errorf("list: %w", err)
				return
			}
		}
	})
	readers.Go(func() {
		<-start
		for {
			select {
			case <-done:
				return
			default:
			}
			page, err := h.store.Sync(h.ctx, wire.SyncQuery{Collections: []string{"notes"}, Limit: 5})
			if err != nil {
				readErrs[1] = fmt.Errorf("sync: %w", err)
				return
			}
			if len(page.Next) != h.parts {
				readErrs[1] = fmt.Errorf("sync: Next has %d entries", len(page.Next))
				return
			}
		}
	})
	close(start)
	writers.Wait()
	close(done)
	readers.Wait()
	for _, err := range readErrs {
		if err != nil {
			h.tb.Fatal(err)
		}
	}
	var all []wire.ChangeEvent
	for p, r := range results {
		if r.err != nil {
			h.tb.Fatalf("partition %d: %v", p, r.err)
		}
		for _, o := range r.outs {
			wantStatus(h.tb, o, http.StatusCreated)
		}
		if len(r.evs) != batches*perBatch {
			h.tb.Fatalf("partition %d: %d events, want %d", p, len(r.evs), batches*perBatch)
		}
		wantContiguous(h.tb, r.evs)
		all = append(all, r.evs...)
	}
	changes, next := h.syncAll(wire.SyncQuery{Collections: []string{"notes"}, Limit: wire.MaxSyncLimit})
	if len(changes) != h.parts*batches*perBatch {
		h.tb.Fatalf("synced %d documents, want %d", len(changes), h.parts*batches*perBatch)
	}
	if want := h.counters(all); !slices.Equal(next, want) {
		h.tb.Fatalf("Next %v, want %v", next, want)
	}
	wantSameEvents(h.tb, h.pending(now.Add(time.Second), 1000), all)
}
