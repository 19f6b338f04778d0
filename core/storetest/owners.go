package storetest

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

var ownerTests = []test{
	{"StoredOnCreate", testOwnerStoredOnCreate},
	{"KeptByWrites", testOwnerKeptByWrites},
	{"SetAgainAfterDelete", testOwnerSetAgainAfterDelete},
	{"OwnerOnly", testOwnerOnly},
	{"OwnerOnlyInBatch", testOwnerOnlyInBatch},
	{"OwnerOnlyInGroup", testOwnerOnlyInGroup},
	{"Replays", testOwnerReplays},
	{"Anonymous", testOwnerAnonymous},
	{"List", testOwnerList},
	{"ListPrefix", testOwnerListPrefix},
	{"Sync", testOwnerSync},
	{"SyncResume", testOwnerSyncResume},
	{"SyncWithoutOwner", testOwnerSyncWithoutOwner},
}

// as is c written for user (wire.Command.User).
func as(user string, c wire.Command) wire.Command {
	c.User = user
	return c
}

// ownerOnly is c under the owner write rule (wire.Command.OwnerOnly).
func ownerOnly(c wire.Command) wire.Command {
	c.OwnerOnly = true
	return c
}

// wantOwner fails unless d belongs to owner.
func wantOwner(tb testing.TB, what string, d *wire.Document, owner string) {
	tb.Helper()
	if d == nil {
		tb.Fatalf("%s: no document", what)
	}
	if d.Owner != owner {
		tb.Fatalf("%s: %s/%s v%d has owner %q, want %q", what, d.Collection, d.ID, d.Version, d.Owner, owner)
	}
}

// wantOwnedEverywhere fails unless the document's version in out, its event, the stored
// document, its recorded outcome and its event in the outbox all have owner.
func (h *harness) wantOwnedEverywhere(out wire.Outcome, evs []wire.ChangeEvent, owner string) {
	h.tb.Helper()
	wantOwner(h.tb, "outcome", out.Doc, owner)
	d := h.get(out.Doc.Collection, out.Doc.ID)
	wantOwner(h.tb, "Get", &d, owner)
	wantDoc(h.tb, d, *out.Doc)
	wantOutcome(h.tb, h.outcome(out.WriteID), out)
	var ev *wire.ChangeEvent
	for i := range evs {
		if evs[i].Collection == d.Collection && evs[i].ID == d.ID && evs[i].Version == d.Version {
			ev = &evs[i]
		}
	}
	if ev == nil {
		h.tb.Fatalf("no event of %s/%s v%d", d.Collection, d.ID, d.Version)
	}
	wantOwner(h.tb, "event", ev.Doc, owner)
	for _, p := range h.pending(h.now.Add(time.Hour), 10000) {
		if keyOf(p) == keyOf(*ev) {
			wantOwner(h.tb, "outbox event", p.Doc, owner)
			return
		}
	}
	h.tb.Fatalf("event %d/%d not in the outbox", ev.Partition, ev.Seq)
}

func testOwnerStoredOnCreate(h *harness) {
	outs, evs := h.mustApply(as("alice", h.put("notes", "p", `{"a":1}`)), as("bob", h.create("notes", "c", `{"b":1}`)))
	wantStatus(h.tb, outs[0], http.StatusCreated)
	wantStatus(h.tb, outs[1], http.StatusCreated)
	h.wantOwnedEverywhere(outs[0], evs, "alice")
	h.wantOwnedEverywhere(outs[1], evs, "bob")
}

