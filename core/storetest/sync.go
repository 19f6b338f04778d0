package storetest

import (
	"fmt"
	"slices"
	"sync"

	"github.com/perchhq/perch/internal/wire"
)

var syncTests = []test{
	{"Collections", testSyncCollections},
	{"Tombstones", testSyncTombstones},
	{"Resume", testSyncResume},
	{"ShortPosition", testSyncShortPosition},
	{"Paging", testSyncPaging},
	{"DefaultLimit", testSyncDefaultLimit},
	{"UnknownCollections", testSyncUnknownCollections},
	{"PagingUnderWrites", testSyncPagingUnderWrites},
}

// docKey identifies a document.
type docKey struct{ collection, id string }

// syncAll pages through q from q.After until a page without More, checking every page, and
// returns the changes and the last Next.
func (h *harness) syncAll(q wire.SyncQuery) ([]wire.Change, []int64) {
	h.tb.Helper()
	limit := q.Limit
	if limit == 0 {
		limit = wire.DefaultSyncLimit
	}
	limit = min(limit, wire.MaxSyncLimit)
	var all []wire.Change
	for pages := 0; ; pages++ {
		if pages > 10000 {
			h.tb.Fatalf("Sync(%+v): more than 10000 pages", q)
		}
		page := h.sync(q)
		if len(page.Changes) > limit {
			h.tb.Fatalf("Sync: %d changes, limit %d", len(page.Changes), limit)
		}
		h.wantPageOrder(page, q.After)
		all = append(all, page.Changes...)
		if !page.More {
			return all, page.Next
		}
		if len(page.Changes) == 0 {
			h.tb.Fatalf("Sync(%+v): More on an empty page", q)
		}
		q.After = page.Next
	}
}

// wantPageOrder checks a page's changes: each partition's in seq order, after the position,
// not past Next.
func (h *harness) wantPageOrder(page wire.SyncPage, after []int64) {
	h.tb.Helper()
	last := make([]int64, h.parts)
	copy(last, after)
	for _, c := range page.Changes {
		if c.Partition < 0 || c.Partition >= h.parts {
			h.tb.Fatalf("change in partition %d", c.Partition)
		}
		if c.Seq <= last[c.Partition] {
			h.tb.Fatalf("partition %d: change %d after %d", c.Partition, c.Seq, last[c.Partition])
		}
		if c.Seq > page.Next[c.Partition] {
			h.tb.Fatalf("partition %d: change %d past Next %d", c.Partition, c.Seq, page.Next[c.Partition])
		}
		last[c.Partition] = c.Seq
	}
}

// wantChanges fails unless changes hold exactly the current state of the documents in want,
// once each.
func (h *harness) wantChanges(changes []wire.Change, want []docKey) {
	h.tb.Helper()
	seen := map[docKey]bool{}
	for _, c := range changes {
		k := docKey{c.Doc.Collection, c.Doc.ID}
		if seen[k] {
			h.tb.Fatalf("%s/%s synced twice", k.collection, k.id)
		}
		seen[k] = true
		if !slices.Contains(want, k) {
			h.tb.Fatalf("unexpected change of %s/%s", k.collection, k.id)
		}
		wantDoc(h.tb, c.Doc, h.get(k.collection, k.id))
	}
	for _, k := range want {
		if !seen[k] {
			h.tb.Fatalf("%s/%s not synced", k.collection, k.id)
		}
	}
}

func keys(collection string, ids ...string) []docKey {
	ks := make([]docKey, len(ids))
	for i, id := range ids {
		ks[i] = docKey{collection, id}
	}
	return ks
}

// seedCollections puts n documents in each collection, each in its own apply call, and
// returns the events.
func (h *harness) seedCollections(n int, collections ...string) []wire.ChangeEvent {
	h.tb.Helper()
	var evs []wire.ChangeEvent
	for i := range n {
		var cmds []wire.Command
		for _, c := range collections {
			cmds = append(cmds, h.put(c, fmt.Sprintf("d%d", i), fmt.Sprintf(`{"c":%q,"i":%d}`, c, i)))
		}
		_, e := h.mustApply(cmds...)
		evs = append(evs, e...)
	}
	return evs
}

func docIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("d%d", i)
	}
	return ids
}

