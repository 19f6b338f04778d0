package storetest

import (
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

var batchTests = []test{
	{"Group", testBatchesGroup},
	{"Fence", testBatchesFence},
	{"UnknownProducerEarly", testBatchesUnknownProducerEarly},
	{"RejectedCommandAlone", testBatchesRejectedCommandAlone},
	{"SameBatchTwice", testBatchesSameBatchTwice},
	{"SameProducerConcurrently", testBatchesSameProducerConcurrently},
	{"InvalidGroup", testBatchesInvalidGroup},
	{"ExpireProducers", testBatchesExpireProducers},
}

func wantBatchStatus(tb testing.TB, i int, r core.BatchResult, status core.BatchStatus) {
	tb.Helper()
	if r.Status != status {
		tb.Fatalf("batch %d: %v, want %v", i, r.Status, status)
	}
}

// wantReplayOf fails unless got are the outcomes first, replayed.
func wantReplayOf(tb testing.TB, got, first []wire.Outcome) {
	tb.Helper()
	if len(got) != len(first) {
		tb.Fatalf("%d replayed outcomes, want %d", len(got), len(first))
	}
	for i := range got {
		wantOutcome(tb, got[i], replayed(first[i]))
	}
}

// wantEventsOf fails unless evs are the events of docs, in order, numbered from seq first in
// partition p.
func wantEventsOf(tb testing.TB, evs []wire.ChangeEvent, p int, first int64, docs ...*wire.Document) {
	tb.Helper()
	if len(evs) != len(docs) {
		tb.Fatalf("%d events %v, want %d", len(evs), eventKeys(evs), len(docs))
	}
	for i, d := range docs {
		wantEvent(tb, evs[i], core.EventFor(p, first+int64(i), d))
	}
}

// wantNoChange fails if anything was added to the outbox since it held pending events.
func (h *harness) wantNoChange(pending []wire.ChangeEvent) {
	h.tb.Helper()
	wantSameEvents(h.tb, h.pending(h.now.Add(time.Hour), 1000), pending)
}

func (h *harness) wantNoRecord(writeID string) {
	h.tb.Helper()
	if o, err := h.store.WriteOutcome(h.ctx, writeID); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("WriteOutcome(%s) = %+v, %v; want core.ErrNotFound", writeID, o, err)
	}
}

func testBatchesGroup(h *harness) {
	p := 1
	a, b, c, d := h.idIn("notes", "a", p), h.idIn("notes", "b", p), h.idIn("notes", "c", p), h.idIn("notes", "d", p)
	_, seeded := h.mustApply(h.put("notes", b, `{"n":0}`)) // seq 1 of p
	bs := []*wire.Batch{
		h.batch(h.del("notes", b), h.put("notes", d, `{"n":4}`)), // not fenced
		h.batchOf("edge-a", 1, h.put("notes", a, `{"n":1}`), h.put("notes", c, `{"n":3}`)),
		h.batchOf("edge-b", 1, h.patch("notes", a, `{"m":2}`)), // sees the batch before it
	}
	results, evs := h.applyBatches(bs...)
	for i, r := range results {
		wantBatchStatus(h.tb, i, r, core.BatchApplied)
	}
	outs := [][]wire.Outcome{results[0].Outcomes, results[1].Outcomes, results[2].Outcomes}
	wantStatus(h.tb, outs[0][0], http.StatusNoContent)
	wantStatus(h.tb, outs[0][1], http.StatusCreated)
	wantStatus(h.tb, outs[1][0], http.StatusCreated)
	wantStatus(h.tb, outs[1][1], http.StatusCreated)
	wantStatus(h.tb, outs[2][0], http.StatusOK)
	if v := outs[2][0].Doc.Version; v != 2 {
		h.tb.Fatalf("patch after the put of the batch before: version %d, want 2", v)
	}
	wantData(h.tb, *outs[2][0].Doc, `{"n":1,"m":2}`)

	// The group's changes follow the partition's last one without a gap, in the order the
	// batches were applied.
	wantEventsOf(h.tb, evs, p, 2, outs[0][0].Doc, outs[0][1].Doc, outs[1][0].Doc, outs[1][1].Doc, outs[2][0].Doc)
	wantSameEvents(h.tb, h.pending(h.now.Add(time.Hour), 1000), append(seeded, evs...))

	wantDoc(h.tb, h.get("notes", b), *outs[0][0].Doc)
	wantDoc(h.tb, h.get("notes", d), *outs[0][1].Doc)
	wantDoc(h.tb, h.get("notes", c), *outs[1][1].Doc)
	wantDoc(h.tb, h.get("notes", a), *outs[2][0].Doc)
	for i, bo := range outs {
		for _, o := range bo {
			if o.Replayed {
				h.tb.Fatalf("batch %d: first apply of %s is marked replayed", i, o.WriteID)
			}
			wantOutcome(h.tb, h.outcome(o.WriteID), o)
		}
	}

	// Both producers were recorded: each is at 1.
	results, _ = h.applyBatches(
		h.batchOf("edge-b", 1, h.put("notes", c, `{"n":"again"}`)),
		h.batchOf("edge-a", 2, h.put("notes", c, `{"n":5}`)),
	)
	wantBatchStatus(h.tb, 0, results[0], core.BatchDuplicate)
	wantBatchStatus(h.tb, 1, results[1], core.BatchApplied)
	wantData(h.tb, h.get("notes", c), `{"n":5}`)
}

