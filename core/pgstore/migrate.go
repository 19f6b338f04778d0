package pgstore

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/perchhq/perch/core/migration"
)

//go:embed migrations/*.sql
var embedded embed.FS

// migrationFiles is the directory of the embedded migrations.
var migrationFiles = func() fs.FS {
	sub, err := fs.Sub(embedded, "migrations")
	if err != nil {
		panic(err) // the embed pattern above guarantees the directory
	}
	return sub
}()

// Migrate brings the schema of the database at dsn up to this build's last migration, and
// on CockroachDB applies the multi-region configuration that WithRegions and WithSurvival ask
// for. It is what `perch migrate --db DSN` runs. Any number of Migrate and Open calls may run
// at once against one database: one at a time holds the schema lock (see migrator), the others
// wait for it and then find nothing left to do. A nil logger discards.
func Migrate(ctx context.Context, dsn string, logger *slog.Logger, opts ...Option) error {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	o, err := buildOptions(1, opts)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	ms, err := migration.Load(migrationFiles)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// Two connections: the migrations' and the lock's heartbeat.
	pool, err := connect(ctx, dsn, 2, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer pool.Close()
	s := &Store{pool: pool, logger: logger, maxAttempts: o.maxAttempts}
	if s.cockroach, err = isCockroach(ctx, pool); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if err := s.migrator(ms, o).run(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// The bootstrap tables exist before any migration and keep their shape forever: every
// release of Perch reads them to learn what the others did.
var bootstrap = []string{
	`CREATE TABLE IF NOT EXISTS schema_migrations (
		version    BIGINT      NOT NULL,
		name       TEXT        NOT NULL,
		applied_at TIMESTAMPTZ NOT NULL,
		applied_by TEXT        NOT NULL,
		CONSTRAINT schema_migrations_pkey PRIMARY KEY (version)
	)`,
	// At most one row: the lease of the migrator that holds the schema lock.
	`CREATE TABLE IF NOT EXISTS schema_lock (
		id         INT         NOT NULL,
		holder     TEXT        NOT NULL,
		expires_at TIMESTAMPTZ NOT NULL,
		CONSTRAINT schema_lock_pkey PRIMARY KEY (id),
		CONSTRAINT schema_lock_one_row CHECK (id = 1)
	)`,
}

// The schema lock is a lease in the one row of schema_lock: a holder and an expiry, both on
// the database's clock. Taking it is one upsert that succeeds when the row is absent, expired
// or already ours; the holder extends it every leaseTTL/3 while it migrates, fences each
// migration's transaction on it, and deletes it when done. A migrator that dies leaves a lease
// that expires after leaseTTL, so a crash cannot wedge every later start.
//
// Why not the alternatives. Advisory locks do not exist in CockroachDB. A row locked with
// SELECT ... FOR UPDATE for the duration of the migrations would tie the lock to one long
// transaction around all of them, when each migration wants its own transaction (so that a
// failure leaves the schema at a version boundary) and CockroachDB advises against long
// transactions holding DDL; and CockroachDB's FOR UPDATE locks under SERIALIZABLE are best
// effort (they can be lost when a range's lease moves). A lease row is durable on both
// databases and needs nothing but INSERT ... ON CONFLICT.
const (
	lockTake = `INSERT INTO schema_lock (id, holder, expires_at)
		VALUES (1, $1, now() + $2::INT8 * INTERVAL '1 millisecond')
		ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
		WHERE schema_lock.expires_at < now() OR schema_lock.holder = excluded.holder
		RETURNING holder`
	lockExtend = `UPDATE schema_lock SET expires_at = now() + $2::INT8 * INTERVAL '1 millisecond'
		WHERE id = 1 AND holder = $1`
	lockFence   = `SELECT 1 FROM schema_lock WHERE id = 1 AND holder = $1 AND expires_at > now() FOR UPDATE`
	lockRelease = `DELETE FROM schema_lock WHERE id = 1 AND holder = $1`
	lockHolder  = `SELECT holder, expires_at FROM schema_lock WHERE id = 1`
)

// errLostLock means the migrator's lease expired or was taken over: it stops, and whoever
// holds the lock now carries on from the versions recorded.
var errLostLock = errors.New("lost the schema lock")

// migrator applies migrations under the schema lock.
type migrator struct {
	s        *Store
	ms       []migration.File
	region   multiRegion
	holder   string        // who we are in schema_lock and schema_migrations
	leaseTTL time.Duration // how long a lease lasts unless extended
	poll     time.Duration // how often a waiting migrator tries the lock
}

func (s *Store) migrator(ms []migration.File, o options) *migrator {
	return &migrator{s: s, ms: ms, region: o.region, holder: holderName(), leaseTTL: time.Minute, poll: 500 * time.Millisecond}
}

// holderName names this process in the schema lock: host, pid and a random suffix, so that
// two migrators in one process differ too.
func holderName() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// run brings the schema up to date. It takes the lock only when there is something to do.
func (m *migrator) run(ctx context.Context) error {
	s := m.s
	if m.region.enabled() && !s.cockroach {
		s.logger.Warn("multi-region options are for CockroachDB; ignoring them on PostgreSQL")
	}
	multiRegion := m.region.enabled() && s.cockroach
	if err := m.bootstrap(ctx); err != nil {
		return err
	}
	current, err := schemaVersion(ctx, s.pool)
	if err != nil {
		return err
	}
	if current > len(m.ms) {
		// Every migration is backward compatible with the previous release's code: a newer
		// release migrated first, as a rolling upgrade does. Nothing for us to do.
		s.logger.Info("database schema is newer than this build", "schema", current, "build", len(m.ms))
	}
	if current >= len(m.ms) && !multiRegion {
		return nil
	}
	lctx, release, err := m.lock(ctx)
	if err != nil {
		return err
	}
	defer release()
	if current, err = schemaVersion(lctx, s.pool); err != nil {
		return err
	}
	for _, mg := range m.ms[min(current, len(m.ms)):] {
		if err := m.apply(lctx, mg); err != nil {
			return err
		}
	}
	if multiRegion {
		var db string
		if err := s.pool.QueryRow(lctx, `SELECT current_database()`).Scan(&db); err != nil {
			return fmt.Errorf("read database name: %w", err)
		}
		for _, stmt := range crdbDDL(db, m.region) {
			// Schema changes outside explicit transactions, as CockroachDB recommends; each
			// statement is idempotent.
			if _, err := s.pool.Exec(lctx, stmt); err != nil {
				return fmt.Errorf("multi-region configuration: %s: %w", stmt, err)
			}
		}
		s.logger.Info("applied multi-region configuration", "primary", m.region.primary,
			"regions", m.region.others, "survival", string(m.region.survival))
	}
	return nil
}

// bootstrap creates the bootstrap tables. Two migrators creating them at once can make
// PostgreSQL's CREATE TABLE IF NOT EXISTS fail (it checks, then inserts the catalog rows of
// the table and of its row type: 23505, 42P07 or 42710); the loser tries again and finds the
// table.
func (m *migrator) bootstrap(ctx context.Context) error {
	for _, stmt := range bootstrap {
		for try := 1; ; try++ {
			_, err := m.s.pool.Exec(ctx, stmt)
			if err == nil {
				break
			}
			switch sqlstate(err) {
			case sqlstateUniqueViolation, sqlstateDuplicateTable, sqlstateDuplicateObject:
				if try < 3 {
					continue
				}
			}
			return fmt.Errorf("create bootstrap tables: %w", err)
		}
	}
	return nil
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func schemaVersion(ctx context.Context, q querier) (int, error) {
	var v int
	if err := q.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}

// lock waits for the schema lock and returns a context that is cancelled if the lease is
// lost, and the function that releases it.
func (m *migrator) lock(ctx context.Context) (context.Context, func(), error) {
	s := m.s
	ttl := m.leaseTTL.Milliseconds()
	var (
		waiting bool
		holder  string
		expires time.Time
	)
	for {
		var took bool
		err := s.retry(ctx, "take the schema lock", func() error {
			took = false
			return s.runTx(ctx, serializable, func(tx pgx.Tx) error {
				var h string
				err := tx.QueryRow(ctx, lockTake, m.holder, ttl).Scan(&h)
				if errors.Is(err, pgx.ErrNoRows) {
					return nil
				}
				took = err == nil
				return err
			})
		})
		if err != nil {
			if waiting {
				return nil, nil, fmt.Errorf("wait for the schema lock held by %s: %w", holder, err)
			}
			return nil, nil, err
		}
		if took {
			break
		}
		if err := s.pool.QueryRow(ctx, lockHolder).Scan(&holder, &expires); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, nil, fmt.Errorf("wait for the schema lock held by %s: %w", holder, err)
		}
		if !waiting {
			s.logger.Info("waiting for the schema lock", "holder", holder, "expires", expires.UTC())
			waiting = true
		}
		t := time.NewTimer(m.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, fmt.Errorf("wait for the schema lock held by %s: %w", holder, context.Cause(ctx))
		case <-t.C:
		}
	}
	s.logger.Debug("took the schema lock", "holder", m.holder)

	lctx, cancel := context.WithCancelCause(ctx)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(m.leaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			var extended bool
			err := s.retry(lctx, "extend the schema lock", func() error {
				return s.runTx(lctx, serializable, func(tx pgx.Tx) error {
					tag, err := tx.Exec(lctx, lockExtend, m.holder, ttl)
					extended = tag.RowsAffected() == 1
					return err
				})
			})
			switch {
			case lctx.Err() != nil:
				return
			case err != nil:
				s.logger.Warn("extending the schema lock", "err", err)
			case !extended:
				cancel(errLostLock)
				return
			}
		}
	})
	release := func() {
		close(stop)
		cancel(nil) // ends a heartbeat stuck retrying
		wg.Wait()
		rctx, done := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer done()
		if _, err := s.pool.Exec(rctx, lockRelease, m.holder); err != nil {
			s.logger.Warn("releasing the schema lock; it expires on its own", "err", err, "ttl", m.leaseTTL)
		}
	}
	return lctx, release, nil
}

// apply runs mg in one transaction together with its schema_migrations row, unless another
// migrator applied it first. The transaction starts by locking the lease row (the fence): a
// migrator whose lease was taken over stops before it changes anything.
func (m *migrator) apply(ctx context.Context, mg migration.File) error {
	s := m.s
	sql := mg.SQL
	if s.cockroach {
		sql = forCockroach(sql)
	}
	var applied bool
	err := s.retry(ctx, "migration "+mg.Name, func() error {
		applied = false
		return s.runTx(ctx, serializable, func(tx pgx.Tx) error {
			var one int
			if err := tx.QueryRow(ctx, lockFence, m.holder).Scan(&one); errors.Is(err, pgx.ErrNoRows) {
				return permanentf(errLostLock)
			} else if err != nil {
				return err
			}
			current, err := schemaVersion(ctx, tx)
			if err != nil {
				return err
			}
			if current >= mg.Version {
				return nil
			}
			if current != mg.Version-1 {
				return permanentf(fmt.Errorf("schema is at version %d", current))
			}
			// No arguments: pgx sends it with the simple protocol, which runs every statement
			// of the file.
			if _, err := tx.Exec(ctx, sql); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at, applied_by)
				VALUES ($1, $2, now(), $3)`, mg.Version, mg.Name, m.holder); err != nil {
				return fmt.Errorf("record: %w", err)
			}
			applied = true
			return nil
		})
	})
	if err != nil {
		return err
	}
	if applied {
		s.logger.Info("applied store migration", "version", mg.Version, "name", mg.Name)
	}
	return nil
}

// checkSchema fails with ErrSchemaBehind unless the database has every migration of ms
// (Open with WithoutMigrate). A newer schema is fine: migrations are backward compatible.
func checkSchema(ctx context.Context, q querier, ms []migration.File) error {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_name = 'schema_migrations')`).Scan(&exists); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	current := 0
	if exists {
		var err error
		if current, err = schemaVersion(ctx, q); err != nil {
			return err
		}
	}
	if current < len(ms) {
		return fmt.Errorf("schema is at version %d, this build needs %d; run `perch migrate --db DSN` first: %w",
			current, len(ms), ErrSchemaBehind)
	}
	return nil
}
