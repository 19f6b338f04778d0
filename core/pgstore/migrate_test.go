package pgstore

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/core/migration"
	"github.com/perchhq/perch/internal/pgtest"
)

// logRecorder is a slog.Handler that keeps the messages logged through it.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *logRecorder) WithGroup(string) slog.Handler      { return r }

func (r *logRecorder) count(msg string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

// testStore is a Store value for running a migrator on dsn, closed at the end of the test.
func testStore(t *testing.T, dsn string, logger *slog.Logger) *Store {
	t.Helper()
	pool, err := connect(t.Context(), dsn, 4, nil)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(pool.Close)
	s := &Store{pool: pool, logger: logger, maxAttempts: DefaultMaxAttempts}
	if s.cockroach, err = isCockroach(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	return s
}

func queryInt(t *testing.T, s *Store, query string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := s.pool.QueryRow(t.Context(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func TestMigrateConcurrently(t *testing.T) {
	dsn := pgtest.DSN(t)
	ms, err := migration.Load(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	const migrators = 3
	logs := make([]*logRecorder, migrators)
	errs := make([]error, migrators)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range migrators {
		logs[i] = &logRecorder{}
		wg.Go(func() {
			<-start
			errs[i] = Migrate(t.Context(), dsn, slog.New(logs[i]))
		})
	}
	close(start)
	wg.Wait()
	applied := 0
	for i := range migrators {
		if errs[i] != nil {
			t.Fatalf("Migrate %d: %v", i, errs[i])
		}
		applied += logs[i].count("applied store migration")
	}
	if applied != len(ms) {
		t.Fatalf("%d migrations applied in all, want each of the %d once", applied, len(ms))
	}
	s := testStore(t, dsn, slog.New(slog.DiscardHandler))
	if n := queryInt(t, s, `SELECT count(*) FROM schema_migrations`); n != int64(len(ms)) {
		t.Fatalf("%d schema_migrations rows, want %d", n, len(ms))
	}
	if n := queryInt(t, s, `SELECT count(*) FROM schema_lock`); n != 0 {
		t.Fatalf("the schema lock is still held (%d rows)", n)
	}
}

// TestMigrateConcurrentlySlow runs migrators at once over migrations slow enough that they
// overlap, and counts what each migration did: every one must run exactly once.
func TestMigrateConcurrentlySlow(t *testing.T) {
	dsn := pgtest.DSN(t)
	fsys := fstest.MapFS{
		"0001_table.sql": {Data: []byte(`CREATE TABLE ran (migration INT NOT NULL);`)},
		"0002_slow.sql":  {Data: []byte(`INSERT INTO ran VALUES (2); SELECT pg_sleep(0.3); INSERT INTO ran VALUES (2);`)},
		"0003_more.sql":  {Data: []byte(`INSERT INTO ran VALUES (3);`)},
	}
	ms, err := migration.Load(fsys)
	if err != nil {
		t.Fatal(err)
	}
	const migrators = 4
	rec := &logRecorder{}
	errs := make([]error, migrators)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range migrators {
		s := testStore(t, dsn, slog.New(rec))
		m := s.migrator(ms, options{})
		m.poll = 20 * time.Millisecond
		wg.Go(func() {
			<-start
			errs[i] = m.run(t.Context())
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("migrator %d: %v", i, err)
		}
	}
	s := testStore(t, dsn, slog.New(slog.DiscardHandler))
	for _, tt := range []struct {
		migration, rows int64
	}{{2, 2}, {3, 1}} {
		if n := queryInt(t, s, `SELECT count(*) FROM ran WHERE migration = $1`, tt.migration); n != tt.rows {
			t.Fatalf("migration %d left %d rows, want %d: it ran more than once", tt.migration, n, tt.rows)
		}
	}
	if n := rec.count("applied store migration"); n != len(ms) {
		t.Fatalf("%d migrations applied, want %d", n, len(ms))
	}
	t.Logf("%d of %d migrators waited for the lock", rec.count("waiting for the schema lock"), migrators)
}

func TestReopenIsNoop(t *testing.T) {
	dsn := pgtest.DSN(t)
	first := &logRecorder{}
	s, err := Open(t.Context(), dsn, 4, slog.New(first))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if first.count("applied store migration") == 0 || first.count("created postgres store") != 1 {
		t.Fatalf("first Open logged %v, want migrations and the store's creation", first.msgs)
	}
	var appliedAt time.Time
	if err := s.pool.QueryRow(t.Context(), `SELECT max(applied_at) FROM schema_migrations`).Scan(&appliedAt); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	again := &logRecorder{}
	s, err = Open(t.Context(), dsn, 4, slog.New(again))
	if err != nil {
		t.Fatalf("second Open: %v", err)
	}
	defer s.Close()
	for _, msg := range []string{"applied store migration", "took the schema lock", "created postgres store"} {
		if again.count(msg) != 0 {
			t.Fatalf("second Open logged %q: %v", msg, again.msgs)
		}
	}
	var after time.Time
	if err := s.pool.QueryRow(t.Context(), `SELECT max(applied_at) FROM schema_migrations`).Scan(&after); err != nil {
		t.Fatal(err)
	}
	if !after.Equal(appliedAt) {
		t.Fatalf("schema_migrations changed: applied_at %v, then %v", appliedAt, after)
	}
	if err := Migrate(t.Context(), dsn, slog.New(again)); err != nil || again.count("applied store migration") != 0 {
		t.Fatalf("Migrate of a current schema: %v, logged %v", err, again.msgs)
	}
}

func TestWithoutMigrate(t *testing.T) {
	dsn := pgtest.DSN(t)
	_, err := Open(t.Context(), dsn, 4, nil, WithoutMigrate())
	if !errors.Is(err, ErrSchemaBehind) {
		t.Fatalf("Open WithoutMigrate on an empty database: %v, want ErrSchemaBehind", err)
	}
	if !strings.Contains(err.Error(), "perch migrate") || !strings.Contains(err.Error(), "version 0") {
		t.Fatalf("error %q does not say what to do", err)
	}
	s := testStore(t, dsn, slog.New(slog.DiscardHandler))
	if n := queryInt(t, s, `SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()`); n != 0 {
		t.Fatalf("Open WithoutMigrate created %d tables", n)
	}

	if err := Migrate(t.Context(), dsn, nil); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	st, err := Open(t.Context(), dsn, 4, nil, WithoutMigrate())
	if err != nil {
		t.Fatalf("Open WithoutMigrate after Migrate: %v", err)
	}
	st.Close()

	// A schema newer than this build (a later release migrated first) is fine either way.
	if _, err := s.pool.Exec(t.Context(), `INSERT INTO schema_migrations (version, name, applied_at, applied_by)
		VALUES (1000, '1000_future.sql', now(), 'test')`); err != nil {
		t.Fatal(err)
	}
	for _, opts := range [][]Option{nil, {WithoutMigrate()}} {
		st, err := Open(t.Context(), dsn, 4, nil, opts...)
		if err != nil {
			t.Fatalf("Open(%d options) of a newer schema: %v", len(opts), err)
		}
		st.Close()
	}
}

func TestSchemaLockLease(t *testing.T) {
	dsn := pgtest.DSN(t)
	s := testStore(t, dsn, slog.New(slog.DiscardHandler))
	ms, err := migration.Load(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	m := s.migrator(ms, options{})
	if err := m.bootstrap(t.Context()); err != nil {
		t.Fatal(err)
	}

	t.Run("held", func(t *testing.T) {
		if _, err := s.pool.Exec(t.Context(), `INSERT INTO schema_lock (id, holder, expires_at)
			VALUES (1, 'other-migrator', now() + INTERVAL '1 hour')`); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
		defer cancel()
		err := Migrate(ctx, dsn, nil)
		if err == nil || !strings.Contains(err.Error(), "other-migrator") {
			t.Fatalf("Migrate while the lock is held: %v, want a timeout naming the holder", err)
		}
		if n := queryInt(t, s, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`); n != 0 {
			t.Fatalf("schema at version %d after a migrator that never held the lock", n)
		}
	})
	t.Run("expired", func(t *testing.T) {
		// A migrator that died: its lease ran out.
		if _, err := s.pool.Exec(t.Context(), `UPDATE schema_lock SET holder = 'dead-migrator',
			expires_at = now() - INTERVAL '1 second' WHERE id = 1`); err != nil {
			t.Fatal(err)
		}
		if err := Migrate(t.Context(), dsn, nil); err != nil {
			t.Fatalf("Migrate after an expired lease: %v", err)
		}
		if n := queryInt(t, s, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`); n != int64(len(ms)) {
			t.Fatalf("schema at version %d, want %d", n, len(ms))
		}
		if n := queryInt(t, s, `SELECT count(*) FROM schema_lock`); n != 0 {
			t.Fatalf("lock not released (%d rows)", n)
		}
	})
	t.Run("fence", func(t *testing.T) {
		// A migrator whose lease was taken over must not apply anything.
		fsys := fstest.MapFS{"0001_x.sql": {Data: []byte(`CREATE TABLE fenced (n INT);`)}}
		ms, err := migration.Load(fsys)
		if err != nil {
			t.Fatal(err)
		}
		fenced := s.migrator(ms, options{})
		if err := fenced.apply(t.Context(), ms[0]); !errors.Is(err, errLostLock) {
			t.Fatalf("apply without the lock: %v, want errLostLock", err)
		}
	})
}

func TestOpenConcurrently(t *testing.T) {
	dsn := pgtest.DSN(t)
	const opens = 3
	stores := make([]*Store, opens)
	errs := make([]error, opens)
	var wg sync.WaitGroup
	for i := range opens {
		wg.Go(func() { stores[i], errs[i] = Open(t.Context(), dsn, 4, nil) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Open %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	if n := queryInt(t, stores[0], `SELECT count(*) FROM partitions`); n != 4 {
		t.Fatalf("%d partition counters, want 4", n)
	}
	if _, err := Open(t.Context(), dsn, 8, nil); !errors.Is(err, core.ErrPartitionsMismatch) {
		t.Fatalf("Open with another partition count: %v, want core.ErrPartitionsMismatch", err)
	}
}

func TestDSN(t *testing.T) {
	dsn := pgtest.DSN(t)
	for _, bad := range []string{"sqlite:perch.db", "mysql://localhost/x", "host=localhost dbname=x", ""} {
		if _, err := Open(t.Context(), bad, 4, nil); err == nil || !strings.Contains(err.Error(), "postgres://") {
			t.Errorf("Open(%q): %v, want an error naming the accepted schemes", bad, err)
		}
	}
	alt := "postgresql://" + strings.TrimPrefix(strings.TrimPrefix(dsn, "postgres://"), "postgresql://")
	s, err := Open(t.Context(), alt, 4, nil)
	if err != nil {
		t.Fatalf("Open(postgresql://...): %v", err)
	}
	defer s.Close()
	if s.cockroach {
		t.Skip("the rest checks PostgreSQL")
	}
	if got := s.pool.Config().MaxConns; got != int32(DefaultPoolSize(4)) {
		t.Fatalf("pool size %d, want %d", got, DefaultPoolSize(4))
	}
	if !slices.Contains([]string{"postgres", "postgresql"}, strings.SplitN(dsn, ":", 2)[0]) {
		t.Fatalf("pgtest DSN scheme %q", dsn)
	}
}
