package edge_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/edge/ratelimit"
	"github.com/perchhq/perch/internal/auth"
	"github.com/perchhq/perch/internal/clustertest"
	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/wire"
)

// fastPasswords are argon2id parameters cheap enough for tests under the race detector;
// production uses auth.DefaultParams.
var fastPasswords = auth.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

// accountsCluster starts a cluster whose core hashes passwords cheaply.
func accountsCluster(t *testing.T, regions []string, ecfg *edge.Config) *clustertest.Cluster {
	t.Helper()
	ccfg := core.LocalConfig()
	ccfg.Accounts = core.DefaultAccountsConfig()
	ccfg.Accounts.Password = fastPasswords
	if ecfg == nil {
		ecfg = &edge.Config{}
	}
	if ecfg.AuthRateLimit == (ratelimit.Policy{}) {
		// Tests send many account requests from one address; the ones about the limit set
		// their own. Off (a policy with Limit 0), not merely high: a limit's share on an edge
		// that just started is small until the others hear of its demand.
		ecfg.AuthRateLimit = ratelimit.Policy{Scope: ratelimit.ScopeIP}
	}
	return clustertest.Start(t, clustertest.Options{Regions: regions, Core: &ccfg, Edge: ecfg})
}

type tokensBody struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
}

func credentials(email, password string) []byte {
	b, _ := json.Marshal(map[string]string{"email": email, "password": password})
	return b
}

func refreshBody(token string) []byte {
	b, _ := json.Marshal(map[string]string{"refresh_token": token})
	return b
}

// tokensOf checks a signup or login answer and returns its tokens.
func tokensOf(t *testing.T, r clustertest.Response, status int) tokensBody {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d: %s", r.Status, status, r.Body)
	}
	if cc := r.Header["Cache-Control"]; cc != "no-store" {
		t.Fatalf("tokens answered with Cache-Control %q, want no-store", cc)
	}
	var tb tokensBody
	if err := json.Unmarshal(r.Body, &tb); err != nil {
		t.Fatal(err)
	}
	if tb.AccessToken == "" || len(tb.RefreshToken) != auth.RefreshTokenLen || tb.TokenType != "Bearer" || tb.ExpiresIn != 900 {
		t.Fatalf("tokens %+v", tb)
	}
	return tb
}

func bearer(token string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + token}
}

// expectUnauthorized checks a 401 with its problem and Bearer challenge.
func expectUnauthorized(t *testing.T, r clustertest.Response, code string) {
	t.Helper()
	expectProblem(t, r, 401, code)
	if !strings.HasPrefix(r.Header["Www-Authenticate"], "Bearer") {
		t.Fatalf("401 without a Bearer challenge: %q", r.Header["Www-Authenticate"])
	}
}

