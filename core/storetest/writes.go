package storetest

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

var writeTests = []test{
	{"PutCreates", testPutCreates},
	{"PutReplaces", testPutReplaces},
	{"Create", testCreate},
	{"CreateExisting", testCreateExisting},
	{"PatchMerges", testPatchMerges},
	{"PatchAbsent", testPatchAbsent},
	{"Delete", testDelete},
	{"PutOverTombstone", testPutOverTombstone},
	{"CreateOverTombstone", testCreateOverTombstone},
	{"IfMatch", testIfMatch},
	{"GetAbsent", testGetAbsent},
	{"Times", testTimes},
	{"BatchSeesEarlierCommands", testBatchSeesEarlierCommands},
	{"RejectedMidBatch", testRejectedMidBatch},
	{"InvalidBatch", testInvalidBatch},
	{"CanceledContext", testCanceledContext},
}

func testPutCreates(h *harness) {
	now := micro(h.nextTick())
	out := h.one(h.put("notes", "n1", `{"title": "hello", "n": 1}`))
	wantStatus(h.tb, out, http.StatusCreated)
	want := wire.Document{Collection: "notes", ID: "n1", Version: 1, CreatedAt: now, UpdatedAt: now,
		Data: []byte(`{"title":"hello","n":1}`)}
	wantDoc(h.tb, *out.Doc, want)
	wantDoc(h.tb, h.get("notes", "n1"), want)
}

func testPutReplaces(h *harness) {
	first := h.one(h.put("notes", "n1", `{"title": "hello", "tags": ["a"]}`))
	out := h.one(h.put("notes", "n1", `{"body": "new"}`))
	wantStatus(h.tb, out, http.StatusOK)
	if out.Doc.Version != 2 {
		h.tb.Fatalf("version %d after replace, want 2", out.Doc.Version)
	}
	if !out.Doc.CreatedAt.Equal(first.Doc.CreatedAt) {
		h.tb.Fatalf("created_at %v after replace, want the first %v", out.Doc.CreatedAt, first.Doc.CreatedAt)
	}
	if !out.Doc.UpdatedAt.After(first.Doc.UpdatedAt) {
		h.tb.Fatalf("updated_at %v after replace, not after the first %v", out.Doc.UpdatedAt, first.Doc.UpdatedAt)
	}
	wantData(h.tb, *out.Doc, `{"body":"new"}`) // replaced, not merged
	wantDoc(h.tb, h.get("notes", "n1"), *out.Doc)
}

func testCreate(h *harness) {
	out := h.one(h.create("notes", "c1", `{"a":1}`))
	wantStatus(h.tb, out, http.StatusCreated)
	if out.Doc.Version != 1 {
		h.tb.Fatalf("version %d after create, want 1", out.Doc.Version)
	}
	wantDoc(h.tb, h.get("notes", "c1"), *out.Doc)
}

func testCreateExisting(h *harness) {
	first := h.one(h.create("notes", "c1", `{"a":1}`))
	out := h.one(h.create("notes", "c1", `{"a":2}`))
	wantProblem(h.tb, out, problem.AlreadyExists)
	wantDoc(h.tb, h.get("notes", "c1"), *first.Doc)
}

func testPatchMerges(h *harness) {
	first := h.one(h.put("notes", "p1", `{"a":1,"b":{"c":2,"d":3},"e":"x","n":[1,2]}`))
	out := h.one(h.patch("notes", "p1", `{"b":{"c":null,"f":{"g":4}},"e":null,"n":[3],"h":true}`))
	wantStatus(h.tb, out, http.StatusOK)
	const merged = `{"a":1,"b":{"d":3,"f":{"g":4}},"n":[3],"h":true}`
	wantData(h.tb, *out.Doc, merged)
	if out.Doc.Version != 2 || !out.Doc.CreatedAt.Equal(first.Doc.CreatedAt) {
		h.tb.Fatalf("after patch: version %d created_at %v; want 2 and %v", out.Doc.Version, out.Doc.CreatedAt, first.Doc.CreatedAt)
	}
	got := h.get("notes", "p1")
	wantDoc(h.tb, got, *out.Doc)

	// A second patch merges into the result of the first.
	out = h.one(h.patch("notes", "p1", `{"b":{"d":null}}`))
	wantData(h.tb, *out.Doc, `{"a":1,"b":{"f":{"g":4}},"n":[3],"h":true}`)
}

