package core

import (
	"context"
	"errors"
	"time"

	"github.com/perchhq/perch/internal/wire"
)

// ErrNotFound is returned by Store reads when the document or write does not exist.
var ErrNotFound = errors.New("not found")

// ErrPartitionsMismatch is returned when a store was created with another partition count
// than the one it is opened with: the fleet's write partitions are fixed for the life of the
// database.
var ErrPartitionsMismatch = errors.New("partition count does not match the store's")

// Reader is the read side of a store. Every method is safe for concurrent use and reads
// committed data only.
type Reader interface {
	// Get returns the document, tombstone included (Deleted set), or ErrNotFound when no
	// write ever created it.
	Get(ctx context.Context, collection, id string) (wire.Document, error)
	// List returns a page of at most ListLimit(q.Limit) of the collection's live documents
	// whose ids start with q.IDPrefix, in q.Order, starting after q.After. Tombstones are
	// never listed. More is set when another page may follow.
	List(ctx context.Context, q wire.ListQuery) (wire.ListPage, error)
	// Sync returns the documents of q.Collections changed after q.After (per partition),
	// tombstones included, each partition's in sequence order, at most SyncLimit(q.Limit) in
	// all. Next holds, for every partition, the sequence to resume after.
	Sync(ctx context.Context, q wire.SyncQuery) (wire.SyncPage, error)
	// WriteOutcome returns the recorded outcome of a write, or ErrNotFound when the store has
	// no record of it (not applied yet, never sent, or expired).
	WriteOutcome(ctx context.Context, writeID string) (wire.Outcome, error)
}

// Writer is the write side of a store.
type Writer interface {
	// ApplyBatch applies b's commands in order in one serializable transaction, retrying
	// conflicts internally, and returns one outcome per command and the change events of the
	// commands that changed a document. The events are recorded in the store's outbox in the
	// same transaction, so none is lost if the caller dies before publishing them.
	//
	// A command whose write id the store has recorded is not applied again: its recorded
	// outcome comes back with Replayed set. A command that fails (stale If-Match, absent
	// document, reused Idempotency-Key) gets its problem in its outcome and does not affect
	// the others. An error means the batch may be retried whole: either nothing of it was
	// committed, or (a commit whose outcome the database could not report, which a store
	// resolves by reading the write ids back whenever it can) it was, and the retry replays it.
	ApplyBatch(ctx context.Context, b *wire.Batch, now time.Time) ([]wire.Outcome, []wire.ChangeEvent, error)
}

// Outbox gives access to the change events committed but not yet confirmed published.
type Outbox interface {
	// PendingEvents returns up to limit events committed before the given time, oldest first
	// within each partition.
	PendingEvents(ctx context.Context, before time.Time, limit int) ([]wire.ChangeEvent, error)
	// DeleteEvents removes published events from the outbox. Deleting an event that is not
	// there is not an error.
	DeleteEvents(ctx context.Context, events []wire.ChangeEvent) error
}

// Store is what the core needs of a database. Implementations: core/sqlitestore (embedded)
// and core/pgstore (CockroachDB, PostgreSQL); core/storetest is the suite each must pass.
type Store interface {
	Reader
	Writer
	Outbox
	// Expire forgets write records and Idempotency-Keys recorded before the given time and
	// returns how many it removed. Documents and tombstones are kept.
	Expire(ctx context.Context, before time.Time) (int64, error)
	// Close releases the store's resources. Calls after Close fail.
	Close() error
}
