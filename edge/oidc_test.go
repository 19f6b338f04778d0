package edge_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/edge/ratelimit"
	"github.com/perchhq/perch/internal/clustertest"
	"github.com/perchhq/perch/internal/oidctest"
)

const oidcClient = "notes-app"

// oidcCluster starts a cluster whose core accepts the ID tokens of p as provider "test"
// (keys found through discovery) and of a second provider "other" that is never asked.
func oidcCluster(t *testing.T, p *oidctest.Provider) *clustertest.Cluster {
	t.Helper()
	ccfg := core.LocalConfig()
	ccfg.Accounts = core.DefaultAccountsConfig()
	ccfg.Accounts.Password = fastPasswords
	ccfg.Accounts.OIDC = []core.OIDCProvider{
		{Name: "test", Issuer: p.Issuer, Audience: oidcClient},
	}
	ccfg.Accounts.OIDCClient = p.Client()
	// Every token of an unknown kid makes one fetch, so that the test can count them.
	ccfg.Accounts.OIDCRefetch = time.Nanosecond
	ecfg := &edge.Config{AuthRateLimit: ratelimit.Policy{Scope: ratelimit.ScopeIP}}
	return clustertest.Start(t, clustertest.Options{Regions: []string{"a"}, Core: &ccfg, Edge: ecfg})
}

func oidcBody(provider, token, nonce string) []byte {
	m := map[string]string{"provider": provider, "id_token": token}
	if nonce != "" {
		m["nonce"] = nonce
	}
	b, _ := json.Marshal(m)
	return b
}

// accountID is the id of the account whose access token this is, from GET /v1/me/export.
func accountID(t *testing.T, base, access string) (id, email string) {
	t.Helper()
	r := clustertest.Do(t, "GET", base+"/v1/me/export", bearer(access), nil)
	if r.Status != 200 {
		t.Fatalf("GET /v1/me/export: %d %s", r.Status, r.Body)
	}
	var out struct {
		Account struct {
			ID    string `json:"id"`
			Email string `json:"email"`
		} `json:"account"`
	}
	if err := json.Unmarshal(r.Body, &out); err != nil || out.Account.ID == "" {
		t.Fatalf("export %s: %v", r.Body, err)
	}
	return out.Account.ID, out.Account.Email
}

func TestOIDCLogin(t *testing.T) {
	rs, es := oidctest.NewKey(t, "rs-1", "RS256"), oidctest.NewKey(t, "es-1", "ES256")
	p := oidctest.Start(t, rs, es)
	c := oidcCluster(t, p)
	base := c.Edge(0)
	url := base + "/v1/auth/oidc"
	now := time.Now()

	// A first login creates the account; its tokens work on a document route.
	first := tokensOf(t, clustertest.Do(t, "POST", url, nil, oidcBody("test", rs.Sign(t, p.Claims("sub-1", oidcClient, now)), "")), 200)
	doc := base + "/v1/collections/notes/docs/o1"
	if r := clustertest.Do(t, "PUT", doc, bearer(first.AccessToken), []byte(`{"a":1}`)); r.Status != 201 && r.Status != 200 {
		t.Fatalf("PUT with the token of an OIDC login: %d %s", r.Status, r.Body)
	}
	id, email := accountID(t, base, first.AccessToken)
	if email != "oidc:test:sub-1" {
		t.Fatalf("an account without a verified email has email %q, want the placeholder", email)
	}
	// The same subject again, by a token of the other key and with a nonce: the same account.
	claims := p.Claims("sub-1", oidcClient, now)
	claims["nonce"] = "n-0S6_WzA2Mj"
	second := tokensOf(t, clustertest.Do(t, "POST", url, nil, oidcBody("test", es.Sign(t, claims), "n-0S6_WzA2Mj")), 200)
	if again, _ := accountID(t, base, second.AccessToken); again != id {
		t.Fatalf("the second login of a subject is account %s, want %s", again, id)
	}
	// The account has no password: a password login with its placeholder fails like any other.
	expectUnauthorized(t, clustertest.Do(t, "POST", base+"/v1/auth/login", nil, credentials(email, "any password")), "invalid_credentials")

	// A verified email makes the account's email; the same email with a password account
	// is not linked to it.
	claims = p.Claims("sub-2", oidcClient, now)
	claims["email"], claims["email_verified"] = "Bea@Example.com", true
	bea := tokensOf(t, clustertest.Do(t, "POST", url, nil, oidcBody("test", rs.Sign(t, claims), "")), 200)
	if _, email := accountID(t, base, bea.AccessToken); email != "bea@example.com" {
		t.Fatalf("email %q, want the verified one normalised", email)
	}
	tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/signup", nil, credentials("cy@example.com", "correct horse")), 201)
	claims = p.Claims("sub-3", oidcClient, now)
	claims["email"], claims["email_verified"] = "cy@example.com", true
	expectProblem(t, clustertest.Do(t, "POST", url, nil, oidcBody("test", rs.Sign(t, claims), "")), 409, "already_exists")
	// Unverified, the same email does not count: a new account with a placeholder.
	claims["email_verified"] = false
	cy := tokensOf(t, clustertest.Do(t, "POST", url, nil, oidcBody("test", rs.Sign(t, claims), "")), 200)
	if _, email := accountID(t, base, cy.AccessToken); email != "oidc:test:sub-3" {
		t.Fatalf("email %q, want the placeholder", email)
	}

	// Refused tokens: each a 401 with a problem body.
	edit := func(f func(map[string]any)) map[string]any {
		c := p.Claims("sub-1", oidcClient, now)
		f(c)
		return c
	}
	tampered := rs.Sign(t, p.Claims("sub-1", oidcClient, now))
	dot := strings.LastIndexByte(tampered, '.')
	sig := []byte(tampered[dot+1:])
	if sig[3] == 'A' {
		sig[3] = 'B'
	} else {
		sig[3] = 'A'
	}
	tampered = tampered[:dot+1] + string(sig)
	for _, tc := range []struct{ name, provider, token, nonce string }{
		{"wrong issuer", "test", rs.Sign(t, edit(func(c map[string]any) { c["iss"] = "https://accounts.example.com" })), ""},
		{"wrong audience", "test", rs.Sign(t, edit(func(c map[string]any) { c["aud"] = "another-app" })), ""},
		{"expired", "test", rs.Sign(t, edit(func(c map[string]any) { c["exp"] = now.Add(-time.Hour).Unix() })), ""},
		{"alg none", "test", oidctest.Unsigned(t, rs.ID, p.Claims("sub-1", oidcClient, now)), ""},
		{"HS256 with the public key", "test", oidctest.SignHMAC(t, rs.ID, rs.PublicBytes(), p.Claims("sub-1", oidcClient, now)), ""},
		{"tampered signature", "test", tampered, ""},
		{"wrong nonce", "test", es.Sign(t, claims), "another nonce"},
		{"unconfigured provider", "google", rs.Sign(t, p.Claims("sub-1", oidcClient, now)), ""},
	} {
		r := clustertest.Do(t, "POST", url, nil, oidcBody(tc.provider, tc.token, tc.nonce))
		if r.Status != 401 {
			t.Errorf("%s: %d %s, want 401", tc.name, r.Status, r.Body)
			continue
		}
		expectUnauthorized(t, r, "invalid_credentials")
	}

	// A kid the provider does not publish: the core fetches the key set once more, then
	// refuses.
	stranger := oidctest.NewKey(t, "rs-new", "RS256")
	before := p.Fetches()
	expectUnauthorized(t, clustertest.Do(t, "POST", url, nil, oidcBody("test", stranger.Sign(t, p.Claims("sub-1", oidcClient, now)), "")), "invalid_credentials")
	if got := p.Fetches() - before; got != 1 {
		t.Fatalf("an unknown kid made %d fetches of the key set, want 1", got)
	}
	// Once the provider publishes it (a rotation), the same token logs in.
	p.SetKeys(rs, es, stranger)
	rotated := tokensOf(t, clustertest.Do(t, "POST", url, nil, oidcBody("test", stranger.Sign(t, p.Claims("sub-1", oidcClient, now)), "")), 200)
	if again, _ := accountID(t, base, rotated.AccessToken); again != id {
		t.Fatalf("after the rotation, account %s, want %s", again, id)
	}

	// Malformed requests.
	expectProblem(t, clustertest.Do(t, "POST", url, nil, []byte(`{"provider":"test"}`)), 400, "bad_request")
	expectProblem(t, clustertest.Do(t, "POST", url, nil, []byte(`{"provider":"test","id_token":"x","extra":1}`)), 400, "bad_json")
}

