package pgstore_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/perchhq/perch/internal/pgtest"
	"github.com/perchhq/perch/internal/wire"
)

// The document statements of the release before migration 0004, as it sends them: during a
// rolling upgrade its cores write to the migrated schema.
const (
	previousStoreDocuments = `INSERT INTO documents (collection, id, version, deleted, data, created_at, updated_at, part, seq)
		SELECT u.collection, u.id, u.version, u.deleted, u.data::JSONB, u.created_at, u.updated_at, $9::INT, u.seq
		FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::BOOLEAN[], $5::TEXT[], $6::TIMESTAMPTZ[],
			$7::TIMESTAMPTZ[], $8::BIGINT[]) AS u(collection, id, version, deleted, data, created_at, updated_at, seq)
		ON CONFLICT (collection, id) DO UPDATE SET
			version = excluded.version, deleted = excluded.deleted, data = excluded.data,
			created_at = excluded.created_at, updated_at = excluded.updated_at,
			part = excluded.part, seq = excluded.seq`
	previousGet = `SELECT collection, id, version, deleted, data, created_at, updated_at FROM documents
		WHERE collection = $1 AND id = $2`
)

// TestPreviousReleaseKeepsOwners: a core of the release before owners, writing to the
// migrated schema, neither fails nor clears an owner: its upsert does not name the column, so
// an update keeps the owner and an insert leaves none. Its reads do not see the column.
func TestPreviousReleaseKeepsOwners(t *testing.T) {
	s := open(t, pgtest.DSN(t))
	p := wire.Partition("notes", "n", testPartitions)
	now := time.Now().UTC().Truncate(time.Microsecond)
	outs, _ := apply(t, s, &wire.Batch{ID: "b1", Partition: p, Commands: []wire.Command{
		{WriteID: "w1", Op: wire.OpPut, Collection: "notes", ID: "n", Data: json.RawMessage(`{"v":1}`), User: "alice"},
	}}, now)
	if outs[0].Doc == nil || outs[0].Doc.Owner != "alice" {
		t.Fatalf("outcome %+v, want alice's document", outs[0])
	}
	fresh := idIn(t, "notes", "fresh", p)
	later := now.Add(time.Second)
	data := []string{`{"v":2}`, `{"old":true}`}
	if _, err := s.Pool().Exec(t.Context(), previousStoreDocuments,
		[]string{"notes", "notes"}, []string{"n", fresh}, []int64{2, 1}, []bool{false, false}, data,
		[]time.Time{now, later}, []time.Time{later, later}, []int64{100, 101}, p); err != nil {
		t.Fatalf("the previous release's upsert: %v", err)
	}
	var (
		collection, id string
		version        int64
		deleted        bool
		raw            []byte
		created, upd   time.Time
	)
	if err := s.Pool().QueryRow(t.Context(), previousGet, "notes", "n").Scan(&collection, &id, &version, &deleted, &raw, &created, &upd); err != nil || version != 2 {
		t.Fatalf("the previous release's read: version %d, %v", version, err)
	}
	for _, tt := range []struct{ id, owner string }{{"n", "alice"}, {fresh, ""}} {
		d, err := s.Get(t.Context(), "notes", tt.id)
		if err != nil {
			t.Fatalf("Get(%s): %v", tt.id, err)
		}
		if d.Owner != tt.owner {
			t.Fatalf("%s after the previous release's write: owner %q, want %q", tt.id, d.Owner, tt.owner)
		}
	}
	// And this release goes on from there: the owner still decides.
	outs, _ = apply(t, s, &wire.Batch{ID: "b2", Partition: p, Commands: []wire.Command{
		{WriteID: "w2", Op: wire.OpPatch, Collection: "notes", ID: "n", Data: json.RawMessage(`{"w":1}`), User: "bob", OwnerOnly: true},
		{WriteID: "w3", Op: wire.OpPatch, Collection: "notes", ID: "n", Data: json.RawMessage(`{"w":2}`), User: "alice", OwnerOnly: true},
	}}, later.Add(time.Second))
	if outs[0].Problem == nil || outs[1].Problem != nil || outs[1].Doc.Owner != "alice" {
		t.Fatalf("owner-only writes after the previous release's: %+v, %+v", outs[0], outs[1])
	}
}
