package main

import (
	"errors"
	"flag"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/perchhq/perch/edge"
)

// parseShields parses args and env into the shield flags and returns the edge config they
// make.
func parseShields(t *testing.T, args []string, env map[string]string) (edge.Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	s := shieldFlags(fs)
	cfg := edge.DefaultConfig()
	if err := parseFlags(fs, args, func(k string) string { return env[k] }); err != nil {
		return cfg, err
	}
	s.apply(&cfg)
	return cfg, nil
}

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func TestShieldFlags(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		cfg, err := parseShields(t, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := edge.DefaultConfig(); !reflect.DeepEqual(cfg, d) {
			t.Fatalf("no flags changed the config:\n%+v\nwant\n%+v", cfg, d)
		}
	})
	t.Run("command line", func(t *testing.T) {
		cfg, err := parseShields(t, []string{
			"--allow-ip", "10.0.0.0/8, 2001:db8::/32", "--allow-ip", "192.0.2.7",
			"--deny-ip", "10.1.2.3/16", "--trusted-proxy", "fd00::1",
			"--max-conns-per-ip", "8", "--max-core-reads", "0", "--max-pending-writes", "-1",
			"--max-header-bytes", "32KiB", "--max-body-bytes", "2MiB",
			"--read-header-timeout", "3s", "--read-body-timeout", "1m", "--idle-timeout", "90s",
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := edge.DefaultConfig()
		want.AllowIPs = prefixes("10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32")
		want.DenyIPs = prefixes("10.1.0.0/16")
		want.TrustedProxies = prefixes("fd00::1/128")
		want.MaxConnsPerIP, want.MaxCoreReads, want.MaxPendingWrites = 8, -1, -1
		want.MaxHeaderBytes, want.MaxBodyBytes = 32<<10, 2<<20
		want.ReadHeaderTimeout, want.ReadBodyTimeout, want.IdleTimeout = 3*time.Second, time.Minute, 90*time.Second
		if !reflect.DeepEqual(cfg, want) {
			t.Fatalf("config\n%+v\nwant\n%+v", cfg, want)
		}
	})
	t.Run("environment", func(t *testing.T) {
		env := map[string]string{
			"PERCH_ALLOW_IP":         "198.51.100.0/24,203.0.113.0/24",
			"PERCH_DENY_IP":          "198.51.100.66",
			"PERCH_TRUSTED_PROXY":    "10.0.0.0/8",
			"PERCH_MAX_CONNS_PER_IP": "0",
		}
		cfg, err := parseShields(t, []string{"--deny-ip", "203.0.113.9", "--deny-ip", "203.0.113.10"}, env)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(cfg.AllowIPs, prefixes("198.51.100.0/24", "203.0.113.0/24")) ||
			!reflect.DeepEqual(cfg.TrustedProxies, prefixes("10.0.0.0/8")) || cfg.MaxConnsPerIP != -1 {
			t.Fatalf("from the environment: %v %v %d", cfg.AllowIPs, cfg.TrustedProxies, cfg.MaxConnsPerIP)
		}
		// The command line replaces the environment's list; its repetitions add up.
		if !reflect.DeepEqual(cfg.DenyIPs, prefixes("203.0.113.9/32", "203.0.113.10/32")) {
			t.Fatalf("deny list %v", cfg.DenyIPs)
		}
	})
	for _, args := range [][]string{
		{"--allow-ip", "10.0.0.0/33"},
		{"--deny-ip", "example.com"},
		{"--trusted-proxy", "fe80::1%eth0"},
		{"--trusted-proxy", "10.0.0.1,nope"},
		{"--max-header-bytes", "0"},
		{"--max-conns-per-ip", "many"},
	} {
		if _, err := parseShields(t, args, nil); !errors.Is(err, errUsage) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	if _, err := parseShields(t, nil, map[string]string{"PERCH_ALLOW_IP": "10/8"}); !errors.Is(err, errUsage) {
		t.Errorf("a bad PERCH_ALLOW_IP: %v, want a usage error", err)
	}
}

// TestShieldFlagsRegistered: perch edge and perch dev both take the shields' flags.
func TestShieldFlagsRegistered(t *testing.T) {
	for _, cmd := range []string{"edge", "dev"} {
		var out, errOut syncBuffer
		if err := run(t.Context(), []string{cmd, "-h"}, noEnv, &out, &errOut); err != nil {
			t.Fatalf("%s -h: %v", cmd, err)
		}
		for _, f := range []string{"allow-ip", "deny-ip", "trusted-proxy", "max-conns-per-ip", "max-core-reads",
			"max-pending-writes", "max-header-bytes", "max-body-bytes", "read-header-timeout", "read-body-timeout", "idle-timeout"} {
			if !strings.Contains(errOut.String(), "-"+f+" ") {
				t.Errorf("perch %s has no --%s", cmd, f)
			}
		}
		err := run(t.Context(), []string{cmd, "--region", "r", "--allow-ip", "nope"}, noEnv, &out, &errOut)
		if cmd == "dev" {
			err = run(t.Context(), []string{cmd, "--allow-ip", "nope"}, noEnv, &out, &errOut)
		}
		if !errors.Is(err, errUsage) {
			t.Errorf("perch %s with a bad --allow-ip: %v", cmd, err)
		}
	}
}
