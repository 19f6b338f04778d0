package core

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

// TxState is what ApplyCommand reads of a store inside the transaction that applies a batch.
// Reads must see the writes of earlier commands of the same batch. For a command, ApplyCommand
// asks only for the command's own write id, its Idempotency-Key and its document, so a store
// can load all that a batch needs in one round trip before deciding.
type TxState interface {
	// PriorWrite returns the recorded outcome of writeID, or nil.
	PriorWrite(writeID string) (*wire.Outcome, error)
	// PriorIdempotency returns the fingerprint and outcome recorded for an Idempotency-Key,
	// or "" and nil.
	PriorIdempotency(key string) (fingerprint string, out *wire.Outcome, err error)
	// Document returns the document (tombstones included) or nil when absent.
	Document(collection, id string) (*wire.Document, error)
}

// Decision is what a store must do for one command: record Outcome under the command's write
// id (unless Record is false: the write id is already recorded), record it under the
// Idempotency-Key when RecordIdempotency is set, and store Next (a new version of a document)
// when it is not nil.
type Decision struct {
	Outcome           wire.Outcome
	Next              *wire.Document
	Record            bool
	RecordIdempotency bool
}

// ApplyCommand decides one command against the state of the store. It is the single place
// that says what a write does, shared by every store so that they cannot disagree.
func ApplyCommand(st TxState, cmd *wire.Command, now time.Time) (Decision, error) {
	if prior, err := st.PriorWrite(cmd.WriteID); err != nil {
		return Decision{}, err
	} else if prior != nil {
		out := *prior
		out.Replayed = true
		return Decision{Outcome: withCollection(out, cmd)}, nil
	}
	if cmd.Refused != nil {
		// Only its write id is recorded: its Idempotency-Key's record may be what the
		// database refused.
		return Decision{Outcome: rejected(cmd, cmd.Refused), Record: true}, nil
	}
	if cmd.IdemKey != "" {
		fp, prior, err := st.PriorIdempotency(cmd.IdemKey)
		if err != nil {
			return Decision{}, err
		}
		if prior != nil {
			if fp != cmd.Fingerprint {
				return Decision{Outcome: rejected(cmd, problem.New(problem.IdempotencyMismatch,
					"this Idempotency-Key was used with another request")), Record: true}, nil
			}
			out := *prior
			out.WriteID = cmd.WriteID
			out.Replayed = true
			return Decision{Outcome: withCollection(out, cmd), Record: true}, nil
		}
	}
	cur, err := st.Document(cmd.Collection, cmd.ID)
	if err != nil {
		return Decision{}, err
	}
	out, next := decide(cur, cmd, now.UTC().Truncate(time.Microsecond))
	return Decision{Outcome: out, Next: next, Record: true, RecordIdempotency: cmd.IdemKey != ""}, nil
}

