package sqlitestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/core/migration"
	"github.com/perchhq/perch/internal/wire"
)

const testPartitions = 4

func openAt(tb testing.TB, path string, partitions int) *Store {
	tb.Helper()
	s, err := Open(tb.Context(), path, partitions, nil)
	if err != nil {
		tb.Fatalf("Open(%s, %d): %v", path, partitions, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

func dbPath(tb testing.TB) string {
	tb.Helper()
	return filepath.Join(tb.TempDir(), "perch.db")
}

// putBatch is a batch of one put of collection/id.
func putBatch(batchID, writeID, collection, id, data string) *wire.Batch {
	return &wire.Batch{ID: batchID, Partition: wire.Partition(collection, id, testPartitions), Commands: []wire.Command{
		{WriteID: writeID, Op: wire.OpPut, Collection: collection, ID: id, Data: json.RawMessage(data)},
	}}
}

func apply(tb testing.TB, s *Store, b *wire.Batch, now time.Time) ([]wire.Outcome, []wire.ChangeEvent) {
	tb.Helper()
	outs, evs, err := s.ApplyBatch(tb.Context(), b, now)
	if err != nil {
		tb.Fatalf("ApplyBatch(%s): %v", b.ID, err)
	}
	return outs, evs
}

func TestPersistence(t *testing.T) {
	path := dbPath(t)
	now := time.Now()
	s := openAt(t, path, testPartitions)
	first := putBatch("b1", "w1", "notes", "a", `{"n":1}`)
	outs, evs := apply(t, s, first, now)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = openAt(t, path, testPartitions)
	d, err := s.Get(t.Context(), "notes", "a")
	if err != nil {
		t.Fatalf("Get after reopen: %v", err)
	}
	if d.Version != 1 || string(d.Data) != `{"n":1}` || !d.UpdatedAt.Equal(outs[0].Doc.UpdatedAt) {
		t.Fatalf("after reopen: %+v, want %+v", d, *outs[0].Doc)
	}
	if o, err := s.WriteOutcome(t.Context(), "w1"); err != nil || o.Status != 201 {
		t.Fatalf("WriteOutcome after reopen: %+v, %v", o, err)
	}
	// The write id is still recorded: a redelivered batch replays.
	replay, revs := apply(t, s, first, now.Add(time.Second))
	if !replay[0].Replayed || len(revs) != 0 {
		t.Fatalf("redelivery after reopen: %+v, %d events; want a replay", replay[0], len(revs))
	}
	// The outbox survived, and the partition's counter goes on from where it was.
	pending, err := s.PendingEvents(t.Context(), now.Add(time.Hour), 10)
	if err != nil || len(pending) != 1 || pending[0].Seq != evs[0].Seq {
		t.Fatalf("PendingEvents after reopen: %v, %v; want the first event", pending, err)
	}
	_, evs2 := apply(t, s, putBatch("b2", "w2", "notes", "a", `{"n":2}`), now.Add(2*time.Second))
	if len(evs2) != 1 || evs2[0].Seq != evs[0].Seq+1 {
		t.Fatalf("event after reopen: %+v, want seq %d", evs2, evs[0].Seq+1)
	}
}

func TestPartitionsMismatch(t *testing.T) {
	path := dbPath(t)
	s := openAt(t, path, testPartitions)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, n := range []int{testPartitions - 1, testPartitions + 1, wire.DefaultPartitions} {
		s, err := Open(t.Context(), path, n, nil)
		if !errors.Is(err, core.ErrPartitionsMismatch) {
			if err == nil {
				s.Close()
			}
			t.Fatalf("Open with %d partitions: %v; want core.ErrPartitionsMismatch", n, err)
		}
	}
	openAt(t, path, testPartitions) // the right count still opens
}

func TestOpenRejects(t *testing.T) {
	for _, tt := range []struct {
		name       string
		path       string
		partitions int
	}{
		{"no partitions", dbPath(t), 0},
		{"memory", ":memory:", 4},
		{"empty path", "", 4},
		{"uri", "file:" + dbPath(t), 4},
		{"query", dbPath(t) + "?mode=ro", 4},
		{"missing directory", filepath.Join(t.TempDir(), "no", "such", "dir", "perch.db"), 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.Context(), tt.path, tt.partitions, nil)
			if err == nil {
				s.Close()
				t.Fatalf("Open(%q, %d): no error", tt.path, tt.partitions)
			}
		})
	}
}

func appliedMigrations(tb testing.TB, s *Store) map[int]int64 {
	tb.Helper()
	rows, err := s.r.QueryContext(tb.Context(), `SELECT version, applied_at FROM schema_migrations`)
	if err != nil {
		tb.Fatalf("read schema_migrations: %v", err)
	}
	defer rows.Close()
	got := map[int]int64{}
	for rows.Next() {
		var v int
		var at int64
		if err := rows.Scan(&v, &at); err != nil {
			tb.Fatalf("scan: %v", err)
		}
		got[v] = at
	}
	if err := rows.Err(); err != nil {
		tb.Fatalf("read schema_migrations: %v", err)
	}
	return got
}

func TestMigrationsIdempotentOnReopen(t *testing.T) {
	fsys, err := migrationsFS()
	if err != nil {
		t.Fatal(err)
	}
	ms, err := migration.Load(fsys)
	if err != nil {
		t.Fatalf("embedded migrations: %v", err)
	}
	if len(ms) == 0 {
		t.Fatal("no embedded migrations")
	}
	path := dbPath(t)
	var first map[int]int64
	for open := range 3 {
		s := openAt(t, path, testPartitions)
		got := appliedMigrations(t, s)
		if len(got) != len(ms) {
			t.Fatalf("open %d: %d migrations recorded, want %d", open, len(got), len(ms))
		}
		for _, m := range ms {
			if _, ok := got[m.Version]; !ok {
				t.Fatalf("open %d: migration %d not recorded", open, m.Version)
			}
		}
		if first == nil {
			first = got
		}
		for v, at := range got {
			if first[v] != at {
				t.Fatalf("open %d: migration %d re-applied (applied_at %d, first %d)", open, v, at, first[v])
			}
		}
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}

func TestMigrate(t *testing.T) {
	embedded, err := migrationsFS()
	if err != nil {
		t.Fatal(err)
	}
	base := embeddedMap(t, embedded)
	last := len(base) // this build's version
	name := func(v int, what string) string { return fmt.Sprintf("%04d_%s.sql", v, what) }
	withNext := copyMap(base)
	withNext[name(last+1, "more")] = &fstest.MapFile{Data: []byte(`CREATE TABLE extra (x INTEGER) STRICT; INSERT INTO extra VALUES (1);`)}

	t.Run("forward", func(t *testing.T) {
		s := openAt(t, dbPath(t), testPartitions)
		ctx := t.Context()
		for range 2 { // the second run finds nothing to do
			if err := migrate(ctx, s.w, withNext, s.logger); err != nil {
				t.Fatalf("migrate: %v", err)
			}
		}
		var n int
		if err := s.w.QueryRowContext(ctx, `SELECT COUNT(*) FROM extra`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("extra rows: %d, %v; want the migration applied once", n, err)
		}
		if v, err := schemaVersion(ctx, s.w); err != nil || v != last+1 {
			t.Fatalf("schema version %d, %v; want %d", v, err, last+1)
		}
		// This build's migrations stop at last: a database at last+1 is newer than it knows.
		want := fmt.Sprintf("version %d", last+1)
		if err := migrate(ctx, s.w, base, s.logger); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("migrate with older migrations: %v, want an error about %s", err, want)
		}
	})

	t.Run("failed migration rolls back", func(t *testing.T) {
		s := openAt(t, dbPath(t), testPartitions)
		bad := copyMap(base)
		bad[name(last+1, "bad")] = &fstest.MapFile{Data: []byte(`CREATE TABLE half (x INTEGER); SELECT no_such_function();`)}
		if err := migrate(t.Context(), s.w, bad, s.logger); err == nil {
			t.Fatal("migrate with a failing migration: no error")
		}
		if v, err := schemaVersion(t.Context(), s.w); err != nil || v != last {
			t.Fatalf("schema version %d, %v after a failed migration; want %d", v, err, last)
		}
		var n int
		if err := s.w.QueryRowContext(t.Context(), `SELECT COUNT(*) FROM sqlite_schema WHERE name = 'half'`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("table of the failed migration: %d, %v; want it rolled back", n, err)
		}
	})

	t.Run("bad files", func(t *testing.T) {
		// The rules are core/migration's (TestLoadRefuses); migrate must stop at them before
		// it changes anything.
		s := openAt(t, dbPath(t), testPartitions)
		gap := copyMap(base)
		gapName := name(last+2, "gap")
		gap[gapName] = &fstest.MapFile{Data: []byte(`CREATE TABLE gap (x INTEGER) STRICT;`)}
		if err := migrate(t.Context(), s.w, gap, s.logger); err == nil || !strings.Contains(err.Error(), gapName) {
			t.Fatalf("migrate with a gap: %v, want an error naming %s", err, gapName)
		}
		if v, err := schemaVersion(t.Context(), s.w); err != nil || v != last {
			t.Fatalf("schema version %d, %v after refused migrations; want %d", v, err, last)
		}
	})
}

// embeddedMap copies the migrations of fsys into a MapFS that tests can add to.
func embeddedMap(tb testing.TB, fsys fs.FS) fstest.MapFS {
	tb.Helper()
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		tb.Fatal(err)
	}
	m := fstest.MapFS{}
	for _, name := range names {
		data, err := fs.ReadFile(fsys, name)
		if err != nil {
			tb.Fatal(err)
		}
		m[name] = &fstest.MapFile{Data: data}
	}
	if len(m) == 0 {
		tb.Fatal("no embedded migrations")
	}
	return m
}