func TestAccountLifecycle(t *testing.T) {
	c := accountsCluster(t, []string{"a", "b"}, nil)
	base := c.Edge(0)
	doc := "/v1/collections/notes/docs/n1"

	signup := tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/signup", nil, credentials("Ada@Example.com", "correct horse")), 201)
	// The token works on every edge, and an edge that never saw it verifies it itself.
	for i := range 2 {
		if r := clustertest.Do(t, "PUT", c.Edge(i)+doc, bearer(signup.AccessToken), []byte(`{"a":1}`)); r.Status != 201 && r.Status != 200 {
			t.Fatalf("edge %d: PUT with a token: %d %s", i, r.Status, r.Body)
		}
	}
	// The email is taken, whatever its case.
	expectProblem(t, clustertest.Do(t, "POST", base+"/v1/auth/signup", nil, credentials("ada@example.COM", "another password")), 409, "already_exists")

	// A wrong password and an unknown account answer alike.
	wrong := clustertest.Do(t, "POST", base+"/v1/auth/login", nil, credentials("ada@example.com", "wrong horse"))
	unknown := clustertest.Do(t, "POST", base+"/v1/auth/login", nil, credentials("nobody@example.com", "wrong horse"))
	expectUnauthorized(t, wrong, "invalid_credentials")
	expectUnauthorized(t, unknown, "invalid_credentials")
	if string(wrong.Body) != string(unknown.Body) {
		t.Fatalf("a wrong password and an unknown account answer differently:\n%s\n%s", wrong.Body, unknown.Body)
	}

	login := tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/login", nil, credentials(" ada@example.com", "correct horse")), 200)

	// Refresh rotates: the new pair works, the old refresh token is used up.
	refreshed := tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/refresh", nil, refreshBody(login.RefreshToken)), 200)
	if refreshed.RefreshToken == login.RefreshToken {
		t.Fatal("refresh returned the same refresh token")
	}
	if r := clustertest.Do(t, "GET", c.Edge(1)+doc, bearer(refreshed.AccessToken), nil); r.Status != 200 {
		t.Fatalf("GET with the refreshed token: %d %s", r.Status, r.Body)
	}
	// Presenting the used one again revokes the whole session: its successor, and the
	// access tokens issued from it, on every edge.
	expectUnauthorized(t, clustertest.Do(t, "POST", base+"/v1/auth/refresh", nil, refreshBody(login.RefreshToken)), "invalid_credentials")
	expectUnauthorized(t, clustertest.Do(t, "POST", base+"/v1/auth/refresh", nil, refreshBody(refreshed.RefreshToken)), "invalid_credentials")
	for i := range 2 {
		clustertest.Eventually(t, 2*time.Second, func() error {
			if r := clustertest.Do(t, "GET", c.Edge(i)+doc, bearer(refreshed.AccessToken), nil); r.Status != 401 {
				return fmt.Errorf("edge %d: a token of a revoked session answered %d", i, r.Status)
			}
			return nil
		})
	}
	// The signup's session is another one, still valid.
	if r := clustertest.Do(t, "GET", base+doc, bearer(signup.AccessToken), nil); r.Status != 200 {
		t.Fatalf("GET with the signup's token: %d %s", r.Status, r.Body)
	}

	// Logout ends the session: the refresh token and, on every edge, its access tokens.
	if r := clustertest.Do(t, "POST", base+"/v1/auth/logout", nil, refreshBody(signup.RefreshToken)); r.Status != 204 {
		t.Fatalf("logout: %d %s", r.Status, r.Body)
	}
	expectUnauthorized(t, clustertest.Do(t, "POST", base+"/v1/auth/refresh", nil, refreshBody(signup.RefreshToken)), "invalid_credentials")
	for i := range 2 {
		clustertest.Eventually(t, 2*time.Second, func() error {
			if r := clustertest.Do(t, "GET", c.Edge(i)+doc, bearer(signup.AccessToken), nil); r.Status != 401 {
				return fmt.Errorf("edge %d: a token of a logged-out session answered %d", i, r.Status)
			}
			return nil
		})
	}
	// An edge started after the logout learns of it from the core.
	c.KillEdge(1)
	if err := c.StartEdge(1); err != nil {
		t.Fatal(err)
	}
	clustertest.WaitReady(t, c.Edge(1))
	clustertest.Eventually(t, 5*time.Second, func() error {
		if r := clustertest.Do(t, "GET", c.Edge(1)+doc, bearer(signup.AccessToken), nil); r.Status != 401 {
			return fmt.Errorf("a restarted edge answered a logged-out token %d", r.Status)
		}
		return nil
	})
	// And a login still works.
	tokensOf(t, clustertest.Do(t, "POST", c.Edge(1)+"/v1/auth/login", nil, credentials("ada@example.com", "correct horse")), 200)
}

