package pgstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/cockroachdb/cockroach-go/v2/crdb"
	crdbpgx "github.com/cockroachdb/cockroach-go/v2/crdb/crdbpgxv5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Every transaction of the store runs through crdbpgxv5.ExecuteTx at SERIALIZABLE. ExecuteTx
// wraps the closure in SAVEPOINT cockroach_restart and retries a 40001 in the same transaction
// with ROLLBACK TO SAVEPOINT, which is how CockroachDB wants it. On top of it, runTx and
// retry add what PostgreSQL needs and what ExecuteTx leaves to the caller:
//   - a retry in a new transaction (PostgreSQL's snapshot does not move; see errFreshSnapshot);
//   - the error of COMMIT, which ExecuteTx discards (see commitError);
//   - backoff between attempts and a bound on them.
//
// On PostgreSQL the savepoint does nothing for us: a retry never rolls back to it (it refuses
// to run the closure twice), and COMMIT, not RELEASE, is the commit. So there the transaction
// leaves out ExecuteTx's SAVEPOINT, RELEASE SAVEPOINT and ROLLBACK TO SAVEPOINT statements
// (observedTx.Exec): two round trips fewer per transaction, and no subtransaction, whose
// subtransaction id every row it writes would carry. And BEGIN goes with the transaction's
// first batch (lazyTx): one more.

var (
	serializable   = pgx.TxOptions{IsoLevel: pgx.Serializable}
	serializableRO = pgx.TxOptions{IsoLevel: pgx.Serializable, AccessMode: pgx.ReadOnly}
)

// The statements of crdb.ExecuteInTx: it opens the savepoint after BEGIN, commits with
// releaseSavepoint on CockroachDB, and rolls back to the savepoint to retry.
const (
	savepoint         = "SAVEPOINT cockroach_restart"
	releaseSavepoint  = "RELEASE SAVEPOINT cockroach_restart"
	rollbackSavepoint = "ROLLBACK TO SAVEPOINT cockroach_restart"
)

// faults injects failures that a real server cannot be made to produce on demand: an
// ambiguous result of a commit that did or did not happen. Production code never sets it;
// tests do, through export_test.go.
type faults struct {
	// commit, when set, runs instead of COMMIT and returns what COMMIT should report.
	commit func(ctx context.Context, tx pgx.Tx) error
	// release, when set, runs instead of RELEASE SAVEPOINT cockroach_restart (the commit of
	// CockroachDB) and returns what it should report.
	release func(ctx context.Context, tx pgx.Tx) error
}

// txConn is the crdbpgxv5.Conn that ExecuteTx begins its transaction on: the pool, with the
// transaction wrapped so that the store sees its COMMIT.
type txConn struct {
	pool      *pgxpool.Pool
	faults    *faults
	commitErr *error
	// savepoints: the server is CockroachDB, which needs the savepoint statements.
	savepoints bool
}

func (c txConn) Begin(ctx context.Context) (pgx.Tx, error) { return c.BeginTx(ctx, pgx.TxOptions{}) }

func (c txConn) BeginTx(ctx context.Context, opts pgx.TxOptions) (pgx.Tx, error) {
	var tx pgx.Tx
	if c.savepoints {
		var err error
		if tx, err = c.pool.BeginTx(ctx, opts); err != nil {
			return nil, err
		}
	} else {
		conn, err := c.pool.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		tx = &lazyTx{conn: conn, begin: beginSQL(opts)}
	}
	return &observedTx{Tx: tx, faults: c.faults, commitErr: c.commitErr, savepoints: c.savepoints}, nil
}

// beginSQL is the BEGIN of a transaction of opts (only the isolation level and access mode,
// the options the store uses).
func beginSQL(opts pgx.TxOptions) string {
	sql := "begin isolation level " + string(opts.IsoLevel)
	if opts.AccessMode != "" {
		sql += " " + string(opts.AccessMode)
	}
	return sql
}

