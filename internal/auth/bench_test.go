package auth

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkVerify checks a token's signature and claims each time: the cost of a cache miss.
func BenchmarkVerify(b *testing.B) {
	k := testKey(b, 1)
	v := newVerifier(b, testConfig(), k)
	token, _ := issue(b, newSigner(b, k, testConfig()), "01J9ZQ4X8V2N6M3K7B5C1D0E9F", t0, nil)
	now := t0.Add(time.Minute)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(token, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifiedCache is the edge's hot path: a token already verified, by string, by
// bytes (as fasthttp hands it over), from every core at once, and with revocations of other
// tokens held.
func BenchmarkVerifiedCache(b *testing.B) {
	k := testKey(b, 1)
	v := newVerifier(b, testConfig(), k)
	s := newSigner(b, k, testConfig())
	now := t0.Add(time.Minute)
	setup := func(b *testing.B) (*VerifiedCache, []string) {
		c := newCache(b, v, 100000)
		tokens := make([]string, 64)
		for i := range tokens {
			tokens[i], _ = issue(b, s, fmt.Sprint("01J9ZQ4X8V2N6M3K7B5C1D0E", i), t0, nil)
			if _, err := c.Verify(tokens[i], now); err != nil {
				b.Fatal(err)
			}
		}
		return c, tokens
	}
	b.Run("hit", func(b *testing.B) {
		c, tokens := setup(b)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Verify(tokens[0], now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("hit-bytes", func(b *testing.B) {
		c, tokens := setup(b)
		t := []byte(tokens[0])
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.VerifyBytes(t, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("hit-revocations", func(b *testing.B) {
		c, tokens := setup(b)
		for i := range 1000 {
			c.RevokeSubject(fmt.Sprint("user-", i), now)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.Verify(tokens[0], now); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("hit-parallel", func(b *testing.B) {
		c, tokens := setup(b)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, err := c.Verify(tokens[i%len(tokens)], now); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}

// BenchmarkSign issues one access token.
func BenchmarkSign(b *testing.B) {
	s := newSigner(b, testKey(b, 1), testConfig())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sign(s.NewClaims("01J9ZQ4X8V2N6M3K7B5C1D0E9F", t0)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHashPassword hashes with DefaultParams: the cost of a signup, and of every login
// (VerifyPassword and VerifyDummy do the same work).
func BenchmarkHashPassword(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := HashPassword("correct horse battery staple", DefaultParams()); err != nil {
			b.Fatal(err)
		}
	}
}
