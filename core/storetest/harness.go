package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

// harness is one test's store and the helpers that drive it. Its methods fail the test with
// tb.Fatal and so must be called from the test's goroutine, except the command constructors
// (put, patch, create, del, batch ids), which only draw a fresh id and are safe from any.
type harness struct {
	t     *testing.T
	tb    testing.TB // t, as the helpers that take a testing.TB want it
	open  OpenFunc
	ctx   context.Context
	store core.Store
	parts int
	// now is the clock of the last ApplyBatch; tick moves it forward so that every apply call
	// has its own updated_at.
	now time.Time
	ids *atomic.Int64
}

func newHarness(t *testing.T, open OpenFunc) *harness {
	return &harness{
		t: t, tb: t, open: open, ctx: t.Context(), store: open(t, Partitions), parts: Partitions, ids: new(atomic.Int64),
		// Near the real time, so that nothing is wildly off for a backend that also looks at its
		// own clock; with nanoseconds and in a zone other than UTC, so that truncation to
		// microseconds and normalisation to UTC show.
		now: time.Now().Truncate(time.Second).Add(123456789 * time.Nanosecond).In(time.FixedZone("X", 2*3600)),
	}
}

func (h *harness) next(prefix string) string {
	return prefix + "-" + strconv.FormatInt(h.ids.Add(1), 10)
}

// tick advances the clock and returns the new time.
func (h *harness) tick() time.Time {
	h.now = h.now.Add(time.Millisecond)
	return h.now
}

// nextTick is the time the next tick will return.
func (h *harness) nextTick() time.Time { return h.now.Add(time.Millisecond) }

// isolated runs fn as a subtest with a store of its own.
func (h *harness) isolated(name string, fn func(h *harness)) {
	h.t.Run(name, func(t *testing.T) { fn(newHarness(t, h.open)) })
}

// subtest runs fn as a subtest on the same store. Its clock starts at h's and does not move
// h's, so fn should only read.
func (h *harness) subtest(name string, fn func(h *harness)) {
	h.t.Run(name, func(t *testing.T) {
		sub := *h
		sub.t, sub.tb, sub.ctx = t, t, t.Context()
		fn(&sub)
	})
}

