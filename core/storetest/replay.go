package storetest

import (
	"errors"
	"net/http"
	"time"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

var replayTests = []test{
	{"WriteIDReplay", testWriteIDReplay},
	{"WriteIDReplayInOtherBatch", testWriteIDReplayInOtherBatch},
	{"WriteIDTwiceInBatch", testWriteIDTwiceInBatch},
	{"WriteOutcome", testWriteOutcome},
	{"IdempotencyReplay", testIdempotencyReplay},
	{"IdempotencyMismatch", testIdempotencyMismatch},
}

// wantReplay applies b a second time and checks that nothing changes: the outcomes are the
// first ones with Replayed set, no event is emitted, and the documents keep their versions.
func (h *harness) wantReplay(b *wire.Batch, first []wire.Outcome) {
	h.tb.Helper()
	type state struct {
		doc wire.Document
		err error
	}
	before := make([]state, len(b.Commands))
	for i, c := range b.Commands {
		d, err := h.store.Get(h.ctx, c.Collection, c.ID)
		before[i] = state{d, err}
	}
	pending := len(h.pending(h.now.Add(time.Hour), 1000))
	outs, evs := h.applyBatch(b)
	for i := range outs {
		wantOutcome(h.tb, outs[i], replayed(first[i]))
	}
	if len(evs) != 0 {
		h.tb.Fatalf("replay emitted events %v", eventKeys(evs))
	}
	for i, c := range b.Commands {
		if before[i].err != nil {
			h.wantAbsent(c.Collection, c.ID)
		} else {
			wantDoc(h.tb, h.get(c.Collection, c.ID), before[i].doc)
		}
	}
	if n := len(h.pending(h.now.Add(time.Hour), 1000)); n != pending {
		h.tb.Fatalf("replay changed the outbox from %d to %d events", pending, n)
	}
}

func testWriteIDReplay(h *harness) {
	p := 2
	a, b := h.idIn("notes", "a", p), h.idIn("notes", "b", p)
	h.mustApply(h.put("notes", b, `{"v":0}`))
	batch := h.batch(
		h.put("notes", a, `{"v":1}`),
		h.patch("notes", b, `{"w":2}`),
		h.patch("notes", h.idIn("notes", "missing", p), `{}`), // rejected: replays as rejected
		h.del("notes", b),
	)
	first, evs := h.applyBatch(batch)
	if len(evs) != 3 {
		h.tb.Fatalf("first apply: %d events, want 3", len(evs))
	}
	for _, o := range first {
		if o.Replayed {
			h.tb.Fatalf("first apply of %s is marked replayed", o.WriteID)
		}
	}
	h.wantReplay(batch, first)
	h.wantReplay(batch, first) // and again
}

func testWriteIDReplayInOtherBatch(h *harness) {
	// A write id is recorded per command, not per batch: an edge that re-sends a command in a
	// new batch (another batch id, other companions) gets it replayed.
	cmd := h.put("notes", "x", `{"v":1}`)
	first := h.one(cmd)
	wantStatus(h.tb, first, http.StatusCreated)
	other := h.put("notes", h.idIn("notes", "y", h.partition(cmd)), `{}`)
	outs, evs := h.applyBatch(h.batch(other, cmd))
	wantStatus(h.tb, outs[0], http.StatusCreated)
	wantOutcome(h.tb, outs[1], replayed(first))
	if len(evs) != 1 || evs[0].ID != other.ID {
		h.tb.Fatalf("events %v, want one, for %s", eventKeys(evs), other.ID)
	}
	if d := h.get("notes", "x"); d.Version != 1 {
		h.tb.Fatalf("version %d after replay, want 1", d.Version)
	}
}

func testWriteIDTwiceInBatch(h *harness) {
	cmd := h.patch("notes", "x", `{"n":1}`)
	h.mustApply(h.put("notes", "x", `{}`))
	outs, evs := h.applyBatch(h.batch(cmd, cmd))
	wantStatus(h.tb, outs[0], http.StatusOK)
	wantOutcome(h.tb, outs[1], replayed(outs[0]))
	if len(evs) != 1 {
		h.tb.Fatalf("%d events, want 1", len(evs))
	}
	if d := h.get("notes", "x"); d.Version != 2 {
		h.tb.Fatalf("version %d, want 2", d.Version)
	}
}

func testWriteOutcome(h *harness) {
	if o, err := h.store.WriteOutcome(h.ctx, "never-sent"); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("WriteOutcome(never-sent) = %+v, %v; want core.ErrNotFound", o, err)
	}
	outs, _ := h.apply(h.put("notes", "x", `{"a":1}`), h.del("notes", "y"), h.put("notes", "z", `{"b":2}`))
	for _, o := range outs {
		wantOutcome(h.tb, h.outcome(o.WriteID), o)
	}
}

