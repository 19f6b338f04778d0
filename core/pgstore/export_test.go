package pgstore

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Test-only access to the store's internals, for the tests in package pgstore_test.

// Retries returns how many transaction attempts of s failed and were retried.
func (s *Store) Retries() int64 { return s.retries.Load() }

// Cockroach reports whether s runs on CockroachDB.
func (s *Store) Cockroach() bool { return s.cockroach }

// Pool returns the store's connection pool.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// InjectCommitFault makes every COMMIT of s call f instead, with the real transaction: f
// decides whether to commit or roll back, and what COMMIT reports. Call it before the store is
// used concurrently.
func (s *Store) InjectCommitFault(f func(ctx context.Context, tx pgx.Tx) error) {
	s.faults = &faults{commit: f}
}

// InjectReleaseFault makes every RELEASE SAVEPOINT cockroach_restart (CockroachDB's commit)
// call f instead, with the real transaction.
func (s *Store) InjectReleaseFault(f func(ctx context.Context, tx pgx.Tx) error) {
	s.faults = &faults{release: f}
}

// WithQueryTracer makes the store's connections report their statements to t.
func WithQueryTracer(t pgx.QueryTracer) Option { return func(o *options) { o.tracer = t } }