func testBatchesFence(h *harness) {
	const producer = "edge-1"
	p := 2
	x, y, z := h.idIn("notes", "x", p), h.idIn("notes", "y", p), h.idIn("notes", "z", p)
	b1 := h.batchOf(producer, 1, h.put("notes", x, `{"v":1}`))
	r1, _ := h.applyBatches(b1)
	wantBatchStatus(h.tb, 0, r1[0], core.BatchApplied)
	b2 := h.batchOf(producer, 2, h.patch("notes", x, `{"w":2}`))
	r2, _ := h.applyBatches(b2)
	wantBatchStatus(h.tb, 0, r2[0], core.BatchApplied)
	wantStatus(h.tb, r2[0].Outcomes[0], http.StatusOK)
	doc := h.get("notes", x)
	pending := h.pending(h.now.Add(time.Hour), 1000)

	// Redelivered, a batch the producer passed applies nothing and answers with the outcomes
	// recorded for its write ids.
	for _, tt := range []struct {
		b     *wire.Batch
		first []wire.Outcome
	}{{b2, r2[0].Outcomes}, {b1, r1[0].Outcomes}} {
		results, evs := h.applyBatches(tt.b)
		wantBatchStatus(h.tb, 0, results[0], core.BatchDuplicate)
		wantReplayOf(h.tb, results[0].Outcomes, tt.first)
		if len(evs) != 0 {
			h.tb.Fatalf("duplicate of seq %d emitted events %v", tt.b.Seq, eventKeys(evs))
		}
	}
	wantDoc(h.tb, h.get("notes", x), doc)
	h.wantNoChange(pending)

	// The sequence decides, not the write ids: a passed seq with new commands is a duplicate
	// too, of which the store has no outcome.
	fresh := h.put("notes", y, `{}`)
	results, evs := h.applyBatches(h.batchOf(producer, 2, fresh))
	wantBatchStatus(h.tb, 0, results[0], core.BatchDuplicate)
	if len(results[0].Outcomes) != 0 || len(evs) != 0 {
		h.tb.Fatalf("duplicate with new write ids: outcomes %v, events %v; want none", results[0].Outcomes, eventKeys(evs))
	}
	h.wantAbsent("notes", y)
	h.wantNoRecord(fresh.WriteID)

	// A seq past the next waits for the one before it: nothing is done.
	zput := h.put("notes", z, `{"v":4}`)
	b4 := h.batchOf(producer, 4, zput, h.patch("notes", y, `{"w":4}`))
	results, evs = h.applyBatches(b4)
	wantBatchStatus(h.tb, 0, results[0], core.BatchEarly)
	if len(evs) != 0 {
		h.tb.Fatalf("early batch emitted events %v", eventKeys(evs))
	}
	h.wantAbsent("notes", z)
	h.wantAbsent("notes", y)
	h.wantNoRecord(zput.WriteID)
	h.wantNoChange(pending)

	// Offered again with the one it waits for, after it in bs: both apply, in seq order.
	b3 := h.batchOf(producer, 3, h.put("notes", y, `{"v":3}`))
	results, evs = h.applyBatches(b4, b3)
	wantBatchStatus(h.tb, 0, results[0], core.BatchApplied)
	wantBatchStatus(h.tb, 1, results[1], core.BatchApplied)
	put3, put4, patch4 := results[1].Outcomes[0], results[0].Outcomes[0], results[0].Outcomes[1]
	wantStatus(h.tb, put3, http.StatusCreated)
	wantStatus(h.tb, put4, http.StatusCreated)
	wantStatus(h.tb, patch4, http.StatusOK)
	if patch4.Doc.Version != 2 {
		h.tb.Fatalf("seq 4's patch: version %d, want 2 (after seq 3's put)", patch4.Doc.Version)
	}
	wantData(h.tb, *patch4.Doc, `{"v":3,"w":4}`)
	wantDoc(h.tb, h.get("notes", y), *patch4.Doc)
	wantDoc(h.tb, h.get("notes", z), *put4.Doc)
	wantEventsOf(h.tb, evs, p, 3, put3.Doc, put4.Doc, patch4.Doc)

	// The producer is at 4.
	again, _ := h.applyBatches(b4)
	wantBatchStatus(h.tb, 0, again[0], core.BatchDuplicate)
	wantReplayOf(h.tb, again[0].Outcomes, results[0].Outcomes)
}