func testOwnerKeptByWrites(h *harness) {
	h.mustApply(as("alice", h.put("notes", "n", `{"v":0}`)))
	for _, tt := range []struct {
		name string
		cmd  wire.Command
	}{
		{"put by the owner", as("alice", h.put("notes", "n", `{"v":1}`))},
		{"patch by the owner", ownerOnly(as("alice", h.patch("notes", "n", `{"w":1}`)))},
		{"put by another user", as("bob", h.put("notes", "n", `{"v":2}`))},
		{"patch by another user", as("bob", h.patch("notes", "n", `{"w":2}`))},
		{"anonymous patch", h.patch("notes", "n", `{"w":3}`)},
		{"put under If-Match by another user", as("bob", ifMatch(h.put("notes", "n", `{"v":3}`), 6))},
		{"delete by another user", as("bob", h.del("notes", "n"))}, // the tombstone keeps it
	} {
		h.t.Log(tt.name)
		outs, evs := h.mustApply(tt.cmd)
		h.wantOwnedEverywhere(outs[0], evs, "alice")
	}
	if d := h.get("notes", "n"); !d.Deleted || d.Version != 8 {
		h.tb.Fatalf("after the writes: deleted %t, version %d; want a tombstone at 8", d.Deleted, d.Version)
	}
}

func testOwnerSetAgainAfterDelete(h *harness) {
	h.mustApply(as("alice", h.put("notes", "n", `{"v":0}`)))
	h.mustApply(as("alice", h.del("notes", "n")))
	// Created again after a delete, the document belongs to whoever created it again, under
	// any rule: the tombstone is nobody's to defend.
	for _, tt := range []struct {
		name, owner string
		cmd         wire.Command
	}{
		{"put", "bob", ownerOnly(as("bob", h.put("notes", "n", `{"v":1}`)))},
		{"create", "carol", as("carol", h.create("notes", "n", `{"v":2}`))},
		{"anonymous put", "", h.put("notes", "n", `{"v":3}`)},
	} {
		h.t.Log(tt.name)
		outs, evs := h.mustApply(tt.cmd)
		wantStatus(h.tb, outs[0], http.StatusCreated)
		h.wantOwnedEverywhere(outs[0], evs, tt.owner)
		outs, evs = h.mustApply(h.del("notes", "n"))
		h.wantOwnedEverywhere(outs[0], evs, tt.owner)
	}
}

func testOwnerOnly(h *harness) {
	first, _ := h.mustApply(as("alice", h.put("notes", "n", `{"v":0}`)))
	stored := *first[0].Doc
	pending := h.pending(h.now.Add(time.Hour), 1000)
	for _, tt := range []struct {
		name string
		cmd  wire.Command
	}{
		{"put", h.put("notes", "n", `{"v":1}`)},
		{"patch", h.patch("notes", "n", `{"v":1}`)},
		{"delete", h.del("notes", "n")},
		{"create", h.create("notes", "n", `{"v":1}`)},
		// Forbidden before If-Match is looked at: a stale version tells a stranger nothing.
		{"put under a stale If-Match", ifMatch(h.put("notes", "n", `{"v":1}`), 7)},
		{"delete under If-Match: *", ifMatch(h.del("notes", "n"), wire.AnyVersion)},
	} {
		for _, user := range []string{"bob", ""} {
			out, evs := h.apply(ownerOnly(as(user, tt.cmd)))
			if len(evs) != 0 {
				h.tb.Fatalf("%s by %q: events %v", tt.name, user, eventKeys(evs))
			}
			wantProblem(h.tb, out[0], problem.Forbidden)
			wantOutcome(h.tb, h.outcome(tt.cmd.WriteID), out[0])
			tt.cmd.WriteID = h.next("w")
		}
	}
	wantDoc(h.tb, h.get("notes", "n"), stored)
	h.wantNoChange(pending)

	// The owner's own writes apply, and so do another user's to a document that is not live.
	outs, evs := h.mustApply(ownerOnly(as("alice", h.patch("notes", "n", `{"w":1}`))))
	h.wantOwnedEverywhere(outs[0], evs, "alice")
	outs, evs = h.mustApply(ownerOnly(as("bob", h.put("notes", "fresh", `{}`))))
	h.wantOwnedEverywhere(outs[0], evs, "bob")
}

