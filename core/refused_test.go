package core_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
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
// cure is called. exec runs a statement on its database, beside the store.
type poisonedStore struct {
	core.Store
	cure func()
	exec func(stmt string)
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
		return poisonedStore{Store: s, cure: func() { exec(`DROP TRIGGER poison`) }, exec: exec}
	},
	"postgres": func(t *testing.T, partitions int) poisonedStore { return poisonedPostgres(t, partitions) },
}

// poisonedPostgres is refusingStores' PostgreSQL store, opened with opts.
func poisonedPostgres(t *testing.T, partitions int, opts ...pgstore.Option) poisonedStore {
	dsn := pgtest.DSN(t)
	s, err := pgstore.Open(t.Context(), dsn, partitions, nil, opts...)
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
	return poisonedStore{Store: s, cure: func() { exec(`ALTER TABLE documents DROP CONSTRAINT poison`) }, exec: exec}
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

// TestRefusedWritesOfOneBatchAreAnsweredEach: a batch holds the writes of whatever requests
// queued together at the edge, so it may hold only writes the database refuses (two clients'
// bad documents): each is answered not_storable, and the partition goes on.
func TestRefusedWritesOfOneBatchAreAnsweredEach(t *testing.T) {
	for name, open := range refusingStores {
		t.Run(name, func(t *testing.T) {
			first := []wire.Command{put("poison-alice", `{"n":1}`), put("poison-bob", `{"n":2}`)}
			then := []wire.Command{put("carol", `{"n":3}`)}
			store, _, _ := startRefusing(t, open, first, then)
			if out := outcome(t, store, then[0].WriteID); out.Problem != nil || out.Doc == nil {
				t.Fatalf("the write after the refused ones: %+v", out)
			}
			for _, c := range first {
				if out := outcome(t, store, c.WriteID); out.Problem == nil || out.Problem.Code != problem.NotStorable {
					t.Fatalf("refused write %s: %+v", c.ID, out)
				}
			}
		})
	}
}

// TestStoreFailureIsRetriedNotRefused: an error of the database that is not about a write's
// data (here its documents table is away: a schema out of step with the code) is retried,
// however long, and no write is answered; once the table is back, every write is applied.
func TestStoreFailureIsRetriedNotRefused(t *testing.T) {
	for name, open := range refusingStores {
		t.Run(name, func(t *testing.T) {
			srv := natstest.Start(t)
			cfg := testConfig()
			reg := prometheus.NewRegistry()
			cfg.Metrics = reg
			store := open(t, cfg.Partitions)
			store.exec(`ALTER TABLE documents RENAME TO documents_away`)
			p := newPublisher(t, srv.URL())
			startCore(t, srv.URL(), store, cfg)
			b := p.batch(2)
			p.publish(b)
			waitCounter(t, reg, "perch_core_apply_retries_total", "", 3)
			for _, c := range b.Commands {
				if out, err := store.WriteOutcome(context.Background(), c.WriteID); err == nil {
					t.Fatalf("write %s answered while the database could not store anything: %+v", c.WriteID, out)
				}
			}
			store.exec(`ALTER TABLE documents_away RENAME TO documents`)
			p.checkOrder(store)
			if n := counterValue(t, reg, "perch_core_batches_total", "refused"); n != 0 {
				t.Fatalf("%v batches handled as refused", n)
			}
		})
	}
}

// dyingStore is a store whose connection is lost (every ApplyBatches fails) from the moment
// the core applies a fenced batch marked Recorded: the last step of applyRefused, after the
// refusal was committed. Closed reached says it has come.
type dyingStore struct {
	core.Store
	dead    atomic.Bool
	reached chan struct{}
	once    sync.Once
}

func (s *dyingStore) ApplyBatches(ctx context.Context, bs []*wire.Batch, now time.Time) ([]core.BatchResult, []wire.ChangeEvent, error) {
	for _, b := range bs {
		if b.Producer != "" && b.Recorded {
			s.dead.Store(true)
			s.once.Do(func() { close(s.reached) })
		}
	}
	if s.dead.Load() {
		return nil, nil, errors.New("connection reset by peer")
	}
	return s.Store.ApplyBatches(ctx, bs, now)
}

// restartAfterRefusal publishes batches as startRefusing does and runs a core on the store
// open makes until it has recorded the refused writes and comes to the batch's last step;
// then it kills that core, as a crash would, and starts another on the same store. It
// returns the store.
func restartAfterRefusal(t *testing.T, open func(*testing.T, int) poisonedStore, batches ...[]wire.Command) poisonedStore {
	t.Helper()
	srv := natstest.Start(t)
	cfg := testConfig()
	cfg.Metrics = prometheus.NewRegistry()
	store := open(t, cfg.Partitions)
	p := newPublisher(t, srv.URL())
	for _, cmds := range batches {
		p.seq++
		p.publish(&wire.Batch{ID: ulid.Make().String(), Partition: 0, Producer: p.producer, Seq: p.seq, Commands: cmds})
	}
	dying := &dyingStore{Store: store, reached: make(chan struct{})}
	rc := startCore(t, srv.URL(), dying, cfg)
	select {
	case <-dying.reached:
	case <-time.After(30 * time.Second):
		t.Fatal("the core never came to the refused batch's last step")
	}
	rc.kill()
	cfg.Metrics = prometheus.NewRegistry()
	startCore(t, srv.URL(), store, cfg)
	return store
}

// TestCoreDiesBetweenRefusalAndItsBatch: a core records a write refused, then dies before the
// batch that moves its producer on commits. The next core is delivered the batch again: the
// refused write is answered as recorded, the others of the batch once, and the batch after
// it is applied.
func TestCoreDiesBetweenRefusalAndItsBatch(t *testing.T) {
	for name, open := range refusingStores {
		t.Run(name, func(t *testing.T) {
			first := []wire.Command{put("a", `{"n":1}`), put("poison", `{"n":2}`), put("a", `{"n":3}`)}
			then := []wire.Command{put("b", `{"n":4}`)}
			store := restartAfterRefusal(t, open, first, then)
			if out := outcome(t, store, then[0].WriteID); out.Problem != nil || out.Doc == nil || out.Doc.Version != 1 {
				t.Fatalf("the batch after the refused write: %+v", out)
			}
			if out := outcome(t, store, first[1].WriteID); out.Problem == nil || out.Problem.Code != problem.NotStorable {
				t.Fatalf("refused write: %+v", out)
			}
			if d, err := store.Get(context.Background(), "c", "a"); err != nil || d.Version != 2 {
				t.Fatalf("a, written twice in the batch: %+v, %v", d, err)
			}
		})
	}
}

// TestRedeliveredRefusalIsNotDecidedAgain: after such a crash, the next core's store decides
// the redelivered batch as new before it finds its writes recorded, and decided again the
// refused write no longer touches what was refused (its If-Match fails now): the store must
// still read the records back, even allowed one attempt per transaction.
func TestRedeliveredRefusalIsNotDecidedAgain(t *testing.T) {
	smallOnly := func(t *testing.T, partitions int) poisonedStore {
		s := poisonedPostgres(t, partitions, pgstore.WithMaxAttempts(1))
		s.exec(`ALTER TABLE documents ADD CONSTRAINT small_n CHECK ((data->>'n')::int < 10)`)
		return s
	}
	large := put("a", `{"n":99}`)
	large.IfMatch = 1
	first := []wire.Command{put("a", `{"n":1}`), large}
	then := []wire.Command{put("b", `{"n":4}`)}
	store := restartAfterRefusal(t, smallOnly, first, then)
	if out := outcome(t, store, then[0].WriteID); out.Problem != nil || out.Doc == nil {
		t.Fatalf("the batch after the refused write: %+v", out)
	}
	if out := outcome(t, store, large.WriteID); out.Problem == nil || out.Problem.Code != problem.NotStorable {
		t.Fatalf("refused write: %+v", out)
	}
	if d, err := store.Get(context.Background(), "c", "a"); err != nil || d.Version != 1 {
		t.Fatalf("a: %+v, %v", d, err)
	}
}

// writeOnce is, by store, a rule of the database that a document is written once: an update
// is refused.
var writeOnce = map[string]string{
	"sqlite":   `CREATE TRIGGER write_once BEFORE UPDATE ON documents BEGIN SELECT RAISE(ABORT, 'written once'); END`,
	"postgres": `ALTER TABLE documents ADD CONSTRAINT write_once CHECK (version = 1)`,
}

// TestRefusedUpdateBesideANewDocument: under a rule that documents are written once, a batch
// creates one document and updates another: the update is refused, the create applied once
// (the batch's last step replays it, where deciding it again would make it an update,
// refused too), and the partition goes on.
func TestRefusedUpdateBesideANewDocument(t *testing.T) {
	for name, open := range refusingStores {
		t.Run(name, func(t *testing.T) {
			onceOnly := func(t *testing.T, partitions int) poisonedStore {
				s := open(t, partitions)
				s.exec(writeOnce[name])
				return s
			}
			before := []wire.Command{put("z", `{"n":0}`)}
			first := []wire.Command{put("a", `{"n":1}`), put("z", `{"n":2}`)}
			then := []wire.Command{put("b", `{"n":3}`)}
			store, _, _ := startRefusing(t, onceOnly, before, first, then)
			if out := outcome(t, store, then[0].WriteID); out.Problem != nil || out.Doc == nil || out.Doc.Version != 1 {
				t.Fatalf("the batch after the refused write: %+v", out)
			}
			if out := outcome(t, store, first[1].WriteID); out.Problem == nil || out.Problem.Code != problem.NotStorable {
				t.Fatalf("the update of a written-once document: %+v", out)
			}
			if out := outcome(t, store, first[0].WriteID); out.Problem != nil || out.Doc == nil || out.Doc.Version != 1 {
				t.Fatalf("the new document beside it: %+v", out)
			}
		})
	}
}

// TestRefusalKeepsTheOrderOfAGroup: a group holds a producer's batch 2, forced past its
// missing predecessor, and then that predecessor, batch 1, delivered at last. Applied
// together, batch 1 goes first; a refused write elsewhere in the group, which has the group
// applied batch by batch, must not change that.
func TestRefusalKeepsTheOrderOfAGroup(t *testing.T) {
	for name, open := range refusingStores {
		t.Run(name, func(t *testing.T) {
			store := open(t, 2)
			one := &wire.Batch{ID: ulid.Make().String(), Partition: 0, Producer: "P", Seq: 1, Commands: []wire.Command{put("x", `{"from":1}`)}}
			two := &wire.Batch{ID: ulid.Make().String(), Partition: 0, Producer: "P", Seq: 2, Force: true, Commands: []wire.Command{put("x", `{"from":2}`)}}
			refused := &wire.Batch{ID: ulid.Make().String(), Partition: 0, Producer: "Q", Seq: 1, Commands: []wire.Command{put("poison", `{}`)}}
			if err := core.HandleGroup(testConfig(), store, 0, []*wire.Batch{two, one, refused}); err != nil {
				t.Fatal(err)
			}
			d, err := store.Get(context.Background(), "c", "x")
			var data struct{ From int }
			if err != nil || json.Unmarshal(d.Data, &data) != nil || data.From != 2 || d.Version != 2 {
				t.Fatalf("x: %+v, %v: batch 1 was applied after batch 2", d, err)
			}
			if out := outcome(t, store, refused.Commands[0].WriteID); out.Problem == nil || out.Problem.Code != problem.NotStorable {
				t.Fatalf("refused write: %+v", out)
			}
		})
	}
}

// TestRefusalWithOneAttempt: a store that makes one attempt per transaction still gets a
// refused batch through: its last step needs no second attempt to find the writes recorded.
func TestRefusalWithOneAttempt(t *testing.T) {
	oneAttempt := func(t *testing.T, partitions int) poisonedStore {
		return poisonedPostgres(t, partitions, pgstore.WithMaxAttempts(1))
	}
	first := []wire.Command{put("a", `{"n":1}`), put("poison", `{"n":2}`)}
	then := []wire.Command{put("b", `{"n":3}`)}
	store, _, _ := startRefusing(t, oneAttempt, first, then)
	if out := outcome(t, store, then[0].WriteID); out.Problem != nil || out.Doc == nil {
		t.Fatalf("the batch after the refused write: %+v", out)
	}
}

// counterValue is the value of the counter name in reg, of the label value label when not
// empty (summed over its series).
func counterValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			labelled := label == ""
			for _, l := range m.GetLabel() {
				labelled = labelled || l.GetValue() == label
			}
			if labelled {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// waitCounter waits until counterValue reaches at least want.
func waitCounter(t *testing.T, reg *prometheus.Registry, name, label string, want float64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for counterValue(t, reg, name, label) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s{%s} did not reach %v", name, label, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