func testPatchAbsent(h *harness) {
	for _, tt := range []struct {
		name  string
		setup func(h *harness)
	}{
		{"never written", func(*harness) {}},
		{"deleted", func(h *harness) {
			h.mustApply(h.put("notes", "x", `{"a":1}`))
			h.mustApply(h.del("notes", "x"))
		}},
	} {
		h.isolated(tt.name, func(h *harness) {
			tt.setup(h)
			before, beforeErr := h.store.Get(h.ctx, "notes", "x")
			out, evs := h.apply(h.patch("notes", "x", `{"a":2}`))
			wantProblem(h.tb, out[0], problem.NotFound)
			if len(evs) != 0 {
				h.tb.Fatalf("rejected patch emitted %d events", len(evs))
			}
			if beforeErr != nil {
				h.wantAbsent("notes", "x")
			} else {
				wantDoc(h.tb, h.get("notes", "x"), before)
			}
		})
	}
}

func testDelete(h *harness) {
	put := h.one(h.put("notes", "d1", `{"a":1}`))
	now := h.nextTick()
	out := h.one(h.del("notes", "d1"))
	wantStatus(h.tb, out, http.StatusNoContent)
	want := wire.Document{Collection: "notes", ID: "d1", Version: 2, Deleted: true,
		CreatedAt: put.Doc.CreatedAt, UpdatedAt: micro(now)}
	wantDoc(h.tb, *out.Doc, want)
	got := h.get("notes", "d1")
	wantDoc(h.tb, got, want)
	if len(got.Data) != 0 {
		h.tb.Fatalf("tombstone has data %s", got.Data)
	}

	again, evs := h.apply(h.del("notes", "d1"))
	wantProblem(h.tb, again[0], problem.NotFound)
	if len(evs) != 0 {
		h.tb.Fatalf("second delete emitted %d events", len(evs))
	}
	wantDoc(h.tb, h.get("notes", "d1"), want)

	absent := h.one(h.del("notes", "never"))
	wantProblem(h.tb, absent, problem.NotFound)
	h.wantAbsent("notes", "never")
}

func testPutOverTombstone(h *harness) {
	h.mustApply(h.put("notes", "t1", `{"a":1}`))
	h.mustApply(h.del("notes", "t1"))
	now := micro(h.nextTick())
	out := h.one(h.put("notes", "t1", `{"b":2}`))
	wantStatus(h.tb, out, http.StatusCreated)
	want := wire.Document{Collection: "notes", ID: "t1", Version: 3, CreatedAt: now, UpdatedAt: now, Data: []byte(`{"b":2}`)}
	wantDoc(h.tb, *out.Doc, want)
	wantDoc(h.tb, h.get("notes", "t1"), want)
}

func testCreateOverTombstone(h *harness) {
	h.mustApply(h.create("notes", "t1", `{"a":1}`))
	h.mustApply(h.del("notes", "t1"))
	out := h.one(h.create("notes", "t1", `{"b":2}`))
	wantStatus(h.tb, out, http.StatusCreated)
	if out.Doc.Version != 3 || out.Doc.Deleted {
		h.tb.Fatalf("create over a tombstone: version %d deleted %t; want 3, live", out.Doc.Version, out.Doc.Deleted)
	}
	wantDoc(h.tb, h.get("notes", "t1"), *out.Doc)
}

