package pgstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/core/pgstore"
	"github.com/perchhq/perch/internal/pgtest"
	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

// A PostgreSQL server cannot be made to lose the answer to a COMMIT on demand, so these
// tests inject the fault at the store's commit (export_test.go): the transaction is really
// committed or really rolled back, and the store is told 40003 statement_completion_unknown.

func ambiguousErr() error {
	return &pgconn.PgError{Severity: "ERROR", Code: "40003", Message: "result is ambiguous (injected by the test)"}
}

// ambiguityFixture is a store with one document, and a batch that creates, patches, rejects
// and uses an Idempotency-Key, all in partition p.
type ambiguityFixture struct {
	s     *pgstore.Store
	p     int
	now   time.Time
	batch *wire.Batch
}

// newAmbiguityFixture makes the fixture; a fenced batch comes from a producer (its write ids
// are not read back, its producer row carries the attempt's token instead).
func newAmbiguityFixture(t *testing.T, fenced bool, opts ...pgstore.Option) *ambiguityFixture {
	t.Helper()
	f := &ambiguityFixture{s: open(t, pgtest.DSN(t), opts...), p: 2, now: time.Now()}
	b := idIn(t, "notes", "b", f.p)
	apply(t, f.s, &wire.Batch{ID: "seed", Partition: f.p, Commands: []wire.Command{
		{WriteID: "seed-b", Op: wire.OpPut, Collection: "notes", ID: b, Data: json.RawMessage(`{"v":0}`)},
	}}, f.now)
	f.batch = &wire.Batch{ID: "ambiguous", Partition: f.p, Commands: []wire.Command{
		{WriteID: "w-put", Op: wire.OpPut, Collection: "notes", ID: idIn(t, "notes", "a", f.p), Data: json.RawMessage(`{"v":1}`)},
		{WriteID: "w-patch", Op: wire.OpPatch, Collection: "notes", ID: b, Data: json.RawMessage(`{"w":2}`)},
		{WriteID: "w-missing", Op: wire.OpPatch, Collection: "notes", ID: idIn(t, "notes", "missing", f.p), Data: json.RawMessage(`{}`)},
		{WriteID: "w-keyed", Op: wire.OpPut, Collection: "notes", ID: idIn(t, "notes", "k", f.p), Data: json.RawMessage(`{"k":1}`),
			IdemKey: "user:key", Fingerprint: "fp"},
	}}
	if fenced {
		f.batch.Producer, f.batch.Seq = "edge-lane", 1
	}
	return f
}

// bothWays runs an ambiguity test on an unfenced and on a fenced batch.
func bothWays(t *testing.T, test func(t *testing.T, fenced bool)) {
	t.Run("unfenced", func(t *testing.T) { test(t, false) })
	t.Run("fenced", func(t *testing.T) { test(t, true) })
}

