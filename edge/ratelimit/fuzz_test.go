package ratelimit

import (
	"bytes"
	"testing"
	"time"
)

// FuzzDecodeUsage: a usage message from the network never crashes the decoder nor the
// limiter; one that decodes encodes back to the same bytes.
func FuzzDecodeUsage(f *testing.F) {
	f.Add(validMessage())
	f.Add([]byte{})
	f.Add([]byte{1, 1, 1, 'n', 1, 0, 0, 0, 0, 0, 0, 0, 1, 50, 0})
	h := usageHeader{node: "edge-1", incarnation: 3, seq: 9, interval: 50 * time.Millisecond}
	encodeUsage(nil, h, []string{"ip:50/s", "key:5/m@writes"},
		[]reportItem{{0, "a", 1}, {0, "bb", 1e6}, {1, "k", 0.5}}, maxMessageBytes,
		func(m []byte) { f.Add(bytes.Clone(m)) })
	c := newClock()
	l := newLimiter(f, c, "ip:50/s", "key:5/m@writes")
	f.Fuzz(func(t *testing.T, msg []byte) {
		u, err := decodeUsage(msg)
		l.receive(msg)
		if err != nil {
			return
		}
		// Re-encode what was decoded: the same bytes.
		out := appendUsageHeader(nil, usageHeader{node: u.node, incarnation: u.incarnation, seq: u.seq,
			interval: u.interval, leave: u.leave}, len(u.sections))
		for _, s := range u.sections {
			out = appendSectionHeader(out, string(s.policy), len(s.items))
			for _, it := range s.items {
				out = appendItem(out, string(it.key), it.demand)
			}
		}
		if !bytes.Equal(out, msg) {
			t.Fatalf("decoded %x re-encodes to %x", msg, out)
		}
	})
}

// FuzzParsePolicy: any flag value either fails with an error or gives a valid policy whose
// canonical form parses back to it.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{"ip:50/s", "ip:50/s:100@writes", "key:6000/m", "user:1/m:1@sync", "ip:0/s", "x", "ip:9999999999/s", "@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePolicy(s)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("%q parsed to an invalid policy %+v: %v", s, p, err)
		}
		again, err := ParsePolicy(p.String())
		if err != nil || again != p {
			t.Fatalf("%q → %q → %+v, %v", s, p.String(), again, err)
		}
	})
}

// FuzzParseFile: any file either fails with an error or gives valid policies that a
// limiter accepts.
func FuzzParseFile(f *testing.F) {
	for _, s := range []string{
		"limits: [{scope: ip, rate: 50/s, burst: 100}]",
		"limits:\n  - scope: ip\n    rate: 10/s\n    group: writes\n  - key:6000/m\n",
		`{"limits": ["user:1/s"]}`,
		"limits: [{scope: ip, rate: 50/s, brust: 3}]",
		"limits: !x 0", // a tag where a list is expected: goccy/go-yaml panics on it
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := ParseFile(data)
		if err != nil {
			return
		}
		if _, err := New(Config{Policies: ps}); err != nil {
			t.Fatalf("%q parsed to policies a limiter refuses: %v", data, err)
		}
	})
}
