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
	// write ever created it. Every document a Reader returns carries its Owner, as
	// ApplyCommand decided it for that version.
	Get(ctx context.Context, collection, id string) (wire.Document, error)
	// List returns a page of at most ListLimit(q.Limit) of the collection's live documents
	// whose ids start with q.IDPrefix (and, when q.Owner is set, that belong to q.Owner), in
	// q.Order, starting after q.After. Tombstones are never listed. More is set when another
	// page may follow.
	List(ctx context.Context, q wire.ListQuery) (wire.ListPage, error)
	// Sync returns the documents of q.Collections changed after q.After (per partition),
	// tombstones included, each partition's in sequence order, at most SyncLimit(q.Limit) in
	// all. In the collections of SyncOwned, only the documents of q.Owner (none when it is
	// empty); the others' changes are passed over like those of collections not asked for.
	// Next holds, for every partition, the sequence to resume after.
	Sync(ctx context.Context, q wire.SyncQuery) (wire.SyncPage, error)
	// WriteOutcome returns the recorded outcome of a write, or ErrNotFound when the store has
	// no record of it (not applied yet, never sent, or expired).
	WriteOutcome(ctx context.Context, writeID string) (wire.Outcome, error)
	// Owned returns a page of at most ListLimit(q.Limit) of q.Owner's live documents across
	// every collection, in (collection, id) order (ids byte by byte), starting after q.After.
	// Tombstones and documents of other owners, or of none, are never returned. More is set
	// when another page may follow.
	Owned(ctx context.Context, q wire.OwnedQuery) (wire.ListPage, error)
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
	// ApplyBatches is group commit across messages: it applies bs, batches of one partition,
	// in one serializable transaction, as ApplyBatch would one after the other, and returns a
	// result per batch and the change events of them all, in the order they were applied.
	//
	// Batches with a Producer are fenced (see wire.Batch). The store records each producer's
	// last applied sequence in the same transaction; a producer it has no record of is at 0.
	// A producer's batches in bs are taken in sequence order, whatever their order in bs.
	// Batch Seq last+1 is applied (BatchApplied); a Seq at or below last was applied before
	// (BatchDuplicate: nothing is applied, and the outcomes are those recorded for its write
	// ids); a Seq above last+1 must wait for the ones before it (BatchEarly: nothing is done).
	// Batches without a Producer are always applied.
	//
	// An error that wraps ErrRefused says the database refused what a command would store:
	// nothing was committed, and applying the same commands again fails the same way. A
	// command whose Refused is set stores nothing but its write record (see ApplyCommand).
	ApplyBatches(ctx context.Context, bs []*wire.Batch, now time.Time) ([]BatchResult, []wire.ChangeEvent, error)
}

// ErrRefused is wrapped by the error of ApplyBatches when the database refused the data of a
// write (a value out of its range, a row beyond its limits, a check of the database's it
// fails), as opposed to failing as a whole (unreachable, overloaded, in conflict) or failing
// its own statements whatever the data (a schema out of step). The core then
// finds the command the database refuses and answers it alone (problem.NotStorable), instead
// of retrying its batch for ever and holding back every write of its partition.
var ErrRefused = errors.New("the database refused the data")

// BatchStatus is what ApplyBatches did with one batch.
type BatchStatus int

const (
	// BatchApplied: the batch's commands were applied, each with its outcome (a command may
	// still have failed alone, or replayed a recorded outcome).
	BatchApplied BatchStatus = iota
	// BatchDuplicate: the producer's sequence had passed the batch, which was applied before
	// (JetStream redelivered it). Nothing was applied.
	BatchDuplicate
	// BatchEarly: the producer's sequence has not reached the batch: one before it has not
	// been applied yet. Nothing was done; the batch is to be offered again later.
	BatchEarly
)

func (s BatchStatus) String() string {
	switch s {
	case BatchApplied:
		return "applied"
	case BatchDuplicate:
		return "duplicate"
	case BatchEarly:
		return "early"
	}
	return "unknown"
}

// BatchResult is the result of one batch of ApplyBatches.
type BatchResult struct {
	Status BatchStatus
	// Outcomes has one outcome per command, in order, when Applied; when Duplicate, the
	// recorded outcomes (Replayed set) of those of its write ids the store still keeps; nil
	// when Early.
	Outcomes []wire.Outcome
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

// ProducerRetention is how long past the write records' retention a store keeps a producer's
// sequence after its last batch: long enough that no batch of the producer can still be in
// the stream (a later batch of a forgotten producer would wait for its predecessor forever).
const ProducerRetention = 30 * 24 * time.Hour

// Store is what the core needs of a database. Implementations: core/sqlitestore (embedded)
// and core/pgstore (CockroachDB, PostgreSQL); core/storetest is the suite each must pass.
type Store interface {
	Reader
	Writer
	Outbox
	AccountStore
	APIKeyStore
	TOTPStore
	IdentityStore
	// Expire forgets write records and Idempotency-Keys recorded before the given time, and
	// producers last seen before ProducerRetention earlier than it, and returns how many
	// write records and keys it removed. Documents and tombstones are kept.
	Expire(ctx context.Context, before time.Time) (int64, error)
	// Close releases the store's resources. Calls after Close fail.
	Close() error
}
