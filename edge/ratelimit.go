package edge

import (
	"bytes"
	"net/netip"
	"slices"
	"strconv"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/edge/ratelimit"
	"github.com/perchhq/perch/internal/problem"
)

// Route groups a rate-limit policy may be restricted to (ratelimit.Policy.Group, the
// `@GROUP` of --rate-limit): reads (GET and HEAD but sync), writes (every other method),
// sync (GET /v1/sync), auth (the account routes /v1/auth/..., groupAuth).
const (
	groupReads  = "reads"
	groupWrites = "writes"
	groupSync   = "sync"
)

var (
	// In fasthttp's normal form (SetCanonical takes names as they are).
	hdrRateLimitPolicy = []byte("Ratelimit-Policy")
	hdrRateLimit       = []byte("Ratelimit")
	pathSync           = []byte("/v1/sync")
	pathHealthz        = []byte("/healthz")
	pathReadyz         = []byte("/readyz")
)

// SetRateLimits replaces the rate-limit policies in force (a reload of the limits file):
// requests are decided by the old set or the new one, never a mix; policies in both keep
// their counts. On an error the policies in force stay.
func (e *Edge) SetRateLimits(ps []ratelimit.Policy) error {
	if err := e.limiter.SetPolicies(e.withAuthLimit(ps)); err != nil {
		return err
	}
	e.limitKeys.Store(hasScope(ps, ratelimit.ScopeKey))
	e.limiting.Store(limitsBeyondAuth(ps))
	e.log.Info("rate limits in force", "policies", len(ps))
	return nil
}

// withAuthLimit is ps with Config.AuthRateLimit, unless a policy of ps names the auth group
// (it then replaces the default) or the default is off.
func (e *Edge) withAuthLimit(ps []ratelimit.Policy) []ratelimit.Policy {
	d := e.cfg.AuthRateLimit
	if d.Limit <= 0 {
		return ps
	}
	for _, p := range ps {
		if p.Group == groupAuth {
			return ps
		}
	}
	d.Group = groupAuth
	return append(slices.Clip(ps), d)
}

// limitsBeyondAuth reports whether a policy of ps applies to routes other than the account
// routes: only then does every request consult the limiter (the account routes always do).
func limitsBeyondAuth(ps []ratelimit.Policy) bool {
	for _, p := range ps {
		if p.Group != groupAuth {
			return true
		}
	}
	return false
}

func hasScope(ps []ratelimit.Policy, s ratelimit.Scope) bool {
	for _, p := range ps {
		if p.Scope == s {
			return true
		}
	}
	return false
}

// rateLimit decides the request by the rate limits in force, and answers it 429 when it is
// over one: with Retry-After, RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-
// headers) and a problem body, never cached. With Config.RateLimitHeaders, a request a
// policy admits carries the two RateLimit headers too, so that clients can pace themselves.
// Health checks are exempt.
// It reports whether the request may go on. It allocates nothing for a key the limiter
// already tracks.
func (e *Edge) rateLimit(ctx *fasthttp.RequestCtx, ip netip.Addr, u user, app string) bool {
	path := ctx.Path()
	if bytes.Equal(path, pathHealthz) || bytes.Equal(path, pathReadyz) {
		return true
	}
	group := groupWrites
	switch {
	case bytes.HasPrefix(path, pathAuthPrefix):
		group = groupAuth
	case bytes.Equal(path, pathSync):
		group = groupSync
	case ctx.IsGet() || ctx.IsHead():
		group = groupReads
	}
	var k ratelimit.Keys
	if ip.Is6() {
		// An IPv6 client has a /64 to itself: counting addresses would let it take 2^64.
		if p, err := ip.Prefix(64); err == nil {
			ip = p.Addr()
		}
	}
	a := ip.As16()
	if ip.IsValid() {
		k.IP = a[:]
	}
	if e.limitKeys.Load() {
		if app != "" {
			// The checked key's id: the key itself is a secret the limiter would keep
			// and tell the other edges.
			k.APIKey = unsafe.Slice(unsafe.StringData(app), len(app))
		} else {
			k.APIKey = ctx.Request.Header.Peek(hdrAPIKey)
		}
	}
	if u != "" {
		// Read only: the limiter copies a key it keeps.
		k.User = unsafe.Slice(unsafe.StringData(u), len(u))
	}
	d := e.limiter.AllowAt(ctx.Time(), group, k)
	if _, ok := d.Policy(); !ok {
		return true
	}
	if d.Allowed && !e.cfg.RateLimitHeaders {
		return true
	}
	var buf [96]byte
	h := &ctx.Response.Header
	h.SetCanonical(hdrRateLimitPolicy, d.AppendPolicyHeader(buf[:0]))
	h.SetCanonical(hdrRateLimit, d.AppendRateLimitHeader(buf[:0]))
	if d.Allowed {
		return true
	}
	e.metrics.rateLimited.Inc()
	retry := d.RetryAfterSeconds()
	e.writeProblem(ctx, problem.Newf(problem.RateLimited, "over the rate limit %s; retry in %d s", d.PolicyName(), retry))
	h.SetCanonical(hdrCacheStatus, csBypass)
	h.SetCanonical(hdrRetryAfter, strconv.AppendInt(buf[:0], int64(retry), 10))
	// Refused before routing, like the shields' refusals: counted under no route.
	e.metrics.observe(unknownRoute, ctx)
	return false
}
