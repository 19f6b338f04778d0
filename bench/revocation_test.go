package bench

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/edge/ratelimit"
	"github.com/perchhq/perch/internal/auth"
	"github.com/perchhq/perch/internal/clustertest"
)

// BenchmarkRevocation measures how long after a logout is answered every edge refuses the
// session's access token: revocations travel like change events, so the invalidation bound
// applies (target p99 ≤ 100 ms, p50 ≤ 20 ms; run it with -benchtime 200x).
//
// Three edges (the default regions); each iteration logs a user in, has every edge accept
// the access token (so that it sits in each edge's verified-token cache), logs out through
// edge 0, and from the 204 on has one poller per edge send the token every 200 µs until the
// edge answers 401. It reports the percentiles of the time until the last edge refused it.
func BenchmarkRevocation(b *testing.B) {
	ccfg := core.LocalConfig()
	ccfg.Accounts = core.DefaultAccountsConfig()
	// Cheap hashes: the benchmark measures revocations, not argon2id.
	ccfg.Accounts.Password = auth.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	// The per-address limit of the account routes would stop the logins: off.
	ecfg := edge.DefaultConfig()
	ecfg.AuthRateLimit = ratelimit.Policy{Scope: ratelimit.ScopeIP}
	c := clustertest.Start(b, clustertest.Options{Core: &ccfg, Edge: &ecfg})
	edges := c.EdgeURLs()
	creds := []byte(`{"email":"revoke@example.com","password":"long enough password"}`)
	if r := clustertest.Do(b, "POST", edges[0]+"/v1/auth/signup", nil, creds); r.Status != 201 {
		b.Fatalf("signup: %d %s", r.Status, r.Body)
	}
	const doc = "/v1/collections/bench/docs/absent"
	var lags []time.Duration
	for b.Loop() {
		r := clustertest.Do(b, "POST", edges[0]+"/v1/auth/login", nil, creds)
		var tokens struct {
			AccessToken  string `json:"access_token"`
			RefreshToken string `json:"refresh_token"`
		}
		if err := json.Unmarshal(r.Body, &tokens); r.Status != 200 || err != nil {
			b.Fatalf("login: %d %s", r.Status, r.Body)
		}
		h := map[string]string{"Authorization": "Bearer " + tokens.AccessToken}
		for _, base := range edges {
			if r := clustertest.Do(b, "GET", base+doc, h, nil); r.Status != 404 {
				b.Fatalf("a fresh token answered %d: %s", r.Status, r.Body)
			}
		}
		out := clustertest.Do(b, "POST", edges[0]+"/v1/auth/logout", nil, []byte(`{"refresh_token":"`+tokens.RefreshToken+`"}`))
		if out.Status != 204 {
			b.Fatalf("logout: %d %s", out.Status, out.Body)
		}
		start := time.Now()
		done := make(chan time.Duration, len(edges))
		for _, base := range edges {
			go func() {
				for deadline := start.Add(convergeTimeout); time.Now().Before(deadline); time.Sleep(pollPause) {
					if r, err := clustertest.Send("GET", base+doc, h, nil); err == nil && r.Status == 401 {
						done <- time.Since(start)
						return
					}
				}
				done <- convergeTimeout
			}()
		}
		var last time.Duration
		for range edges {
			last = max(last, <-done)
		}
		lags = append(lags, last)
	}
	slices.Sort(lags)
	pct := func(p float64) float64 {
		return float64(lags[min(len(lags)-1, int(p*float64(len(lags))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(.50), "p50_ms")
	b.ReportMetric(pct(.99), "p99_ms")
	b.ReportMetric(float64(lags[len(lags)-1].Microseconds())/1000, "max_ms")
	b.Logf("%d logouts: every edge refused the token after p50 %.2f ms, p99 %.2f ms", len(lags), pct(.5), pct(.99))
}