// micro is t as stores keep it.
func micro(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// Commands. Each gets a fresh write id.

func (h *harness) put(collection, id, data string) wire.Command {
	return wire.Command{WriteID: h.next("w"), Op: wire.OpPut, Collection: collection, ID: id, Data: json.RawMessage(data)}
}

func (h *harness) create(collection, id, data string) wire.Command {
	c := h.put(collection, id, data)
	c.Op = wire.OpCreate
	return c
}

func (h *harness) patch(collection, id, data string) wire.Command {
	c := h.put(collection, id, data)
	c.Op = wire.OpPatch
	return c
}

func (h *harness) del(collection, id string) wire.Command {
	return wire.Command{WriteID: h.next("w"), Op: wire.OpDelete, Collection: collection, ID: id}
}

func ifMatch(c wire.Command, version int64) wire.Command {
	c.IfMatch = version
	return c
}

func withKey(c wire.Command, key, fingerprint string) wire.Command {
	c.IdemKey, c.Fingerprint = key, fingerprint
	return c
}

// batch makes a batch of cmds, which must all be in partition p.
func (h *harness) batch(cmds ...wire.Command) *wire.Batch {
	h.tb.Helper()
	if len(cmds) == 0 {
		h.tb.Fatal("batch without commands")
	}
	return &wire.Batch{ID: h.next("b"), Edge: "storetest", Partition: h.partition(cmds[0]), Commands: cmds}
}

func (h *harness) partition(c wire.Command) int { return wire.Partition(c.Collection, c.ID, h.parts) }

// batchOf makes batch seq of producer, of cmds, which must all be in one partition.
func (h *harness) batchOf(producer string, seq int64, cmds ...wire.Command) *wire.Batch {
	h.tb.Helper()
	b := h.batch(cmds...)
	for _, c := range cmds {
		if p := h.partition(c); p != b.Partition {
			h.tb.Fatalf("batchOf: %s/%s is in partition %d, not %d", c.Collection, c.ID, p, b.Partition)
		}
	}
	b.Producer, b.Seq = producer, seq
	return b
}

// applyBatch applies b at the next tick and fails the test on an error or a malformed answer.
func (h *harness) applyBatch(b *wire.Batch) ([]wire.Outcome, []wire.ChangeEvent) {
	h.tb.Helper()
	return h.applyBatchAt(b, h.tick())
}

func (h *harness) applyBatchAt(b *wire.Batch, now time.Time) ([]wire.Outcome, []wire.ChangeEvent) {
	h.tb.Helper()
	outs, evs, err := h.store.ApplyBatch(h.ctx, b, now)
	if err != nil {
		h.tb.Fatalf("ApplyBatch(%s): %v", b.ID, err)
	}
	if len(outs) != len(b.Commands) {
		h.tb.Fatalf("ApplyBatch(%s): %d outcomes for %d commands", b.ID, len(outs), len(b.Commands))
	}
	for i := range outs {
		if outs[i].WriteID != b.Commands[i].WriteID {
			h.tb.Fatalf("ApplyBatch(%s): outcome %d has write id %q, want %q", b.ID, i, outs[i].WriteID, b.Commands[i].WriteID)
		}
	}
	for _, ev := range evs {
		if ev.Partition != b.Partition {
			h.tb.Fatalf("ApplyBatch(%s) in partition %d: event in partition %d", b.ID, b.Partition, ev.Partition)
		}
	}
	return outs, evs
}

// applyBatches applies bs in one ApplyBatches call at the next tick and fails the test on an
// error or a malformed answer: a result per batch; an applied batch's outcomes one per command
// in order; a duplicate's those of some of its write ids, in order and replayed; none for an
// early one; the events in the batches' partition, numbered one after the other.
func (h *harness) applyBatches(bs ...*wire.Batch) ([]core.BatchResult, []wire.ChangeEvent) {
	h.tb.Helper()
	return h.applyBatchesAt(h.tick(), bs...)
}

func (h *harness) applyBatchesAt(now time.Time, bs ...*wire.Batch) ([]core.BatchResult, []wire.ChangeEvent) {
	h.tb.Helper()
	results, evs, err := h.store.ApplyBatches(h.ctx, bs, now)
	if err != nil {
		h.tb.Fatalf("ApplyBatches(%s): %v", batchIDs(bs), err)
	}
	if len(results) != len(bs) {
		h.tb.Fatalf("ApplyBatches(%s): %d results for %d batches", batchIDs(bs), len(results), len(bs))
	}
	for i, r := range results {
		b := bs[i]
		switch r.Status {
		case core.BatchApplied:
			if len(r.Outcomes) != len(b.Commands) {
				h.tb.Fatalf("ApplyBatches: applied %s: %d outcomes for %d commands", b.ID, len(r.Outcomes), len(b.Commands))
			}
			for j := range r.Outcomes {
				if r.Outcomes[j].WriteID != b.Commands[j].WriteID {
					h.tb.Fatalf("ApplyBatches: applied %s: outcome %d has write id %q, want %q",
						b.ID, j, r.Outcomes[j].WriteID, b.Commands[j].WriteID)
				}
			}
		case core.BatchDuplicate:
			j := 0
			for _, o := range r.Outcomes {
				for j < len(b.Commands) && b.Commands[j].WriteID != o.WriteID {
					j++
				}
				if j == len(b.Commands) {
					h.tb.Fatalf("ApplyBatches: duplicate %s: outcome of %q, not one of its write ids in order", b.ID, o.WriteID)
				}
				j++
				if !o.Replayed {
					h.tb.Fatalf("ApplyBatches: duplicate %s: outcome of %s not marked replayed", b.ID, o.WriteID)
				}
			}
		case core.BatchEarly:
			if r.Outcomes != nil {
				h.tb.Fatalf("ApplyBatches: early %s: outcomes %v, want nil", b.ID, r.Outcomes)
			}
		default:
			h.tb.Fatalf("ApplyBatches: %s: status %v", b.ID, r.Status)
		}
	}
	for i, ev := range evs {
		if ev.Partition != bs[0].Partition {
			h.tb.Fatalf("ApplyBatches in partition %d: event in partition %d", bs[0].Partition, ev.Partition)
		}
		if i > 0 && ev.Seq != evs[i-1].Seq+1 {
			h.tb.Fatalf("ApplyBatches: event seq %d after %d", ev.Seq, evs[i-1].Seq)
		}
	}
	return results, evs
}

func batchIDs(bs []*wire.Batch) []string {
	ids := make([]string, len(bs))
	for i, b := range bs {
		if b != nil {
			ids[i] = b.ID
		}
	}
	return ids
}

// apply applies cmds, grouped by partition into one batch per partition (keeping their order
// within a partition), all at the same tick, and returns the outcomes in cmds' order and the
// events of all batches.
func (h *harness) apply(cmds ...wire.Command) ([]wire.Outcome, []wire.ChangeEvent) {
	h.tb.Helper()
	return h.applyAt(h.tick(), cmds...)
}

func (h *harness) applyAt(now time.Time, cmds ...wire.Command) ([]wire.Outcome, []wire.ChangeEvent) {
	h.tb.Helper()
	groups := map[int][]int{} // partition → indexes into cmds
	for i, c := range cmds {
		p := h.partition(c)
		groups[p] = append(groups[p], i)
	}
	parts := make([]int, 0, len(groups))
	for p := range groups {
		parts = append(parts, p)
	}
	sort.Ints(parts)
	outs := make([]wire.Outcome, len(cmds))
	var evs []wire.ChangeEvent
	for _, p := range parts {
		var bc []wire.Command
		for _, i := range groups[p] {
			bc = append(bc, cmds[i])
		}
		bo, be := h.applyBatchAt(h.batch(bc...), now)
		for j, i := range groups[p] {
			outs[i] = bo[j]
		}
		evs = append(evs, be...)
	}
	return outs, evs
}

// applyConcurrently applies cmds in one batch per partition and returns the first error.
// Unlike apply it does not fail the test, so that a goroutine other than the test's may call
// it.
func (h *harness) applyConcurrently(cmds ...wire.Command) error {
	byPart := map[int][]wire.Command{}
	for _, c := range cmds {
		p := h.partition(c)
		byPart[p] = append(byPart[p], c)
	}
	for p, cmds := range byPart {
		b := &wire.Batch{ID: h.next("b"), Partition: p, Edge: "storetest", Commands: cmds}
		if _, _, err := h.store.ApplyBatch(h.ctx, b, h.now); err != nil {
			return fmt.Errorf("concurrent ApplyBatch: %w", err)
		}
	}
	return nil
}

// one applies a single command and returns its outcome.
func (h *harness) one(c wire.Command) wire.Outcome {
	h.tb.Helper()
	outs, _ := h.apply(c)
	return outs[0]
}

// mustApply applies cmds and fails unless every one applied.
func (h *harness) mustApply(cmds ...wire.Command) ([]wire.Outcome, []wire.ChangeEvent) {
	h.tb.Helper()
	outs, evs := h.apply(cmds...)
	for i, o := range outs {
		if !o.Applied() {
			h.tb.Fatalf("command %d (%s %s/%s): %d %v", i, cmds[i].Op, cmds[i].Collection, cmds[i].ID, o.Status, o.Problem)
		}
	}
	return outs, evs
}

// seed puts n documents id-000 ... in collection and returns their ids in order.
func (h *harness) seed(collection, prefix string, n int) []string {
	h.tb.Helper()
	ids := make([]string, n)
	cmds := make([]wire.Command, n)
	for i := range n {
		ids[i] = fmt.Sprintf("%s%04d", prefix, i)
		cmds[i] = h.put(collection, ids[i], fmt.Sprintf(`{"n":%d}`, i))
	}
	h.mustApply(cmds...)
	return ids
}

// idIn returns an id with the given prefix that maps to partition p in collection.
func (h *harness) idIn(collection, prefix string, p int) string {
	h.tb.Helper()
	for i := range 10000 {
		id := prefix + strconv.Itoa(i)
		if wire.Partition(collection, id, h.parts) == p {
			return id
		}
	}
	h.tb.Fatalf("no id with prefix %q in partition %d", prefix, p)
	return ""
}

func (h *harness) get(collection, id string) wire.Document {
	h.tb.Helper()
	d, err := h.store.Get(h.ctx, collection, id)
	if err != nil {
		h.tb.Fatalf("Get(%s/%s): %v", collection, id, err)
	}
	if d.Collection != collection || d.ID != id {
		h.tb.Fatalf("Get(%s/%s) returned %s/%s", collection, id, d.Collection, d.ID)
	}
	return d
}

func (h *harness) wantAbsent(collection, id string) {
	h.tb.Helper()
	if d, err := h.store.Get(h.ctx, collection, id); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("Get(%s/%s) = %+v, %v; want core.ErrNotFound", collection, id, d, err)
	}
}

