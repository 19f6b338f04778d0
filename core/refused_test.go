package core_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/core/pgstore"
	"github.com/perchhq/perch/core/sqlitestore"
	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/pgtest"
	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

// poisonedStore is a store whose database refuses, as a real one may, any document whose id
// starts with "poison" (a check of the database's own that the edge knows nothing of), until
// cure is called.
type poisonedStore struct {
	core.Store
	cure func()
}

// refusingStores are the stores the refusal tests run on: SQLite, with a trigger that
// raises, and PostgreSQL when PERCH_TEST_POSTGRES is set, with a CHECK constraint.
var refusingStores = map[string]func(t *testing.T, partitions int) poisonedStore{
	"sqlite": func(t *testing.T, partitions int) poisonedStore {
		path := filepath.Join(t.TempDir(), "perch.db")
		s, err := sqlitestore.Open(t.Context(), path, partitions, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		exec := func(stmt string) {
			t.Helper()
			if _, err := db.ExecContext(t.Context(), stmt); err != nil {
				t.Fatal(err)
			}
		}
		exec(`CREATE TRIGGER poison BEFORE INSERT ON documents WHEN NEW.id LIKE 'poison%'
			BEGIN SELECT RAISE(ABORT, 'poison refused'); END`)
		return poisonedStore{Store: s, cure: func() { exec(`DROP TRIGGER poison`) }}
	},
	"postgres": func(t *testing.T, partitions int) poisonedStore {
		dsn := pgtest.DSN(t)
		s, err := pgstore.Open(t.Context(), dsn, partitions, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		conn, err := pgx.Connect(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		exec := func(stmt string) {
			t.Helper()
			if _, err := conn.Exec(t.Context(), stmt); err != nil {
				t.Fatal(err)
			}
		}
		exec(`ALTER TABLE documents ADD CONSTRAINT poison CHECK (id NOT LIKE 'poison%')`)
		return poisonedStore{Store: s, cure: func() { exec(`ALTER TABLE documents DROP CONSTRAINT poison`) }}
	},
}

// startRefusing publishes batches (one producer's, in order) to the write stream of a new
// NATS server and starts a core on the store open makes, which the batches find waiting. It
// returns the store, the publisher and the core's metrics.
func startRefusing(t *testing.T, open func(*testing.T, int) poisonedStore, batches ...[]wire.Command) (poisonedStore, *publisher, *prometheus.Registry) {
	t.Helper()
	srv := natstest.Start(t)
	cfg := testConfig()
	reg := prometheus.NewRegistry()
	cfg.Metrics = reg
	store := open(t, cfg.Partitions)
	p := newPublisher(t, srv.URL())
	for _, cmds := range batches {
		p.seq++
		p.publish(&wire.Batch{ID: ulid.Make().String(), Partition: 0, Producer: p.producer, Seq: p.seq, Commands: cmds})
	}
	startCore(t, srv.URL(), store, cfg)
	return store, p, reg
}

// put is a PUT of collection c's document id.
func put(id, data string) wire.Command {
	return wire.Command{WriteID: ulid.Make().String(), Op: wire.OpPut, Collection: "c", ID: id, Data: []byte(data)}
}

// outcome waits for the recorded outcome of writeID.
func outcome(t *testing.T, store core.Store, writeID string) wire.Outcome {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := store.WriteOutcome(context.Background(), writeID)
		if err == nil {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("write %s has no outcome: %v", writeID, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRefusedWriteIsAnsweredAlone: a write the database refuses to store (here a check of its
// own) is answered 422 not_storable, alone; the writes before and after it in its batch, and
// the batches after it in its partition, are applied, in their order.
func TestRefusedWriteIsAnsweredAlone(t *testing.T) {
	for name, open := range refusingStores {
		t.Run(name, func(t *testing.T) {
			first := []wire.Command{put("a", `{"n":1}`), put("poison", `{"n":2}`), put("a", `{"n":3}`)}
			then := []wire.Command{put("b", `{"n":4}`)}
			store, p, _ := startRefusing(t, open, first, then)

			if out := outcome(t, store, then[0].WriteID); out.Problem != nil || out.Doc == nil || out.Doc.Version != 1 {
				t.Fatalf("the batch after the refused write: %+v", out)
			}
			refused := outcome(t, store, first[1].WriteID)
			if refused.Status != 422 || refused.Problem == nil || refused.Problem.Code != problem.NotStorable || refused.Doc != nil {
				t.Fatalf("refused write: %+v", refused)
			}
			for i, want := range map[int]int64{0: 1, 2: 2} {
				if out := outcome(t, store, first[i].WriteID); out.Problem != nil || out.Doc == nil || out.Doc.Version != want {
					t.Fatalf("write %d of the refused write's batch: %+v, want version %d", i, out, want)
				}
			}
			d, err := store.Get(context.Background(), "c", "a")
			var data struct{ N int }
			if err != nil || d.Version != 2 || json.Unmarshal(d.Data, &data) != nil || data.N != 3 {
				t.Fatalf("a: %+v, %v", d, err)
			}
			if _, err := store.Get(context.Background(), "c", "poison"); err == nil {
				t.Fatal("the refused document was stored")
			}
			p.waitPurged()
		})
	}
}

// TestEveryWriteRefusedIsRetried: when the database refuses every write of a batch, it is
// refusing something else than their data, and none of them is answered not_storable: the
// batch waits until the database takes it, and then every write is applied.
func TestEveryWriteRefusedIsRetried(t *testing.T) {
	for name, open := range refusingStores {
		t.Run(name, func(t *testing.T) {
			cmds := []wire.Command{put("poison1", `{"n":1}`), put("poison2", `{"n":2}`)}
			store, _, reg := startRefusing(t, open, cmds)
			// Once the core retries the batch whole, it has tried each write alone.
			waitCounter(t, reg, "perch_core_batches_total", "refused", 1)
			waitCounter(t, reg, "perch_core_apply_retries_total", "", 1)
			for _, c := range cmds {
				if out, err := store.WriteOutcome(context.Background(), c.WriteID); err == nil {
					t.Fatalf("write %s answered while the database refused every write: %+v", c.ID, out)
				}
			}
			store.cure()
			for _, c := range cmds {
				if out := outcome(t, store, c.WriteID); out.Problem != nil || out.Doc == nil || out.Doc.Version != 1 {
					t.Fatalf("write %s once the database takes it: %+v", c.ID, out)
				}
			}
		})
	}
}

// waitCounter waits until the counter name in reg, of the label value label when not empty,
// reaches at least want.
func waitCounter(t *testing.T, reg *prometheus.Registry, name, label string, want float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			if f.GetName() != name {
				continue
			}
			for _, m := range f.GetMetric() {
				labelled := label == ""
				for _, l := range m.GetLabel() {
					labelled = labelled || l.GetValue() == label
				}
				if labelled && m.GetCounter().GetValue() >= want {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s{%s} did not reach %v", name, label, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
