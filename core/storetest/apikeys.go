package storetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/perchhq/perch/core"
)

var apiKeyTests = []test{
	{"CreateAndList", testAPIKeysCreateAndList},
	{"CreateExists", testAPIKeysCreateExists},
	{"Revoke", testAPIKeysRevoke},
}

// newAPIKey returns a key made at created, with a hash of its own.
func (h *harness) newAPIKey(name string, created time.Time) core.APIKey {
	id := h.next("ak")
	sum := sha256.Sum256([]byte(id))
	return core.APIKey{ID: id, Name: name, Hash: sum[:], Created: created}
}

func wantAPIKey(tb testing.TB, got, want core.APIKey) {
	tb.Helper()
	if got.ID != want.ID || got.Name != want.Name || !bytes.Equal(got.Hash, want.Hash) ||
		!sameTime(got.Created, want.Created) || !sameTime(got.Revoked, want.Revoked) {
		tb.Fatalf("api key %+v, want %+v (times in UTC to the microsecond)", got, want)
	}
}

func testAPIKeysCreateAndList(h *harness) {
	if keys, err := h.store.APIKeys(h.ctx); err != nil || len(keys) != 0 {
		h.tb.Fatalf("APIKeys of an empty store: %v, %v", keys, err)
	}
	t0 := h.tick()
	late := h.newAPIKey("late app", t0.Add(time.Second))
	a := h.newAPIKey("ios app ✓", t0)
	b := h.newAPIKey("android", t0) // the same time as a: ordered by id
	for _, k := range []core.APIKey{late, b, a} {
		if err := h.store.CreateAPIKey(h.ctx, k); err != nil {
			h.tb.Fatalf("CreateAPIKey(%s): %v", k.ID, err)
		}
	}
	keys, err := h.store.APIKeys(h.ctx)
	if err != nil {
		h.tb.Fatal(err)
	}
	first, second := a, b
	if b.ID < a.ID {
		first, second = b, a
	}
	want := []core.APIKey{first, second, late}
	if len(keys) != len(want) {
		h.tb.Fatalf("%d keys, want %d: %+v", len(keys), len(want), keys)
	}
	for i := range want {
		wantAPIKey(h.tb, keys[i], want[i])
		if !keys[i].Live() || keys[i].Created.Location() != time.UTC {
			h.tb.Fatalf("key %s: live %v, created in %v", keys[i].ID, keys[i].Live(), keys[i].Created.Location())
		}
	}
}

func testAPIKeysCreateExists(h *harness) {
	k := h.newAPIKey("app", h.tick())
	if err := h.store.CreateAPIKey(h.ctx, k); err != nil {
		h.tb.Fatal(err)
	}
	// The same key again (a retry of a create whose answer was lost) is no error.
	if err := h.store.CreateAPIKey(h.ctx, k); err != nil {
		h.tb.Fatalf("CreateAPIKey of a key stored already: %v", err)
	}
	sameID := h.newAPIKey("other", h.tick())
	sameID.ID = k.ID
	if err := h.store.CreateAPIKey(h.ctx, sameID); !errors.Is(err, core.ErrExists) {
		h.tb.Fatalf("CreateAPIKey with a taken id: %v, want ErrExists", err)
	}
	sameHash := h.newAPIKey("other", h.tick())
	sameHash.Hash = k.Hash
	if err := h.store.CreateAPIKey(h.ctx, sameHash); !errors.Is(err, core.ErrExists) {
		h.tb.Fatalf("CreateAPIKey with a taken hash: %v, want ErrExists", err)
	}
	if keys, err := h.store.APIKeys(h.ctx); err != nil || len(keys) != 1 {
		h.tb.Fatalf("APIKeys: %d keys, %v; want the one", len(keys), err)
	}
}

func testAPIKeysRevoke(h *harness) {
	a, b := h.newAPIKey("a", h.tick()), h.newAPIKey("b", h.tick())
	for _, k := range []core.APIKey{a, b} {
		if err := h.store.CreateAPIKey(h.ctx, k); err != nil {
			h.tb.Fatal(err)
		}
	}
	at := h.tick()
	got, err := h.store.RevokeAPIKey(h.ctx, a.ID, at)
	if err != nil {
		h.tb.Fatal(err)
	}
	a.Revoked = at
	wantAPIKey(h.tb, got, a)
	if got.Live() {
		h.tb.Fatal("a revoked key is live")
	}
	// A second revocation keeps the first time.
	if got, err = h.store.RevokeAPIKey(h.ctx, a.ID, h.tick()); err != nil {
		h.tb.Fatal(err)
	}
	wantAPIKey(h.tb, got, a)
	keys, err := h.store.APIKeys(h.ctx)
	if err != nil || len(keys) != 2 {
		h.tb.Fatalf("APIKeys: %d keys, %v", len(keys), err)
	}
	wantAPIKey(h.tb, keys[0], a)
	wantAPIKey(h.tb, keys[1], b)
	if _, err := h.store.RevokeAPIKey(h.ctx, "ak_missing", h.tick()); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("RevokeAPIKey of an unknown id: %v, want ErrNotFound", err)
	}
}
