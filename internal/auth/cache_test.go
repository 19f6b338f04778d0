package auth

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

func newCache(tb testing.TB, v *Verifier, n int) *VerifiedCache {
	tb.Helper()
	c, err := NewVerifiedCache(v, n)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func TestCacheHit(t *testing.T) {
	k := testKey(t, 1)
	s := newSigner(t, k, testConfig())
	v := newVerifier(t, testConfig(), k)
	c := newCache(t, v, 100)
	token, want := issue(t, s, "alice", t0, func(c *Claims) { c.Custom = map[string]string{"app": "notes"} })
	for i := range 3 {
		got, err := c.Verify(token, t0.Add(time.Duration(i)*time.Second))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("Verify %d: %+v, %v", i, got, err)
		}
	}
	b := []byte(token)
	got, err := c.VerifyBytes(b, t0)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("VerifyBytes: %+v, %v", got, err)
	}
	if st := c.Stats(); st.Entries != 1 || st.Hits != 3 || st.Misses != 1 {
		t.Fatalf("stats %+v", st)
	}
	// A token stored through VerifyBytes does not alias the caller's bytes.
	other, _ := issue(t, s, "bob", t0, nil)
	b = []byte(other)
	if _, err := c.VerifyBytes(b, t0); err != nil {
		t.Fatal(err)
	}
	copy(b, token)
	if got, err := c.Verify(other, t0); err != nil || got.Subject != "bob" {
		t.Fatalf("after the caller reused its buffer: %+v, %v", got, err)
	}
}

// TestCacheServesOnlyValid: the cache answers as Verify would at every instant.
func TestCacheServesOnlyValid(t *testing.T) {
	k := testKey(t, 1)
	cfg := testConfig()
	s := newSigner(t, k, cfg)
	v := newVerifier(t, cfg, k)
	c := newCache(t, v, 100)
	token, cl := issue(t, s, "alice", t0, nil)
	// Invalid tokens are never stored.
	for _, bad := range []string{"x", token + "x", otherSignature(token)} {
		if _, err := c.Verify(bad, t0); err == nil {
			t.Fatalf("%q verifies", bad)
		}
	}
	if _, err := c.Verify(token, t0.Add(-time.Minute)); !errors.Is(err, ErrNotYetValid) {
		t.Fatalf("before nbf: %v", err)
	}
	if st := c.Stats(); st.Entries != 0 {
		t.Fatalf("%d entries after failures", st.Entries)
	}
	if _, err := c.Verify(token, t0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at   time.Time
		want error
	}{
		{cl.NotBefore.Add(-30 * time.Second), nil},
		{cl.NotBefore.Add(-31 * time.Second), ErrNotYetValid},
		{cl.ExpiresAt.Add(29 * time.Second), nil},
		{cl.ExpiresAt.Add(30 * time.Second), ErrExpired},
	} {
		if _, err := c.Verify(token, tc.at); !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
			t.Errorf("at %v: %v, want %v", tc.at, err, tc.want)
		}
		if _, err := c.Verify(token, t0); err != nil { // put it back
			t.Fatal(err)
		}
	}
}

