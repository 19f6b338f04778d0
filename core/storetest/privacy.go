package storetest

import (
	"errors"
	"fmt"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/internal/wire"
)

// The reads and deletions of a user's data (GET /v1/me/export, DELETE /v1/me).
var privacyTests = []test{
	{"OwnedAcrossCollections", testOwnedAcrossCollections},
	{"OwnedPaging", testOwnedPaging},
	{"DeleteUser", testDeleteUser},
}

func (h *harness) owned(q wire.OwnedQuery) wire.ListPage {
	h.tb.Helper()
	page, err := h.store.Owned(h.ctx, q)
	if err != nil {
		h.tb.Fatalf("Owned(%+v): %v", q, err)
	}
	return page
}

func refs(docs []wire.Document) []string {
	out := make([]string, 0, len(docs))
	for _, d := range docs {
		out = append(out, d.Collection+"/"+d.ID)
	}
	return out
}

// testOwnedAcrossCollections: every live document of the owner, in any collection, in
// (collection, id) order; not tombstones, not other owners' or anonymous documents.
func testOwnedAcrossCollections(h *harness) {
	h.mustApply(
		as("ann", h.put("notes", "b", `{"n":1}`)), as("ann", h.put("notes", "a", `{"n":2}`)),
		as("ann", h.put("albums", "z", `{"n":3}`)), as("ann", h.put("todos", "gone", `{"n":4}`)),
		as("bob", h.put("notes", "c", `{"n":5}`)), h.put("notes", "anon", `{"n":6}`),
		// Bob's write to Ann's document keeps it Ann's.
		as("bob", h.put("notes", "a", `{"n":7}`)),
	)
	h.mustApply(as("ann", h.del("todos", "gone")))
	page := h.owned(wire.OwnedQuery{Owner: "ann", Limit: 100})
	if got, want := fmt.Sprint(refs(page.Items)), "[albums/z notes/a notes/b]"; got != want || page.More {
		h.tb.Fatalf("Owned(ann): %s more=%v, want %s", got, page.More, want)
	}
	for i := range page.Items {
		wantOwner(h.tb, "Owned", &page.Items[i], "ann")
		wantDoc(h.tb, page.Items[i], h.get(page.Items[i].Collection, page.Items[i].ID))
	}
	if got := refs(h.owned(wire.OwnedQuery{Owner: "bob", Limit: 100}).Items); fmt.Sprint(got) != "[notes/c]" {
		h.tb.Fatalf("Owned(bob): %v", got)
	}
	for _, owner := range []string{"", "nobody"} {
		if got := h.owned(wire.OwnedQuery{Owner: owner, Limit: 100}); len(got.Items) != 0 || got.More {
			h.tb.Fatalf("Owned(%q): %v", owner, refs(got.Items))
		}
	}
}

// testOwnedPaging: pages resume after the last document of the one before, across
// collections, without skipping or repeating any.
func testOwnedPaging(h *harness) {
	var want []string
	for _, c := range []string{"a", "b", "c"} {
		for i := range 4 {
			id := fmt.Sprintf("d%d", i)
			h.mustApply(as("ann", h.put(c, id, `{}`)))
			want = append(want, c+"/"+id)
		}
	}
	var got []string
	var after *wire.DocRef
	for pages := 0; ; pages++ {
		if pages > 20 {
			h.tb.Fatal("Owned does not end")
		}
		page := h.owned(wire.OwnedQuery{Owner: "ann", After: after, Limit: 5})
		got = append(got, refs(page.Items)...)
		if !page.More {
			break
		}
		last := page.Items[len(page.Items)-1]
		after = &wire.DocRef{Collection: last.Collection, ID: last.ID}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		h.tb.Fatalf("pages gave %v, want %v", got, want)
	}
}

// testDeleteUser: the user is gone, their sessions end, the edges are told; deleting again is
// ErrNotFound; other users are untouched.
func testDeleteUser(h *harness) {
	t0 := h.tick()
	ann, bob := h.newUser("ann@example.com", t0), h.newUser("bob@example.com", t0)
	anns, bobs := h.login(ann.ID, t0), h.login(bob.ID, t0)
	if _, err := h.store.NoteLoginFailure(h.ctx, ann.Email, t0, 15*60e9); err != nil {
		h.tb.Fatal(err)
	}
	gone := h.tick()
	if err := h.store.DeleteUser(h.ctx, ann.ID, gone); err != nil {
		h.tb.Fatalf("DeleteUser: %v", err)
	}
	for _, lookup := range []func() (core.User, error){
		func() (core.User, error) { return h.store.UserByID(h.ctx, ann.ID) },
		func() (core.User, error) { return h.store.UserByEmail(h.ctx, ann.Email) },
	} {
		if _, err := lookup(); !errors.Is(err, core.ErrNotFound) {
			h.tb.Fatalf("lookup of a deleted user: %v, want ErrNotFound", err)
		}
	}
	now := h.tick()
	if use := h.useToken(anns.Hash, successor(anns, now), now); use.Result != core.RefreshInvalid {
		h.tb.Fatalf("a deleted user's refresh token: %s, want invalid", resultNames[use.Result])
	}
	wantUse(h.tb, h.useToken(bobs.Hash, successor(bobs, now), now), core.RefreshRotated, bobs)
	if n, err := h.store.LoginFailures(h.ctx, ann.Email, now, 15*60e9); err != nil || n != 0 {
		h.tb.Fatalf("a deleted user's login failures: %d %v", n, err)
	}
	wantRevocations(h.tb, h.revocations(gone), []core.Revocation{{Kind: core.RevokeSubject, ID: ann.ID, At: gone}})
	if err := h.store.DeleteUser(h.ctx, ann.ID, h.tick()); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("DeleteUser again: %v, want ErrNotFound", err)
	}
	// The email may sign up again, as a new user.
	again := h.newUser("ann@example.com", h.tick())
	if again.ID == ann.ID {
		h.tb.Fatal("the same id")
	}
}
