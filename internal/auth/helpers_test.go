package auth

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"testing"
	"time"
)

// t0 is the tests' fixed time, in whole seconds.
var t0 = time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)

// sentinels are the errors Verify may wrap, one at a time.
var sentinels = []error{ErrMalformed, ErrAlgorithm, ErrSignature, ErrExpired, ErrNotYetValid,
	ErrAudience, ErrIssuer, ErrUnknownKey, ErrRevoked}

// testConfig is the Config of the tests' signers and verifiers.
func testConfig() Config {
	c := DefaultConfig()
	c.Issuer = "https://core.perch.test"
	c.Audience = "perch"
	return c
}

// testKey is a deterministic key made at t0 from one byte of seed.
func testKey(tb testing.TB, b byte) Key {
	tb.Helper()
	seed := make([]byte, ed25519.SeedSize)
	seed[0] = b
	priv := ed25519.NewKeyFromSeed(seed)
	return Key{ID: Thumbprint(priv.Public().(ed25519.PublicKey)), Private: priv, Created: t0}
}

func newSigner(tb testing.TB, k Key, c Config) *Signer {
	tb.Helper()
	s, err := NewSigner(k, c)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func newVerifier(tb testing.TB, c Config, keys ...Key) *Verifier {
	tb.Helper()
	pubs := make([]PublicKey, len(keys))
	for i, k := range keys {
		pubs[i] = k.Public()
	}
	set, err := NewKeySet(pubs...)
	if err != nil {
		tb.Fatal(err)
	}
	v, err := NewVerifier(c, set)
	if err != nil {
		tb.Fatal(err)
	}
	return v
}

// issue signs a token for subject at t with s, the claims changed by edit when it is not nil.
func issue(tb testing.TB, s *Signer, subject string, t time.Time, edit func(*Claims)) (string, Claims) {
	tb.Helper()
	c := s.NewClaims(subject, t)
	if edit != nil {
		edit(&c)
	}
	token, err := s.Sign(c)
	if err != nil {
		tb.Fatal(err)
	}
	return token, c
}

// signRaw signs any header and payload with k, as an attacker with the key (or a buggy
// signer) could: the tests of what Verify refuses after the signature verified.
func signRaw(k Key, header, payload string) string {
	return signCompact(k.Private, b64(header), []byte(payload))
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// wrapsOnly reports whether err wraps want and no other sentinel.
func wrapsOnly(err, want error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) != (s == want) {
			return false
		}
	}
	return true
}