// lazyTx is a transaction on PostgreSQL whose BEGIN goes with its first statement: at the
// head of its first batch, which saves the round trip of a BEGIN on its own (the load of
// ApplyBatches is such a batch). A pipeline stops at its first error, so nothing of the batch
// runs if BEGIN fails. Only the methods the store uses are implemented.
type lazyTx struct {
	conn  *pgxpool.Conn
	begin string
	begun bool // BEGIN was sent
	done  bool // committed or rolled back, and the connection released
}

var errLazyTxUnsupported = errors.New("not supported by the store's transactions")

func (t *lazyTx) start(ctx context.Context) error {
	if t.done {
		return pgx.ErrTxClosed
	}
	if !t.begun {
		if _, err := t.conn.Exec(ctx, t.begin); err != nil {
			return err
		}
		t.begun = true
	}
	return nil
}

func (t *lazyTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if t.done {
		return errBatch{pgx.ErrTxClosed}
	}
	if t.begun {
		return t.conn.SendBatch(ctx, b)
	}
	b.QueuedQueries = append([]*pgx.QueuedQuery{{SQL: t.begin}}, b.QueuedQueries...)
	br := t.conn.SendBatch(ctx, b)
	t.begun = true // or failed, and the connection is discarded at release
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return errBatch{err}
	}
	return br
}

func (t *lazyTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if err := t.start(ctx); err != nil {
		return pgconn.CommandTag{}, err
	}
	return t.conn.Exec(ctx, sql, args...)
}

func (t *lazyTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := t.start(ctx); err != nil {
		return nil, err
	}
	return t.conn.Query(ctx, sql, args...)
}

func (t *lazyTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := t.start(ctx); err != nil {
		return errRow{err}
	}
	return t.conn.QueryRow(ctx, sql, args...)
}

// Commit commits as pgx's transaction does: a COMMIT that the server answers ROLLBACK (a
// transaction failed before it) is pgx.ErrTxCommitRollback.
func (t *lazyTx) Commit(ctx context.Context) error {
	return t.end(ctx, "commit")
}

func (t *lazyTx) Rollback(ctx context.Context) error {
	return t.end(ctx, "rollback")
}

func (t *lazyTx) end(ctx context.Context, sql string) error {
	if t.done {
		return pgx.ErrTxClosed
	}
	t.done = true
	defer t.conn.Release() // a connection left in a transaction is discarded
	if !t.begun {
		return nil // nothing was sent
	}
	tag, err := t.conn.Exec(ctx, sql)
	if err != nil {
		if t.conn.Conn().PgConn().TxStatus() != 'I' {
			_ = t.conn.Conn().Close(ctx)
		}
		return err
	}
	if sql == "commit" && tag.String() == "ROLLBACK" {
		return pgx.ErrTxCommitRollback
	}
	return nil
}

func (t *lazyTx) Begin(context.Context) (pgx.Tx, error) { return nil, errLazyTxUnsupported }

func (t *lazyTx) CopyFrom(context.Context, pgx.Identifier, []string, pgx.CopyFromSource) (int64, error) {
	return 0, errLazyTxUnsupported
}

func (t *lazyTx) LargeObjects() pgx.LargeObjects { return pgx.LargeObjects{} }

func (t *lazyTx) Prepare(context.Context, string, string) (*pgconn.StatementDescription, error) {
	return nil, errLazyTxUnsupported
}

func (t *lazyTx) Conn() *pgx.Conn { return t.conn.Conn() }

type errBatch struct{ err error }

func (e errBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, e.err }
func (e errBatch) Query() (pgx.Rows, error)         { return nil, e.err }
func (e errBatch) QueryRow() pgx.Row                { return errRow(e) }
func (e errBatch) Close() error                     { return e.err }
func (e errBatch) Tx() pgx.Tx                       { return nil }

type errRow struct{ err error }

