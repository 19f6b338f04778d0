package ratelimit

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Scope is what a policy counts requests by.
type Scope string

// The scopes of DESIGN §4.
const (
	// ScopeIP counts by client address (the edge passes the address, or its /64 for IPv6).
	ScopeIP Scope = "ip"
	// ScopeUser counts by authenticated user; anonymous requests are not counted.
	ScopeUser Scope = "user"
	// ScopeKey counts by X-Api-Key, the calling app; requests without one are not counted.
	ScopeKey Scope = "key"
)

func (s Scope) valid() bool { return s == ScopeIP || s == ScopeUser || s == ScopeKey }

// Limits on the numbers in a policy, so that every count and token stays exact in a float64.
const (
	maxLimit    = 1_000_000_000
	maxGroupLen = 64
)

// Policy is one rate limit: Limit requests per Period for each key of Scope, with bursts of
// up to Burst requests, on the routes of Group.
//
// A policy is a token bucket per key: it holds up to Burst tokens, gains Limit tokens per
// Period (continuously, not in steps), and each admitted request takes one. A Policy is a
// value; its String form identifies it, here and between edges.
type Policy struct {
	// Scope is what requests are counted by. Required.
	Scope Scope
	// Group restricts the policy to one route group (a name such as "reads", "writes" or
	// "sync", given by the edge with each request). Empty: every route.
	Group string
	// Limit is the number of requests per Period. Required, at least 1.
	Limit int
	// Period is time.Second or time.Minute.
	Period time.Duration
	// Burst is the most requests admitted at once after a quiet spell. Zero means Limit.
	Burst int
}

// burst is Burst with its default.
func (p Policy) burst() int {
	if p.Burst == 0 {
		return p.Limit
	}
	return p.Burst
}

// Validate reports what is wrong with p, in words fit for a usage message.
func (p Policy) Validate() error {
	if !p.Scope.valid() {
		return fmt.Errorf("scope %q: want ip, user or key", string(p.Scope))
	}
	if p.Limit < 1 || p.Limit > maxLimit {
		return fmt.Errorf("rate %d: want a whole number of requests from 1 to %d", p.Limit, maxLimit)
	}
	if p.Period != time.Second && p.Period != time.Minute {
		return fmt.Errorf("period %v: want per second (/s) or per minute (/m)", p.Period)
	}
	if p.Burst < 0 || p.Burst > maxLimit {
		return fmt.Errorf("burst %d: want a whole number from 1 to %d", p.Burst, maxLimit)
	}
	if err := validGroup(p.Group); err != nil {
		return err
	}
	return nil
}

func validGroup(g string) error {
	if g == "" {
		return nil
	}
	if len(g) > maxGroupLen {
		return fmt.Errorf("group %q: longer than %d bytes", g, maxGroupLen)
	}
	for i := 0; i < len(g); i++ {
		c := g[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '-' || c == '_')) {
			return fmt.Errorf("group %q: want lower-case letters, digits, '-' and '_', starting with a letter or digit", g)
		}
	}
	return nil
}

// String is p's canonical form, which is also the flag syntax that ParsePolicy reads:
// SCOPE:LIMIT/UNIT[:BURST][@GROUP], e.g. "ip:50/s", "key:6000/m:200", "ip:10/s:20@writes".
// The burst is left out when it is the default (Limit). Two policies are the same policy
// when their strings are equal.
func (p Policy) String() string {
	var b strings.Builder
	b.WriteString(string(p.Scope))
	b.WriteByte(':')
	b.WriteString(strconv.Itoa(p.Limit))
	if p.Period == time.Minute {
		b.WriteString("/m")
	} else {
		b.WriteString("/s")
	}
	if burst := p.burst(); burst != p.Limit {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(burst))
	}
	if p.Group != "" {
		b.WriteByte('@')
		b.WriteString(p.Group)
	}
	return b.String()
}

// Name is the policy's name in the RateLimit and RateLimit-Policy headers and in metrics:
// the scope, then "-GROUP" when the policy has a group, then "-minute" when it counts per
// minute, e.g. "ip", "ip-writes", "key-minute". It does not depend on the numbers, so it
// stays the same when a reload changes a limit. Two policies of one Limiter may not share
// a name.
func (p Policy) Name() string {
	n := string(p.Scope)
	if p.Group != "" {
		n += "-" + p.Group
	}
	if p.Period == time.Minute {
		n += "-minute"
	}
	return n
}