func (h *harness) list(q wire.ListQuery) wire.ListPage {
	h.tb.Helper()
	page, err := h.store.List(h.ctx, q)
	if err != nil {
		h.tb.Fatalf("List(%+v): %v", q, err)
	}
	return page
}

func (h *harness) sync(q wire.SyncQuery) wire.SyncPage {
	h.tb.Helper()
	page, err := h.store.Sync(h.ctx, q)
	if err != nil {
		h.tb.Fatalf("Sync(%+v): %v", q, err)
	}
	if len(page.Next) != h.parts {
		h.tb.Fatalf("Sync(%+v): Next has %d entries, want %d", q, len(page.Next), h.parts)
	}
	return page
}

func (h *harness) pending(before time.Time, limit int) []wire.ChangeEvent {
	h.tb.Helper()
	evs, err := h.store.PendingEvents(h.ctx, before, limit)
	if err != nil {
		h.tb.Fatalf("PendingEvents: %v", err)
	}
	return evs
}

func (h *harness) outcome(writeID string) wire.Outcome {
	h.tb.Helper()
	o, err := h.store.WriteOutcome(h.ctx, writeID)
	if err != nil {
		h.tb.Fatalf("WriteOutcome(%s): %v", writeID, err)
	}
	return o
}

// Assertions.

