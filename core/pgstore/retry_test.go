package pgstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/perchhq/perch/core/pgstore"
	"github.com/perchhq/perch/internal/pgtest"
	"github.com/perchhq/perch/internal/wire"
)

const testPartitions = 4

func open(tb testing.TB, dsn string, opts ...pgstore.Option) *pgstore.Store {
	tb.Helper()
	s, err := pgstore.Open(tb.Context(), dsn, testPartitions, nil, opts...)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

// idIn returns an id with the given prefix that maps to partition p in collection.
func idIn(tb testing.TB, collection, prefix string, p int) string {
	tb.Helper()
	for i := range 100000 {
		id := fmt.Sprintf("%s%d", prefix, i)
		if wire.Partition(collection, id, testPartitions) == p {
			return id
		}
	}
	tb.Fatalf("no id with prefix %q in partition %d", prefix, p)
	return ""
}

func apply(tb testing.TB, s *pgstore.Store, b *wire.Batch, now time.Time) ([]wire.Outcome, []wire.ChangeEvent) {
	tb.Helper()
	outs, evs, err := s.ApplyBatch(tb.Context(), b, now)
	if err != nil {
		tb.Fatalf("ApplyBatch(%s): %v", b.ID, err)
	}
	return outs, evs
}

// count runs a query that returns one integer.
func count(tb testing.TB, s *pgstore.Store, query string, args ...any) int64 {
	tb.Helper()
	var n int64
	if err := s.Pool().QueryRow(tb.Context(), query, args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", query, err)
	}
	return n
}

// TestSerializationFailures applies conflicting batches to one partition and one document from
// several goroutines while a competing transaction keeps rewriting the same rows (the
// partition's counter and the document), so that batches fail with 40001 at their reads,
// their writes and their COMMIT. Every write must be applied exactly once: one version per
// patch, one write record per write id, one event per change with contiguous seqs.
func TestSerializationFailures(t *testing.T) {
	s := open(t, pgtest.DSN(t))
	const (
		collection  = "notes"
		writers     = 6
		perWriter   = 8
		competitors = 2
	)
	p := 1
	x := idIn(t, collection, "x", p)
	now := time.Now()
	seed := &wire.Batch{ID: "seed", Partition: p, Commands: []wire.Command{
		{WriteID: "seed-x", Op: wire.OpPut, Collection: collection, ID: x, Data: json.RawMessage(`{}`)},
	}}
	apply(t, s, seed, now)

	// The competitor: SERIALIZABLE transactions that update the rows every batch reads and
	// writes, without changing them, and hold them a moment.
	ctx, stop := context.WithCancel(t.Context())
	var (
		competitorCommits atomic.Int64
		wg                sync.WaitGroup
		competitorErr     = make(chan error, competitors)
	)
	for range competitors {
		conn, err := pgx.Connect(t.Context(), s.Pool().Config().ConnConfig.ConnString())
		if err != nil {
			t.Fatalf("competitor connect: %v", err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		wg.Go(func() {
			for ctx.Err() == nil {
				err := pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.Serializable}, func(tx pgx.Tx) error {
					if _, err := tx.Exec(ctx, `UPDATE partitions SET seq = seq WHERE part = $1`, p); err != nil {
						return err
					}
					if _, err := tx.Exec(ctx, `UPDATE documents SET version = version WHERE collection = $1 AND id = $2`,
						collection, x); err != nil {
						return err
					}
					_, err := tx.Exec(ctx, `SELECT pg_sleep(0.002)`)
					return err
				})
				var pgErr *pgconn.PgError
				// A pause between transactions: a competitor that never lets go would starve the
				// writers, which is not what this test is about.
				select {
				case <-ctx.Done():
				case <-time.After(3 * time.Millisecond):
				}
				switch {
				case err == nil:
					competitorCommits.Add(1)
				case ctx.Err() != nil:
				case errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01"):
					// The competitor loses too, sometimes.
				default:
					competitorErr <- err
					return
				}
			}
		})
	}

	type result struct {
		batch *wire.Batch
		outs  []wire.Outcome
		evs   []wire.ChangeEvent
		err   error
	}
	results := make([][]result, writers)
	ys := make([][]string, writers) // the new documents, in partition p too
	for w := range ys {
		for i := range perWriter {
			ys[w] = append(ys[w], idIn(t, collection, fmt.Sprintf("y%d-%d-", w, i), p))
		}
	}
	var writersWG sync.WaitGroup
	start := make(chan struct{})
	for w := range writers {
		writersWG.Go(func() {
			<-start
			for i := range perWriter {
				b := &wire.Batch{ID: fmt.Sprintf("b-%d-%d", w, i), Partition: p, Commands: []wire.Command{
					{WriteID: fmt.Sprintf("patch-%d-%d", w, i), Op: wire.OpPatch, Collection: collection, ID: x,
						Data: json.RawMessage(fmt.Sprintf(`{"w%di%d":true}`, w, i))},
					{WriteID: fmt.Sprintf("put-%d-%d", w, i), Op: wire.OpPut, Collection: collection,
						ID: ys[w][i], Data: json.RawMessage(`{"n":1}`)},
				}}
				outs, evs, err := s.ApplyBatch(t.Context(), b, now)
				results[w] = append(results[w], result{b, outs, evs, err})
				if err != nil {
					return
				}
			}
		})
	}
	close(start)
	writersWG.Wait()
	stop()
	wg.Wait()
	select {
	case err := <-competitorErr:
		t.Fatalf("competitor: %v", err)
	default:
	}

	var (
		versions []int64
		events   []wire.ChangeEvent
		writeIDs []string
	)
	for w := range writers {
		for _, r := range results[w] {
			if r.err != nil {
				t.Fatalf("ApplyBatch(%s): %v", r.batch.ID, r.err)
			}
			patch, put := r.outs[0], r.outs[1]
			if patch.Status != http.StatusOK || patch.Replayed || put.Status != http.StatusCreated || put.Replayed {
				t.Fatalf("batch %s: outcomes %+v %+v", r.batch.ID, patch, put)
			}
			versions = append(versions, patch.Doc.Version)
			events = append(events, r.evs...)
			writeIDs = append(writeIDs, r.batch.Commands[0].WriteID, r.batch.Commands[1].WriteID)
		}
		if len(results[w]) != perWriter {
			t.Fatalf("writer %d: %d batches done, want %d", w, len(results[w]), perWriter)
		}
	}
	t.Logf("%d batches, %d retried attempts, %d competing commits", writers*perWriter, s.Retries(), competitorCommits.Load())
	if s.Retries() == 0 {
		t.Fatal("no attempt was retried: the test did not provoke a serialization failure")
	}

	// One version per patch: 2, 3, ... in some order, none twice.
	slices.Sort(versions)
	for i, v := range versions {
		if v != int64(i+2) {
			t.Fatalf("patch versions %v: want each of 2..%d once", versions, writers*perWriter+1)
		}
	}
	got, err := s.Get(t.Context(), collection, x)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.Version != int64(writers*perWriter+1) {
		t.Fatalf("final version %d, want %d", got.Version, writers*perWriter+1)
	}
	var data map[string]bool
	if err := json.Unmarshal(got.Data, &data); err != nil || len(data) != writers*perWriter {
		t.Fatalf("final data %s (%v): want the %d keys of every patch", got.Data, err, writers*perWriter)
	}

	// One write record per write id, and nothing else but the seed's.
	if n := count(t, s, `SELECT count(*) FROM writes WHERE write_id = ANY($1)`, writeIDs); n != int64(len(writeIDs)) {
		t.Fatalf("%d write records for %d write ids", n, len(writeIDs))
	}
	if n := count(t, s, `SELECT count(*) FROM writes`); n != int64(len(writeIDs))+1 {
		t.Fatalf("%d write records, want %d", n, len(writeIDs)+1)
	}

	// One event per change, numbered 1..n in the partition, the same in the outbox.
	slices.SortFunc(events, func(a, b wire.ChangeEvent) int { return int(a.Seq - b.Seq) })
	for i, ev := range events {
		if ev.Seq != int64(i+2) { // the seed's put is seq 1
			t.Fatalf("event seqs: %d at position %d, want %d", ev.Seq, i, i+2)
		}
	}
	if n := count(t, s, `SELECT count(*) FROM outbox WHERE part = $1`, p); n != int64(len(events))+1 {
		t.Fatalf("%d outbox events, want %d", n, len(events)+1)
	}
	if n := count(t, s, `SELECT seq FROM partitions WHERE part = $1`, p); n != int64(len(events))+1 {
		t.Fatalf("partition counter %d, want %d", n, len(events)+1)
	}

	// Redelivering every batch replays it: nothing is applied twice.
	for w := range writers {
		for _, r := range results[w] {
			outs, evs := apply(t, s, r.batch, now.Add(time.Second))
			for i, o := range outs {
				if !o.Replayed || o.Status != r.outs[i].Status {
					t.Fatalf("redelivered %s: outcome %+v, want a replay of %+v", r.batch.ID, o, r.outs[i])
				}
			}
			if len(evs) != 0 {
				t.Fatalf("redelivered %s: %d events", r.batch.ID, len(evs))
			}
		}
	}
	if got2, _ := s.Get(t.Context(), collection, x); got2.Version != got.Version {
		t.Fatalf("version %d after redelivery, want %d", got2.Version, got.Version)
	}
}

// roundTrips counts what a connection sends to the server: each Exec or Query outside a
// batch, and each batch, is one round trip.
type roundTrips struct {
	mu      sync.Mutex
	queries []string
	batches int
}

func (r *roundTrips) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queries = append(r.queries, data.SQL)
	return ctx
}
func (r *roundTrips) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *roundTrips) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.batches++
	return ctx
}
func (r *roundTrips) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}
func (r *roundTrips) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData)     {}