func copyMap(m fstest.MapFS) fstest.MapFS {
	c := fstest.MapFS{}
	for k, v := range m {
		c[k] = v
	}
	return c
}

func TestPragmas(t *testing.T) {
	s := openAt(t, dbPath(t), testPartitions)
	ctx := t.Context()
	for _, tt := range []struct {
		pragma string
		want   string
	}{
		{"journal_mode", "wal"},
		{"synchronous", "2"},
		{"foreign_keys", "1"},
		{"busy_timeout", "5000"},
	} {
		var got string
		if err := s.w.QueryRowContext(ctx, "PRAGMA "+tt.pragma).Scan(&got); err != nil || got != tt.want {
			t.Errorf("writer PRAGMA %s = %q, %v; want %q", tt.pragma, got, err, tt.want)
		}
	}
	if _, err := s.r.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('x', 'y')`); err == nil {
		t.Error("a read connection wrote")
	}
}

// TestReadsDoNotWaitForWriter holds the write lock in an open transaction and reads: under WAL
// the readers see the last commit at once, not the transaction's writes.
func TestReadsDoNotWaitForWriter(t *testing.T) {
	s := openAt(t, dbPath(t), testPartitions)
	now := time.Now()
	apply(t, s, putBatch("b1", "w1", "notes", "a", `{"n":1}`), now)

	tx, err := s.w.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatalf("begin: %v", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(t.Context(), `UPDATE documents SET version = 99`); err != nil {
		t.Fatalf("update: %v", err)
	}

	// Far less than busyTimeout: a reader that waited for the lock would fail.
	ctx, cancel := context.WithTimeout(t.Context(), busyTimeout/5)
	defer cancel()
	d, err := s.Get(ctx, "notes", "a")
	if err != nil {
		t.Fatalf("Get while a write transaction is open: %v", err)
	}
	if d.Version != 1 {
		t.Fatalf("Get saw uncommitted version %d", d.Version)
	}
	page, err := s.Sync(ctx, wire.SyncQuery{Collections: []string{"notes"}})
	if err != nil || len(page.Changes) != 1 {
		t.Fatalf("Sync while a write transaction is open: %+v, %v", page, err)
	}
}

// fenced is putBatch as batch seq of producer.
func fenced(producer string, seq int64, b *wire.Batch) *wire.Batch {
	b.Producer, b.Seq = producer, seq
	return b
}

// TestApplyBatchFenced: ApplyBatch is ApplyBatches of one batch, fence included.
func TestApplyBatchFenced(t *testing.T) {
	s := openAt(t, dbPath(t), testPartitions)
	now := time.Now()
	early := fenced("edge-1", 2, putBatch("b2", "w2", "notes", "a", `{"n":2}`))
	if outs, evs, err := s.ApplyBatch(t.Context(), early, now); err != nil || outs != nil || evs != nil {
		t.Fatalf("ApplyBatch of an early batch: %v, %v, %v; want nothing", outs, evs, err)
	}
	first := fenced("edge-1", 1, putBatch("b1", "w1", "notes", "a", `{"n":1}`))
	outs, evs := apply(t, s, first, now)
	if len(outs) != 1 || outs[0].Status != 201 || len(evs) != 1 {
		t.Fatalf("ApplyBatch of seq 1: %+v, %d events", outs, len(evs))
	}
	again, evs := apply(t, s, first, now)
	if len(again) != 1 || !again[0].Replayed || again[0].Status != 201 || len(evs) != 0 {
		t.Fatalf("ApplyBatch of seq 1 again: %+v, %d events; want the replay", again, len(evs))
	}
	if outs, _ := apply(t, s, early, now); len(outs) != 1 || outs[0].Status != 200 {
		t.Fatalf("ApplyBatch of seq 2 after 1: %+v", outs)
	}
}

// TestApplyBatchesAtomic fails the last batch of a group with a database error: nothing of the
// group commits, neither the earlier batches nor the producers' sequences.
func TestApplyBatchesAtomic(t *testing.T) {
	s := openAt(t, dbPath(t), testPartitions)
	ctx := t.Context()
	if _, err := s.w.ExecContext(ctx, `CREATE TRIGGER boom BEFORE INSERT ON documents
		WHEN NEW.id = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END`); err != nil {
		t.Fatalf("create trigger: %v", err)
	}
	p := wire.Partition("notes", "boom", testPartitions)
	var id string
	for i := 0; id == ""; i++ {
		if c := fmt.Sprintf("a%d", i); wire.Partition("notes", c, testPartitions) == p {
			id = c
		}
	}
	bs := []*wire.Batch{
		fenced("edge-1", 1, putBatch("b1", "w1", "notes", id, `{}`)),
		putBatch("b2", "w2", "notes", "boom", `{}`),
	}
	if results, evs, err := s.ApplyBatches(ctx, bs, time.Now()); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("ApplyBatches with a failing batch: %v, %v, %v; want the trigger's error", results, evs, err)
	}
	if _, err := s.Get(ctx, "notes", id); !errors.Is(err, core.ErrNotFound) {
		t.Fatalf("document of the group's first batch: %v, want core.ErrNotFound", err)
	}
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM producers) + (SELECT COUNT(*) FROM writes)
		+ (SELECT COUNT(*) FROM outbox) + (SELECT seq FROM partitions WHERE p = ?)`, p).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows left by the failed group: %d, %v; want none", n, err)
	}
	results, _, err := s.ApplyBatches(ctx, bs[:1], time.Now())
	if err != nil || results[0].Status != core.BatchApplied {
		t.Fatalf("retry of the first batch alone: %+v, %v; want it applied", results, err)
	}
}
