package storetest

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/perchhq/perch/internal/wire"
)

var listTests = []test{
	{"Orders", testListOrders},
	{"ByteOrder", testListByteOrder},
	{"Prefix", testListPrefix},
	{"AfterIsExclusive", testListAfterExclusive},
	{"Tombstones", testListTombstones},
	{"Limits", testListLimits},
	{"Collections", testListCollections},
	{"PagingUnderUpdates", testListPagingUnderUpdates},
}

var orders = []wire.Order{wire.OrderID, wire.OrderIDDesc, wire.OrderUpdatedAt, wire.OrderUpdatedAtDesc}

// effectiveLimit is the page size a List limit asks for.
func effectiveLimit(limit int) int {
	switch {
	case limit == 0:
		return wire.DefaultListLimit
	case limit < 1:
		return 1
	}
	return min(limit, wire.MaxListLimit)
}

// listAll pages through q from q.After, checking every page, and returns all the items.
func (h *harness) listAll(q wire.ListQuery) []wire.Document {
	h.tb.Helper()
	var all []wire.Document
	for pages := 0; ; pages++ {
		if pages > 10000 {
			h.tb.Fatalf("List(%+v): more than 10000 pages", q)
		}
		page := h.list(q)
		if n := len(page.Items); n > effectiveLimit(q.Limit) {
			h.tb.Fatalf("List(%+v): %d items, limit %d", q, n, effectiveLimit(q.Limit))
		}
		if page.More && len(page.Items) < effectiveLimit(q.Limit) {
			h.tb.Fatalf("List(%+v): More on a short page of %d", q, len(page.Items))
		}
		if pages > 0 && len(page.Items) == 0 {
			h.tb.Fatalf("List(%+v): empty page after one with More (More must be exact)", q)
		}
		for _, d := range page.Items {
			if d.Deleted {
				h.tb.Fatalf("List(%+v) returned tombstone %s", q, d.ID)
			}
			if d.Collection != q.Collection {
				h.tb.Fatalf("List(%+v) returned %s/%s", q, d.Collection, d.ID)
			}
		}
		all = append(all, page.Items...)
		if !page.More {
			return all
		}
		last := page.Items[len(page.Items)-1]
		q.After = &wire.Position{ID: last.ID, UpdatedAt: last.UpdatedAt}
	}
}

func ids(docs []wire.Document) []string {
	s := make([]string, len(docs))
	for i, d := range docs {
		s[i] = d.ID
	}
	return s
}

func wantIDs(tb testing.TB, what string, got []wire.Document, want []string) {
	tb.Helper()
	if g := ids(got); !slices.Equal(g, want) {
		tb.Fatalf("%s: ids\n %v\nwant\n %v", what, g, want)
	}
}

// inOrder sorts docs as order says (ties on updated_at by id in the same direction) and
// returns their ids.
func inOrder(docs []wire.Document, order wire.Order) []string {
	docs = slices.Clone(docs)
	less := func(a, b wire.Document) bool {
		switch order {
		case wire.OrderUpdatedAt, wire.OrderUpdatedAtDesc:
			if !a.UpdatedAt.Equal(b.UpdatedAt) {
				return a.UpdatedAt.Before(b.UpdatedAt)
			}
		}
		return a.ID < b.ID
	}
	sort.Slice(docs, func(i, j int) bool {
		if order == wire.OrderIDDesc || order == wire.OrderUpdatedAtDesc {
			return less(docs[j], docs[i])
		}
		return less(docs[i], docs[j])
	})
	return ids(docs)
}

func testListOrders(h *harness) {
	h.mustApply(h.put("notes", "b", `{"n":"b"}`), h.put("notes", "a", `{"n":"a"}`))
	h.mustApply(h.put("notes", "d", `{"n":"d"}`))
	h.mustApply(h.put("notes", "c", `{"n":"c"}`), h.put("notes", "f", `{"n":"f"}`)) // tie on updated_at
	h.mustApply(h.patch("notes", "a", `{"m":1}`))                                   // a moves last
	h.mustApply(h.put("notes", "e", `{"n":"e"}`), h.put("notes", "g", `{"n":"g"}`))
	h.mustApply(h.del("notes", "g"))

	want := map[wire.Order][]string{
		wire.OrderID:            {"a", "b", "c", "d", "e", "f"},
		wire.OrderIDDesc:        {"f", "e", "d", "c", "b", "a"},
		wire.OrderUpdatedAt:     {"b", "d", "c", "f", "a", "e"},
		wire.OrderUpdatedAtDesc: {"e", "a", "f", "c", "d", "b"},
	}
	for _, order := range orders {
		h.subtest(string(order), func(h *harness) {
			page := h.list(wire.ListQuery{Collection: "notes", Order: order, Limit: 100})
			wantIDs(h.tb, "one page", page.Items, want[order])
			if page.More {
				h.tb.Fatal("More on the only page")
			}
			for _, d := range page.Items {
				wantDoc(h.tb, d, h.get("notes", d.ID))
			}
			for _, limit := range []int{1, 2, 4, 6} {
				got := h.listAll(wire.ListQuery{Collection: "notes", Order: order, Limit: limit})
				wantIDs(h.tb, fmt.Sprintf("pages of %d", limit), got, want[order])
			}
		})
	}
}