func testOwnerOnlyInBatch(h *harness) {
	p := 1
	x, y := h.idIn("notes", "x", p), h.idIn("notes", "y", p)
	h.mustApply(as("alice", h.put("notes", x, `{"v":0}`)))
	pending := h.pending(h.now.Add(time.Hour), 1000)
	b := h.batch(
		ownerOnly(as("bob", h.patch("notes", x, `{"bob":1}`))), // forbidden
		ownerOnly(as("bob", h.put("notes", y, `{"v":0}`))),     // bob's new document
		ownerOnly(as("alice", h.patch("notes", x, `{"v":1}`))), // applies
		ownerOnly(as("alice", h.patch("notes", y, `{"a":1}`))), // forbidden: bob's since the second command
		ownerOnly(as("bob", h.del("notes", x))),                // forbidden
		ownerOnly(as("bob", h.patch("notes", y, `{"b":1}`))),   // applies
	)
	outs, evs := h.applyBatch(b)
	for _, i := range []int{0, 3, 4} {
		wantProblem(h.tb, outs[i], problem.Forbidden)
		wantOutcome(h.tb, h.outcome(outs[i].WriteID), outs[i])
	}
	wantStatus(h.tb, outs[1], http.StatusCreated)
	wantStatus(h.tb, outs[2], http.StatusOK)
	wantStatus(h.tb, outs[5], http.StatusOK)
	wantEventsOf(h.tb, evs, p, h.counters(pending)[p]+1, outs[1].Doc, outs[2].Doc, outs[5].Doc)
	h.wantOwnedEverywhere(outs[2], evs, "alice")
	h.wantOwnedEverywhere(outs[5], evs, "bob")
	wantData(h.tb, h.get("notes", x), `{"v":1}`)
	wantData(h.tb, h.get("notes", y), `{"v":0,"b":1}`)
	// A replay of the batch answers the same, forbidden ones included.
	h.wantReplay(b, outs)
}

func testOwnerOnlyInGroup(h *harness) {
	p := 2
	x := h.idIn("notes", "x", p)
	first := h.batchOf("prod", 1, as("alice", h.put("notes", x, `{"v":0}`)))
	second := h.batchOf("prod", 2,
		ownerOnly(as("bob", h.put("notes", x, `{"bob":1}`))),
		ownerOnly(as("alice", h.patch("notes", x, `{"v":1}`))),
	)
	// In one transaction, the second batch sees the owner the first gave the document (they
	// apply in sequence order, whatever their order in the group); a later transaction sees
	// the stored owner.
	results, evs := h.applyBatches(second, first)
	wantBatchStatus(h.tb, 0, results[0], core.BatchApplied)
	wantBatchStatus(h.tb, 1, results[1], core.BatchApplied)
	wantProblem(h.tb, results[0].Outcomes[0], problem.Forbidden)
	wantStatus(h.tb, results[0].Outcomes[1], http.StatusOK)
	if len(evs) != 2 {
		h.tb.Fatalf("%d events, want 2", len(evs))
	}
	h.wantOwnedEverywhere(results[0].Outcomes[1], evs, "alice")
	third := h.batchOf("prod", 3, ownerOnly(as("bob", h.del("notes", x))), as("bob", h.patch("notes", x, `{"b":1}`)))
	results, evs = h.applyBatches(third)
	wantProblem(h.tb, results[0].Outcomes[0], problem.Forbidden)
	wantStatus(h.tb, results[0].Outcomes[1], http.StatusOK)
	h.wantOwnedEverywhere(results[0].Outcomes[1], evs, "alice")
}