func wantStatus(tb testing.TB, o wire.Outcome, status int) {
	tb.Helper()
	if o.Status != status || o.Problem != nil {
		tb.Fatalf("outcome of %s: status %d, problem %v; want %d and no problem", o.WriteID, o.Status, o.Problem, status)
	}
	if o.Doc == nil {
		tb.Fatalf("outcome of %s: applied without a document", o.WriteID)
	}
}

func wantProblem(tb testing.TB, o wire.Outcome, code problem.Code) {
	tb.Helper()
	if o.Problem == nil || o.Problem.Code != code || o.Status != code.Status() {
		tb.Fatalf("outcome of %s: status %d, problem %v; want %d %s", o.WriteID, o.Status, o.Problem, code.Status(), code)
	}
	if o.Doc != nil {
		tb.Fatalf("outcome of %s: rejected with a document", o.WriteID)
	}
}

// sameJSON reports whether a and b are the same JSON value, whatever their key order and
// spacing (a backend may keep documents in a normalising type such as jsonb).
func sameJSON(a, b []byte) bool {
	if len(bytes.TrimSpace(a)) == 0 || len(bytes.TrimSpace(b)) == 0 {
		return len(bytes.TrimSpace(a)) == len(bytes.TrimSpace(b))
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func wantData(tb testing.TB, d wire.Document, want string) {
	tb.Helper()
	if !sameJSON(d.Data, []byte(want)) {
		tb.Fatalf("%s/%s v%d: data %s, want %s", d.Collection, d.ID, d.Version, d.Data, want)
	}
}

// docDiff describes how got differs from want, or returns "".
func docDiff(got, want *wire.Document) string {
	switch {
	case got == nil && want == nil:
		return ""
	case got == nil || want == nil:
		return fmt.Sprintf("document %v, want %v", got, want)
	case got.Collection != want.Collection || got.ID != want.ID:
		return fmt.Sprintf("document %s/%s, want %s/%s", got.Collection, got.ID, want.Collection, want.ID)
	case got.Version != want.Version:
		return fmt.Sprintf("%s: version %d, want %d", got.ID, got.Version, want.Version)
	case got.Deleted != want.Deleted:
		return fmt.Sprintf("%s: deleted %t, want %t", got.ID, got.Deleted, want.Deleted)
	case !got.CreatedAt.Equal(want.CreatedAt):
		return fmt.Sprintf("%s: created_at %v, want %v", got.ID, got.CreatedAt, want.CreatedAt)
	case !got.UpdatedAt.Equal(want.UpdatedAt):
		return fmt.Sprintf("%s: updated_at %v, want %v", got.ID, got.UpdatedAt, want.UpdatedAt)
	case !sameJSON(got.Data, want.Data):
		return fmt.Sprintf("%s: data %s, want %s", got.ID, got.Data, want.Data)
	case got.Owner != want.Owner:
		return fmt.Sprintf("%s: owner %q, want %q", got.ID, got.Owner, want.Owner)
	}
	return ""
}

func wantDoc(tb testing.TB, got, want wire.Document) {
	tb.Helper()
	if diff := docDiff(&got, &want); diff != "" {
		tb.Fatal(diff)
	}
}

// outcomeDiff describes how got differs from want, or returns "".
func outcomeDiff(got, want wire.Outcome) string {
	switch {
	case got.WriteID != want.WriteID:
		return fmt.Sprintf("write id %q, want %q", got.WriteID, want.WriteID)
	case got.Status != want.Status:
		return fmt.Sprintf("%s: status %d, want %d", got.WriteID, got.Status, want.Status)
	case got.Replayed != want.Replayed:
		return fmt.Sprintf("%s: replayed %t, want %t", got.WriteID, got.Replayed, want.Replayed)
	case (got.Problem == nil) != (want.Problem == nil):
		return fmt.Sprintf("%s: problem %v, want %v", got.WriteID, got.Problem, want.Problem)
	case got.Problem != nil && *got.Problem != *want.Problem:
		return fmt.Sprintf("%s: problem %+v, want %+v", got.WriteID, *got.Problem, *want.Problem)
	}
	if d := docDiff(got.Doc, want.Doc); d != "" {
		return got.WriteID + ": " + d
	}
	return ""
}

func wantOutcome(tb testing.TB, got, want wire.Outcome) {
	tb.Helper()
	if diff := outcomeDiff(got, want); diff != "" {
		tb.Fatal(diff)
	}
}

// replayed is o as a replay returns it.
func replayed(o wire.Outcome) wire.Outcome {
	o.Replayed = true
	return o
}

// eventKey identifies an event.
type eventKey struct {
	partition int
	seq       int64
}

func keyOf(ev wire.ChangeEvent) eventKey { return eventKey{ev.Partition, ev.Seq} }

// wantSameEvents fails unless got and want hold the same events (by partition and seq, with
// the same content), in any order.
func wantSameEvents(tb testing.TB, got, want []wire.ChangeEvent) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("%d events, want %d:\n got %v\nwant %v", len(got), len(want), eventKeys(got), eventKeys(want))
	}
	byKey := make(map[eventKey]wire.ChangeEvent, len(want))
	for _, ev := range want {
		byKey[keyOf(ev)] = ev
	}
	for _, g := range got {
		w, ok := byKey[keyOf(g)]
		if !ok {
			tb.Fatalf("unexpected event %d/%d (%s/%s)", g.Partition, g.Seq, g.Collection, g.ID)
		}
		delete(byKey, keyOf(g))
		if diff := eventDiff(g, w); diff != "" {
			tb.Fatalf("event %d/%d: %s", g.Partition, g.Seq, diff)
		}
	}
}

