//go:build !race

package auth

import (
	"testing"
	"time"
)

// TestCacheHitDoesNotAllocate: a cache hit, by string or by bytes, allocates nothing, also
// when the cache holds revocations (of other tokens) that the hit must check. (The race
// detector changes allocation counts, hence the build tag.)
func TestCacheHitDoesNotAllocate(t *testing.T) {
	k := testKey(t, 1)
	s := newSigner(t, k, testConfig())
	v := newVerifier(t, testConfig(), k)
	c := newCache(t, v, 1000)
	token, _ := issue(t, s, "alice", t0, func(c *Claims) { c.SessionID = "fam-1" })
	b := []byte(token)
	now := t0.Add(time.Minute)
	if _, err := c.Verify(token, now); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func(){
		"Verify":      func() { c.Verify(token, now) },
		"VerifyBytes": func() { c.VerifyBytes(b, now) },
	} {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocations per hit", name, n)
		}
	}
	c.RevokeSubject("bob", now)
	c.RevokeToken("other-jti", now)
	c.RevokeSession("fam-2", now)
	if n := testing.AllocsPerRun(1000, func() { c.Verify(token, now) }); n != 0 {
		t.Errorf("with revocations: %v allocations per hit", n)
	}
	if _, err := c.Verify(token, now); err != nil {
		t.Fatal(err)
	}
}