func testIfMatch(h *harness) {
	for _, tt := range []struct {
		name    string
		setup   func(h *harness) // leaves notes/m in some state
		cmd     func(h *harness) wire.Command
		status  int          // when applied
		code    problem.Code // when rejected
		version int64        // of notes/m afterwards; 0 for absent
	}{
		{
			name:    "put matching",
			setup:   func(h *harness) { h.mustApply(h.put("notes", "m", `{"a":1}`)) },
			cmd:     func(h *harness) wire.Command { return ifMatch(h.put("notes", "m", `{"a":2}`), 1) },
			status:  http.StatusOK,
			version: 2,
		},
		{
			name: "patch matching",
			setup: func(h *harness) {
				h.mustApply(h.put("notes", "m", `{"a":1}`))
				h.mustApply(h.put("notes", "m", `{"a":2}`))
			},
			cmd:     func(h *harness) wire.Command { return ifMatch(h.patch("notes", "m", `{"b":1}`), 2) },
			status:  http.StatusOK,
			version: 3,
		},
		{
			name:    "delete matching",
			setup:   func(h *harness) { h.mustApply(h.put("notes", "m", `{"a":1}`)) },
			cmd:     func(h *harness) wire.Command { return ifMatch(h.del("notes", "m"), 1) },
			status:  http.StatusNoContent,
			version: 2,
		},
		{
			name: "stale",
			setup: func(h *harness) {
				h.mustApply(h.put("notes", "m", `{"a":1}`))
				h.mustApply(h.put("notes", "m", `{"a":2}`))
			},
			cmd:     func(h *harness) wire.Command { return ifMatch(h.patch("notes", "m", `{"b":1}`), 1) },
			code:    problem.PreconditionFailed,
			version: 2,
		},
		{
			name:    "ahead",
			setup:   func(h *harness) { h.mustApply(h.put("notes", "m", `{"a":1}`)) },
			cmd:     func(h *harness) wire.Command { return ifMatch(h.put("notes", "m", `{"a":2}`), 2) },
			code:    problem.PreconditionFailed,
			version: 1,
		},
		{
			name:  "absent",
			setup: func(*harness) {},
			cmd:   func(h *harness) wire.Command { return ifMatch(h.put("notes", "m", `{"a":1}`), 1) },
			code:  problem.PreconditionFailed,
		},
		{
			name: "tombstone at that version",
			setup: func(h *harness) {
				h.mustApply(h.put("notes", "m", `{"a":1}`))
				h.mustApply(h.del("notes", "m"))
			},
			cmd:     func(h *harness) wire.Command { return ifMatch(h.put("notes", "m", `{"a":1}`), 2) },
			code:    problem.PreconditionFailed,
			version: 2,
		},
	} {
		h.isolated(tt.name, func(h *harness) {
			tt.setup(h)
			out, evs := h.apply(tt.cmd(h))
			if tt.code != "" {
				wantProblem(h.tb, out[0], tt.code)
				if len(evs) != 0 {
					h.tb.Fatalf("rejected write emitted %d events", len(evs))
				}
			} else {
				wantStatus(h.tb, out[0], tt.status)
			}
			if tt.version == 0 {
				h.wantAbsent("notes", "m")
				return
			}
			if d := h.get("notes", "m"); d.Version != tt.version {
				h.tb.Fatalf("version %d afterwards, want %d", d.Version, tt.version)
			}
		})
	}
}

func testGetAbsent(h *harness) {
	h.wantAbsent("notes", "nothing")
	h.mustApply(h.put("notes", "x", `{}`))
	h.wantAbsent("other", "x") // same id, other collection
}

func testTimes(h *harness) {
	created := h.tick()
	h.applyAt(created, h.put("notes", "t", `{}`))
	updated := created.Add(time.Hour + 987654321*time.Nanosecond)
	h.applyAt(updated, h.patch("notes", "t", `{"a":1}`))
	d := h.get("notes", "t")
	for _, tt := range []struct {
		name      string
		got, want time.Time
	}{
		{"created_at", d.CreatedAt, micro(created)},
		{"updated_at", d.UpdatedAt, micro(updated)},
	} {
		if !tt.got.Equal(tt.want) {
			h.tb.Errorf("%s %v, want %v (the batch's now, to the microsecond)", tt.name, tt.got, tt.want)
		}
		if tt.got.Location() != time.UTC {
			h.tb.Errorf("%s in %v, want UTC", tt.name, tt.got.Location())
		}
	}
}

