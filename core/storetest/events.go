package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/perchhq/perch/internal/wire"
)

var eventTests = []test{
	{"SeqContiguous", testSeqContiguous},
	{"EventContent", testEventContent},
	{"PendingUntilDeleted", testPendingUntilDeleted},
	{"PendingBefore", testPendingBefore},
	{"PendingLimit", testPendingLimit},
}

func testSeqContiguous(h *harness) {
	var all []wire.ChangeEvent
	keep := func(_ []wire.Outcome, evs []wire.ChangeEvent) { all = append(all, evs...) }
	for round := range 3 {
		var cmds []wire.Command
		for i := range 6 {
			id := fmt.Sprintf("d%d", i)
			switch round {
			case 0:
				cmds = append(cmds, h.put("notes", id, `{"r":0}`))
			case 1:
				cmds = append(cmds, h.patch("notes", id, `{"r":1}`), h.patch("notes", "absent"+id, `{}`))
			case 2:
				cmds = append(cmds, h.del("notes", id), h.del("notes", id))
			}
		}
		keep(h.apply(cmds...))
	}
	// Replays take no seq either.
	first := h.put("notes", "r", `{}`)
	keep(h.apply(first))
	keep(h.apply(first))
	keep(h.apply(h.put("notes", "r", `{"again":true}`)))

	if len(all) != 6*3+2 {
		h.tb.Fatalf("%d events, want %d", len(all), 6*3+2)
	}
	// apply returns events batch by batch, so each partition's are in order.
	wantContiguous(h.tb, all)
	wantSameEvents(h.tb, h.pending(h.now.Add(time.Hour), 1000), all)
}

func testEventContent(h *harness) {
	outs, evs := h.mustApply(h.put("notes", "e", `{"a":1}`))
	if len(evs) != 1 {
		h.tb.Fatalf("%d events for one put, want 1", len(evs))
	}
	p := wire.Partition("notes", "e", h.parts)
	want := wire.ChangeEvent{Partition: p, Seq: 1, Collection: "notes", ID: "e", Version: 1,
		UpdatedAt: outs[0].Doc.UpdatedAt, Doc: outs[0].Doc}
	wantEvent(h.tb, evs[0], want)
	wantData(h.tb, *evs[0].Doc, `{"a":1}`)

	outs, evs = h.mustApply(h.del("notes", "e"))
	want = wire.ChangeEvent{Partition: p, Seq: 2, Collection: "notes", ID: "e", Version: 2, Deleted: true,
		UpdatedAt: outs[0].Doc.UpdatedAt, Doc: outs[0].Doc}
	if len(evs) != 1 {
		h.tb.Fatalf("%d events for one delete, want 1", len(evs))
	}
	wantEvent(h.tb, evs[0], want)
	if !evs[0].Doc.Deleted {
		h.tb.Fatal("the delete event's document is not a tombstone")
	}

	// The outbox holds the same events.
	pending := h.pending(h.now.Add(time.Hour), 10)
	if len(pending) != 2 {
		h.tb.Fatalf("%d pending events, want 2", len(pending))
	}
	wantEvent(h.tb, pending[1], want)
}

func wantEvent(tb testing.TB, got, want wire.ChangeEvent) {
	tb.Helper()
	if got.Partition != want.Partition || got.Seq != want.Seq {
		tb.Fatalf("event %d/%d, want %d/%d", got.Partition, got.Seq, want.Partition, want.Seq)
	}
	if diff := eventDiff(got, want); diff != "" {
		tb.Fatalf("event %d/%d: %s", got.Partition, got.Seq, diff)
	}
}

func testPendingUntilDeleted(h *harness) {
	var all []wire.ChangeEvent
	for i := range 10 {
		_, evs := h.mustApply(h.put("notes", fmt.Sprintf("d%d", i), `{}`))
		all = append(all, evs...)
	}
	later := h.now.Add(time.Hour)
	pending := h.pending(later, 1000)
	wantSameEvents(h.tb, pending, all)
	wantPartitionOrder(h.tb, pending)

	// Nothing is removed by reading.
	wantSameEvents(h.tb, h.pending(later, 1000), all)

	done, rest := all[:4], all[4:]
	if err := h.store.DeleteEvents(h.ctx, done); err != nil {
		h.tb.Fatalf("DeleteEvents: %v", err)
	}
	wantSameEvents(h.tb, h.pending(later, 1000), rest)

	// Deleting events already gone, or never there, is not an error.
	gone := append(append([]wire.ChangeEvent{}, done...), wire.ChangeEvent{Partition: 0, Seq: 999})
	if err := h.store.DeleteEvents(h.ctx, gone); err != nil {
		h.tb.Fatalf("DeleteEvents of deleted events: %v", err)
	}
	if err := h.store.DeleteEvents(h.ctx, nil); err != nil {
		h.tb.Fatalf("DeleteEvents(nil): %v", err)
	}
	wantSameEvents(h.tb, h.pending(later, 1000), rest)

	if err := h.store.DeleteEvents(h.ctx, rest); err != nil {
		h.tb.Fatalf("DeleteEvents: %v", err)
	}
	if evs := h.pending(later, 1000); len(evs) != 0 {
		h.tb.Fatalf("%d events left after deleting all", len(evs))
	}
}

// wantPartitionOrder fails unless each partition's events come in seq order.
func wantPartitionOrder(tb testing.TB, evs []wire.ChangeEvent) {
	tb.Helper()
	last := map[int]int64{}
	for _, ev := range evs {
		if ev.Seq <= last[ev.Partition] {
			tb.Fatalf("partition %d: event %d after %d", ev.Partition, ev.Seq, last[ev.Partition])
		}
		last[ev.Partition] = ev.Seq
	}
}

func testPendingBefore(h *harness) {
	t0 := h.tick()
	_, early := h.applyAt(t0, h.put("notes", "a", `{}`), h.put("notes", "b", `{}`))
	t1 := t0.Add(time.Minute)
	_, late := h.applyAt(t1, h.put("notes", "c", `{}`))
	for _, tt := range []struct {
		name   string
		before time.Time
		want   []wire.ChangeEvent
	}{
		{"before all", t0.Add(-time.Second), nil},
		{"at the first commit", t0, nil}, // before is exclusive
		{"between", t0.Add(30 * time.Second), early},
		{"after all", t1.Add(time.Second), append(append([]wire.ChangeEvent{}, early...), late...)},
	} {
		h.subtest(tt.name, func(h *harness) {
			wantSameEvents(h.tb, h.pending(tt.before, 100), tt.want)
		})
	}
}

func testPendingLimit(h *harness) {
	var all []wire.ChangeEvent
	p := 3
	for i := range 5 {
		_, evs := h.mustApply(h.put("notes", h.idIn("notes", fmt.Sprintf("d%d-", i), p), `{}`))
		all = append(all, evs...)
	}
	got := h.pending(h.now.Add(time.Hour), 2)
	// Within a partition, oldest first: the first two.
	wantSameEvents(h.tb, got, all[:2])
	wantPartitionOrder(h.tb, got)
}
