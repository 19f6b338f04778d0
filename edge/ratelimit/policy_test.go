package ratelimit

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in    string
		want  Policy
		canon string
	}{
		{"ip:50/s", Policy{Scope: ScopeIP, Limit: 50, Period: time.Second}, "ip:50/s"},
		{" ip:50/s ", Policy{Scope: ScopeIP, Limit: 50, Period: time.Second}, "ip:50/s"},
		{"IP:50/s", Policy{Scope: ScopeIP, Limit: 50, Period: time.Second}, "ip:50/s"},
		{"ip:50/s:100", Policy{Scope: ScopeIP, Limit: 50, Period: time.Second, Burst: 100}, "ip:50/s:100"},
		{"ip:50/s:50", Policy{Scope: ScopeIP, Limit: 50, Period: time.Second}, "ip:50/s"},
		{"user:600/m", Policy{Scope: ScopeUser, Limit: 600, Period: time.Minute}, "user:600/m"},
		{"key:6000/m:10", Policy{Scope: ScopeKey, Limit: 6000, Period: time.Minute, Burst: 10}, "key:6000/m:10"},
		{"ip:10/s:20@writes", Policy{Scope: ScopeIP, Limit: 10, Period: time.Second, Burst: 20, Group: "writes"}, "ip:10/s:20@writes"},
		{"ip:10/s@sync", Policy{Scope: ScopeIP, Limit: 10, Period: time.Second, Group: "sync"}, "ip:10/s@sync"},
		{"ip:1000000000/s", Policy{Scope: ScopeIP, Limit: 1e9, Period: time.Second}, "ip:1000000000/s"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			p, err := ParsePolicy(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if p != tc.want {
				t.Fatalf("got %+v, want %+v", p, tc.want)
			}
			if s := p.String(); s != tc.canon {
				t.Fatalf("String %q, want %q", s, tc.canon)
			}
			again, err := ParsePolicy(p.String())
			if err != nil || again != p {
				t.Fatalf("round trip of %q: %+v, %v", p.String(), again, err)
			}
		})
	}
}

func TestParsePolicyErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "empty"},
		{"ip", "want SCOPE:RATE"},
		{"ip:50", "want N/s or N/m"},
		{"ip:50/h", `unit "h"`},
		{"ip:/s", "missing number"},
		{"ip:0/s", "at least 1"},
		{"ip:-5/s", "whole number"},
		{"ip:5.5/s", "whole number"},
		{"ip:1000000001/s", "more than"},
		{"ip:50/s:", "burst"},
		{"ip:50/s:0", "burst"},
		{"ip:50/s:x", "burst"},
		{"ip:50/s:1:2", "want SCOPE:RATE"},
		{"host:50/s", `scope "host"`},
		{"ip:50/s@", "empty group"},
		{"ip:50/s@Writes", "group"},
		{"ip:50/s@-w", "group"},
		{"ip:50/s@" + strings.Repeat("a", 65), "longer than"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			_, err := ParsePolicy(tc.in)
			if err == nil {
				t.Fatalf("accepted %q", tc.in)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "rate limit") {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestPolicyName(t *testing.T) {
	for in, want := range map[string]string{
		"ip:50/s": "ip", "ip:50/s@writes": "ip-writes", "key:100/m": "key-minute", "user:5/m:9@sync": "user-sync-minute",
	} {
		p, err := ParsePolicy(in)
		if err != nil {
			t.Fatal(err)
		}
		if p.Name() != want {
			t.Errorf("%s: name %q, want %q", in, p.Name(), want)
		}
	}
}

func TestParseFile(t *testing.T) {
	const doc = `
# Limits for the public API.
limits:
  - {scope: ip, rate: 50/s, burst: 100}
  - scope: ip
    rate: 10/s
    group: writes
  - key:6000/m
  - {scope: USER, rate: 600/m, burst: 600}
`
	ps, err := ParseFile([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.String())
	}
	if want := "ip:50/s:100 ip:10/s@writes key:6000/m user:600/m"; strings.Join(got, " ") != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	// JSON is YAML.
	ps, err = ParseFile([]byte(`{"limits": [{"scope": "ip", "rate": "5/s"}, "user:1/s@sync"]}`))
	if err != nil || len(ps) != 2 || ps[1].Group != "sync" {
		t.Fatalf("JSON: %v, %v", ps, err)
	}
	for _, empty := range []string{"", "  \n", "limits: []", "limits:"} {
		if ps, err := ParseFile([]byte(empty)); err != nil || len(ps) != 0 {
			t.Errorf("%q: %v, %v", empty, ps, err)
		}
	}
}

func TestParseFileErrors(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{"limits: [{scope: ip, rate: 50/s, brust: 3}]", "brust"},
		{"limit: [{scope: ip, rate: 50/s}]", "limit"},
		{"limits: [{rate: 50/s}]", "without a scope"},
		{"limits: [{scope: ip}]", "without a rate"},
		{"limits: [{scope: ip, rate: 50}]", "N/s or N/m"},
		{"limits: [{scope: ip, rate: 50/s, burst: -1}]", "burst"},
		{"limits: [{scope: ip, rate: 50/s, burst: 0}]", "burst 0"},
		{"limits: [{scope: ip, rate: 50/s, burst: many}]", "burst"},
		{"limits: [{scope: ip, rate: 50/s, group: Bad}]", "group"},
		{"limits: [{scope: nobody, rate: 50/s}]", "scope"},
		{"limits: [ip:0/s]", "at least 1"},
		{"limits: [ip:50/s, {scope: ip, rate: 20/s, burst: 5}]", "keep one"},
		{"limits: {scope: ip}", "limits"},
		{"limits: [[1, 2]]", "limits"},
		{"\t- :", "limits file"},
	} {
		t.Run(tc.doc, func(t *testing.T) {
			_, err := ParseFile([]byte(tc.doc))
			if err == nil {
				t.Fatalf("accepted %q", tc.doc)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestLoadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "limits.yaml")
	if _, err := LoadFile(path); err == nil {
		t.Fatal("missing file accepted")
	}
	writeFile(t, path, "limits: [ip:5/s]")
	ps, err := LoadFile(path)
	if err != nil || len(ps) != 1 || ps[0].String() != "ip:5/s" {
		t.Fatalf("%v, %v", ps, err)
	}
	writeFile(t, path, "limits: [ip:5]")
	if _, err := LoadFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("error %v does not name the file", err)
	}
}

func TestWatchFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "limits.yaml")
	writeFile(t, path, "limits: [ip:5/s]")
	var (
		mu      sync.Mutex
		applied [][]Policy
		logs    syncBuffer
	)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		WatchFile(ctx, path, 5*time.Millisecond, func(ps []Policy) {
			mu.Lock()
			applied = append(applied, ps)
			mu.Unlock()
		}, slog.New(slog.NewTextHandler(&logs, nil)))
	}()
	waitApplied := func(n int, want string) {
		t.Helper()
		waitFor(t, 5*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(applied) >= n
		})
		mu.Lock()
		defer mu.Unlock()
		if len(applied) != n {
			t.Fatalf("applied %d times, want %d", len(applied), n)
		}
		var got []string
		for _, p := range applied[n-1] {
			got = append(got, p.String())
		}
		if strings.Join(got, " ") != want {
			t.Fatalf("applied %q, want %q", got, want)
		}
	}
	waitApplied(1, "ip:5/s")
	writeFile(t, path, "limits: [ip:7/s, user:1/s]")
	waitApplied(2, "ip:7/s user:1/s")
	// A bad file is not applied; the good one after it is.
	writeFile(t, path, "limits: [ip:7/s, user:0/s]")
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(logs.String(), "not applied") })
	writeFile(t, path, "limits: [key:3/m]")
	waitApplied(3, "key:3/m")
	cancel()
	<-done
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent use, for logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(tb testing.TB, within time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("condition not met within %v", within)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
