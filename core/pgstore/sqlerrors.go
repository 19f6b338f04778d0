package pgstore

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/cockroachdb/cockroach-go/v2/crdb"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// This file is the one place that decides what a database error means for a transaction:
// retry it, resolve an ambiguous commit, or give up. Model: spicedb's
// internal/datastore/crdb/pool/sqlerrors.go.

// SQLSTATE codes the store acts on.
const (
	sqlstateSerializationFailure       = "40001" // retry: nothing was committed
	sqlstateStatementCompletionUnknown = "40003" // ambiguous: the commit may or may not have happened
	sqlstateDeadlockDetected           = "40P01" // PostgreSQL aborted us to break a deadlock: retry
	sqlstateCRDBRetriable              = "CR000" // CockroachDB's retry code of old versions
	sqlstateUniqueViolation            = "23505"
	sqlstateCheckViolation             = "23514" // refused data (refusedData)
	sqlstateDuplicateTable             = "42P07"
	sqlstateDuplicateObject            = "42710"
	sqlstateAdminShutdown              = "57P01"
	sqlstateCrashShutdown              = "57P02"
	sqlstateCannotConnectNow           = "57P03"
)

// errClass is what to do after a failed transaction attempt.
type errClass int

const (
	// permanent: return the error; retrying would fail the same way.
	permanent errClass = iota
	// retryable: the attempt was rolled back; run the transaction again.
	retryable
	// ambiguous: the attempt may have committed. ApplyBatch resolves it by reading back the
	// batch's write ids (see apply.go); idempotent transactions simply run again.
	ambiguous
)

func (c errClass) String() string {
	switch c {
	case retryable:
		return "retryable"
	case ambiguous:
		return "ambiguous"
	}
	return "permanent"
}

// commitError is a failed COMMIT. crdbpgxv5.ExecuteTx ignores the error of its final COMMIT,
// since on CockroachDB the transaction was committed by RELEASE SAVEPOINT before it; on
// PostgreSQL COMMIT is where the transaction commits (and where SERIALIZABLE reports many of
// its conflicts), so the store captures that error (tx.go) and classifies it here.
type commitError struct{ err error }

func (e *commitError) Error() string { return "commit: " + e.err.Error() }
func (e *commitError) Unwrap() error { return e.err }

// permanentError marks a failure of the store's own code (encoding, decoding, a broken
// invariant) that no retry can fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func permanentf(err error) error { return &permanentError{err: err} }

// errFreshSnapshot ends an in-transaction retry on PostgreSQL. crdb.ExecuteInTx retries a
// serialization failure by ROLLBACK TO SAVEPOINT cockroach_restart and running the closure
// again in the same transaction. CockroachDB then moves the transaction to a newer timestamp,
// but a PostgreSQL SERIALIZABLE transaction keeps the snapshot of its first statement, so the
// closure would meet the same conflict again. The closure refuses a second run on PostgreSQL
// with this error, and the caller starts a new transaction.
var errFreshSnapshot = errors.New("serialization failure: retrying in a new transaction")

// classify says what the failure of one transaction attempt means.
func classify(err error) errClass {
	var (
		perm   *permanentError
		commit *commitError
		amb    *crdb.AmbiguousCommitError
	)
	switch {
	case err == nil:
		return permanent
	case errors.As(err, &perm), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return permanent
	case errors.Is(err, errFreshSnapshot), errors.Is(err, errCounterMoved):
		return retryable
	case errors.As(err, &amb):
		// RELEASE SAVEPOINT (CockroachDB's commit) failed with an error that is not a retry.
		return ambiguous
	case errors.As(err, &commit):
		// The server answered the COMMIT with a serialization failure, a deadlock or ROLLBACK:
		// it rolled the transaction back. Anything else (a broken connection above all) leaves the
		// commit unknown.
		if code := sqlstate(commit.err); code == sqlstateSerializationFailure || code == sqlstateDeadlockDetected ||
			errors.Is(commit.err, pgx.ErrTxCommitRollback) {
			return retryable
		}
		return ambiguous
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case sqlstateStatementCompletionUnknown:
			return ambiguous
		case sqlstateSerializationFailure, sqlstateCRDBRetriable, sqlstateDeadlockDetected,
			sqlstateAdminShutdown, sqlstateCrashShutdown, sqlstateCannotConnectNow:
			return retryable
		case sqlstateUniqueViolation:
			// Another transaction recorded the same write id or Idempotency-Key between our read
			// and our insert (two cores on one partition during a hand-over, or one key used in
			// two partitions at once). The next attempt reads its record and replays it.
			switch pgErr.ConstraintName {
			case "writes_pkey", "idempotency_pkey", "meta_pkey", "partitions_pkey":
				return retryable
			}
			return permanent
		}
		if strings.HasPrefix(pgErr.Code, "08") { // connection exception
			return retryable
		}
		if strings.Contains(pgErr.Message, "restart transaction") {
			return retryable
		}
		return permanent
	}
	// CockroachDB's retry errors carry 40001, but a driver or proxy may deliver only the text.
	if strings.Contains(err.Error(), "restart transaction") {
		return retryable
	}
	// A connection that failed before or during the transaction's statements (not its commit,
	// which is a commitError or an AmbiguousCommitError above) rolled it back.
	var (
		netErr  net.Error
		connErr *pgconn.ConnectError
		restart *crdb.TxnRestartError
	)
	if pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.As(err, &netErr) || errors.As(err, &connErr) ||
		errors.As(err, &restart) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) {
		return retryable
	}
	return permanent
}

// refusedData reports whether err is the database refusing the data of a write
// (core.ErrRefused): a value it cannot take (22001 too long for its column, 22003 out of its
// numeric range, 22021 and 22P05 characters it cannot hold, 22P02 a text it cannot read as
// its type, 2203x JSON it refuses), a CHECK it fails (23514: a rule on the data an operator
// may add), or a program limit (class 54: a row or index entry too large). Not the rest of
// classes 22 and 23 (CockroachDB reports much under 22023; NOT NULL, unique and foreign-key
// violations): the store's own statements meet those whatever the data, so failing one is
// the store's fault or a schema out of step, to retry and not to answer.
func refusedData(err error) bool {
	switch code := sqlstate(err); code {
	case "22001", "22003", "22021", "22P02", "22P05", sqlstateCheckViolation:
		return true
	default:
		return strings.HasPrefix(code, "2203") || strings.HasPrefix(code, "54")
	}
}

// sqlstate returns the SQLSTATE of err, or "".
func sqlstate(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// writeRecorded reports whether err is the insert of a write record that exists already.
func writeRecorded(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == sqlstateUniqueViolation && pgErr.ConstraintName == "writes_pkey"
}