// ParsePolicy reads a policy in the flag syntax of --rate-limit:
//
//	SCOPE:RATE[:BURST][@GROUP]
//
// SCOPE is ip, user or key; RATE is N/s or N/m (N requests per second or per minute); BURST,
// default N, is the most requests admitted at once; GROUP limits the policy to one route
// group. Examples: "ip:50/s", "user:600/m:100", "ip:10/s:20@writes".
func ParsePolicy(s string) (Policy, error) {
	p, err := parsePolicy(strings.TrimSpace(s))
	if err != nil {
		return Policy{}, fmt.Errorf("rate limit %q: %w", s, err)
	}
	return p, nil
}

func parsePolicy(s string) (Policy, error) {
	var p Policy
	if s == "" {
		return p, errors.New("empty; want SCOPE:RATE[:BURST][@GROUP], e.g. ip:50/s")
	}
	if at := strings.IndexByte(s, '@'); at >= 0 {
		p.Group = s[at+1:]
		if p.Group == "" {
			return p, errors.New("empty group after '@'")
		}
		s = s[:at]
	}
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return p, errors.New("want SCOPE:RATE[:BURST][@GROUP], e.g. ip:50/s")
	}
	p.Scope = Scope(strings.ToLower(parts[0]))
	if !p.Scope.valid() {
		return p, fmt.Errorf("scope %q: want ip, user or key", parts[0])
	}
	limit, period, err := parseRate(parts[1])
	if err != nil {
		return p, err
	}
	p.Limit, p.Period = limit, period
	if len(parts) == 3 {
		b, err := parseCount(parts[2])
		if err != nil {
			return p, fmt.Errorf("burst %q: %w", parts[2], err)
		}
		p.Burst = b
	}
	if err := p.Validate(); err != nil {
		return p, err
	}
	return p.canonical(), nil
}

// parseRate reads N/s or N/m.
func parseRate(s string) (int, time.Duration, error) {
	num, unit, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, fmt.Errorf("rate %q: want N/s or N/m", s)
	}
	var period time.Duration
	switch unit {
	case "s":
		period = time.Second
	case "m":
		period = time.Minute
	default:
		return 0, 0, fmt.Errorf("rate %q: unit %q: want s (per second) or m (per minute)", s, unit)
	}
	n, err := parseCount(num)
	if err != nil {
		return 0, 0, fmt.Errorf("rate %q: %w", s, err)
	}
	return n, period, nil
}

// parseCount reads a whole number from 1 to maxLimit, digits only.
func parseCount(s string) (int, error) {
	if s == "" {
		return 0, errors.New("missing number")
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, errors.New("want a whole number")
		}
		n = n*10 + int(c-'0')
		if n > maxLimit {
			return 0, fmt.Errorf("more than %d", maxLimit)
		}
	}
	if n < 1 {
		return 0, errors.New("want at least 1")
	}
	return n, nil
}

// canonical is p with the default burst written as zero, so that equal policies compare
// equal with ==.
func (p Policy) canonical() Policy {
	if p.Burst == p.Limit {
		p.Burst = 0
	}
	return p
}

// validatePolicies checks each policy and that no two share a name (the same scope, group
// and period: one of them would be redundant, and their headers would be ambiguous).
func validatePolicies(ps []Policy) error {
	names := make(map[string]Policy, len(ps))
	for _, p := range ps {
		if err := p.Validate(); err != nil {
			return fmt.Errorf("rate limit %s: %w", p, err)
		}
		n := p.Name()
		if q, dup := names[n]; dup {
			return fmt.Errorf("rate limits %s and %s both limit %s per %s%s: keep one", q, p, p.Scope,
				periodWord(p.Period), groupWords(p.Group))
		}
		names[n] = p
	}
	return nil
}

func periodWord(d time.Duration) string {
	if d == time.Minute {
		return "minute"
	}
	return "second"
}

func groupWords(g string) string {
	if g == "" {
		return " on every route"
	}
	return " on the " + g + " routes"
}