func (e errRow) Scan(...any) error { return e.err }

// observedTx records the error of COMMIT, which crdb.ExecuteInTx calls and ignores, and
// leaves out the savepoint statements on PostgreSQL.
type observedTx struct {
	pgx.Tx
	faults     *faults
	commitErr  *error
	savepoints bool
}

func (t *observedTx) Commit(ctx context.Context) error {
	var err error
	if t.faults != nil && t.faults.commit != nil {
		err = t.faults.commit(ctx, t.Tx)
	} else {
		err = t.Tx.Commit(ctx)
	}
	*t.commitErr = err
	return err
}

func (t *observedTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if sql == releaseSavepoint && t.faults != nil && t.faults.release != nil {
		return pgconn.CommandTag{}, t.faults.release(ctx, t.Tx)
	}
	if !t.savepoints && len(args) == 0 {
		switch sql {
		case savepoint, releaseSavepoint:
			return pgconn.CommandTag{}, nil
		case rollbackSavepoint:
			// ExecuteInTx retries next, which runTx refuses on PostgreSQL: the transaction
			// is rolled back whole.
			return pgconn.CommandTag{}, nil
		}
	}
	return t.Tx.Exec(ctx, sql, args...)
}

// runTx runs one attempt of a transaction: fn inside crdbpgxv5.ExecuteTx (which may run fn
// more than once on CockroachDB). A failed COMMIT comes back as a *commitError.
func (s *Store) runTx(ctx context.Context, opts pgx.TxOptions, fn func(pgx.Tx) error) error {
	var commitErr error
	var (
		runs  int
		fnErr error
	)
	// A test that injects a fault at RELEASE (CockroachDB's commit) keeps the savepoint.
	savepoints := s.cockroach || s.faults != nil && s.faults.release != nil
	conn := txConn{pool: s.pool, faults: s.faults, commitErr: &commitErr, savepoints: savepoints}
	err := crdbpgx.ExecuteTx(crdb.WithMaxRetries(ctx, inTxRetries), conn, opts, func(tx pgx.Tx) error {
		runs++
		if runs > 1 && !s.cockroach {
			// The cause as text only: wrapped, its 40001 would make ExecuteTx retry again.
			cause := "release failed"
			if fnErr != nil {
				cause = fnErr.Error()
			}
			return fmt.Errorf("%w: %s", errFreshSnapshot, cause)
		}
		fnErr = fn(tx)
		return fnErr
	})
	if err == nil && commitErr != nil {
		return &commitError{err: commitErr}
	}
	return err
}

// retry runs attempt until it succeeds, fails permanently, or maxAttempts attempts failed.
// Ambiguous failures are retried too: retry is only for transactions that are idempotent
// (ApplyBatch has its own loop, which resolves them).
func (s *Store) retry(ctx context.Context, what string, attempt func() error) error {
	for n := 1; ; n++ {
		err := attempt()
		if err == nil {
			return nil
		}
		class := classify(err)
		if class == permanent || n >= s.maxAttempts {
			return fmt.Errorf("%s: %w", what, err)
		}
		s.retries.Add(1)
		s.logger.Debug("retrying transaction", "what", what, "attempt", n, "class", class.String(), "err", err)
		if err := sleep(ctx, n); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
}

// inTxRetries bounds crdb.ExecuteInTx's retries inside one transaction (CockroachDB only; on
// PostgreSQL the second run gives up at once). Zero would mean no bound to crdb.
const inTxRetries = 10

// Backoff between attempts: full jitter over an exponential bound.
const (
	backoffBase = 2 * time.Millisecond
	backoffMax  = 100 * time.Millisecond
)

// sleep waits before attempt n+1, or returns the context's error.
func sleep(ctx context.Context, n int) error {
	bound := backoffBase << min(n, 10)
	if bound > backoffMax {
		bound = backoffMax
	}
	t := time.NewTimer(rand.N(bound) + time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
