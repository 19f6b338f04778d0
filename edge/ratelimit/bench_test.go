package ratelimit

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkAllow decides requests for keys already tracked, on the real clock: one address
// under one policy, and an address, a user and an API key under four policies; alone, alone
// with the time given (AllowAt, as the edge with the request's time), and from every core at
// once (each goroutine its own address and user, all one app's API key).
func BenchmarkAllow(b *testing.B) {
	for _, bc := range []struct {
		name  string
		specs []string
		keys  func(i int) Keys
	}{
		{"ip", []string{"ip:1000000000/s"}, func(i int) Keys { return Keys{IP: []byte("192.0.2." + strconv.Itoa(i))} }},
		{"four-policies", []string{"ip:1000000000/s", "ip:1000000000/s@writes", "user:1000000000/m", "key:1000000000/s"},
			func(i int) Keys {
				return Keys{
					IP:     []byte("192.0.2." + strconv.Itoa(i)),
					User:   []byte("01J9ZQ4X8V2N6M3K7B5C1D0E9F-" + strconv.Itoa(i)),
					APIKey: []byte("pk_live_0123456789abcdef"),
				}
			}},
	} {
		newL := func(b *testing.B) *Limiter {
			l, err := New(Config{Policies: mustPolicies(b, bc.specs...)})
			if err != nil {
				b.Fatal(err)
			}
			return l
		}
		b.Run(bc.name, func(b *testing.B) {
			l := newL(b)
			k := bc.keys(0)
			l.Allow("writes", k)
			b.ReportAllocs()
			for b.Loop() {
				if !l.Allow("writes", k).Allowed {
					b.Fatal("refused")
				}
			}
		})
		b.Run(bc.name+"/AllowAt", func(b *testing.B) {
			l := newL(b)
			k := bc.keys(0)
			now := time.Now()
			l.AllowAt(now, "writes", k)
			b.ReportAllocs()
			for b.Loop() {
				if !l.AllowAt(now, "writes", k).Allowed {
					b.Fatal("refused")
				}
			}
		})
		b.Run(bc.name+"/parallel", func(b *testing.B) {
			l := newL(b)
			var next atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				k := bc.keys(int(next.Add(1)))
				for pb.Next() {
					if !l.Allow("writes", k).Allowed {
						b.Error("refused")
						return
					}
				}
			})
		})
	}
}

// BenchmarkHeaders writes the RateLimit-Policy and RateLimit values of a decision.
func BenchmarkHeaders(b *testing.B) {
	l, err := New(Config{Policies: mustPolicies(b, "ip:50/s:100")})
	if err != nil {
		b.Fatal(err)
	}
	d := l.Allow("", Keys{IP: []byte("192.0.2.1")})
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = d.AppendPolicyHeader(buf[:0])
		buf = d.AppendRateLimitHeader(buf[:0])
	}
}
