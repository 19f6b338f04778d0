//go:build !race

package ratelimit

import (
	"strings"
	"testing"
)

// TestAllowDoesNotAllocate: deciding a request for a key already tracked, and writing its
// headers, allocates nothing. (The race detector changes allocation counts, hence the build
// tag.)
func TestAllowDoesNotAllocate(t *testing.T) {
	c := newClock()
	l := newLimiter(t, c, "ip:1000000/s", "ip:5/s@writes", "user:100/m", "key:1000/s")
	long := []byte(strings.Repeat("k", 300))
	buf := make([]byte, 0, 256)
	for name, f := range map[string]func(){
		"ip":         func() { l.Allow("reads", Keys{IP: []byte("192.0.2.1")}) },
		"all scopes": func() { l.Allow("reads", Keys{IP: []byte("192.0.2.1"), User: []byte("alice"), APIKey: long}) },
		"refused":    func() { l.Allow("writes", Keys{IP: []byte("192.0.2.2"), User: []byte("bob")}) },
		"headers": func() {
			d := l.Allow("writes", Keys{IP: []byte("192.0.2.3")})
			buf = d.AppendPolicyHeader(buf[:0])
			buf = d.AppendRateLimitHeader(buf[:0])
			_ = d.RetryAfterSeconds()
		},
	} {
		f() // the first call tracks the keys
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocations per call", name, n)
		}
	}
}
