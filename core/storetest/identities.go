package storetest

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/perchhq/perch/core"
)

var identityTests = []test{
	{"CreateAndFind", testIdentityCreateAndFind},
	{"CreateTaken", testIdentityCreateTaken},
	{"Link", testIdentityLink},
	{"CreateConcurrent", testIdentityCreateConcurrent},
	{"DeletedWithUser", testIdentityDeletedWithUser},
}

func (h *harness) userByIdentity(provider, subject string) (string, error) {
	h.tb.Helper()
	return h.store.UserByIdentity(h.ctx, provider, subject)
}

func testIdentityCreateAndFind(h *harness) {
	if _, err := h.userByIdentity("google", "sub-1"); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("UserByIdentity of nothing: %v, want core.ErrNotFound", err)
	}
	now := h.tick()
	u := core.User{ID: h.next("user"), Email: "oidc:google:sub-1", CreatedAt: now, UpdatedAt: now}
	id := core.Identity{Provider: "google", Subject: "sub-1", Created: now}
	if err := h.store.CreateUserWithIdentity(h.ctx, u, id); err != nil {
		h.tb.Fatalf("CreateUserWithIdentity: %v", err)
	}
	// The same call again (a retry after a lost commit) is success.
	if err := h.store.CreateUserWithIdentity(h.ctx, u, id); err != nil {
		h.tb.Fatalf("CreateUserWithIdentity again: %v", err)
	}
	if got, err := h.userByIdentity("google", "sub-1"); err != nil || got != u.ID {
		h.tb.Fatalf("UserByIdentity = %q, %v; want %q", got, err, u.ID)
	}
	got, err := h.store.UserByID(h.ctx, u.ID)
	if err != nil {
		h.tb.Fatalf("UserByID: %v", err)
	}
	wantUser(h.tb, got, u)
	// Provider and subject compare byte for byte, each on its own.
	for _, k := range [][2]string{{"Google", "sub-1"}, {"google", "SUB-1"}, {"apple", "sub-1"}, {"googles", "ub-1"}} {
		if _, err := h.userByIdentity(k[0], k[1]); !errors.Is(err, core.ErrNotFound) {
			h.tb.Fatalf("UserByIdentity(%q, %q): %v, want core.ErrNotFound", k[0], k[1], err)
		}
	}
}

func testIdentityCreateTaken(h *harness) {
	now := h.tick()
	ann := h.newUser("ann@example.com", now)
	u := core.User{ID: h.next("user"), Email: "oidc:google:s", CreatedAt: now, UpdatedAt: now}
	id := core.Identity{Provider: "google", Subject: "s", Created: now}
	if err := h.store.CreateUserWithIdentity(h.ctx, u, id); err != nil {
		h.tb.Fatalf("CreateUserWithIdentity: %v", err)
	}
	// The identity taken: nothing is stored, not even the user.
	other := core.User{ID: h.next("user"), Email: "other@example.com", CreatedAt: now, UpdatedAt: now}
	if err := h.store.CreateUserWithIdentity(h.ctx, other, id); !errors.Is(err, core.ErrExists) {
		h.tb.Fatalf("CreateUserWithIdentity of a linked identity: %v, want core.ErrExists", err)
	}
	if _, err := h.store.UserByID(h.ctx, other.ID); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("the refused user was stored: %v", err)
	}
	// The email taken: nothing is stored, not even the link.
	clash := core.User{ID: h.next("user"), Email: ann.Email, CreatedAt: now, UpdatedAt: now}
	if err := h.store.CreateUserWithIdentity(h.ctx, clash, core.Identity{Provider: "google", Subject: "t", Created: now}); !errors.Is(err, core.ErrExists) {
		h.tb.Fatalf("CreateUserWithIdentity with a taken email: %v, want core.ErrExists", err)
	}
	if _, err := h.userByIdentity("google", "t"); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("the refused identity was linked: %v", err)
	}
}

func testIdentityLink(h *harness) {
	now := h.tick()
	ann, bob := h.newUser("ann@example.com", now), h.newUser("bob@example.com", now)
	id := core.Identity{Provider: "apple", Subject: "000123.abc", UserID: ann.ID, Created: now}
	if err := h.store.LinkIdentity(h.ctx, id); err != nil {
		h.tb.Fatalf("LinkIdentity: %v", err)
	}
	if err := h.store.LinkIdentity(h.ctx, id); err != nil {
		h.tb.Fatalf("LinkIdentity again: %v", err)
	}
	if got, err := h.userByIdentity("apple", "000123.abc"); err != nil || got != ann.ID {
		h.tb.Fatalf("UserByIdentity = %q, %v; want %q", got, err, ann.ID)
	}
	id.UserID = bob.ID
	if err := h.store.LinkIdentity(h.ctx, id); !errors.Is(err, core.ErrExists) {
		h.tb.Fatalf("LinkIdentity to another user: %v, want core.ErrExists", err)
	}
	id.UserID, id.Subject = h.next("user"), "other"
	if err := h.store.LinkIdentity(h.ctx, id); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("LinkIdentity to no user: %v, want core.ErrNotFound", err)
	}
}

// testIdentityCreateConcurrent: of 8 first logins of one identity at once, one creates its
// user and the others find it taken.
func testIdentityCreateConcurrent(h *harness) {
	now := h.tick()
	var ok, exists atomic.Int32
	var wg sync.WaitGroup
	ids := make([]string, 8)
	for i := range ids {
		ids[i] = h.next("user")
	}
	for i := range ids {
		wg.Go(func() {
			u := core.User{ID: ids[i], Email: "oidc:google:race-" + ids[i], CreatedAt: now, UpdatedAt: now}
			switch err := h.store.CreateUserWithIdentity(h.ctx, u, core.Identity{Provider: "google", Subject: "race", Created: now}); {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, core.ErrExists):
				exists.Add(1)
			default:
				h.tb.Errorf("CreateUserWithIdentity: %v", err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || exists.Load() != 7 {
		h.tb.Fatalf("%d created and %d found it taken, want 1 and 7", ok.Load(), exists.Load())
	}
	winner, err := h.userByIdentity("google", "race")
	if err != nil {
		h.tb.Fatal(err)
	}
	for _, id := range ids {
		_, err := h.store.UserByID(h.ctx, id)
		if (id == winner) != (err == nil) {
			h.tb.Fatalf("user %s (winner %s): %v", id, winner, err)
		}
	}
}

func testIdentityDeletedWithUser(h *harness) {
	now := h.tick()
	u := core.User{ID: h.next("user"), Email: "oidc:google:gone", CreatedAt: now, UpdatedAt: now}
	if err := h.store.CreateUserWithIdentity(h.ctx, u, core.Identity{Provider: "google", Subject: "gone", Created: now}); err != nil {
		h.tb.Fatal(err)
	}
	if err := h.store.DeleteUser(h.ctx, u.ID, h.tick()); err != nil {
		h.tb.Fatalf("DeleteUser: %v", err)
	}
	if _, err := h.userByIdentity("google", "gone"); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("the identity of a deleted user: %v, want core.ErrNotFound", err)
	}
	// The identity is free again: the next login through it starts a new account.
	again := core.User{ID: h.next("user"), Email: u.Email, CreatedAt: now, UpdatedAt: now}
	if err := h.store.CreateUserWithIdentity(h.ctx, again, core.Identity{Provider: "google", Subject: "gone", Created: now}); err != nil {
		h.tb.Fatalf("CreateUserWithIdentity after the deletion: %v", err)
	}
}
