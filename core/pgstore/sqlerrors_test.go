package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/cockroachdb/cockroach-go/v2/crdb"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// releaseFails is a crdb.Tx whose RELEASE SAVEPOINT fails with err: the only way to make
// cockroach-go build its AmbiguousCommitError and MaxRetriesExceededError values.
type releaseFails struct{ err error }

func (r releaseFails) Exec(_ context.Context, sql string, _ ...any) error {
	if sql == releaseSavepoint {
		return r.err
	}
	return nil
}
func (releaseFails) Commit(context.Context) error   { return nil }
func (releaseFails) Rollback(context.Context) error { return nil }

func TestClassify(t *testing.T) {
	pgErr := func(code, constraint string) error {
		return &pgconn.PgError{Code: code, ConstraintName: constraint, Message: "test"}
	}
	ctx := context.Background()
	ambiguousRelease := crdb.ExecuteInTx(ctx, releaseFails{errors.New("connection reset")}, func() error { return nil })
	exhausted := crdb.ExecuteInTx(crdb.WithMaxRetries(ctx, 1), releaseFails{pgErr("40001", "")}, func() error { return nil })
	for _, tt := range []struct {
		name string
		err  error
		want errClass
	}{
		{"serialization failure", pgErr("40001", ""), retryable},
		{"wrapped serialization failure", fmt.Errorf("load: %w", pgErr("40001", "")), retryable},
		{"deadlock", pgErr("40P01", ""), retryable},
		{"crdb legacy retry", pgErr("CR000", ""), retryable},
		{"restart transaction text", errors.New("restart transaction: TransactionRetryWithProtoRefreshError"), retryable},
		{"in-transaction retries exhausted", exhausted, retryable},
		{"fresh snapshot", fmt.Errorf("%w: x", errFreshSnapshot), retryable},
		{"counter moved", errCounterMoved, retryable},
		{"admin shutdown", pgErr("57P01", ""), retryable},
		{"connection exception", pgErr("08006", ""), retryable},
		{"lost connection", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), retryable},
		{"duplicate write id", pgErr("23505", "writes_pkey"), retryable},
		{"other unique violation", pgErr("23505", "documents_sync"), permanent},
		{"statement completion unknown", pgErr("40003", ""), ambiguous},
		{"ambiguous release", ambiguousRelease, ambiguous},
		{"commit lost", &commitError{err: io.ErrUnexpectedEOF}, ambiguous},
		{"commit 40003", &commitError{err: pgErr("40003", "")}, ambiguous},
		{"commit serialization failure", &commitError{err: pgErr("40001", "")}, retryable},
		{"commit rolled back", &commitError{err: pgx.ErrTxCommitRollback}, retryable},
		{"bad json", pgErr("22P02", ""), permanent},
		{"own bug", permanentf(pgErr("40001", "")), permanent},
		{"cancelled", fmt.Errorf("x: %w", context.Canceled), permanent},
		{"deadline", context.DeadlineExceeded, permanent},
		{"unknown", errors.New("something else"), permanent},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.err); got != tt.want {
				t.Fatalf("classify(%v) = %s, want %s", tt.err, got, tt.want)
			}
		})
	}
	var amb *crdb.AmbiguousCommitError
	if !errors.As(ambiguousRelease, &amb) {
		t.Fatalf("cockroach-go gave %T for a failed RELEASE, not an AmbiguousCommitError", ambiguousRelease)
	}
}

// TestRefusedData: the SQLSTATEs of a database refusing a write's data are told apart from
// failures of the store's own statements, which are retried.
func TestRefusedData(t *testing.T) {
	for code, want := range map[string]bool{
		"22001": true, "22003": true, "22021": true, "22P02": true, "22P05": true, "22032": true,
		"23514": true, "54000": true, "54001": true,
		"22023": false, "22000": false, "22008": false, "23502": false, "23505": false, "23503": false,
		"42P01": false, "40001": false, "08006": false,
	} {
		err := fmt.Errorf("apply: %w", &pgconn.PgError{Code: code, Message: "test"})
		if got := refusedData(err); got != want {
			t.Errorf("refusedData(%s) = %v, want %v", code, got, want)
		}
	}
	if refusedData(errors.New("no SQLSTATE")) {
		t.Error("refusedData of an error without a SQLSTATE")
	}
}