// check verifies that the batch was applied exactly once and that outs and evs are what its
// transaction committed: fresh outcomes equal to the recorded ones, and the events in the
// outbox.
func (f *ambiguityFixture) check(t *testing.T, outs []wire.Outcome, evs []wire.ChangeEvent) {
	t.Helper()
	want := []struct {
		status  int
		code    problem.Code
		version int64
	}{
		{http.StatusCreated, "", 1},
		{http.StatusOK, "", 2},
		{http.StatusNotFound, problem.NotFound, 0},
		{http.StatusCreated, "", 1},
	}
	if len(outs) != len(want) {
		t.Fatalf("%d outcomes, want %d", len(outs), len(want))
	}
	for i, w := range want {
		o := outs[i]
		if o.WriteID != f.batch.Commands[i].WriteID || o.Status != w.status || o.Replayed {
			t.Fatalf("outcome %d: %+v, want write %s, status %d, not replayed", i, o, f.batch.Commands[i].WriteID, w.status)
		}
		if w.code != "" {
			if o.Problem == nil || o.Problem.Code != w.code {
				t.Fatalf("outcome %d: problem %v, want %s", i, o.Problem, w.code)
			}
		} else if o.Doc == nil || o.Doc.Version != w.version {
			t.Fatalf("outcome %d: document %+v, want version %d", i, o.Doc, w.version)
		}
		recorded, err := f.s.WriteOutcome(t.Context(), o.WriteID)
		if err != nil {
			t.Fatalf("WriteOutcome(%s): %v", o.WriteID, err)
		}
		if !sameOutcome(o, recorded) {
			t.Fatalf("outcome %d returned %+v, recorded %+v", i, o, recorded)
		}
	}
	// Applied once: one record per write id, the patched document at version 2.
	ids := []string{"w-put", "w-patch", "w-missing", "w-keyed"}
	if n := count(t, f.s, `SELECT count(*) FROM writes WHERE write_id = ANY($1)`, ids); n != int64(len(ids)) {
		t.Fatalf("%d write records for %d write ids", n, len(ids))
	}
	if n := count(t, f.s, `SELECT count(DISTINCT txn) FROM writes WHERE write_id = ANY($1)`, ids); n != 1 {
		t.Fatalf("write records from %d transactions, want 1", n)
	}
	if d, err := f.s.Get(t.Context(), "notes", f.batch.Commands[1].ID); err != nil || d.Version != 2 {
		t.Fatalf("patched document: %+v, %v; want version 2", d, err)
	}
	// The events returned are the ones committed: the outbox's, seqs 2, 3, 4 after the seed's.
	pending, err := f.s.PendingEvents(t.Context(), f.now.Add(time.Hour), 100)
	if err != nil {
		t.Fatalf("PendingEvents: %v", err)
	}
	if len(evs) != 3 || len(pending) != 4 {
		t.Fatalf("%d events returned, %d in the outbox; want 3 and 4 (with the seed's)", len(evs), len(pending))
	}
	for i, ev := range evs {
		if ev.Seq != int64(i+2) || !sameEvent(ev, pending[i+1]) {
			t.Fatalf("event %d: %+v, outbox has %+v", i, ev, pending[i+1])
		}
	}
	if n := count(t, f.s, `SELECT seq FROM partitions WHERE part = $1`, f.p); n != 4 {
		t.Fatalf("partition counter %d, want 4", n)
	}
}

func sameJSON(a, b []byte) bool {
	if len(bytes.TrimSpace(a)) == 0 || len(bytes.TrimSpace(b)) == 0 {
		return len(bytes.TrimSpace(a)) == len(bytes.TrimSpace(b))
	}
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && reflect.DeepEqual(x, y)
}

func sameDoc(a, b *wire.Document) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Collection == b.Collection && a.ID == b.ID && a.Version == b.Version && a.Deleted == b.Deleted &&
		a.CreatedAt.Equal(b.CreatedAt) && a.UpdatedAt.Equal(b.UpdatedAt) && sameJSON(a.Data, b.Data)
}

func sameOutcome(a, b wire.Outcome) bool {
	if (a.Problem == nil) != (b.Problem == nil) || a.Problem != nil && *a.Problem != *b.Problem {
		return false
	}
	return a.WriteID == b.WriteID && a.Status == b.Status && a.Replayed == b.Replayed && sameDoc(a.Doc, b.Doc)
}

func sameEvent(a, b wire.ChangeEvent) bool {
	return a.Partition == b.Partition && a.Seq == b.Seq && a.Collection == b.Collection && a.ID == b.ID &&
		a.Version == b.Version && a.Deleted == b.Deleted && a.UpdatedAt.Equal(b.UpdatedAt) && sameDoc(a.Doc, b.Doc)
}

// TestAmbiguousCommitThatCommitted: the COMMIT succeeds but the store is told its result is
// unknown. The store must find the batch's write records (of that attempt) and return what it
// committed, without applying anything again.
func TestAmbiguousCommitThatCommitted(t *testing.T) { bothWays(t, testAmbiguousCommitThatCommitted) }

