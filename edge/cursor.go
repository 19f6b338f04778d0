package edge

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"hash/fnv"
	"slices"
	"strings"
	"time"

	"github.com/perchhq/perch/internal/wire"
)

// Cursors are opaque to clients: base64url of a small JSON object with a version, so that the
// format can change without breaking cursors in flight. A cursor carries the query it belongs
// to and is refused with another one.
const (
	cursorVersion  = 1
	maxCursorBytes = 1024
	// a sync cursor holds a sequence per partition: up to 4096 numbers.
	maxSyncCursorBytes = 64 << 10
)

var errBadCursor = errors.New("malformed cursor")

type listCursor struct {
	V      int        `json:"v"`
	Order  wire.Order `json:"o"`
	Prefix string     `json:"p,omitempty"`
	ID     string     `json:"id"`
	T      int64      `json:"t,omitempty"`
}

func encodeListCursor(q *wire.ListQuery, last *wire.Document) string {
	c := listCursor{V: cursorVersion, Order: q.Order, Prefix: q.IDPrefix, ID: last.ID}
	if q.Order == wire.OrderUpdatedAt || q.Order == wire.OrderUpdatedAtDesc {
		c.T = last.UpdatedAt.UnixMicro()
	}
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeListCursor returns the position a list cursor resumes after, checking that it was made
// for the same order and prefix.
func decodeListCursor(s string, order wire.Order, prefix string) (*wire.Position, error) {
	var c listCursor
	if err := decodeCursor(s, maxCursorBytes, &c); err != nil {
		return nil, err
	}
	if c.V != cursorVersion || !validOrder(c.Order) || !wire.ValidName(c.ID) || c.T < 0 {
		return nil, errBadCursor
	}
	if c.Order != order || c.Prefix != prefix {
		return nil, errors.New("cursor belongs to another query (order or id_prefix differ)")
	}
	pos := &wire.Position{ID: c.ID}
	if c.T != 0 {
		pos.UpdatedAt = time.UnixMicro(c.T).UTC()
	}
	return pos, nil
}

type syncCursor struct {
	V int `json:"v"`
	// C identifies the set of collections the cursor was made for.
	C uint64  `json:"c"`
	A []int64 `json:"a"`
}

// collectionsID identifies a set of collections, whatever their order.
func collectionsID(collections []string) uint64 {
	sorted := slices.Clone(collections)
	slices.Sort(sorted)
	h := fnv.New64a()
	h.Write([]byte(strings.Join(sorted, ",")))
	return h.Sum64()
}

func encodeSyncCursor(collections []string, next []int64) string {
	b, _ := json.Marshal(syncCursor{V: cursorVersion, C: collectionsID(collections), A: next})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeSyncCursor(s string, collections []string, partitions int) ([]int64, error) {
	var c syncCursor
	if err := decodeCursor(s, maxSyncCursorBytes, &c); err != nil {
		return nil, err
	}
	if c.V != cursorVersion || len(c.A) > partitions {
		return nil, errBadCursor
	}
	for _, a := range c.A {
		if a < 0 {
			return nil, errBadCursor
		}
	}
	if c.C != collectionsID(collections) {
		return nil, errors.New("cursor belongs to another set of collections")
	}
	return c.A, nil
}

func decodeCursor(s string, limit int, v any) error {
	if len(s) == 0 || len(s) > limit {
		return errBadCursor
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return errBadCursor
	}
	if err := json.Unmarshal(b, v); err != nil {
		return errBadCursor
	}
	return nil
}

func validOrder(o wire.Order) bool {
	switch o {
	case wire.OrderID, wire.OrderIDDesc, wire.OrderUpdatedAt, wire.OrderUpdatedAtDesc:
		return true
	}
	return false
}