func (r *roundTrips) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.queries, r.batches = nil, 0
}

func (r *roundTrips) total() (int, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queries) + r.batches, slices.Clone(r.queries)
}

// TestRoundTrips checks group commit: a batch costs the same number of round trips whatever
// its number of commands: load (with BEGIN), write, COMMIT on PostgreSQL; BEGIN, SAVEPOINT,
// load, write, RELEASE, COMMIT on CockroachDB.
func TestRoundTrips(t *testing.T) {
	rt := &roundTrips{}
	s := open(t, pgtest.DSN(t), pgstore.WithQueryTracer(rt), pgstore.WithPoolSize(2))
	p := 0
	now := time.Now()
	batch := func(name string, n int) *wire.Batch {
		b := &wire.Batch{ID: name, Partition: p}
		for i := range n {
			id := idIn(t, "notes", fmt.Sprintf("%s-%d-", name, i), p)
			b.Commands = append(b.Commands,
				wire.Command{WriteID: fmt.Sprintf("%s-put-%d", name, i), Op: wire.OpPut, Collection: "notes", ID: id,
					Data: json.RawMessage(`{"a":1}`), IdemKey: fmt.Sprintf("%s-key-%d", name, i), Fingerprint: "fp"},
				wire.Command{WriteID: fmt.Sprintf("%s-patch-%d", name, i), Op: wire.OpPatch, Collection: "notes", ID: id,
					Data: json.RawMessage(`{"b":2}`)})
		}
		return b
	}
	// The first time a connection sees one of the statements, pgx prepares it inside the
	// same SendBatch: one more round trip, once per connection, which the tracer does not see.
	apply(t, s, batch("warm", 2), now)
	var counts []int
	for _, n := range []int{1, 10, 500} {
		rt.reset()
		apply(t, s, batch(fmt.Sprint("b", n), n), now)
		total, queries := rt.total()
		t.Logf("%d commands: %d round trips: %d statements %q and %d batches", 2*n, total, len(queries), queries, total-len(queries))
		counts = append(counts, total)
	}
	want := 3
	if s.Cockroach() {
		want = 6
	}
	if counts[0] != want || counts[1] != want || counts[2] != want {
		t.Fatalf("round trips per batch %v, want %d whatever the batch's size", counts, want)
	}
}