func testBatchesUnknownProducerEarly(h *harness) {
	x := h.idIn("notes", "x", 0)
	b2 := h.batchOf("new", 2, h.put("notes", x, `{"v":2}`))
	results, evs := h.applyBatches(b2)
	wantBatchStatus(h.tb, 0, results[0], core.BatchEarly)
	if len(evs) != 0 {
		h.tb.Fatalf("early batch emitted events %v", eventKeys(evs))
	}
	h.wantAbsent("notes", x)

	results, _ = h.applyBatches(h.batchOf("new", 1, h.put("notes", x, `{"v":1}`)))
	wantBatchStatus(h.tb, 0, results[0], core.BatchApplied)
	results, _ = h.applyBatches(b2)
	wantBatchStatus(h.tb, 0, results[0], core.BatchApplied)
	wantStatus(h.tb, results[0].Outcomes[0], http.StatusOK)
	wantDoc(h.tb, h.get("notes", x), *results[0].Outcomes[0].Doc)
	if v := results[0].Outcomes[0].Doc.Version; v != 2 {
		h.tb.Fatalf("version %d, want 2", v)
	}
}

func testBatchesRejectedCommandAlone(h *harness) {
	p := 3
	a, b, c, d := h.idIn("notes", "a", p), h.idIn("notes", "b", p), h.idIn("notes", "c", p), h.idIn("notes", "d", p)
	h.mustApply(h.put("notes", b, `{"n":0}`))
	results, evs := h.applyBatches(
		h.batchOf("edge-a", 1,
			h.put("notes", a, `{"n":1}`),
			ifMatch(h.patch("notes", b, `{"n":9}`), 5), // stale: 412
			h.put("notes", c, `{"n":3}`)),
		h.batch(ifMatch(h.patch("notes", b, `{"m":2}`), 1)),
		h.batchOf("edge-b", 1, h.put("notes", d, `{"n":4}`)),
	)
	for i, r := range results {
		wantBatchStatus(h.tb, i, r, core.BatchApplied)
	}
	wantStatus(h.tb, results[0].Outcomes[0], http.StatusCreated)
	wantProblem(h.tb, results[0].Outcomes[1], problem.PreconditionFailed)
	wantStatus(h.tb, results[0].Outcomes[2], http.StatusCreated)
	wantStatus(h.tb, results[1].Outcomes[0], http.StatusOK)
	wantStatus(h.tb, results[2].Outcomes[0], http.StatusCreated)
	if len(evs) != 4 {
		h.tb.Fatalf("%d events, want 4 (the rejected command takes no seq)", len(evs))
	}
	wantData(h.tb, h.get("notes", a), `{"n":1}`)
	wantData(h.tb, h.get("notes", b), `{"n":0,"m":2}`)
	wantData(h.tb, h.get("notes", c), `{"n":3}`)
	wantData(h.tb, h.get("notes", d), `{"n":4}`)
	wantOutcome(h.tb, h.outcome(results[0].Outcomes[1].WriteID), results[0].Outcomes[1])

	// A batch with a rejected command was applied all the same: its producer moved on.
	results, _ = h.applyBatches(h.batchOf("edge-a", 2, h.put("notes", a, `{"n":10}`)))
	wantBatchStatus(h.tb, 0, results[0], core.BatchApplied)
}

func testBatchesSameBatchTwice(h *harness) {
	for _, tt := range []struct {
		name   string
		status core.BatchStatus // of the second
		batch  func(h *harness, cmds ...wire.Command) *wire.Batch
	}{
		{"fenced", core.BatchDuplicate, func(h *harness, cmds ...wire.Command) *wire.Batch {
			return h.batchOf("edge-1", 1, cmds...)
		}},
		// Not fenced, the second is applied, and its commands replay by write id.
		{"unfenced", core.BatchApplied, func(h *harness, cmds ...wire.Command) *wire.Batch {
			return h.batch(cmds...)
		}},
	} {
		h.isolated(tt.name, func(h *harness) {
			x := h.idIn("notes", "x", 1)
			b := tt.batch(h, h.put("notes", x, `{"v":1}`), h.patch("notes", x, `{"w":2}`))
			redelivered := *b
			results, evs := h.applyBatches(b, &redelivered)
			wantBatchStatus(h.tb, 0, results[0], core.BatchApplied)
			wantBatchStatus(h.tb, 1, results[1], tt.status)
			wantReplayOf(h.tb, results[1].Outcomes, results[0].Outcomes)
			wantEventsOf(h.tb, evs, 1, 1, results[0].Outcomes[0].Doc, results[0].Outcomes[1].Doc)
			wantDoc(h.tb, h.get("notes", x), *results[0].Outcomes[1].Doc)
		})
	}
}