// TestCacheCollision: an entry whose hash matches but whose token differs is not served.
func TestCacheCollision(t *testing.T) {
	k := testKey(t, 1)
	s := newSigner(t, k, testConfig())
	v := newVerifier(t, testConfig(), k)
	c := newCache(t, v, 100)
	alice, _ := issue(t, s, "alice", t0, nil)
	mallory, _ := issue(t, s, "mallory", t0, nil)
	if _, err := c.Verify(mallory, t0); err != nil {
		t.Fatal(err)
	}
	// File mallory's entry under the hash of alice's token, as a collision would.
	hm, ha := xxhash.Sum64String(mallory[len(mallory)-hashedTail:]), xxhash.Sum64String(alice[len(alice)-hashedTail:])
	shm, sha := &c.shards[hm&c.mask], &c.shards[ha&c.mask]
	e := shm.m[hm]
	delete(shm.m, hm)
	sha.m[ha] = e
	got, err := c.Verify(alice, t0)
	if err != nil || got.Subject != "alice" {
		t.Fatalf("a colliding entry was served: %+v, %v", got, err)
	}
	// A forged token with the signature of a cached one finds its entry, and is refused;
	// the entry stays.
	dot := strings.LastIndexByte(alice, '.')
	hdr, payload, _ := strings.Cut(alice[:dot], ".")
	forged := hdr + "." + b64(strings.Replace(string(mustB64(t, payload)), "alice", "admin", 1)) + alice[dot:]
	if _, err := c.Verify(forged, t0); !errors.Is(err, ErrSignature) {
		t.Fatalf("forged: %v", err)
	}
	if got, err := c.Verify(alice, t0); err != nil || got.Subject != "alice" {
		t.Fatalf("after the forgery: %+v, %v", got, err)
	}
	if st := c.Stats(); st.Hits == 0 {
		t.Fatalf("the entry was dropped: %+v", st)
	}
}