func testAmbiguousCommitThatCommitted(t *testing.T, fenced bool) {
	f := newAmbiguityFixture(t, fenced)
	var commits atomic.Int32
	f.s.InjectCommitFault(func(ctx context.Context, tx pgx.Tx) error {
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		if commits.Add(1) == 1 {
			return ambiguousErr()
		}
		return nil
	})
	outs, evs, err := f.s.ApplyBatch(t.Context(), f.batch, f.now)
	if err != nil {
		t.Fatalf("ApplyBatch: %v", err)
	}
	if n := commits.Load(); n != 1 {
		t.Fatalf("%d commits, want 1: the read-back should find the batch committed", n)
	}
	f.check(t, outs, evs)
}

// TestAmbiguousCommitThatRolledBack: the COMMIT did not happen (the transaction is rolled
// back) and the store is told its result is unknown. The store must find no record of the
// batch and apply it again, once.
func TestAmbiguousCommitThatRolledBack(t *testing.T) { bothWays(t, testAmbiguousCommitThatRolledBack) }

func testAmbiguousCommitThatRolledBack(t *testing.T, fenced bool) {
	f := newAmbiguityFixture(t, fenced)
	var commits atomic.Int32
	f.s.InjectCommitFault(func(ctx context.Context, tx pgx.Tx) error {
		if commits.Add(1) == 1 {
			if err := tx.Rollback(ctx); err != nil {
				return err
			}
			return ambiguousErr()
		}
		return tx.Commit(ctx)
	})
	outs, evs, err := f.s.ApplyBatch(t.Context(), f.batch, f.now)
	if err != nil {
		t.Fatalf("ApplyBatch: %v", err)
	}
	if n := commits.Load(); n != 2 {
		t.Fatalf("%d commits, want 2 (the lost one and the retry)", n)
	}
	f.check(t, outs, evs)
}

// TestAmbiguousRelease: CockroachDB commits at RELEASE SAVEPOINT cockroach_restart, and
// cockroach-go reports a failed RELEASE as an AmbiguousCommitError. On PostgreSQL the
// transaction is then rolled back, so the store must find nothing and apply the batch again.
func TestAmbiguousRelease(t *testing.T) { bothWays(t, testAmbiguousRelease) }

func testAmbiguousRelease(t *testing.T, fenced bool) {
	f := newAmbiguityFixture(t, fenced)
	var releases atomic.Int32
	f.s.InjectReleaseFault(func(ctx context.Context, tx pgx.Tx) error {
		if releases.Add(1) == 1 {
			return ambiguousErr()
		}
		_, err := tx.Exec(ctx, "RELEASE SAVEPOINT cockroach_restart")
		return err
	})
	outs, evs, err := f.s.ApplyBatch(t.Context(), f.batch, f.now)
	if err != nil {
		t.Fatalf("ApplyBatch: %v", err)
	}
	if n := releases.Load(); n != 2 {
		t.Fatalf("%d releases, want 2", n)
	}
	f.check(t, outs, evs)
}

// TestAmbiguousUnresolved: every commit is lost and reported ambiguous, until the attempts run
// out. The error says the outcome is unknown; the batch can be retried and applies once.
func TestAmbiguousUnresolved(t *testing.T) { bothWays(t, testAmbiguousUnresolved) }

func testAmbiguousUnresolved(t *testing.T, fenced bool) {
	f := newAmbiguityFixture(t, fenced, pgstore.WithMaxAttempts(3))
	f.s.InjectCommitFault(func(ctx context.Context, tx pgx.Tx) error {
		if err := tx.Rollback(ctx); err != nil {
			return err
		}
		return ambiguousErr()
	})
	_, _, err := f.s.ApplyBatch(t.Context(), f.batch, f.now)
	if !errors.Is(err, pgstore.ErrCommitUnknown) {
		t.Fatalf("ApplyBatch: %v, want an error wrapping ErrCommitUnknown", err)
	}
	if _, err := f.s.WriteOutcome(t.Context(), "w-put"); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("WriteOutcome after lost commits: %v, want core.ErrNotFound", err)
	}
	f.s.InjectCommitFault(nil)
	outs, evs, err := f.s.ApplyBatch(t.Context(), f.batch, f.now)
	if err != nil {
		t.Fatalf("ApplyBatch after the fault: %v", err)
	}
	f.check(t, outs, evs)
}