func testBatchesInvalidGroup(h *harness) {
	for _, tt := range []struct {
		name  string
		group func(h *harness, valid *wire.Batch) []*wire.Batch
	}{
		{"no batch", func(*harness, *wire.Batch) []*wire.Batch { return nil }},
		{"two partitions", func(h *harness, valid *wire.Batch) []*wire.Batch {
			return []*wire.Batch{valid, h.batch(h.put("notes", h.idIn("notes", "y", 1), `{}`))}
		}},
		{"invalid batch", func(h *harness, valid *wire.Batch) []*wire.Batch {
			return []*wire.Batch{valid, {ID: h.next("b"), Partition: 0}}
		}},
		{"producer without seq", func(h *harness, valid *wire.Batch) []*wire.Batch {
			b := h.batch(h.put("notes", h.idIn("notes", "y", 0), `{}`))
			b.Producer = "edge-2"
			return []*wire.Batch{valid, b}
		}},
		{"seq without producer", func(h *harness, valid *wire.Batch) []*wire.Batch {
			b := h.batch(h.put("notes", h.idIn("notes", "y", 0), `{}`))
			b.Seq = 1
			return []*wire.Batch{valid, b}
		}},
	} {
		h.isolated(tt.name, func(h *harness) {
			x := h.idIn("notes", "x", 0)
			cmd := h.put("notes", x, `{"v":1}`)
			valid := h.batchOf("edge-1", 1, cmd)
			group := tt.group(h, valid)
			results, evs, err := h.store.ApplyBatches(h.ctx, group, h.tick())
			if err == nil {
				h.tb.Fatalf("ApplyBatches(%s): %v, %v, no error", batchIDs(group), results, evs)
			}
			// A batch that fails is named, so that the caller can drop it and apply the rest.
			var bad *core.InvalidBatchError
			if len(group) > 0 && (!errors.As(err, &bad) || bad.Index != 1 || bad.ID != group[1].ID) {
				h.tb.Fatalf("ApplyBatches(%s): %v, want an InvalidBatchError of batch 1", batchIDs(group), err)
			}
			h.wantAbsent("notes", x)
			for _, b := range group {
				for _, c := range b.Commands {
					h.wantAbsent(c.Collection, c.ID)
					h.wantNoRecord(c.WriteID)
				}
			}
			if evs := h.pending(h.now.Add(time.Hour), 100); len(evs) != 0 {
				h.tb.Fatalf("rejected group left %d events", len(evs))
			}
			// The producer did not move: its batch may be retried alone.
			results, _ = h.applyBatches(valid)
			wantBatchStatus(h.tb, 0, results[0], core.BatchApplied)
			wantStatus(h.tb, results[0].Outcomes[0], http.StatusCreated)
		})
	}
}