func testOwnerReplays(h *harness) {
	cmd := withKey(as("alice", h.put("notes", "k", `{"v":1}`)), "alice:key", "fp")
	b := h.batch(cmd, as("bob", h.put("notes", h.idIn("notes", "o", h.partition(cmd)), `{}`)))
	first, evs := h.applyBatch(b)
	h.wantOwnedEverywhere(first[0], evs, "alice")
	h.wantOwnedEverywhere(first[1], evs, "bob")
	h.wantReplay(b, first)
	// The same request again under its Idempotency-Key, with a new write id.
	retry := withKey(as("alice", h.put("notes", "k", `{"v":1}`)), "alice:key", "fp")
	outs, _ := h.apply(retry)
	want := replayed(first[0])
	want.WriteID = retry.WriteID
	wantOutcome(h.tb, outs[0], want)
	wantOwner(h.tb, "idempotent replay", outs[0].Doc, "alice")
	wantOwner(h.tb, "recorded replay", h.outcome(retry.WriteID).Doc, "alice")
}

func testOwnerAnonymous(h *harness) {
	outs, evs := h.mustApply(h.put("notes", "anon", `{"a":1}`), as("alice", h.put("notes", "mine", `{"a":1}`)))
	h.wantOwnedEverywhere(outs[0], evs, "")
	h.wantOwnedEverywhere(outs[1], evs, "alice")
	// Anonymous documents encode as they did before documents had owners; owned ones say
	// whose they are. (A store that made no encoding leaves nothing to check.)
	for _, tt := range []struct {
		what      string
		raw       []byte
		wantOwner bool
	}{
		{"anonymous outcome", outs[0].Encoded, false},
		{"owned outcome", outs[1].Encoded, true},
	} {
		if len(tt.raw) > 0 && bytes.Contains(tt.raw, []byte(`"owner"`)) != tt.wantOwner {
			h.tb.Fatalf("%s encoded %s", tt.what, tt.raw)
		}
	}
	for _, ev := range evs {
		if len(ev.Encoded) > 0 && bytes.Contains(ev.Encoded, []byte(`"owner"`)) != (ev.ID == "mine") {
			h.tb.Fatalf("event of %s encoded %s", ev.ID, ev.Encoded)
		}
	}
	// An anonymous document is in lists without an owner and in no owner's list.
	wantIDs(h.tb, "all", h.listAll(wire.ListQuery{Collection: "notes"}), []string{"anon", "mine"})
	wantIDs(h.tb, "alice's", h.listAll(wire.ListQuery{Collection: "notes", Owner: "alice"}), []string{"mine"})
}

// ownedFixture writes, across every partition, documents of alice, bob and nobody in
// collections notes and posts, some updated, some deleted, and returns the live documents of
// each owner in notes.
func (h *harness) ownedFixture() (live map[string][]wire.Document, evs []wire.ChangeEvent) {
	h.tb.Helper()
	users := []string{"alice", "bob", ""}
	for round := range 3 {
		var cmds []wire.Command
		for p := range h.parts {
			for _, u := range users {
				for _, c := range []string{"notes", "posts"} {
					id := h.idIn(c, fmt.Sprintf("%s%d-%d-", u, round, p), p)
					cmds = append(cmds, as(u, h.put(c, id, fmt.Sprintf(`{"u":%q}`, u))))
				}
			}
		}
		_, e := h.mustApply(cmds...)
		evs = append(evs, e...)
	}
	// Updates by others keep the owner and move updated_at; deletes leave tombstones.
	var cmds []wire.Command
	for p := range h.parts {
		cmds = append(cmds,
			as("bob", h.patch("notes", h.idIn("notes", fmt.Sprintf("alice0-%d-", p), p), `{"by":"bob"}`)),
			as("alice", h.del("notes", h.idIn("notes", fmt.Sprintf("alice1-%d-", p), p))),
			as("alice", h.del("notes", h.idIn("notes", fmt.Sprintf("bob1-%d-", p), p))),
		)
	}
	_, e := h.mustApply(cmds...)
	evs = append(evs, e...)
	live = map[string][]wire.Document{}
	for _, d := range h.listAll(wire.ListQuery{Collection: "notes", Limit: wire.MaxListLimit}) {
		live[d.Owner] = append(live[d.Owner], d)
	}
	for _, u := range users {
		if len(live[u]) < 2*h.parts {
			h.tb.Fatalf("fixture: %d live notes of %q", len(live[u]), u)
		}
	}
	return live, evs
}

