package auth

import (
	"errors"
	"testing"
	"time"
)

// TestRotationSchedule follows the default schedule through one rotation: a token signed by
// the old key at the last moment verifies until the old key's NotAfter, through the JWKS as
// an edge sees it, and then gets ErrUnknownKey.
func TestRotationSchedule(t *testing.T) {
	r := DefaultRotation()
	cfg := testConfig()
	keys, changed, err := r.Next(nil, t0)
	if err != nil || !changed || len(keys) != 1 {
		t.Fatalf("bootstrap: %d keys, changed %v, %v", len(keys), changed, err)
	}
	k0 := keys[0]
	if s, err := r.Signing(keys, t0); err != nil || s.ID != k0.ID {
		t.Fatalf("the first key does not sign at once: %v", err)
	}
	if again, changed, _ := r.Next(keys, t0.Add(24*time.Hour-time.Second)); changed || len(again) != 1 {
		t.Fatal("rotated early")
	}

	// A day later: a successor, published at once, not signing yet.
	keys, changed, _ = r.Next(keys, t0.Add(24*time.Hour))
	if !changed || len(keys) != 2 {
		t.Fatalf("no rotation after a day: %d keys", len(keys))
	}
	k0, k1 := keys[0], keys[1]
	wantNotAfter := t0.Add(24*time.Hour + time.Hour + 15*time.Minute + 30*time.Second)
	if !k0.NotAfter.Equal(wantNotAfter) || !k1.NotAfter.IsZero() {
		t.Fatalf("NotAfter %v and %v, want %v and zero", k0.NotAfter, k1.NotAfter, wantNotAfter)
	}
	if again, changed, _ := r.Next(keys, t0.Add(24*time.Hour+time.Minute)); changed || len(again) != 2 {
		t.Fatal("Next is not stable")
	}
	pub := r.Published(keys, t0.Add(24*time.Hour))
	if len(pub) != 2 || pub[0].ID != k1.ID || pub[1].ID != k0.ID {
		t.Fatalf("published %v", pub)
	}

	// The old key signs until the new one has been published for Lead.
	last := t0.Add(25*time.Hour - time.Second)
	if s, _ := r.Signing(keys, last); s.ID != k0.ID {
		t.Fatal("the successor signs before its lead time")
	}
	if s, _ := r.Signing(keys, t0.Add(25*time.Hour)); s.ID != k1.ID {
		t.Fatal("the successor does not sign after its lead time")
	}
	early, _ := issue(t, newSigner(t, k0, cfg), "alice", t0.Add(24*time.Hour+30*time.Minute), nil)
	late, _ := issue(t, newSigner(t, k0, cfg), "alice", last, nil)

	// An edge with the JWKS published when the successor took over.
	jwks, err := MarshalJWKS(r.Published(keys, t0.Add(25*time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	set, err := ParseJWKS(jwks)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewVerifier(cfg, set)
	if err != nil {
		t.Fatal(err)
	}
	// The last token the old key signed lives until a second before the key's NotAfter
	// (it was signed a second before the successor took over).
	lastInstant := k0.NotAfter.Add(-time.Second - time.Nanosecond)
	if _, err := v.Verify(late, lastInstant); err != nil {
		t.Fatalf("the old key's last token, at its last instant: %v", err)
	}
	if _, err := v.Verify(late, lastInstant.Add(time.Nanosecond)); !errors.Is(err, ErrExpired) {
		t.Fatalf("the old key's last token after it expired: %v", err)
	}
	for _, token := range []string{early, late} {
		if _, err := v.Verify(token, k0.NotAfter); !errors.Is(err, ErrUnknownKey) {
			t.Fatalf("at the old key's NotAfter: %v, want ErrUnknownKey", err)
		}
	}
	// The core's own view agrees, and Next forgets the old key then.
	if pub := r.Published(keys, k0.NotAfter); len(pub) != 1 || pub[0].ID != k1.ID {
		t.Fatalf("published at NotAfter: %v", pub)
	}
	keys, changed, _ = r.Next(keys, k0.NotAfter)
	if !changed || len(keys) != 1 || keys[0].ID != k1.ID {
		t.Fatalf("the old key is kept after its NotAfter: %v", keys)
	}
}

// TestRotationInvariant: over many rotations, every token the signing key signs stays
// verifiable by the published keys until it expires.
func TestRotationInvariant(t *testing.T) {
	r := Rotation{Every: 10 * time.Minute, Lead: 2 * time.Minute, TTL: 5 * time.Minute, Skew: 10 * time.Second}
	cfg := testConfig()
	cfg.TTL, cfg.Skew = r.TTL, r.Skew
	var keys []Key
	type signed struct {
		token, kid string
		exp        time.Time
	}
	var tokens []signed
	for now := t0; now.Before(t0.Add(3 * time.Hour)); now = now.Add(17 * time.Second) {
		var err error
		if keys, _, err = r.Next(keys, now); err != nil {
			t.Fatal(err)
		}
		if len(keys) > 3 {
			t.Fatalf("%d keys at %v", len(keys), now)
		}
		set, err := NewKeySet(r.Published(keys, now)...)
		if err != nil {
			t.Fatal(err)
		}
		v, err := NewVerifier(cfg, set)
		if err != nil {
			t.Fatal(err)
		}
		live := tokens[:0]
		for _, s := range tokens {
			if !now.Before(s.exp.Add(cfg.Skew)) {
				continue
			}
			// The key is enough to check at every step; the whole token, at its last step.
			if _, ok := set.Lookup(s.kid, now); !ok {
				t.Fatalf("at %v the key of a live token is not published", now)
			}
			if !now.Add(17 * time.Second).Before(s.exp.Add(cfg.Skew)) {
				if _, err := v.Verify(s.token, now); err != nil {
					t.Fatalf("at %v a live token fails: %v", now, err)
				}
			}
			live = append(live, s)
		}
		tokens = live
		k, err := r.Signing(keys, now)
		if err != nil {
			t.Fatal(err)
		}
		token, c := issue(t, newSigner(t, k, cfg), "alice", now, nil)
		tokens = append(tokens, signed{token, k.ID, c.ExpiresAt})
	}
}

func TestRotationEdges(t *testing.T) {
	r := DefaultRotation()
	if _, err := r.Signing(nil, t0); !errors.Is(err, ErrNoSigningKey) {
		t.Fatalf("no keys: %v", err)
	}
	// The core was down for three days: the old key signs until the new one's lead time.
	keys, _, _ := r.Next(nil, t0)
	later := t0.Add(72 * time.Hour)
	keys, _, _ = r.Next(keys, later)
	if len(keys) != 2 {
		t.Fatalf("%d keys", len(keys))
	}
	if s, _ := r.Signing(keys, later); s.ID != keys[0].ID {
		t.Fatal("a key signs before it was published for Lead")
	}
	// A key that may no longer sign (its NotAfter is within TTL + Skew) is passed over.
	old := testKey(t, 1)
	old.NotAfter = t0.Add(10 * time.Minute)
	if _, err := r.Signing([]Key{old}, t0.Add(time.Hour)); !errors.Is(err, ErrNoSigningKey) {
		t.Fatalf("expiring key: %v", err)
	}
	// Ties are broken by ID, the same way on every worker.
	a, b := testKey(t, 1), testKey(t, 2)
	s1, _ := r.Signing([]Key{a, b}, t0.Add(2*time.Hour))
	s2, _ := r.Signing([]Key{b, a}, t0.Add(2*time.Hour))
	if s1.ID != s2.ID {
		t.Fatal("Signing depends on the order of the keys")
	}
	for name, bad := range map[string]Rotation{
		"lead over every": {Every: time.Hour, Lead: time.Hour, TTL: time.Minute},
		"negative lead":   {Every: time.Hour, Lead: -1, TTL: time.Minute},
		"no ttl":          {Every: time.Hour, Lead: time.Minute},
		"tiny every":      {Every: time.Second, TTL: time.Minute},
		"long skew":       {Every: time.Hour, TTL: time.Minute, Skew: time.Hour},
	} {
		if _, _, err := bad.Next(nil, t0); err == nil {
			t.Errorf("%s: Next accepts %+v", name, bad)
		}
	}
	if err := DefaultRotation().Validate(); err != nil {
		t.Fatal(err)
	}
}