func TestAccountRequestsBadInput(t *testing.T) {
	c := accountsCluster(t, []string{"a"}, nil)
	base := c.Edge(0)
	for _, tc := range []struct {
		name, path, body, ct string
		status               int
		code                 string
	}{
		{"short password", "/v1/auth/signup", `{"email":"a@example.com","password":"short"}`, "", 400, "weak_password"},
		{"not an email", "/v1/auth/signup", `{"email":"not-an-email","password":"long enough"}`, "", 400, "bad_request"},
		{"missing password", "/v1/auth/signup", `{"email":"a@example.com"}`, "", 400, "bad_request"},
		{"unknown member", "/v1/auth/login", `{"email":"a@example.com","password":"long enough","admin":true}`, "", 400, "bad_json"},
		{"not JSON", "/v1/auth/login", `email=a@example.com`, "", 400, "bad_json"},
		{"two objects", "/v1/auth/login", `{"email":"a@example.com","password":"x"}{}`, "", 400, "bad_json"},
		{"form", "/v1/auth/login", `{}`, "application/x-www-form-urlencoded", 415, "unsupported_media_type"},
		{"huge", "/v1/auth/login", `{"email":"a@example.com","password":"` + strings.Repeat("x", 9000) + `"}`, "", 413, "body_too_large"},
		{"malformed refresh token", "/v1/auth/refresh", `{"refresh_token":"not a token"}`, "", 401, "invalid_credentials"},
		{"unknown refresh token", "/v1/auth/logout", `{"refresh_token":"` + strings.Repeat("A", auth.RefreshTokenLen) + `"}`, "", 401, "invalid_credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{}
			if tc.ct != "" {
				h["Content-Type"] = tc.ct
			}
			r := clustertest.Do(t, "POST", base+tc.path, h, []byte(tc.body))
			expectProblem(t, r, tc.status, tc.code)
			if r.Header["Cache-Control"] != "no-store" {
				t.Fatalf("Cache-Control %q", r.Header["Cache-Control"])
			}
		})
	}
	expectProblem(t, clustertest.Do(t, "GET", base+"/v1/auth/login", nil, nil), 405, "method_not_allowed")
}

