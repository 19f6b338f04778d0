package core

import (
	"slices"

	"github.com/perchhq/perch/internal/wire"
)

// The functions of this file are the rules by which every Store reads a List or Sync query,
// so that a query means the same on every backend; core/storetest checks the results.

// ListLimit is the number of items a List page holds at most for a query's Limit n: 0 means
// wire.DefaultListLimit, anything else is held to [1, wire.MaxListLimit].
func ListLimit(n int) int { return clampLimit(n, wire.DefaultListLimit, wire.MaxListLimit) }

// SyncLimit is the number of changes a Sync page holds at most for a query's Limit n: 0
// means wire.DefaultSyncLimit, anything else is held to [1, wire.MaxSyncLimit].
func SyncLimit(n int) int { return clampLimit(n, wire.DefaultSyncLimit, wire.MaxSyncLimit) }

// clampLimit applies a query limit's rules: 0 means def, anything else is held to [1, hi].
func clampLimit(n, def, hi int) int {
	switch {
	case n == 0:
		return def
	case n < 1:
		return 1
	case n > hi:
		return hi
	}
	return n
}

// PrefixEnd returns the smallest string greater than every string that starts with prefix,
// so that a store selects the ids with a prefix as the range [prefix, end) of its id order
// (bytewise), which an index serves, rather than with LIKE (where "_" and "%" are wildcards).
// ok is false when there is no such string (prefix is empty or all 0xff bytes): the range
// then has no end.
func PrefixEnd(prefix string) (end string, ok bool) {
	b := []byte(prefix)
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] < 0xff {
			b[i]++
			return string(b[:i+1]), true
		}
	}
	return "", false
}

// SyncCollections returns the collections a Sync query for names can match: each name that
// is a valid collection (wire.ValidCollection; no write can create a document in any other),
// once, in the order of its first appearance.
func SyncCollections(names []string) []string {
	seen := make(map[string]struct{}, len(names))
	out := make([]string, 0, len(names))
	for _, n := range names {
		if _, ok := seen[n]; ok || !wire.ValidCollection(n) {
			continue
		}
		seen[n] = struct{}{}
		out = append(out, n)
	}
	return out
}

// SyncOwned returns the collections of a Sync query, as SyncCollections returned them, whose
// changes are kept to the documents of q.Owner: those also named in q.Owned, in the order of
// collections. A store filters those by owner and leaves the others whole. An empty Owner
// matches no document (anonymous documents have no owner), so owned collections then sync
// nothing.
func SyncOwned(collections []string, q wire.SyncQuery) []string {
	var out []string
	for _, c := range collections {
		if slices.Contains(q.Owned, c) {
			out = append(out, c)
		}
	}
	return out
}
