package auth

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Rotation is the schedule of signing keys. A new key is made every Every; it is published
// at once and signs from Lead after it was made, so that every edge has it before the first
// token it signs arrives; the key it replaces stops signing then, and stays published until
// every token it signed has expired (TTL + Skew later): that time is its NotAfter.
//
// A Rotation is a value with no state: the core keeps the keys in its database and every
// worker computes the same decisions from them, with Next, Signing and Published.
type Rotation struct {
	// Every is how often a new key is made (and so how long a key signs). Default 24 hours;
	// more than Lead.
	Every time.Duration
	// Lead is how long a new key is published before it signs. At least the interval at
	// which edges fetch the key set, so that they rarely meet a token with an unknown kid.
	// Default 1 hour.
	Lead time.Duration
	// TTL is the longest life of an access token: at least the Config.TTL of every signer.
	// Default 15 minutes.
	TTL time.Duration
	// Skew is the clock skew verifiers allow: at least their Config.Skew. Default 30 s.
	Skew time.Duration
}

// DefaultRotation returns the default schedule, which goes with DefaultConfig. At most three
// keys are published at a time: the signing one, its successor during the hour before it
// takes over, and its predecessor for the quarter of an hour after.
func DefaultRotation() Rotation {
	return Rotation{Every: 24 * time.Hour, Lead: time.Hour, TTL: 15 * time.Minute, Skew: 30 * time.Second}
}

// Validate reports the first field of r out of bounds.
func (r Rotation) Validate() error {
	switch {
	case r.Lead < 0:
		return fmt.Errorf("auth: rotation Lead %v is negative", r.Lead)
	case r.Every < time.Minute || r.Every <= r.Lead:
		return fmt.Errorf("auth: rotation Every %v must be at least a minute and more than Lead %v", r.Every, r.Lead)
	case r.TTL < time.Second || r.TTL > 24*time.Hour:
		return fmt.Errorf("auth: rotation TTL %v not in 1s..24h", r.TTL)
	case r.Skew < 0 || r.Skew > 5*time.Minute:
		return fmt.Errorf("auth: rotation Skew %v not in 0..5m", r.Skew)
	}
	return nil
}

// Next returns the keys as they should be stored at now, sorted by Created, and whether they
// differ from keys (so that the store writes only then):
//
//   - keys whose NotAfter has come are dropped;
//   - when there is no key, or the newest was made Every ago or longer, a new key is made;
//   - every key but the newest gets a NotAfter if it has none: TTL + Skew after the next
//     key starts to sign, rounded up to a whole second.
//
// Workers of the core may run Next at the same time: the store applies its result in a
// transaction that reads the keys it was computed from (SERIALIZABLE, or a version check), so
// that only one new key is made. Next fails only when r is invalid.
func (r Rotation) Next(keys []Key, now time.Time) ([]Key, bool, error) {
	if err := r.Validate(); err != nil {
		return nil, false, err
	}
	next := sortedKeys(keys)
	changed := false
	next = slices.DeleteFunc(next, func(k Key) bool {
		gone := !k.NotAfter.IsZero() && !now.Before(k.NotAfter)
		changed = changed || gone
		return gone
	})
	if len(next) == 0 || !now.Before(next[len(next)-1].Created.Add(r.Every)) {
		next = append(next, GenerateKey(now))
		changed = true
	}
	for i := range len(next) - 1 {
		if next[i].NotAfter.IsZero() {
			next[i].NotAfter = ceilSecond(next[i+1].Created.Add(r.Lead + r.TTL + r.Skew))
			changed = true
		}
	}
	return next, changed, nil
}

// Signing returns the key that signs at now: the newest key that has been published for Lead
// (the oldest key when none has, as when the first key was just made), among the keys that
// may still sign, that is whose NotAfter is zero or at least TTL + Skew away. ErrNoSigningKey
// when there is none.
func (r Rotation) Signing(keys []Key, now time.Time) (Key, error) {
	var active, first *Key
	for i := range keys {
		k := &keys[i]
		if !k.NotAfter.IsZero() && now.Add(r.TTL+r.Skew).After(k.NotAfter) {
			continue
		}
		if !now.Before(k.Created.Add(r.Lead)) && (active == nil || later(k, active)) {
			active = k
		}
		if first == nil || later(first, k) {
			first = k
		}
	}
	switch {
	case active != nil:
		return *active, nil
	case first != nil:
		return *first, nil
	}
	return Key{}, ErrNoSigningKey
}

// Published returns the public parts of the keys that verify at now, newest first: what the
// JWKS holds (MarshalJWKS) and what the core's own verifier uses (NewKeySet). A key is
// published from when it is made until its NotAfter.
func (r Rotation) Published(keys []Key, now time.Time) []PublicKey {
	sorted := sortedKeys(keys)
	out := make([]PublicKey, 0, len(sorted))
	for i := len(sorted) - 1; i >= 0; i-- {
		if k := sorted[i]; k.NotAfter.IsZero() || now.Before(k.NotAfter) {
			out = append(out, k.Public())
		}
	}
	return out
}

// later reports whether a was made after b (by ID when at the same time, so that every
// worker picks the same key).
func later(a, b *Key) bool {
	if c := a.Created.Compare(b.Created); c != 0 {
		return c > 0
	}
	return a.ID > b.ID
}

// sortedKeys returns a copy of keys sorted by Created, then ID.
func sortedKeys(keys []Key) []Key {
	out := slices.Clone(keys)
	slices.SortFunc(out, func(a, b Key) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// ceilSecond rounds t up to a whole second, in UTC.
func ceilSecond(t time.Time) time.Time {
	s := t.Truncate(time.Second)
	if s.Before(t) {
		s = s.Add(time.Second)
	}
	return s.UTC()
}
