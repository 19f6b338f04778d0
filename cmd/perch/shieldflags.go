package main

import (
	"flag"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/perchhq/perch/edge"
)

// shields are the flags of an edge's shields against abusive clients and overload (edge.Config,
// "Shields" in edge/README.md), the same for perch edge and perch dev.
type shields struct {
	allow, deny, trusted                          *prefixFlag
	maxConnsPerIP, maxCoreReads, maxPendingWrites *int
	maxHeaderBytes, maxBodyBytes                  *bytesFlag
	readHeaderTimeout, readBodyTimeout, idle      *time.Duration
}

// shieldFlags adds the flags of the shields to fs; apply their values to an edge.Config once
// fs is parsed.
func shieldFlags(fs *flag.FlagSet) *shields {
	d := edge.DefaultConfig()
	s := &shields{
		allow:   &prefixFlag{fs: fs},
		deny:    &prefixFlag{fs: fs},
		trusted: &prefixFlag{fs: fs},
	}
	fs.Var(s.allow, "allow-ip", "serve only clients in these CIDR prefixes (or addresses), comma-separated or repeated; others get 403 (/healthz and /readyz excepted). Default: everyone")
	fs.Var(s.deny, "deny-ip", "refuse clients in these CIDR prefixes (or addresses) with 403, comma-separated or repeated; wins over --allow-ip")
	fs.Var(s.trusted, "trusted-proxy", "proxies and load balancers whose X-Forwarded-For is believed (CIDR prefixes or addresses, comma-separated or repeated): the client is the right-most address in it that is not one of them. Default: none, the client is the TCP peer")
	s.maxConnsPerIP = fs.Int("max-conns-per-ip", d.MaxConnsPerIP, "connections one client address (IPv6: its /64) may have open; more get 429. Trusted proxies are not counted. 0: no cap")
	s.maxCoreReads = fs.Int("max-core-reads", d.MaxCoreReads, "reads an edge may have in flight to the core; more get 503 overloaded (cache hits are never refused). 0: no bound")
	s.maxPendingWrites = fs.Int("max-pending-writes", d.MaxPendingWrites, "writes an edge may hold between taking and answering them; more get 503 overloaded. 0: no bound")
	hdr, body := bytesFlag(d.MaxHeaderBytes), bytesFlag(d.MaxBodyBytes)
	s.maxHeaderBytes, s.maxBodyBytes = &hdr, &body
	fs.Var(s.maxHeaderBytes, "max-header-bytes", "largest request line and headers; larger get 431 (also the read buffer of each connection)")
	fs.Var(s.maxBodyBytes, "max-body-bytes", "largest request body; larger get 413 (capped by the NATS server's max_payload)")
	s.readHeaderTimeout = fs.Duration("read-header-timeout", d.ReadHeaderTimeout, "time a request's headers may take to arrive, from the connection's accept or the request's first byte; slower get 408")
	s.readBodyTimeout = fs.Duration("read-body-timeout", d.ReadBodyTimeout, "time a request's body may take to arrive after its headers; slower get 408")
	s.idle = fs.Duration("idle-timeout", d.IdleTimeout, "time a kept-alive connection may wait for its next request")
	return s
}

// apply sets the shields of cfg from the flags.
func (s *shields) apply(cfg *edge.Config) {
	cfg.AllowIPs = s.allow.prefixes
	cfg.DenyIPs = s.deny.prefixes
	cfg.TrustedProxies = s.trusted.prefixes
	cfg.MaxConnsPerIP = orNoBound(*s.maxConnsPerIP)
	cfg.MaxCoreReads = orNoBound(*s.maxCoreReads)
	cfg.MaxPendingWrites = orNoBound(*s.maxPendingWrites)
	cfg.MaxHeaderBytes = int(min(int64(*s.maxHeaderBytes), 1<<30))
	cfg.MaxBodyBytes = int(min(int64(*s.maxBodyBytes), 1<<30))
	cfg.ReadHeaderTimeout = *s.readHeaderTimeout
	cfg.ReadBodyTimeout = *s.readBodyTimeout
	cfg.IdleTimeout = *s.idle
}

// orNoBound maps a flag's "0: no bound" to edge.Config's (negative).
func orNoBound(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// prefixFlag is a list of CIDR prefixes, comma-separated and repeatable; a bare address is
// the prefix of that address alone. Values from the command line replace those from the
// environment (PERCH_ALLOW_IP=... and --allow-ip ...: the latter), so that the command line
// wins there as for every other flag.
type prefixFlag struct {
	fs       *flag.FlagSet
	prefixes []netip.Prefix
	// fromArgs is set once a value came from the command line.
	fromArgs bool
}

func (p *prefixFlag) String() string {
	if p == nil {
		return ""
	}
	s := make([]string, len(p.prefixes))
	for i, pr := range p.prefixes {
		s[i] = pr.String()
	}
	return strings.Join(s, ",")
}

func (p *prefixFlag) Set(v string) error {
	// The environment is read before the command line is parsed: FlagSet.Parsed is true
	// only from the first command-line flag on.
	if p.fs != nil && p.fs.Parsed() && !p.fromArgs {
		p.prefixes, p.fromArgs = nil, true
	}
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		pr, err := parsePrefix(s)
		if err != nil {
			return err
		}
		p.prefixes = append(p.prefixes, pr)
	}
	return nil
}

// parsePrefix parses a CIDR prefix ("10.0.0.0/8", "2001:db8::/32") or an address, which
// stands for itself alone. The host bits of a prefix are dropped ("10.1.2.3/8" is 10.0.0.0/8).
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix such as 10.0.0.0/8 or 2001:db8::/32", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or a CIDR prefix such as 10.0.0.0/8", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