func testSyncCollections(h *harness) {
	evs := h.seedCollections(8, "a", "b", "c")
	for _, c := range []wire.Command{h.patch("a", "d1", `{"x":1}`), h.patch("c", "d2", `{"x":1}`)} {
		_, more := h.mustApply(c)
		evs = append(evs, more...)
	}
	page := h.sync(wire.SyncQuery{Collections: []string{"a", "b"}, Limit: wire.MaxSyncLimit})
	h.wantPageOrder(page, nil)
	h.wantChanges(page.Changes, append(keys("a", docIDs(8)...), keys("b", docIDs(8)...)...))
	if page.More {
		h.tb.Fatal("More on the only page")
	}
	// Exhausted partitions resume at their counter, past the changes of unwanted collections.
	if want := h.counters(evs); !slices.Equal(page.Next, want) {
		h.tb.Fatalf("Next %v, want the partition counters %v", page.Next, want)
	}
	// A collection named twice is synced once.
	page = h.sync(wire.SyncQuery{Collections: []string{"b", "b"}, Limit: wire.MaxSyncLimit})
	h.wantChanges(page.Changes, keys("b", docIDs(8)...))
}

func testSyncTombstones(h *harness) {
	h.seedCollections(4, "a")
	h.mustApply(h.del("a", "d1"), h.del("a", "d3"))
	changes, _ := h.syncAll(wire.SyncQuery{Collections: []string{"a"}, Limit: 2})
	h.wantChanges(changes, keys("a", docIDs(4)...))
	for _, c := range changes {
		if want := c.Doc.ID == "d1" || c.Doc.ID == "d3"; c.Doc.Deleted != want || (want && c.Doc.Version != 2) {
			h.tb.Fatalf("%s: deleted %t version %d", c.Doc.ID, c.Doc.Deleted, c.Doc.Version)
		}
	}
}

func testSyncResume(h *harness) {
	evs := h.seedCollections(6, "a", "b", "c")
	q := wire.SyncQuery{Collections: []string{"a", "b"}, Limit: wire.MaxSyncLimit}
	first := h.sync(q)
	h.wantChanges(first.Changes, append(keys("a", docIDs(6)...), keys("b", docIDs(6)...)...))

	// Nothing new: nothing, and the same position.
	q.After = first.Next
	again := h.sync(q)
	if len(again.Changes) != 0 || again.More || !slices.Equal(again.Next, first.Next) {
		h.tb.Fatalf("sync at the end: %d changes, More %t, Next %v; want none, false, %v",
			len(again.Changes), again.More, again.Next, first.Next)
	}

	for _, cmds := range [][]wire.Command{
		{h.patch("a", "d1", `{"y":1}`), h.put("b", "new", `{}`), h.put("c", "d1", `{"z":1}`)},
		{h.del("b", "d4"), h.patch("a", "d1", `{"y":2}`)},
		{h.put("c", "other", `{}`)},
	} {
		_, e := h.mustApply(cmds...)
		evs = append(evs, e...)
	}
	changes, next := h.syncAll(wire.SyncQuery{Collections: q.Collections, After: first.Next, Limit: 2})
	h.wantChanges(changes, []docKey{{"a", "d1"}, {"b", "new"}, {"b", "d4"}})
	if want := h.counters(evs); !slices.Equal(next, want) {
		h.tb.Fatalf("Next %v, want the partition counters %v", next, want)
	}
}

func testSyncShortPosition(h *harness) {
	h.seedCollections(12, "a")
	first := h.sync(wire.SyncQuery{Collections: []string{"a"}, Limit: wire.MaxSyncLimit})
	// Missing entries are 0: a position with only partition 0's entry resyncs the others.
	page := h.sync(wire.SyncQuery{Collections: []string{"a"}, After: first.Next[:1], Limit: wire.MaxSyncLimit})
	var want []docKey
	for _, c := range first.Changes {
		if c.Partition != 0 {
			want = append(want, docKey{c.Doc.Collection, c.Doc.ID})
		}
	}
	if len(want) == 0 || len(want) == len(first.Changes) {
		h.tb.Fatalf("test needs documents in partition 0 and others; got %d of %d", len(want), len(first.Changes))
	}
	h.wantChanges(page.Changes, want)
}

func testSyncPaging(h *harness) {
	evs := h.seedCollections(10, "a", "b")
	_, more := h.mustApply(h.del("a", "d0"), h.patch("b", "d9", `{"p":1}`))
	evs = append(evs, more...)
	want := append(keys("a", docIDs(10)...), keys("b", docIDs(10)...)...)
	for _, limit := range []int{1, 2, 3, 7, 19, 20, 21} {
		h.subtest(fmt.Sprint(limit), func(h *harness) {
			changes, next := h.syncAll(wire.SyncQuery{Collections: []string{"a", "b"}, Limit: limit})
			h.wantChanges(changes, want)
			if c := h.counters(evs); !slices.Equal(next, c) {
				h.tb.Fatalf("final Next %v, want the partition counters %v", next, c)
			}
		})
	}
}