// An edge answers problems for a core without providers too: every provider is unknown.
func TestOIDCWithoutProviders(t *testing.T) {
	c := accountsCluster(t, []string{"a"}, nil)
	expectUnauthorized(t, clustertest.Do(t, "POST", c.Edge(0)+"/v1/auth/oidc", nil, oidcBody("google", "a.b.c", "")), "invalid_credentials")
}

// TestOIDCLinkIdentity: a password account whose verified email a provider vouches for is not
// linked by a login through it, but its user may link the identity, and then either logs in.
func TestOIDCLinkIdentity(t *testing.T) {
	rs := oidctest.NewKey(t, "rs-1", "RS256")
	p := oidctest.Start(t, rs)
	c := oidcCluster(t, p)
	base := c.Edge(0)
	now := time.Now()
	claims := p.Claims("sub-ada", oidcClient, now)
	claims["email"], claims["email_verified"] = "ada@example.com", true
	idToken := rs.Sign(t, claims)

	ada := tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/signup", nil, credentials("ada@example.com", "correct horse")), 201)
	adaID, _ := accountID(t, base, ada.AccessToken)
	expectProblem(t, clustertest.Do(t, "POST", base+"/v1/auth/oidc", nil, oidcBody("test", idToken, "")), 409, "already_exists")

	link := base + "/v1/me/identities"
	expectUnauthorized(t, clustertest.Do(t, "POST", link, nil, oidcBody("test", idToken, "")), "unauthorized")
	expectUnauthorized(t, clustertest.Do(t, "POST", link, bearer(ada.AccessToken), oidcBody("test", idToken[:len(idToken)-2], "")), "invalid_credentials")
	for range 2 { // linked already is success
		if r := clustertest.Do(t, "POST", link, bearer(ada.AccessToken), oidcBody("test", idToken, "")); r.Status != 204 {
			t.Fatalf("POST /v1/me/identities: %d %s", r.Status, r.Body)
		}
	}
	got := tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/oidc", nil, oidcBody("test", idToken, "")), 200)
	if id, _ := accountID(t, base, got.AccessToken); id != adaID {
		t.Fatalf("the linked identity logs in to %s, want %s", id, adaID)
	}
	// Another account cannot take the identity.
	bob := tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/signup", nil, credentials("bob@example.com", "correct horse")), 201)
	expectProblem(t, clustertest.Do(t, "POST", link, bearer(bob.AccessToken), oidcBody("test", idToken, "")), 409, "already_exists")
}