func testOwnerList(h *harness) {
	live, _ := h.ownedFixture()
	for _, owner := range []string{"alice", "bob"} {
		for _, order := range orders {
			h.subtest(owner+"/"+string(order), func(h *harness) {
				for _, limit := range []int{1, 2, 3, 100} {
					got := h.listAll(wire.ListQuery{Collection: "notes", Order: order, Limit: limit, Owner: owner})
					wantIDs(h.tb, fmt.Sprintf("pages of %d", limit), got, inOrder(live[owner], order))
					for _, d := range got {
						wantDoc(h.tb, d, h.get("notes", d.ID))
					}
				}
			})
		}
	}
	h.subtest("nobody", func(h *harness) {
		for _, order := range orders {
			page := h.list(wire.ListQuery{Collection: "notes", Order: order, Owner: "carol"})
			if len(page.Items) != 0 || page.More {
				h.tb.Fatalf("order %s: %d items, More %t for an owner of nothing", order, len(page.Items), page.More)
			}
		}
	})
	h.subtest("without owner", func(h *harness) {
		var all []wire.Document
		for _, docs := range live {
			all = append(all, docs...)
		}
		got := h.listAll(wire.ListQuery{Collection: "notes", Order: wire.OrderUpdatedAt, Limit: 5})
		wantIDs(h.tb, "every live note", got, inOrder(all, wire.OrderUpdatedAt))
	})
}

func testOwnerListPrefix(h *harness) {
	var mine []wire.Document
	for i, id := range []string{"app", "apple", "b-app", "app-1", "ap", "app-2"} {
		outs, _ := h.mustApply(as("alice", h.put("notes", id, `{}`)))
		if i != 5 {
			mine = append(mine, *outs[0].Doc)
		}
	}
	h.mustApply(as("alice", h.del("notes", "app-2")))
	h.mustApply(as("bob", h.put("notes", "app-bob", `{}`)), h.put("notes", "app-anon", `{}`))
	for _, prefix := range []string{"app", "ap", "b", "z"} {
		var want []wire.Document
		for _, d := range mine {
			if len(d.ID) >= len(prefix) && d.ID[:len(prefix)] == prefix {
				want = append(want, d)
			}
		}
		for _, order := range orders {
			for _, limit := range []int{1, 2, 100} {
				got := h.listAll(wire.ListQuery{Collection: "notes", Order: order, Limit: limit, IDPrefix: prefix, Owner: "alice"})
				wantIDs(h.tb, fmt.Sprintf("prefix %q, order %s, pages of %d", prefix, order, limit), got, inOrder(want, order))
			}
		}
	}
}

// wantSynced fails unless changes are exactly the current versions of the documents of the
// collections of q that q's user may see: owned ones' of q.Owner only, the others' all.
func (h *harness) wantSynced(changes []wire.Change, q wire.SyncQuery, all []wire.ChangeEvent) {
	h.tb.Helper()
	var want []docKey
	seen := map[docKey]bool{}
	for _, ev := range all {
		k := docKey{ev.Collection, ev.ID}
		if seen[k] || !slices.Contains(q.Collections, ev.Collection) {
			continue
		}
		seen[k] = true
		d := h.get(ev.Collection, ev.ID)
		if !slices.Contains(q.Owned, d.Collection) || d.Owner == q.Owner && q.Owner != "" {
			want = append(want, k)
		}
	}
	h.wantChanges(changes, want)
	for _, c := range changes {
		if slices.Contains(q.Owned, c.Doc.Collection) && c.Doc.Owner != q.Owner {
			h.tb.Fatalf("%s/%s of %q synced for %q", c.Doc.Collection, c.Doc.ID, c.Doc.Owner, q.Owner)
		}
	}
}