func TestCacheBounded(t *testing.T) {
	k := testKey(t, 1)
	s := newSigner(t, k, testConfig())
	v := newVerifier(t, testConfig(), k)
	tokens := make([]string, 1000)
	for i := range tokens {
		tokens[i], _ = issue(t, s, fmt.Sprint("user-", i), t0, nil)
	}
	for _, max := range []int{1, 10, 100, 500} {
		c := newCache(t, v, max)
		for _, token := range tokens[:2*max] {
			if _, err := c.Verify(token, t0); err != nil {
				t.Fatal(err)
			}
			if st := c.Stats(); st.Entries > max {
				t.Fatalf("max %d: %d entries", max, st.Entries)
			}
		}
		if st := c.Stats(); st.Evictions == 0 || st.Entries < max/2 {
			t.Fatalf("max %d: %+v", max, st)
		}
	}
	// Expired entries go first.
	c := newCache(t, v, 1)
	old, _ := issue(t, s, "old", t0, nil)
	c.Verify(old, t0)
	fresh, _ := issue(t, s, "fresh", t0.Add(time.Hour), nil)
	if _, err := c.Verify(fresh, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.Entries != 1 || st.Evictions != 1 {
		t.Fatalf("%+v", st)
	}
	if _, err := NewVerifiedCache(v, 0); err == nil {
		t.Fatal("a cache of 0 entries")
	}
	if _, err := NewVerifiedCache(nil, 10); err == nil {
		t.Fatal("a cache without verifier")
	}
}

func TestCacheRevoke(t *testing.T) {
	k := testKey(t, 1)
	cfg := testConfig()
	s := newSigner(t, k, cfg)
	v := newVerifier(t, cfg, k)
	c := newCache(t, v, 100)
	at := t0.Add(time.Minute)
	tok1, c1 := issue(t, s, "alice", t0, nil)
	tok2, _ := issue(t, s, "alice", t0, nil)
	tok3, _ := issue(t, s, "bob", t0, func(c *Claims) { c.SessionID = "fam-b" })
	for _, tok := range []string{tok1, tok2, tok3} {
		if _, err := c.Verify(tok, at); err != nil {
			t.Fatal(err)
		}
	}
	check := func(tok string, want error) {
		t.Helper()
		if _, err := c.Verify(tok, at); !errors.Is(err, want) || (err == nil) != (want == nil) {
			t.Fatalf("%v, want %v", err, want)
		}
	}

	c.RevokeToken(c1.ID, at)
	check(tok1, ErrRevoked)
	check(tok2, nil)
	check(tok3, nil)

	c.RevokeSession("fam-b", at)
	check(tok3, ErrRevoked)
	check(tok2, nil)

	c.RevokeSubject("alice", at)
	check(tok2, ErrRevoked)
	// A token issued after the revocation, by a new login, is not revoked.
	tok4, _ := issue(t, s, "alice", at.Add(time.Second), nil)
	if _, err := c.Verify(tok4, at.Add(time.Second)); err != nil {
		t.Fatalf("a token issued after the subject's revocation: %v", err)
	}
	// On a miss as well as a hit.
	fresh := newCache(t, v, 100)
	fresh.RevokeSubject("alice", at)
	if _, err := fresh.Verify(tok2, at); !errors.Is(err, ErrRevoked) {
		t.Fatalf("miss of a revoked token: %v", err)
	}
	if st := c.Stats(); st.Revocations != 3 {
		t.Fatalf("%+v", st)
	}
	// Revocations are forgotten once the tokens they cover have expired.
	later := at.Add(cfg.TTL + cfg.Skew)
	for i := range 2000 {
		c.RevokeToken(fmt.Sprint("j", i), later)
	}
	if st := c.Stats(); st.Revocations != 2000 {
		t.Fatalf("%d revocations kept, want the 2000 live ones", st.Revocations)
	}
	if _, err := c.Verify(tok2, later.Add(-time.Second)); !errors.Is(err, ErrExpired) {
		t.Fatalf("a revoked token after its revocation was forgotten: %v", err)
	}
	c.RevokeToken("", at) // ignored
}

// TestCacheKeyChange: after SetKeys, a cached token whose key is gone is not served.
func TestCacheKeyChange(t *testing.T) {
	a, b := testKey(t, 1), testKey(t, 2)
	cfg := testConfig()
	v := newVerifier(t, cfg, a, b)
	c := newCache(t, v, 100)
	ta, _ := issue(t, newSigner(t, a, cfg), "alice", t0, nil)
	tb, _ := issue(t, newSigner(t, b, cfg), "bob", t0, nil)
	for _, tok := range []string{ta, tb} {
		if _, err := c.Verify(tok, t0); err != nil {
			t.Fatal(err)
		}
	}
	// Key b is withdrawn; key a gets a NotAfter.
	pa := a.Public()
	pa.NotAfter = t0.Add(5 * time.Minute)
	set, _ := NewKeySet(pa)
	v.SetKeys(set)
	if _, err := c.Verify(tb, t0); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("token of a withdrawn key: %v", err)
	}
	if _, err := c.Verify(ta, t0.Add(4*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Verify(ta, t0.Add(5*time.Minute)); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("token after its key's NotAfter: %v", err)
	}
}

// TestCacheConcurrent: hits, misses, revocations and key changes at once (run with -race).
func TestCacheConcurrent(t *testing.T) {
	k := testKey(t, 1)
	cfg := testConfig()
	s := newSigner(t, k, cfg)
	v := newVerifier(t, cfg, k)
	c := newCache(t, v, 64)
	tokens := make([]string, 100)
	for i := range tokens {
		tokens[i], _ = issue(t, s, fmt.Sprint("user-", i), t0, nil)
	}
	set := v.Keys()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 300 {
				tok := tokens[(i*7+g)%len(tokens)]
				if _, err := c.Verify(tok, t0); err != nil && !errors.Is(err, ErrRevoked) {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := range 50 {
			c.RevokeSubject(fmt.Sprint("user-", i*2), t0)
			v.SetKeys(set)
			c.Stats()
		}
	})
	wg.Wait()
	if _, err := c.Verify(tokens[2], t0); !errors.Is(err, ErrRevoked) {
		t.Fatal(err)
	}
	if _, err := c.Verify(tokens[3], t0); err != nil {
		t.Fatal(err)
	}
}

// otherSignature returns token with one character of its signature changed: the third from
// the end, all six of whose bits are the signature's (the last one's low bits are padding).
func otherSignature(token string) string {
	i := len(token) - 3
	c := byte('A')
	if token[i] == c {
		c = 'B'
	}
	return token[:i] + string(c) + token[i+1:]
}