func testBatchSeesEarlierCommands(h *harness) {
	// All of one document, so one batch: each command must see the ones before it.
	b := h.batch(
		h.put("notes", "s", `{"a":1}`),
		h.patch("notes", "s", `{"b":2}`),
		h.create("notes", "s", `{}`),
		h.del("notes", "s"),
		h.patch("notes", "s", `{"c":3}`),
		h.create("notes", "s", `{"d":4}`),
	)
	outs, evs := h.applyBatch(b)
	want := []struct {
		status  int
		code    problem.Code
		version int64
	}{
		{http.StatusCreated, "", 1},
		{http.StatusOK, "", 2},
		{0, problem.AlreadyExists, 0},
		{http.StatusNoContent, "", 3},
		{0, problem.NotFound, 0},
		{http.StatusCreated, "", 4},
	}
	for i, w := range want {
		if w.code != "" {
			wantProblem(h.tb, outs[i], w.code)
			continue
		}
		wantStatus(h.tb, outs[i], w.status)
		if outs[i].Doc.Version != w.version {
			h.tb.Fatalf("command %d: version %d, want %d", i, outs[i].Doc.Version, w.version)
		}
	}
	wantData(h.tb, *outs[1].Doc, `{"a":1,"b":2}`)
	if len(evs) != 4 {
		h.tb.Fatalf("%d events, want 4", len(evs))
	}
	wantContiguous(h.tb, evs)
	wantDoc(h.tb, h.get("notes", "s"), *outs[5].Doc)
}

func testRejectedMidBatch(h *harness) {
	p := 1
	a, b, c := h.idIn("notes", "a", p), h.idIn("notes", "b", p), h.idIn("notes", "c", p)
	outs, evs := h.applyBatch(h.batch(
		h.put("notes", a, `{"n":1}`),
		h.patch("notes", b, `{"n":2}`), // absent: 404
		ifMatch(h.put("notes", c, `{"n":3}`), 7),
		h.put("notes", c, `{"n":4}`),
	))
	wantStatus(h.tb, outs[0], http.StatusCreated)
	wantProblem(h.tb, outs[1], problem.NotFound)
	wantProblem(h.tb, outs[2], problem.PreconditionFailed)
	wantStatus(h.tb, outs[3], http.StatusCreated)
	if len(evs) != 2 || evs[0].Seq != 1 || evs[1].Seq != 2 {
		h.tb.Fatalf("events %v, want seqs 1 and 2 (rejected commands take no seq)", eventKeys(evs))
	}
	wantData(h.tb, h.get("notes", a), `{"n":1}`)
	h.wantAbsent("notes", b)
	wantData(h.tb, h.get("notes", c), `{"n":4}`)
	// Rejections are recorded like any outcome.
	wantOutcome(h.tb, h.outcome(outs[1].WriteID), outs[1])
	wantOutcome(h.tb, h.outcome(outs[2].WriteID), outs[2])
}

func testInvalidBatch(h *harness) {
	in0, in1 := h.idIn("notes", "x", 0), h.idIn("notes", "y", 1)
	for _, tt := range []struct {
		name  string
		batch *wire.Batch
	}{
		{"partition out of range", &wire.Batch{ID: h.next("b"), Partition: Partitions,
			Commands: []wire.Command{h.put("notes", in0, `{}`)}}},
		{"no commands", &wire.Batch{ID: h.next("b"), Partition: 0}},
		{"no id", &wire.Batch{Partition: 0, Commands: []wire.Command{h.put("notes", in0, `{}`)}}},
		{"bad command", &wire.Batch{ID: h.next("b"), Partition: 0,
			Commands: []wire.Command{h.put("notes", in0, `{}`), {WriteID: h.next("w"), Op: "bogus", Collection: "notes", ID: in0}}}},
	} {
		h.isolated(tt.name, func(h *harness) {
			outs, evs, err := h.store.ApplyBatch(h.ctx, tt.batch, h.tick())
			if err == nil {
				h.tb.Fatalf("ApplyBatch of an invalid batch: %v, %v, no error", outs, evs)
			}
			h.wantAbsent("notes", in0)
			h.wantAbsent("notes", in1)
			if evs := h.pending(h.now.Add(time.Hour), 100); len(evs) != 0 {
				h.tb.Fatalf("invalid batch left %d events", len(evs))
			}
		})
	}
}

func testCanceledContext(h *harness) {
	ctx, cancel := context.WithCancel(h.ctx)
	cancel()
	cmd := h.put("notes", "x", `{}`)
	if _, _, err := h.store.ApplyBatch(ctx, h.batch(cmd), h.tick()); err == nil {
		h.tb.Fatal("ApplyBatch with a canceled context: no error")
	}
	h.wantAbsent("notes", "x")
	if _, err := h.store.WriteOutcome(h.ctx, cmd.WriteID); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("WriteOutcome after a failed batch: %v, want core.ErrNotFound", err)
	}
	// The failed batch may be retried whole.
	wantStatus(h.tb, h.one(cmd), http.StatusCreated)
}
