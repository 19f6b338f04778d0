package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/edge/ratelimit"
)

func parseRateLimits(t *testing.T, args []string, env map[string]string) (*rateLimits, edge.Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	r := rateLimitFlags(fs)
	cfg := edge.DefaultConfig()
	if err := parseFlags(fs, args, func(k string) string { return env[k] }); err != nil {
		return r, cfg, err
	}
	return r, cfg, r.apply(&cfg)
}

func policyStrings(ps []ratelimit.Policy) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.String()
	}
	return out
}

func TestRateLimitFlags(t *testing.T) {
	file := filepath.Join(t.TempDir(), "limits.yaml")
	if err := os.WriteFile(file, []byte("limits:\n  - {scope: key, rate: 6000/m, burst: 200}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want []string
		err  string
	}{
		{name: "none", want: []string{}},
		{name: "flags", args: []string{"--rate-limit", "ip:50/s", "--rate-limit", "user:10/s:20@writes, key:100/m"},
			want: []string{"ip:50/s", "user:10/s:20@writes", "key:100/m"}},
		{name: "environment", env: map[string]string{"PERCH_RATE_LIMIT": "ip:5/s"}, want: []string{"ip:5/s"}},
		{name: "command line over environment", args: []string{"--rate-limit", "ip:7/s"}, env: map[string]string{"PERCH_RATE_LIMIT": "ip:5/s"}, want: []string{"ip:7/s"}},
		{name: "file and flags", args: []string{"--rate-limit", "ip:50/s", "--rate-limit-file", file}, want: []string{"ip:50/s", "key:6000/m:200"}},
		{name: "bad policy", args: []string{"--rate-limit", "ip:50/h"}, err: "per minute"},
		{name: "twice", args: []string{"--rate-limit", "ip:50/s", "--rate-limit", "ip:60/s:5"}, err: "usage"},
		{name: "missing file", args: []string{"--rate-limit-file", file + ".none"}, err: "usage"},
		{name: "sync interval", args: []string{"--rate-limit", "ip:1/s", "--rate-limit-sync", "1s"}, err: "usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, cfg, err := parseRateLimits(t, tc.args, tc.env)
			switch {
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) && !(tc.err == "usage" && errors.Is(err, errUsage)) {
					t.Fatalf("err %v, want one about %s", err, tc.err)
				}
			case err != nil:
				t.Fatal(err)
			case !slices.Equal(policyStrings(cfg.RateLimits), tc.want):
				t.Fatalf("policies %v, want %v", policyStrings(cfg.RateLimits), tc.want)
			}
		})
	}
}

// TestRateLimitFileReload: a change of the limits file reaches the edges, with the flags'
// policies kept.
func TestRateLimitFileReload(t *testing.T) {
	file := filepath.Join(t.TempDir(), "limits.yaml")
	write := func(s string) {
		t.Helper()
		// A new file, not a rewrite in place: a reader never sees it half written.
		tmp := file + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, file); err != nil {
			t.Fatal(err)
		}
	}
	write("limits: [ip:10/s]\n")
	r, _, err := parseRateLimits(t, []string{"--rate-limit", "key:1/s", "--rate-limit-file", file}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got [][]string
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.watch(ctx, slog.New(slog.DiscardHandler), func(ps []ratelimit.Policy) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, policyStrings(ps))
		return nil
	})
	write("limits: [ip:20/s]\n")
	wait := func(want []string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			n := len(got)
			last := []string(nil)
			if n > 0 {
				last = got[n-1]
			}
			mu.Unlock()
			if slices.Equal(last, want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("policies set %v, want %v last", got, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	wait([]string{"key:1/s", "ip:20/s"})
}

// TestRateLimitFlagsRegistered: perch edge and perch dev take the rate-limit flags of the
// contract, and refuse a bad policy as a usage error.
func TestRateLimitFlagsRegistered(t *testing.T) {
	for _, cmd := range []string{"edge", "dev"} {
		var out, errOut syncBuffer
		if err := run(t.Context(), []string{cmd, "-h"}, noEnv, &out, &errOut); err != nil {
			t.Fatalf("%s -h: %v", cmd, err)
		}
		for _, f := range []string{"rate-limit", "rate-limit-file", "rate-limit-sync", "rate-limit-headers"} {
			if h := errOut.String(); !strings.Contains(h, "-"+f+" ") && !strings.Contains(h, "-"+f+"\n") {
				t.Errorf("perch %s has no --%s", cmd, f)
			}
		}
		args := []string{cmd, "--rate-limit", "ip:50/fortnight"}
		if cmd == "edge" {
			args = append(args, "--region", "r")
		}
		if err := run(t.Context(), args, noEnv, &out, &errOut); !errors.Is(err, errUsage) {
			t.Errorf("perch %s with a bad --rate-limit: %v", cmd, err)
		}
	}
}