func testListByteOrder(h *harness) {
	all := []string{"B", "a", "A", "_x", "-x", "~", "0", "9", "a.b", "a-b", "a_b", "ab", "Z", "z", "a~"}
	var cmds []wire.Command
	for _, id := range all {
		cmds = append(cmds, h.put("notes", id, `{}`))
	}
	h.mustApply(cmds...)
	sorted := slices.Clone(all)
	sort.Strings(sorted)
	wantIDs(h.tb, "id order", h.listAll(wire.ListQuery{Collection: "notes", Order: wire.OrderID, Limit: 4}), sorted)
	slices.Reverse(sorted)
	wantIDs(h.tb, "-id order", h.listAll(wire.ListQuery{Collection: "notes", Order: wire.OrderIDDesc, Limit: 4}), sorted)
}

func testListPrefix(h *harness) {
	// Each in its own batch, so that updated_at order is this order. "a_" is a prefix that a
	// LIKE would misread ("_" matches any character); "~" is the greatest character of a name.
	all := []string{"apple", "ap", "app-2", "b-app", "APP", "app", "a_1", "ab1", "apq", "a~b", "app-1", "a~", "b"}
	var docs []wire.Document
	for _, id := range all {
		outs, _ := h.mustApply(h.put("notes", id, `{}`))
		docs = append(docs, *outs[0].Doc)
	}
	h.mustApply(h.put("notes", "app-3", `{}`))
	h.mustApply(h.del("notes", "app-3")) // a tombstone under the prefix
	for _, prefix := range []string{"app", "ap", "a_", "a~", "a", "APP", "zzz", "app-1"} {
		var match []wire.Document
		for _, d := range docs {
			if strings.HasPrefix(d.ID, prefix) {
				match = append(match, d)
			}
		}
		for _, order := range orders {
			h.subtest(prefix+"/"+string(order), func(h *harness) {
				for _, limit := range []int{1, 3, 100} {
					got := h.listAll(wire.ListQuery{Collection: "notes", Order: order, Limit: limit, IDPrefix: prefix})
					wantIDs(h.tb, fmt.Sprintf("pages of %d", limit), got, inOrder(match, order))
				}
			})
		}
	}
}

func testListAfterExclusive(h *harness) {
	var docs []wire.Document
	for _, id := range []string{"a", "c", "e", "g"} {
		outs, _ := h.mustApply(h.put("notes", id, `{}`))
		docs = append(docs, *outs[0].Doc)
	}
	c := docs[1]
	for _, tt := range []struct {
		name  string
		order wire.Order
		after wire.Position
		want  []string
	}{
		{"id at an item", wire.OrderID, wire.Position{ID: "c"}, []string{"e", "g"}},
		{"id between items", wire.OrderID, wire.Position{ID: "d"}, []string{"e", "g"}},
		{"id before all", wire.OrderID, wire.Position{ID: "0"}, []string{"a", "c", "e", "g"}},
		{"id after all", wire.OrderID, wire.Position{ID: "z"}, nil},
		{"-id at an item", wire.OrderIDDesc, wire.Position{ID: "e"}, []string{"c", "a"}},
		{"-id between items", wire.OrderIDDesc, wire.Position{ID: "b"}, []string{"a"}},
		{"updated_at at an item", wire.OrderUpdatedAt, wire.Position{ID: "c", UpdatedAt: c.UpdatedAt}, []string{"e", "g"}},
		{"updated_at same time, later id", wire.OrderUpdatedAt, wire.Position{ID: "d", UpdatedAt: c.UpdatedAt}, []string{"e", "g"}},
		{"updated_at same time, earlier id", wire.OrderUpdatedAt, wire.Position{ID: "b", UpdatedAt: c.UpdatedAt}, []string{"c", "e", "g"}},
		{"-updated_at at an item", wire.OrderUpdatedAtDesc, wire.Position{ID: "c", UpdatedAt: c.UpdatedAt}, []string{"a"}},
		{"-updated_at same time, later id", wire.OrderUpdatedAtDesc, wire.Position{ID: "d", UpdatedAt: c.UpdatedAt}, []string{"c", "a"}},
	} {
		h.subtest(tt.name, func(h *harness) {
			page := h.list(wire.ListQuery{Collection: "notes", Order: tt.order, Limit: 10, After: &tt.after})
			wantIDs(h.tb, "page", page.Items, tt.want)
			if page.More {
				h.tb.Fatal("More on the last page")
			}
		})
	}
}