func decide(cur *wire.Document, cmd *wire.Command, now time.Time) (wire.Outcome, *wire.Document) {
	live := cur != nil && !cur.Deleted
	if cmd.OwnerOnly && cmd.User == "" {
		// The edge checks that a write under the owner rule has a user; the core does not
		// take its word for it: an ownerless document would be nobody's to change.
		return rejected(cmd, problem.New(problem.Forbidden, "a write under the owner rule needs a user")), nil
	}
	if live && cmd.OwnerOnly && cur.Owner != cmd.User {
		// Checked before If-Match: a stale version must not tell a stranger that the
		// document exists.
		return rejected(cmd, problem.New(problem.Forbidden, "the document belongs to another user")), nil
	}
	if cmd.IfMatch != 0 && (!live || cmd.IfMatch != wire.AnyVersion && cur.Version != cmd.IfMatch) {
		return rejected(cmd, problem.New(problem.PreconditionFailed,
			"the document's version does not match If-Match")), nil
	}
	next := &wire.Document{Collection: cmd.Collection, ID: cmd.ID, Version: 1, CreatedAt: now, UpdatedAt: now, Owner: cmd.User}
	if cur != nil {
		next.Version = cur.Version + 1
	}
	if live {
		// A document keeps its owner for life; one created again after a delete belongs
		// to whoever created it again.
		next.Owner = cur.Owner
	}
	status := http.StatusOK
	switch cmd.Op {
	case wire.OpPut:
		next.Data = compact(cmd.Data)
		if live {
			next.CreatedAt = cur.CreatedAt
		} else {
			status = http.StatusCreated
		}
	case wire.OpCreate:
		if live {
			return rejected(cmd, problem.Newf(problem.AlreadyExists, "document %s already exists", cmd.ID)), nil
		}
		next.Data = compact(cmd.Data)
		status = http.StatusCreated
	case wire.OpPatch:
		if !live {
			return rejected(cmd, problem.Newf(problem.NotFound, "document %s not found", cmd.ID)), nil
		}
		data, err := MergePatch(cur.Data, cmd.Data)
		if err != nil {
			return rejected(cmd, problem.New(problem.BadJSON, err.Error())), nil
		}
		next.CreatedAt = cur.CreatedAt
		next.Data = data
	case wire.OpDelete:
		if !live {
			return rejected(cmd, problem.Newf(problem.NotFound, "document %s not found", cmd.ID)), nil
		}
		next.CreatedAt = cur.CreatedAt
		next.Deleted = true
		status = http.StatusNoContent
	default:
		return rejected(cmd, problem.Newf(problem.BadRequest, "unknown operation %q", cmd.Op)), nil
	}
	if len(next.Data) > wire.MaxDocumentBytes {
		// Past it the document could no longer be read, synced or answered in one NATS
		// message: refused, the document as it was.
		return rejected(cmd, problem.Newf(problem.TooLarge, "the document would take %d bytes, more than the %d a document may hold", len(next.Data), wire.MaxDocumentBytes)), nil
	}
	return wire.Outcome{WriteID: cmd.WriteID, Status: status, Doc: next}, next
}

// withCollection gives a replayed rejection the collection of its command, which records of
// older releases lack (wire.Outcome.Collection).
func withCollection(out wire.Outcome, cmd *wire.Command) wire.Outcome {
	if out.Problem != nil && out.Collection == "" {
		out.Collection = cmd.Collection
	}
	return out
}

func rejected(cmd *wire.Command, p *problem.Problem) wire.Outcome {
	return wire.Outcome{WriteID: cmd.WriteID, Status: p.Status, Problem: p, Collection: cmd.Collection}
}

func compact(data json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if err := json.Compact(&b, data); err != nil {
		return data // validated by the edge and by Command.Validate; keep it as it came
	}
	return b.Bytes()
}

// MergePatch applies an RFC 7396 JSON merge patch to a JSON object and returns the result,
// compacted. Numbers keep their exact text.
func MergePatch(doc, patch json.RawMessage) (json.RawMessage, error) {
	var target, p any
	if err := decodeNumber(doc, &target); err != nil {
		return nil, fmt.Errorf("stored document: %w", err)
	}
	if err := decodeNumber(patch, &p); err != nil {
		return nil, fmt.Errorf("merge patch: %w", err)
	}
	merged := mergeValue(target, p)
	return json.Marshal(merged)
}

func mergeValue(target, patch any) any {
	pm, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	tm, ok := target.(map[string]any)
	if !ok {
		tm = map[string]any{}
	}
	for k, v := range pm {
		if v == nil {
			delete(tm, k)
			continue
		}
		tm[k] = mergeValue(tm[k], v)
	}
	return tm
}

func decodeNumber(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return fmt.Errorf("trailing data after JSON value")
	}
	return nil
}

// EventFor is the change event of a document version that a store assigned seq in partition.
func EventFor(partition int, seq int64, d *wire.Document) wire.ChangeEvent {
	return wire.ChangeEvent{
		Partition: partition, Seq: seq,
		Collection: d.Collection, ID: d.ID, Version: d.Version, Deleted: d.Deleted,
		UpdatedAt: d.UpdatedAt, Doc: d,
	}
}