func testSyncDefaultLimit(h *harness) {
	n := wire.DefaultSyncLimit + 5
	var cmds []wire.Command
	for i := range n {
		cmds = append(cmds, h.put("a", fmt.Sprintf("d%d", i), `{}`))
	}
	h.mustApply(cmds...)
	page := h.sync(wire.SyncQuery{Collections: []string{"a"}})
	if len(page.Changes) != wire.DefaultSyncLimit || !page.More {
		h.tb.Fatalf("limit 0: %d changes, More %t; want %d and More", len(page.Changes), page.More, wire.DefaultSyncLimit)
	}
	page = h.sync(wire.SyncQuery{Collections: []string{"a"}, Limit: -1})
	if len(page.Changes) != 1 || !page.More {
		h.tb.Fatalf("limit -1: %d changes, More %t; want 1 and More", len(page.Changes), page.More)
	}
	changes, _ := h.syncAll(wire.SyncQuery{Collections: []string{"a"}, Limit: 1 << 30})
	if len(changes) != n {
		h.tb.Fatalf("%d changes, want %d", len(changes), n)
	}
}

func testSyncUnknownCollections(h *harness) {
	evs := h.seedCollections(5, "a")
	for _, tt := range []struct {
		name        string
		collections []string
	}{
		{"unknown", []string{"nothing"}},
		{"none", nil},
	} {
		h.subtest(tt.name, func(h *harness) {
			page := h.sync(wire.SyncQuery{Collections: tt.collections, Limit: 10})
			if len(page.Changes) != 0 || page.More {
				h.tb.Fatalf("%d changes, More %t; want none", len(page.Changes), page.More)
			}
			if want := h.counters(evs); !slices.Equal(page.Next, want) {
				h.tb.Fatalf("Next %v, want the partition counters %v", page.Next, want)
			}
		})
	}
}

// testSyncPagingUnderWrites syncs in small pages while another goroutine keeps writing:
// resuming from Next must lose nothing, so that a last sync after the writes stop ends with
// every document's latest version.
func testSyncPagingUnderWrites(h *harness) {
	const n = 40
	h.seedCollections(n, "a")
	stop := make(chan struct{})
	progress := make(chan struct{})
	failed := make(chan error, 1)
	go func() {
		defer close(progress)
		for round := 0; ; round++ {
			var cmds []wire.Command
			for i := round % 5; i < n; i += 5 {
				id := fmt.Sprintf("d%d", i)
				if round%3 == 2 {
					cmds = append(cmds, h.del("a", id))
				} else {
					cmds = append(cmds, h.put("a", id, fmt.Sprintf(`{"round":%d}`, round)))
				}
			}
			cmds = append(cmds, h.put("a", fmt.Sprintf("new%d", round), `{}`))
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
		for range progress {
		}
	})
	defer stopWriter()

	latest := map[docKey]wire.Change{}
	q := wire.SyncQuery{Collections: []string{"a"}, Limit: 3}
	for range 30 {
		if _, ok := <-progress; !ok {
			break
		}
		page := h.sync(q)
		h.wantPageOrder(page, q.After)
		for _, c := range page.Changes {
			latest[docKey{c.Doc.Collection, c.Doc.ID}] = c
		}
		q.After = page.Next
	}
	stopWriter()
	select {
	case err := <-failed:
		h.tb.Fatal(err)
	default:
	}
	rest, _ := h.syncAll(q)
	for _, c := range rest {
		latest[docKey{c.Doc.Collection, c.Doc.ID}] = c
	}
	// Every document of the collection, as it is now.
	var want []docKey
	for _, d := range h.listAll(wire.ListQuery{Collection: "a", Limit: wire.MaxListLimit}) {
		want = append(want, docKey{d.Collection, d.ID})
	}
	for k, c := range latest {
		if !c.Doc.Deleted && !slices.Contains(want, k) {
			h.tb.Fatalf("%s synced live, but not listed", k.id)
		}
		wantDoc(h.tb, c.Doc, h.get(k.collection, k.id))
	}
	for _, k := range want {
		if _, ok := latest[k]; !ok {
			h.tb.Fatalf("%s never synced", k.id)
		}
	}
}