func testListTombstones(h *harness) {
	h.seed("notes", "d", 6)
	h.mustApply(h.del("notes", "d0001"), h.del("notes", "d0004"))
	h.mustApply(h.del("notes", "d0002"))
	h.mustApply(h.put("notes", "d0002", `{"back":true}`))
	want := []string{"d0000", "d0002", "d0003", "d0005"}
	for _, order := range orders {
		got := h.listAll(wire.ListQuery{Collection: "notes", Order: order, Limit: 2})
		sorted := slices.Clone(ids(got))
		sort.Strings(sorted)
		if !slices.Equal(sorted, want) {
			h.tb.Fatalf("order %s: ids %v, want %v", order, ids(got), want)
		}
	}
}

func testListLimits(h *harness) {
	n := wire.MaxListLimit + 1
	all := h.seed("notes", "d", n)
	for _, tt := range []struct {
		limit, want int
	}{
		{0, wire.DefaultListLimit},
		{-3, 1},
		{1, 1},
		{7, 7},
		{wire.MaxListLimit, wire.MaxListLimit},
		{wire.MaxListLimit + 1, wire.MaxListLimit},
		{1 << 30, wire.MaxListLimit},
	} {
		h.subtest(fmt.Sprint(tt.limit), func(h *harness) {
			page := h.list(wire.ListQuery{Collection: "notes", Order: wire.OrderID, Limit: tt.limit})
			wantIDs(h.tb, "page", page.Items, all[:tt.want])
			if !page.More {
				h.tb.Fatal("no More with items left")
			}
		})
	}
	// The last page of a full read is exactly the one document past the maximum.
	last := h.list(wire.ListQuery{Collection: "notes", Order: wire.OrderID, Limit: wire.MaxListLimit,
		After: &wire.Position{ID: all[wire.MaxListLimit-1]}})
	wantIDs(h.tb, "last page", last.Items, all[wire.MaxListLimit:])
	if last.More {
		h.tb.Fatal("More on the last page")
	}
	wantIDs(h.tb, "all", h.listAll(wire.ListQuery{Collection: "notes", Limit: wire.MaxListLimit}), all)
}

func testListCollections(h *harness) {
	h.mustApply(h.put("notes", "a", `{}`), h.put("other", "b", `{}`), h.put("notesx", "c", `{}`))
	for _, order := range orders {
		wantIDs(h.tb, "notes", h.listAll(wire.ListQuery{Collection: "notes", Order: order}), []string{"a"})
		page := h.list(wire.ListQuery{Collection: "nothing", Order: order})
		if len(page.Items) != 0 || page.More {
			h.tb.Fatalf("unknown collection: %d items, More %t", len(page.Items), page.More)
		}
	}
}

// testListPagingUnderUpdates pages through a collection in id order while another goroutine
// keeps rewriting its documents: keyset paging must return each exactly once.
func testListPagingUnderUpdates(h *harness) {
	const n = 120
	all := h.seed("notes", "d", n)
	stop := make(chan struct{})
	progress := make(chan struct{})
	failed := make(chan error, 1)
	go func() {
		defer close(progress)
		for round := 0; ; round++ {
			// Rewrite every 7th document, a different slice each round, one batch per
			// partition.
			var cmds []wire.Command
			for i := round % 7; i < n; i += 7 {
				cmds = append(cmds, h.put("notes", all[i], fmt.Sprintf(`{"round":%d}`, round)))
			}
			if err := h.applyConcurrently(cmds...); err != nil {
				failed <- err
				return
			}
			select {
			case progress <- struct{}{}:
			case <-stop:
				return
			}
		}
	}()
	stopWriter := sync.OnceFunc(func() {
		close(stop)
		for range progress { // until the writer is done
		}
	})
	defer stopWriter()

	var got []wire.Document
	q := wire.ListQuery{Collection: "notes", Order: wire.OrderID, Limit: 7}
	for range n {
		// Let the writer commit a round between two pages.
		if _, ok := <-progress; !ok {
			break // the writer failed
		}
		page := h.list(q)
		got = append(got, page.Items...)
		if !page.More {
			break
		}
		last := page.Items[len(page.Items)-1]
		q.After = &wire.Position{ID: last.ID}
	}
	stopWriter()
	select {
	case err := <-failed:
		h.tb.Fatal(err)
	default:
	}
	wantIDs(h.tb, "paged under updates", got, all)
}
