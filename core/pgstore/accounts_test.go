package pgstore_test

import (
	"context"
	"crypto/rand"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/internal/pgtest"
)

// TestAmbiguousAccountCommits: account transactions are retried after an ambiguous commit, so
// a retry must give the answer of the attempt that did commit. Without that, a signup or a
// login would fail with "exists" on their own rows, and a refresh would find its token used,
// call it reused and revoke the family: the client logged out for a lost COMMIT answer.
func TestAmbiguousAccountCommits(t *testing.T) {
	s := open(t, pgtest.DSN(t))
	ctx := t.Context()
	now := time.Now().UTC().Truncate(time.Microsecond)
	var lose atomic.Bool // the next COMMIT commits and reports 40003
	s.InjectCommitFault(func(ctx context.Context, tx pgx.Tx) error {
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		if lose.CompareAndSwap(true, false) {
			return ambiguousErr()
		}
		return nil
	})
	hash := func() []byte {
		b := make([]byte, 32)
		rand.Read(b)
		return b
	}

	lose.Store(true)
	u := core.User{ID: "user-1", Email: "ann@example.com", PasswordHash: "phc", CreatedAt: now, UpdatedAt: now}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatalf("CreateUser after a lost commit answer: %v", err)
	}
	if got, err := s.UserByEmail(ctx, u.Email); err != nil || got.ID != u.ID {
		t.Fatalf("UserByEmail: %+v, %v", got, err)
	}

	tok := core.RefreshToken{Hash: hash(), Family: "family-1", UserID: u.ID, IssuedAt: now,
		ExpiresAt: now.Add(time.Hour), FamilyExpiresAt: now.Add(24 * time.Hour)}
	lose.Store(true)
	if err := s.CreateRefreshToken(ctx, tok); err != nil {
		t.Fatalf("CreateRefreshToken after a lost commit answer: %v", err)
	}

	next := core.RefreshToken{Hash: hash(), IssuedAt: now.Add(time.Minute), ExpiresAt: now.Add(time.Hour + time.Minute)}
	lose.Store(true)
	use, err := s.UseRefreshToken(ctx, tok.Hash, next, now.Add(time.Minute))
	if err != nil {
		t.Fatalf("UseRefreshToken after a lost commit answer: %v", err)
	}
	if use.Result != core.RefreshRotated || !use.Token.Used.IsZero() || use.Token.Family != tok.Family {
		t.Fatalf("UseRefreshToken after a lost commit answer: result %d, token %+v; want rotated, as before the call", use.Result, use.Token)
	}
	if lose.Load() {
		t.Fatal("the fault was not injected")
	}
	// The family is not revoked: the successor rotates.
	later := now.Add(2 * time.Minute)
	use, err = s.UseRefreshToken(ctx, next.Hash, core.RefreshToken{Hash: hash(), IssuedAt: later, ExpiresAt: later.Add(time.Hour)}, later)
	if err != nil || use.Result != core.RefreshRotated {
		t.Fatalf("UseRefreshToken of the successor: %d, %v; want rotated", use.Result, err)
	}
	if revs, err := s.Revocations(ctx, time.Time{}); err != nil || len(revs) != 0 {
		t.Fatalf("revocations %v, %v; want none", revs, err)
	}
	if n := count(t, s, `SELECT count(*) FROM refresh_tokens WHERE family = $1`, tok.Family); n != 3 {
		t.Fatalf("%d tokens in the family, want 3", n)
	}
}