func testBatchesExpireProducers(h *harness) {
	x := h.idIn("notes", "x", 0)
	// "old" last advanced two days ago, "new" now.
	old := h.now.Add(-48 * time.Hour)
	results, _ := h.applyBatchesAt(old, h.batchOf("old", 1, h.put("notes", x, `{"v":1}`)))
	wantBatchStatus(h.tb, 0, results[0], core.BatchApplied)
	results, _ = h.applyBatchesAt(old.Add(time.Second), h.batchOf("old", 2, h.patch("notes", x, `{"v":2}`)))
	wantBatchStatus(h.tb, 0, results[0], core.BatchApplied)
	seen := old.Add(time.Second)
	results, _ = h.applyBatches(h.batchOf("new", 1, h.patch("notes", x, `{"n":1}`)))
	wantBatchStatus(h.tb, 0, results[0], core.BatchApplied)

	// Within ProducerRetention of before, a producer is kept, though its write records go:
	// redelivered, its batches are still duplicates, of which the store has no outcome left.
	// (The checks run at old times, so that they cannot count as a sign of life.)
	n, err := h.store.Expire(h.ctx, seen.Add(core.ProducerRetention-time.Hour))
	if err != nil {
		h.tb.Fatalf("Expire: %v", err)
	}
	if n != 3 {
		h.tb.Fatalf("Expire removed %d records, want 3 (the writes; producers are not counted)", n)
	}
	results, _ = h.applyBatchesAt(seen, h.batchOf("old", 2, h.patch("notes", x, `{"v":2}`)))
	wantBatchStatus(h.tb, 0, results[0], core.BatchDuplicate)
	if len(results[0].Outcomes) != 0 {
		h.tb.Fatalf("duplicate after its write records expired: outcomes %v, want none", results[0].Outcomes)
	}
	results, _ = h.applyBatchesAt(seen, h.batchOf("old", 4, h.put("notes", x, `{"v":4}`)))
	wantBatchStatus(h.tb, 0, results[0], core.BatchEarly)

	// Idle longer, it is forgotten, so it is at 0 again; the recent one is kept.
	if n, err := h.store.Expire(h.ctx, seen.Add(core.ProducerRetention+time.Hour)); err != nil || n != 0 {
		h.tb.Fatalf("Expire of the producer: %d, %v; want 0 (producers are not counted), nil", n, err)
	}
	results, _ = h.applyBatches(h.batchOf("old", 3, h.put("notes", x, `{"v":3}`)))
	wantBatchStatus(h.tb, 0, results[0], core.BatchEarly)
	results, _ = h.applyBatches(h.batchOf("new", 1, h.put("notes", x, `{"n":"again"}`)))
	wantBatchStatus(h.tb, 0, results[0], core.BatchDuplicate)
	if d := h.get("notes", x); d.Version != 3 {
		h.tb.Fatalf("version %d after the early and duplicate batches, want 3", d.Version)
	}
	results, _ = h.applyBatches(h.batchOf("old", 1, h.put("notes", x, `{"v":"fresh"}`)))
	wantBatchStatus(h.tb, 0, results[0], core.BatchApplied)
	wantData(h.tb, h.get("notes", x), `{"v":"fresh"}`)
	results, _ = h.applyBatches(h.batchOf("new", 2, h.patch("notes", x, `{"n":2}`)))
	wantBatchStatus(h.tb, 0, results[0], core.BatchApplied)
}

// testBatchesSameProducerConcurrently applies one producer's batches from several goroutines
// at once, as cores around a failover would (each group the same two batches, in turns of
// order): each batch is applied exactly once, the others find it a duplicate with its
// recorded outcomes, and the document ends at the version its writes make in order.
func testBatchesSameProducerConcurrently(h *harness) {
	const cores = 4
	x := h.idIn("notes", "race", 2)
	first := h.batchOf("edge-race", 1, h.put("notes", x, `{"v":1}`), h.patch("notes", x, `{"w":1}`))
	second := h.batchOf("edge-race", 2, h.patch("notes", x, `{"w":2}`))
	results := make([][]core.BatchResult, cores)
	errs := make([]error, cores)
	var wg sync.WaitGroup
	for i := range cores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, b := *first, *second
			group := []*wire.Batch{&a, &b}
			if i%2 == 1 {
				group = []*wire.Batch{&b, &a} // the fence orders them
			}
			rs, _, err := h.store.ApplyBatches(h.ctx, group, h.now)
			if err == nil && i%2 == 1 {
				rs[0], rs[1] = rs[1], rs[0]
			}
			results[i], errs[i] = rs, err
		}()
	}
	wg.Wait()
	applied := [2]int{}
	var outs [2][]wire.Outcome
	for i := range cores {
		if errs[i] != nil {
			h.tb.Fatalf("ApplyBatches %d: %v", i, errs[i])
		}
		for j, r := range results[i] {
			switch r.Status {
			case core.BatchApplied:
				applied[j]++
				outs[j] = r.Outcomes
			case core.BatchDuplicate:
			default:
				h.tb.Fatalf("core %d, batch %d: %v", i, j, r.Status)
			}
		}
	}
	if applied != [2]int{1, 1} {
		h.tb.Fatalf("batches applied %v times, want once each", applied)
	}
	for i := range cores {
		for j, r := range results[i] {
			if r.Status == core.BatchDuplicate {
				wantReplayOf(h.tb, r.Outcomes, outs[j])
			}
		}
	}
	if d := h.get("notes", x); d.Version != 3 {
		h.tb.Fatalf("document at version %d, want 3", d.Version)
	}
	for j, b := range []*wire.Batch{first, second} {
		for k, c := range b.Commands {
			wantOutcome(h.tb, h.outcome(c.WriteID), outs[j][k])
		}
	}
}
