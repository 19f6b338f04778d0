package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/internal/clustertest"
)

// syncBuffer is a bytes.Buffer safe to write from the command and read from the test.
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

func noEnv(string) string { return "" }

func TestRunUsage(t *testing.T) {
	var out, errOut syncBuffer
	if err := run(t.Context(), []string{"version"}, noEnv, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "perch ") {
		t.Fatalf("version: %q, %v", out.String(), err)
	}
	for _, args := range [][]string{nil, {"bogus"}, {"core"}, {"edge", "--nats", "nats://127.0.0.1:1"}, {"dev", "--port-base", "0"}, {"dev", "--nope"},
		{"edge", "--region", "r", "--cache-control", "notes=max-age=soon"}, {"dev", "--cache-control", "no-equals"},
		{"edge", "--region", "r", "--cache-bytes", "lots"}, {"dev", "--cache-bytes", "0"},
		{"edge", "--region", "r", "--cache-items", "0"}, {"dev", "--cache-items", "many"},
		{"edge", "--region", "r", "--api-keys", "maybe"}, {"dev", "--api-keys", "on"}} {
		err := run(t.Context(), args, noEnv, &out, &errOut)
		if !errors.Is(err, errUsage) || exitCode(err) != 2 {
			t.Errorf("perch %v: %v, want a usage error (exit 2)", args, err)
		}
	}
	// -h is not an error.
	if err := run(t.Context(), []string{"edge", "-h"}, noEnv, &out, &errOut); err != nil {
		t.Errorf("edge -h: %v", err)
	}
}

// TestDev runs `perch dev` as the CLI contract says: it prints its edges' URLs, serves, stops
// cleanly when asked, and keeps the data for the next start. The port base comes from the
// environment, as every flag may.
func TestDev(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	env := func(k string) string {
		if k == "PERCH_PORT_BASE" {
			return strconv.Itoa(port)
		}
		return ""
	}
	start := func() (string, context.CancelFunc, chan error) {
		ctx, cancel := context.WithCancel(context.Background())
		var out syncBuffer
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"dev", "--data", dir, "--regions", "solo", "--log-level", "error"}, env, &out, &out)
		}()
		re := regexp.MustCompile(`edge solo\s+(http://\S+)`)
		var url string
		clustertest.Eventually(t, 30*time.Second, func() error {
			select {
			case err := <-done:
				t.Fatalf("perch dev ended: %v\n%s", err, out.String())
			default:
			}
			m := re.FindStringSubmatch(out.String())
			if m == nil || !strings.Contains(out.String(), "metrics") {
				return errors.New("no edge URL printed yet")
			}
			url = m[1]
			return nil
		})
		if want := "http://127.0.0.1:" + strconv.Itoa(port); url != want {
			t.Fatalf("edge at %s, want %s from PERCH_PORT_BASE", url, want)
		}
		clustertest.WaitReady(t, url)
		return url, cancel, done
	}
	stop := func(cancel context.CancelFunc, done chan error) {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("perch dev stopped with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("perch dev did not stop")
		}
	}

	url, cancel, done := start()
	if r := clustertest.Do(t, "PUT", url+"/v1/collections/notes/docs/kept", nil, []byte(`{"a":1}`)); r.Status != 201 {
		t.Fatalf("PUT: %d %s", r.Status, r.Body)
	}
	stop(cancel, done)

	url, cancel, done = start()
	defer stop(cancel, done)
	if r := clustertest.Do(t, "GET", url+"/v1/collections/notes/docs/kept", nil, nil); r.Status != 200 || !strings.Contains(string(r.Body), `"data":{"a":1}`) {
		t.Fatalf("after a restart: %d %s", r.Status, r.Body)
	}
}

// TestCacheControlFlag: --cache-control takes COLLECTION=DIRECTIVES, repeated or ';'-separated
// (as PERCH_CACHE_CONTROL gives them), and normalises each value.
func TestCacheControlFlag(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	f := cacheControlFlag(fs)
	env := func(k string) string {
		if k == "PERCH_CACHE_CONTROL" {
			return "notes=Public, MAX-AGE=60; *=private, no-cache"
		}
		return ""
	}
	if err := parseFlags(fs, []string{"--cache-control", "feed=max-age=5, stale-while-revalidate=30"}, env); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"notes": "public, max-age=60", "*": "private, no-cache", "feed": "max-age=5, stale-while-revalidate=30"}
	if len(f.m) != len(want) {
		t.Fatalf("%v, want %v", f.m, want)
	}
	for k, v := range want {
		if f.m[k] != v {
			t.Fatalf("%s: %q, want %q", k, f.m[k], v)
		}
	}
	if got := f.String(); got != "*=private, no-cache;feed=max-age=5, stale-while-revalidate=30;notes=public, max-age=60" {
		t.Fatalf("String() = %q", got)
	}
}

// TestCacheFlags: --cache-bytes and --cache-items, from the command line or from
// PERCH_CACHE_BYTES and PERCH_CACHE_ITEMS, land in the edge's Config; left out, the
// edge's defaults stand (CacheItems 0: derived from the bytes by the cache). That the
// command line wins over the environment is parseFlags' own, tested with --oidc and
// --rate-limit.
func TestCacheFlags(t *testing.T) {
	for _, tc := range []struct {
		name         string
		args         []string
		env          map[string]string
		bytes, items int64
	}{
		{"defaults", nil, nil, edge.DefaultConfig().CacheBytes, 0},
		{"flags", []string{"--cache-bytes", "64MiB", "--cache-items", "200000"}, nil, 64 << 20, 200000},
		{"environment", nil, map[string]string{"PERCH_CACHE_BYTES": "1GiB", "PERCH_CACHE_ITEMS": "5000"}, 1 << 30, 5000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			f := newCacheFlags(fs)
			if err := parseFlags(fs, tc.args, func(k string) string { return tc.env[k] }); err != nil {
				t.Fatal(err)
			}
			cfg := edge.DefaultConfig()
			cfg.CacheItems = -1 // apply must set it, to 0 as well
			f.apply(&cfg)
			if cfg.CacheBytes != tc.bytes || cfg.CacheItems != tc.items {
				t.Fatalf("CacheBytes %d, CacheItems %d; want %d, %d", cfg.CacheBytes, cfg.CacheItems, tc.bytes, tc.items)
			}
		})
	}
}

func TestBytesFlag(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "512MiB": 512 << 20, "2 GiB": 2 << 30, "10MB": 10e6, "64KiB": 64 << 10, "100B": 100} {
		var b bytesFlag
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("%q: %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1MiB", "1.5GiB", "MiB", "1TiB", "9223372036854775807GiB"} {
		var b bytesFlag
		if err := b.Set(in); err == nil {
			t.Errorf("%q accepted as %d", in, b)
		}
	}
}