// TestLoginThrottledPerAccount: failed logins of one email make its next logins wait, and an
// email without an account is throttled alike, so the answer says nothing of which exist.
func TestLoginThrottledPerAccount(t *testing.T) {
	c := accountsCluster(t, []string{"a"}, &edge.Config{AuthRateLimit: ratelimit.Policy{Scope: ratelimit.ScopeIP}})
	base := c.Edge(0)
	tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/signup", nil, credentials("grace@example.com", "the right one")), 201)
	for _, email := range []string{"grace@example.com", "ghost@example.com"} {
		for range core.DefaultAccountsConfig().LoginAttempts {
			expectUnauthorized(t, clustertest.Do(t, "POST", base+"/v1/auth/login", nil, credentials(email, "a wrong one")), "invalid_credentials")
		}
		// Now even the right password waits.
		r := clustertest.Do(t, "POST", base+"/v1/auth/login", nil, credentials(email, "the right one"))
		expectProblem(t, r, 429, "too_many_attempts")
		if r.Header["Retry-After"] == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	// Another account is not affected.
	tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/signup", nil, credentials("hopper@example.com", "the right one")), 201)
	tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/login", nil, credentials("hopper@example.com", "the right one")), 200)
}

// TestAuthRoutesRateLimitedPerAddress: the account routes have a limit per client address of
// their own, which the other routes do not share.
func TestAuthRoutesRateLimitedPerAddress(t *testing.T) {
	c := accountsCluster(t, []string{"a"}, &edge.Config{AuthRateLimit: ratelimit.Policy{Scope: ratelimit.ScopeIP, Limit: 3, Period: time.Minute, Burst: 3}})
	base := c.Edge(0)
	for i := range 3 {
		r := clustertest.Do(t, "POST", base+"/v1/auth/login", nil, credentials(fmt.Sprintf("u%d@example.com", i), "whatever pw"))
		expectUnauthorized(t, r, "invalid_credentials")
	}
	r := clustertest.Do(t, "POST", base+"/v1/auth/signup", nil, credentials("late@example.com", "whatever pw"))
	expectProblem(t, r, 429, "rate_limited")
	if r.Header["Retry-After"] == "" || r.Header["Ratelimit-Policy"] == "" {
		t.Fatalf("429 without Retry-After or RateLimit-Policy: %v", r.Header)
	}
	// Reads are not counted by the auth limit.
	for range 10 {
		if r := clustertest.Do(t, "GET", base+"/v1/collections/notes/docs/x", nil, nil); r.Status != 404 {
			t.Fatalf("GET: %d %s", r.Status, r.Body)
		}
	}
}

func TestJWKS(t *testing.T) {
	c := accountsCluster(t, []string{"a"}, nil)
	r := clustertest.Do(t, "GET", c.Edge(0)+"/.well-known/jwks.json", nil, nil)
	if r.Status != 200 || r.Header["Content-Type"] != "application/jwk-set+json" || !strings.Contains(r.Header["Cache-Control"], "max-age") {
		t.Fatalf("jwks: %d %v %s", r.Status, r.Header, r.Body)
	}
	ks, err := auth.ParseJWKS(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	tb := tokensOf(t, clustertest.Do(t, "POST", c.Edge(0)+"/v1/auth/signup", nil, credentials("kid@example.com", "long enough")), 201)
	v, err := auth.NewVerifier(edge.DefaultConfig().Tokens, ks)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tb.AccessToken, time.Now()); err != nil {
		t.Fatalf("the published keys do not verify an issued token: %v", err)
	}
}

// TestTokenRejections: every way an access token can be wrong is answered 401 invalid_token
// with a problem body and the Bearer challenge, on any route.
func TestTokenRejections(t *testing.T) {
	c := accountsCluster(t, []string{"a"}, nil)
	base := c.Edge(0)
	doc := base + "/v1/collections/notes/docs/x"
	good := tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/signup", nil, credentials("eve@example.com", "long enough")), 201).AccessToken

	// A key of the test's own, published to the edges beside the core's as a core would
	// publish it, signs tokens that are valid but for one claim.
	own := auth.GenerateKey(time.Now().Add(-time.Hour))
	publish := func() {
		r := clustertest.Do(t, "GET", base+"/.well-known/jwks.json", nil, nil)
		ks, err := auth.ParseJWKS(r.Body)
		if err != nil {
			t.Fatal(err)
		}
		keys := ks.Keys()
		if _, ok := ks.Lookup(own.ID, time.Now()); !ok {
			keys = append(keys, own.Public())
		}
		jwks, err := auth.MarshalJWKS(keys)
		if err != nil {
			t.Fatal(err)
		}
		nc := natstest.Connect(t, c.NATSURL())
		if err := nc.Publish(wire.KeysSubject, jwks); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	sign := func(cfg auth.Config, key auth.Key, at time.Time) string {
		s, err := auth.NewSigner(key, cfg)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := s.Sign(s.NewClaims("user-1", at))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	cfg := edge.DefaultConfig().Tokens
	publish()
	// The edge accepts a token of the published key: the cases below differ from it in one
	// thing each.
	clustertest.Eventually(t, 2*time.Second, func() error {
		if r := clustertest.Do(t, "GET", doc, bearer(sign(cfg, own, time.Now())), nil); r.Status != 404 {
			return fmt.Errorf("a token of the published key answered %d: %s", r.Status, r.Body)
		}
		return nil
	})

	parts := strings.Split(good, ".")
	b64 := base64.RawURLEncoding.EncodeToString
	header := func(h string) string { return b64([]byte(h)) }
	tampered := []byte(parts[2])
	tampered[10] ^= 'A' ^ 'B'
	if tampered[10] == parts[2][10] {
		tampered[10] ^= 1
	}
	// HS256 "signed" with the public key's bytes: the key-confusion attack.
	hs := func(key []byte) string {
		input := header(`{"alg":"HS256","kid":"`+own.ID+`","typ":"at+jwt"}`) + "." + parts[1]
		m := hmac.New(sha256.New, key)
		m.Write([]byte(input))
		return input + "." + b64(m.Sum(nil))
	}
	other := cfg
	other.Audience = "someone-else"
	otherIss := cfg
	otherIss.Issuer = "https://evil.example"
	for _, tc := range []struct {
		name, header string
	}{
		{"tampered signature", "Bearer " + parts[0] + "." + parts[1] + "." + string(tampered)},
		{"tampered claims", "Bearer " + parts[0] + "." + b64([]byte(`{"sub":"admin"}`)) + "." + parts[2]},
		{"alg none", "Bearer " + header(`{"alg":"none","typ":"at+jwt"}`) + "." + parts[1] + "."},
		{"HS256 with the public key", "Bearer " + hs(own.Public().Key)},
		{"expired", "Bearer " + sign(cfg, own, time.Now().Add(-time.Hour))},
		{"not yet valid", "Bearer " + sign(cfg, own, time.Now().Add(time.Hour))},
		{"wrong audience", "Bearer " + sign(other, own, time.Now())},
		{"wrong issuer", "Bearer " + sign(otherIss, own, time.Now())},
		{"unknown kid", "Bearer " + sign(cfg, auth.GenerateKey(time.Now()), time.Now())},
		{"garbage", "Bearer not.a.token"},
		{"empty bearer", "Bearer "},
		{"basic", "Basic dXNlcjpwYXNz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			publish()
			for _, method := range []string{"GET", "PUT"} {
				var body []byte
				if method == "PUT" {
					body = []byte(`{"a":1}`)
				}
				r := clustertest.Do(t, method, doc, map[string]string{"Authorization": tc.header}, body)
				expectUnauthorized(t, r, "invalid_token")
				if !strings.Contains(r.Header["Www-Authenticate"], `error="invalid_token"`) {
					t.Fatalf("challenge %q", r.Header["Www-Authenticate"])
				}
			}
		})
	}
	// The good token still works: nothing above poisoned the cache.
	if r := clustertest.Do(t, "GET", doc, bearer(good), nil); r.Status != 404 {
		t.Fatalf("the good token answered %d: %s", r.Status, r.Body)
	}
	if n := c.Metric("perch_edge_tokens_refused_total")[""]; n < 12 {
		t.Fatalf("perch_edge_tokens_refused_total %v, want at least 12", n)
	}
}

// TestUserRateLimit: the user scope counts the requests of each verified user, whatever
// address they come from.
func TestUserRateLimit(t *testing.T) {
	c := accountsCluster(t, []string{"a"}, &edge.Config{RateLimits: []ratelimit.Policy{{Scope: ratelimit.ScopeUser, Limit: 3, Period: time.Minute, Burst: 3}}})
	base := c.Edge(0)
	alice := tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/signup", nil, credentials("alice@example.com", "long enough")), 201).AccessToken
	bob := tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/signup", nil, credentials("bob@example.com", "long enough")), 201).AccessToken
	doc := base + "/v1/collections/notes/docs/x"
	for range 3 {
		if r := clustertest.Do(t, "GET", doc, bearer(alice), nil); r.Status != 404 {
			t.Fatalf("GET: %d %s", r.Status, r.Body)
		}
	}
	expectProblem(t, clustertest.Do(t, "GET", doc, bearer(alice), nil), 429, "rate_limited")
	if r := clustertest.Do(t, "GET", doc, bearer(bob), nil); r.Status != 404 {
		t.Fatalf("another user was limited: %d %s", r.Status, r.Body)
	}
	// Anonymous requests have no user and are not counted by it.
	for range 5 {
		if r := clustertest.Do(t, "GET", doc, nil, nil); r.Status != 404 {
			t.Fatalf("anonymous GET: %d %s", r.Status, r.Body)
		}
	}
}
