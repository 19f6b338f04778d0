package ratelimit

import (
	"strconv"
	"time"
)

// Header names the edge writes from a Decision.
const (
	HeaderRetryAfter = "Retry-After"
	HeaderPolicy     = "RateLimit-Policy"
	HeaderRateLimit  = "RateLimit"
)

// Decision is Allow's answer: whether the request may proceed and the state of the most
// restrictive policy that counted it. The zero Decision of a request no policy counted has
// Allowed set and no policy: its header methods append nothing. A Decision is a value; it
// holds no reference to the request.
type Decision struct {
	// Allowed: the request is within every limit; it took a token from each policy.
	Allowed bool
	// Remaining is how many more requests this edge would admit now under the policy.
	Remaining int
	// Reset is how long until the policy's bucket, as this edge holds it, is full again.
	Reset time.Duration
	// RetryAfter, when the request is refused, is how long until this edge could admit it.
	RetryAfter time.Duration

	st *policyState
}

// Policy returns the policy the decision describes; false when no policy counted the
// request.
func (d Decision) Policy() (Policy, bool) {
	if d.st == nil {
		return Policy{}, false
	}
	return d.st.p, true
}

// PolicyName is the name of the policy in the headers ("ip", "ip-writes"), or "".
func (d Decision) PolicyName() string {
	if d.st == nil {
		return ""
	}
	return d.st.name
}

// RetryAfterSeconds is the Retry-After value of a refused request: RetryAfter rounded up to
// whole seconds, at least 1. It is 0 for an allowed request.
func (d Decision) RetryAfterSeconds() int {
	if d.Allowed {
		return 0
	}
	return max(ceilSeconds(d.RetryAfter), 1)
}

// AppendPolicyHeader appends the RateLimit-Policy field value of the policy, e.g.
// `"ip";q=50;w=1` (quota q per window w seconds, draft-ietf-httpapi-ratelimit-headers), with
// `;perch-burst=N` when the burst differs from the quota. It appends nothing when no policy
// counted the request.
func (d Decision) AppendPolicyHeader(dst []byte) []byte {
	if d.st == nil {
		return dst
	}
	return append(dst, d.st.header...)
}

// AppendRateLimitHeader appends the RateLimit field value, e.g. `"ip";r=0;t=1`: r is
// Remaining, t the effective window in seconds: for a refused request the Retry-After
// value, else Reset rounded up. It appends nothing when no policy counted the request.
func (d Decision) AppendRateLimitHeader(dst []byte) []byte {
	if d.st == nil {
		return dst
	}
	dst = append(dst, d.st.rlPrefix...)
	dst = strconv.AppendInt(dst, int64(max(d.Remaining, 0)), 10)
	dst = append(dst, ";t="...)
	t := d.RetryAfterSeconds()
	if d.Allowed {
		t = ceilSeconds(d.Reset)
	}
	return strconv.AppendInt(dst, int64(t), 10)
}

func ceilSeconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int((d + time.Second - 1) / time.Second)
}

// appendPolicyItem appends p as a RateLimit-Policy list member.
func appendPolicyItem(dst []byte, p Policy) []byte {
	dst = appendSFString(dst, p.Name())
	dst = append(dst, ";q="...)
	dst = strconv.AppendInt(dst, int64(p.Limit), 10)
	dst = append(dst, ";w="...)
	dst = strconv.AppendInt(dst, int64(p.Period/time.Second), 10)
	if b := p.burst(); b != p.Limit {
		dst = append(dst, ";perch-burst="...)
		dst = strconv.AppendInt(dst, int64(b), 10)
	}
	return dst
}

// appendSFString appends s as a structured-field String (RFC 9651 §3.3.3). Policy names
// are made of letters, digits, '-' and '_', so nothing needs escaping; the escapes are there
// for any other name.
func appendSFString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20 || c > 0x7e:
			dst = append(dst, '?')
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