func testIdempotencyReplay(h *harness) {
	first := h.one(withKey(h.put("notes", "k", `{"v":1}`), "user1:key1", "fp-1"))
	wantStatus(h.tb, first, http.StatusCreated)

	// The client retries the same request: another write id (the edge made a new one), same
	// key and fingerprint. It gets the first answer under its own write id.
	retry := withKey(h.put("notes", "k", `{"v":1}`), "user1:key1", "fp-1")
	outs, evs := h.apply(retry)
	want := replayed(first)
	want.WriteID = retry.WriteID
	wantOutcome(h.tb, outs[0], want)
	if len(evs) != 0 {
		h.tb.Fatalf("idempotent replay emitted %d events", len(evs))
	}
	wantDoc(h.tb, h.get("notes", "k"), *first.Doc)
	wantOutcome(h.tb, h.outcome(retry.WriteID), want)
	wantOutcome(h.tb, h.outcome(first.WriteID), first)

	// The key is the caller's: another key with the same fingerprint is another request.
	other := h.one(withKey(h.put("notes", "k", `{"v":1}`), "user2:key1", "fp-1"))
	wantStatus(h.tb, other, http.StatusOK)
	if other.Doc.Version != 2 {
		h.tb.Fatalf("write under another key: version %d, want 2", other.Doc.Version)
	}
}

func testIdempotencyMismatch(h *harness) {
	first := h.one(withKey(h.put("notes", "k", `{"v":1}`), "key", "fp-1"))
	wantStatus(h.tb, first, http.StatusCreated)

	reused := withKey(h.put("notes", "k", `{"v":2}`), "key", "fp-2")
	outs, evs := h.apply(reused)
	wantProblem(h.tb, outs[0], problem.IdempotencyMismatch)
	if outs[0].Replayed {
		h.tb.Fatal("a reused key's rejection is marked replayed")
	}
	if len(evs) != 0 {
		h.tb.Fatalf("reused key emitted %d events", len(evs))
	}
	wantDoc(h.tb, h.get("notes", "k"), *first.Doc)
	wantOutcome(h.tb, h.outcome(reused.WriteID), outs[0])

	// The mismatch did not overwrite the key's record: the original request still replays,
	// and the other fingerprint is still refused.
	retry := withKey(h.put("notes", "k", `{"v":1}`), "key", "fp-1")
	want := replayed(first)
	want.WriteID = retry.WriteID
	wantOutcome(h.tb, h.one(retry), want)
	wantProblem(h.tb, h.one(withKey(h.put("notes", "k", `{"v":2}`), "key", "fp-2")), problem.IdempotencyMismatch)

	// A key first used by a rejected write keeps that rejection.
	rejected := h.one(withKey(h.patch("notes", "absent", `{}`), "key2", "fp"))
	wantProblem(h.tb, rejected, problem.NotFound)
	again := withKey(h.patch("notes", "absent", `{}`), "key2", "fp")
	want = replayed(rejected)
	want.WriteID = again.WriteID
	wantOutcome(h.tb, h.one(again), want)
}
