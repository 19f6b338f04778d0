package storetest

import (
	"errors"
	"net/http"
	"time"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

var expireTests = []test{
	{"ExpireWrites", testExpireWrites},
}

var lifecycleTests = []test{
	{"UseAfterClose", testUseAfterClose},
}

func testExpireWrites(h *harness) {
	old := h.now.Add(-48 * time.Hour)
	x := withKey(h.put("notes", "x", `{"v":1}`), "k-old", "fp")
	y := h.put("notes", "y", `{}`)
	h.applyAt(old, x, y)
	delY := h.del("notes", "y")
	h.applyAt(old.Add(time.Second), delY)
	z := withKey(h.put("notes", "z", `{}`), "k-new", "fp")
	h.mustApply(z)
	pending := h.pending(h.now.Add(time.Hour), 1000)

	n, err := h.store.Expire(h.ctx, h.now.Add(-24*time.Hour))
	if err != nil {
		h.tb.Fatalf("Expire: %v", err)
	}
	if n != 4 { // x, y, delY and the key k-old
		h.tb.Fatalf("Expire removed %d records, want 4 (3 writes, 1 key)", n)
	}
	for _, c := range []wire.Command{x, y, delY} {
		if o, err := h.store.WriteOutcome(h.ctx, c.WriteID); !errors.Is(err, core.ErrNotFound) {
			h.tb.Fatalf("WriteOutcome(%s) after Expire = %+v, %v; want core.ErrNotFound", c.WriteID, o, err)
		}
	}
	if o := h.outcome(z.WriteID); o.Status != http.StatusCreated {
		h.tb.Fatalf("recent write's outcome: status %d, want 201", o.Status)
	}
	// Documents, tombstones and the outbox are kept.
	if d := h.get("notes", "x"); d.Version != 1 || d.Deleted {
		h.tb.Fatalf("x after Expire: version %d deleted %t", d.Version, d.Deleted)
	}
	if d := h.get("notes", "y"); d.Version != 2 || !d.Deleted {
		h.tb.Fatalf("y after Expire: version %d deleted %t, want the tombstone", d.Version, d.Deleted)
	}
	wantSameEvents(h.tb, h.pending(h.now.Add(time.Hour), 1000), pending)

	// The expired key is forgotten: reusing it with another request applies it. The recent
	// key is still enforced.
	wantStatus(h.tb, h.one(withKey(h.put("notes", "x", `{"v":2}`), "k-old", "other")), http.StatusOK)
	wantProblem(h.tb, h.one(withKey(h.put("notes", "z", `{"v":2}`), "k-new", "other")), problem.IdempotencyMismatch)

	if n, err := h.store.Expire(h.ctx, h.now.Add(-24*time.Hour)); err != nil || n != 0 {
		h.tb.Fatalf("second Expire: %d, %v; want 0, nil", n, err)
	}
	if n, err := h.store.Expire(h.ctx, h.now.Add(time.Hour)); err != nil || n != 5 {
		// z, k-new, the k-old reuse and its key, the mismatch
		h.tb.Fatalf("Expire of everything: %d, %v; want 5, nil", n, err)
	}
	if _, err := h.store.WriteOutcome(h.ctx, z.WriteID); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("WriteOutcome after expiring everything: %v, want core.ErrNotFound", err)
	}
}

func testUseAfterClose(h *harness) {
	h.mustApply(h.put("notes", "x", `{}`))
	if err := h.store.Close(); err != nil {
		h.tb.Fatalf("Close: %v", err)
	}
	cmd := h.put("notes", "y", `{}`)
	for _, tt := range []struct {
		name string
		call func() error
	}{
		{"Get", func() error { _, err := h.store.Get(h.ctx, "notes", "x"); return err }},
		{"List", func() error { _, err := h.store.List(h.ctx, wire.ListQuery{Collection: "notes"}); return err }},
		{"Sync", func() error {
			_, err := h.store.Sync(h.ctx, wire.SyncQuery{Collections: []string{"notes"}})
			return err
		}},
		{"WriteOutcome", func() error { _, err := h.store.WriteOutcome(h.ctx, cmd.WriteID); return err }},
		{"ApplyBatch", func() error { _, _, err := h.store.ApplyBatch(h.ctx, h.batch(cmd), h.now); return err }},
		{"ApplyBatches", func() error {
			_, _, err := h.store.ApplyBatches(h.ctx, []*wire.Batch{h.batch(cmd)}, h.now)
			return err
		}},
		{"PendingEvents", func() error { _, err := h.store.PendingEvents(h.ctx, h.now.Add(time.Hour), 10); return err }},
		{"DeleteEvents", func() error {
			return h.store.DeleteEvents(h.ctx, []wire.ChangeEvent{{Partition: 0, Seq: 1}})
		}},
		{"Expire", func() error { _, err := h.store.Expire(h.ctx, h.now); return err }},
		{"CreateUser", func() error {
			return h.store.CreateUser(h.ctx, core.User{ID: "u", Email: "e", PasswordHash: phc, CreatedAt: h.now, UpdatedAt: h.now})
		}},
		{"UserByEmail", func() error { _, err := h.store.UserByEmail(h.ctx, "e"); return err }},
		{"UserByID", func() error { _, err := h.store.UserByID(h.ctx, "u"); return err }},
		{"SetPasswordHash", func() error { return h.store.SetPasswordHash(h.ctx, "u", phc, h.now) }},
		{"NoteLoginFailure", func() error { _, err := h.store.NoteLoginFailure(h.ctx, "e", h.now, time.Minute); return err }},
		{"LoginFailures", func() error { _, err := h.store.LoginFailures(h.ctx, "e", h.now, time.Minute); return err }},
		{"ClearLoginFailures", func() error { return h.store.ClearLoginFailures(h.ctx, "e") }},
		{"SigningKeys", func() error { _, err := h.store.SigningKeys(h.ctx); return err }},
		{"UpdateSigningKeys", func() error {
			_, err := h.store.UpdateSigningKeys(h.ctx, func(cur []core.StoredKey) ([]core.StoredKey, bool, error) {
				return cur, false, nil
			})
			return err
		}},
		{"CreateRefreshToken", func() error {
			return h.store.CreateRefreshToken(h.ctx, refreshToken("u", "f", h.now, time.Hour, time.Hour))
		}},
		{"UseRefreshToken", func() error {
			_, err := h.store.UseRefreshToken(h.ctx, randomHash(), refreshToken("u", "f", h.now, time.Hour, time.Hour), h.now)
			return err
		}},
		{"RevokeRefreshFamily", func() error { _, err := h.store.RevokeRefreshFamily(h.ctx, randomHash(), h.now); return err }},
		{"RevokeUser", func() error { return h.store.RevokeUser(h.ctx, "u", h.now) }},
		{"Revocations", func() error { _, err := h.store.Revocations(h.ctx, h.now); return err }},
		{"ExpireAccounts", func() error { _, err := h.store.ExpireAccounts(h.ctx, h.now); return err }},
	} {
		if err := tt.call(); err == nil {
			h.tb.Errorf("%s after Close: no error", tt.name)
		} else if errors.Is(err, core.ErrNotFound) {
			h.tb.Errorf("%s after Close: %v, which says not found rather than closed", tt.name, err)
		}
	}
}