func testOwnerSync(h *harness) {
	_, evs := h.ownedFixture()
	for _, owner := range []string{"alice", "bob"} {
		q := wire.SyncQuery{Collections: []string{"notes", "posts"}, Owned: []string{"notes", "other"}, Owner: owner}
		for _, limit := range []int{1, 2, 3, 7, 100} {
			h.subtest(fmt.Sprintf("%s/%d", owner, limit), func(h *harness) {
				q.Limit = limit
				changes, next := h.syncAll(q)
				h.wantSynced(changes, q, evs)
				// Every partition ends at its counter: the others' changes are passed, not
				// waited on.
				if c := h.counters(evs); !slices.Equal(next, c) {
					h.tb.Fatalf("final Next %v, want the partition counters %v", next, c)
				}
				// Tombstones of the owner's documents are synced, with their owner.
				tombstones := 0
				for _, c := range changes {
					if c.Doc.Collection == "notes" && c.Doc.Deleted {
						tombstones++
						wantOwner(h.tb, "tombstone", &c.Doc, owner)
					}
				}
				if tombstones != h.parts {
					h.tb.Fatalf("%d tombstones of %s's notes synced, want %d", tombstones, owner, h.parts)
				}
			})
		}
	}
	// Both collections owned, or only the one not asked for.
	for _, owned := range [][]string{{"notes", "posts"}, {"other"}} {
		h.subtest("owned "+strings.Join(owned, "+"), func(h *harness) {
			q := wire.SyncQuery{Collections: []string{"notes", "posts"}, Owned: owned, Owner: "alice", Limit: 5}
			changes, _ := h.syncAll(q)
			h.wantSynced(changes, q, evs)
		})
	}
}

// testOwnerSyncResume resumes an owner's sync while everyone keeps writing: each of the
// owner's changes arrives once, nobody else's in the owned collection ever does.
func testOwnerSyncResume(h *harness) {
	_, evs := h.ownedFixture()
	q := wire.SyncQuery{Collections: []string{"notes", "posts"}, Owned: []string{"notes"}, Owner: "alice", Limit: 4}
	_, q.After = h.syncAll(q)
	for round := range 4 {
		var cmds []wire.Command
		for p := range h.parts {
			cmds = append(cmds,
				as("bob", h.put("notes", h.idIn("notes", fmt.Sprintf("bob-r%d-", round), p), `{}`)),
				as("alice", h.put("notes", h.idIn("notes", fmt.Sprintf("alice-r%d-", round), p), `{}`)),
				as("bob", h.put("notes", h.idIn("notes", fmt.Sprintf("bob-s%d-", round), p), `{}`)),
				as("bob", h.put("posts", h.idIn("posts", fmt.Sprintf("bob-r%d-", round), p), `{}`)),
			)
		}
		_, e := h.mustApply(cmds...)
		changes, next := h.syncAll(q)
		h.wantSynced(changes, q, e)
		evs = append(evs, e...)
		if c := h.counters(evs); !slices.Equal(next, c) {
			h.tb.Fatalf("round %d: Next %v, want the partition counters %v", round, next, c)
		}
		q.After = next
	}
}

func testOwnerSyncWithoutOwner(h *harness) {
	_, evs := h.ownedFixture()
	// An owned collection without an owner shows nothing, not the anonymous documents.
	q := wire.SyncQuery{Collections: []string{"notes", "posts"}, Owned: []string{"notes"}, Limit: 10}
	changes, next := h.syncAll(q)
	h.wantSynced(changes, q, evs)
	for _, c := range changes {
		if c.Doc.Collection == "notes" {
			h.tb.Fatalf("%s/%s of %q synced without an owner", c.Doc.Collection, c.Doc.ID, c.Doc.Owner)
		}
	}
	if c := h.counters(evs); !slices.Equal(next, c) {
		h.tb.Fatalf("final Next %v, want the partition counters %v", next, c)
	}
	// Without Owned, every document of every owner.
	q = wire.SyncQuery{Collections: []string{"notes"}, Limit: 10}
	changes, _ = h.syncAll(q)
	h.wantSynced(changes, q, evs)
}
