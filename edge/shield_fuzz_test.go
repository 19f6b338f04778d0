package edge

import (
	"net/netip"
	"strings"
	"testing"
)

// referenceClient is the client of X-Forwarded-For values as forwardedWalk documents it,
// written the plain way: join the values, split the list, walk it from the right.
func referenceClient(values []string, peer netip.Addr, trusted *prefixSet) netip.Addr {
	var elems []string
	for _, e := range strings.Split(strings.Join(values, ","), ",") {
		if e = strings.Trim(e, " \t"); e != "" {
			elems = append(elems, e)
		}
	}
	client := peer
	for i := len(elems) - 1; i >= 0; i-- {
		a, ok := parseForwardedAddr([]byte(elems[i]))
		if !ok {
			return client // the hop right of a malformed element
		}
		client = a
		if !trusted.contains(a) {
			return a
		}
	}
	return client // every element trusted: the left-most
}

// FuzzForwardedFor checks the parser of X-Forwarded-For, which decodes what any client may
// send: it never panics, agrees with the plain walk from the right, and only ever names the
// peer or an address that is in the header.
func FuzzForwardedFor(f *testing.F) {
	for _, s := range []string{
		"203.0.113.5",
		"198.51.100.1, 203.0.113.5, 10.0.0.3",
		"[2001:db8::1]:443, 10.1.2.3:80",
		"unknown, 10.0.0.1",
		"203.0.113.5,,\t, 10.0.0.2\n198.51.100.7",
		"::ffff:10.0.0.1, fe80::1%eth0",
		"10.0.0.1\n10.0.0.2",
		"[::1]:x, [1.2.3.4], 1.2.3.4:99999, :80, []",
	} {
		f.Add(s)
	}
	trusted := newPrefixSet([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")})
	peer := netip.MustParseAddr("10.9.9.9")
	f.Fuzz(func(t *testing.T, s string) {
		// Lines stand for several X-Forwarded-For fields, in order.
		values := strings.Split(s, "\n")
		var w forwardedWalk
		for _, v := range values {
			w.add([]byte(v), &trusted)
		}
		got := w.client(peer)
		if want := referenceClient(values, peer, &trusted); got != want {
			t.Fatalf("client of %q: %v, the walk from the right says %v", s, got, want)
		}
		if got != peer && !got.IsValid() {
			t.Fatalf("client of %q: invalid %v", s, got)
		}
		if got.Is4In6() || got.Zone() != "" {
			t.Fatalf("client of %q: %v is mapped or zoned", s, got)
		}
		if got != peer {
			found := false
			for _, e := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '\n' }) {
				if a, ok := parseForwardedAddr([]byte(strings.Trim(e, " \t"))); ok && a == got {
					found = true
				}
			}
			if !found {
				t.Fatalf("client of %q: %v is in no element", s, got)
			}
		}
	})
}

// FuzzParseForwardedAddr: an element parses only to an unmapped, zoneless address that is
// itself in the element.
func FuzzParseForwardedAddr(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "192.0.2.1:80", "[2001:db8::1]:8080", "2001:db8::1", "::ffff:1.2.3.4", "[::1]", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if s == "" {
			return
		}
		a, ok := parseForwardedAddr([]byte(s))
		if !ok {
			return
		}
		if !a.IsValid() || a.Is4In6() || a.Zone() != "" {
			t.Fatalf("%q parsed to %v", s, a)
		}
		host := s
		if strings.HasPrefix(s, "[") {
			host = s[1:strings.IndexByte(s, ']')]
		} else if strings.Count(s, ":") == 1 {
			host = s[:strings.IndexByte(s, ':')]
		}
		if b, err := netip.ParseAddr(host); err != nil || b.Unmap() != a {
			t.Fatalf("%q parsed to %v, its host %q to %v (%v)", s, a, host, b, err)
		}
	})
}
