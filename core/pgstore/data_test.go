package pgstore_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/internal/pgtest"
	"github.com/perchhq/perch/internal/wire"
)

// TestUnstorableData: JSON that json.Valid accepts and jsonb refuses (see README.md, "Data
// PostgreSQL cannot store") is refused by wire validation, which edges apply before they
// publish; a batch that holds it anyway fails at once, and nothing of it is committed.
func TestUnstorableData(t *testing.T) {
	s := open(t, pgtest.DSN(t))
	for _, data := range []string{`{"a":"\u0000"}`, `{"a":"\ud800"}`, `{"a":1e400000}`} {
		t.Run(data, func(t *testing.T) {
			if !json.Valid([]byte(data)) {
				t.Fatalf("%s is not valid JSON to Go", data)
			}
			ok := wire.Command{WriteID: "ok-" + data, Op: wire.OpPut, Collection: "notes", ID: "fine", Data: json.RawMessage(`{}`)}
			b := &wire.Batch{ID: "b-" + data, Partition: wire.Partition("notes", "fine", testPartitions), Commands: []wire.Command{ok}}
			bad := wire.Command{WriteID: "bad-" + data, Op: wire.OpPut, Collection: "notes", Data: json.RawMessage(data)}
			bad.ID = idIn(t, "notes", "bad", b.Partition)
			b.Commands = append(b.Commands, bad)
			if err := b.Validate(testPartitions); err == nil {
				t.Fatal("wire validation accepts data that jsonb refuses")
			}
			start := time.Now()
			_, _, err := s.ApplyBatch(t.Context(), b, time.Now())
			if err == nil {
				t.Fatal("ApplyBatch stored what jsonb refuses")
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("ApplyBatch took %v: the error was retried", d)
			}
			for _, c := range b.Commands {
				if _, err := s.WriteOutcome(t.Context(), c.WriteID); !errors.Is(err, core.ErrNotFound) {
					t.Fatalf("WriteOutcome(%s) after the failed batch: %v", c.WriteID, err)
				}
			}
		})
	}
}