func eventDiff(got, want wire.ChangeEvent) string {
	switch {
	case got.Collection != want.Collection || got.ID != want.ID:
		return fmt.Sprintf("document %s/%s, want %s/%s", got.Collection, got.ID, want.Collection, want.ID)
	case got.Version != want.Version || got.Deleted != want.Deleted:
		return fmt.Sprintf("version %d deleted %t, want %d %t", got.Version, got.Deleted, want.Version, want.Deleted)
	case !got.UpdatedAt.Equal(want.UpdatedAt):
		return fmt.Sprintf("updated_at %v, want %v", got.UpdatedAt, want.UpdatedAt)
	}
	return docDiff(got.Doc, want.Doc)
}

func eventKeys(evs []wire.ChangeEvent) []eventKey {
	ks := make([]eventKey, len(evs))
	for i, ev := range evs {
		ks[i] = keyOf(ev)
	}
	return ks
}

// wantContiguous fails unless, in every partition, the events' seqs are exactly 1..n in order.
func wantContiguous(tb testing.TB, evs []wire.ChangeEvent) {
	tb.Helper()
	last := map[int]int64{}
	for _, ev := range evs {
		if ev.Seq != last[ev.Partition]+1 {
			tb.Fatalf("partition %d: event seq %d after %d", ev.Partition, ev.Seq, last[ev.Partition])
		}
		last[ev.Partition] = ev.Seq
	}
}

// counters returns the last seq of each partition in evs, all the events applied since the
// store was opened.
func (h *harness) counters(evs []wire.ChangeEvent) []int64 {
	c := make([]int64, h.parts)
	for _, ev := range evs {
		c[ev.Partition] = max(c[ev.Partition], ev.Seq)
	}
	return c
}
