package edge_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/edge/ratelimit"
	"github.com/perchhq/perch/internal/clustertest"
)

// The tests of this file are named after the items of the OWASP API Security Top 10 (2023)
// that apply to Perch's API. API7 (server-side request forgery) does not: no request makes
// an edge or the core fetch a URL. API9 (improper inventory) is TestOpenAPIRoutes: every
// route served is described, and nothing else is served. API10 (unsafe consumption of APIs)
// does not either: Perch consumes no third-party API on a request's behalf.

// rulesOf parses a rules file for a test.
func rulesOf(t *testing.T, yaml string) *edge.Rules {
	t.Helper()
	r, err := edge.ParseRules([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

const testRules = `
default: {read: authenticated, write: owner}
collections:
  notes: {read: owner, write: owner}
  posts: {read: public, write: authenticated}
`

// user signs up and returns the Authorization header of the new user.
func user(t *testing.T, base, email string) map[string]string {
	t.Helper()
	tb := tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/signup", nil, credentials(email, "long enough password")), 201)
	return bearer(tb.AccessToken)
}

func with(h map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range h {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// TestAPI1BrokenObjectLevelAuthorization: a user cannot read, change, list, sync or learn of
// another user's documents in an owner-only collection, on any route, through any edge,
// whether the edge has the document cached or not.
func TestAPI1BrokenObjectLevelAuthorization(t *testing.T) {
	c := accountsCluster(t, []string{"a", "b"}, &edge.Config{Rules: rulesOf(t, testRules)})
	a, b := c.Edge(0), c.Edge(1)
	alice, bob := user(t, a, "alice@example.com"), user(t, a, "bob@example.com")
	note := "/v1/collections/notes/docs/n1"

	r := clustertest.Do(t, "PUT", a+note, alice, []byte(`{"secret":"alice's"}`))
	if r.Status != 201 {
		t.Fatalf("alice creates her note: %d %s", r.Status, r.Body)
	}
	var receipt struct {
		WriteID string `json:"write_id"`
	}
	async := clustertest.Do(t, "PUT", a+"/v1/collections/notes/docs/n2", with(alice, "Prefer", "respond-async"), []byte(`{"secret":"two"}`))
	if async.Status != 202 || json.Unmarshal(async.Body, &receipt) != nil {
		t.Fatalf("async write: %d %s", async.Status, async.Body)
	}
	missing := clustertest.Do(t, "GET", a+"/v1/collections/notes/docs/none", bob, nil)
	expectProblem(t, missing, 404, "not_found")
	for _, edgeURL := range []string{a, b} {
		// Alice's reads fill and hit the cache of each edge; Bob's reads must not see
		// what is cached.
		for range 2 {
			if r := clustertest.Do(t, "GET", edgeURL+note, alice, nil); r.Status != 200 || !strings.Contains(string(r.Body), "alice's") {
				t.Fatalf("alice reads her note: %d %s", r.Status, r.Body)
			}
		}
		r := clustertest.Do(t, "GET", edgeURL+note, bob, nil)
		if r.Status != 404 || string(r.Body) != string(missing.Body) {
			t.Fatalf("bob reads alice's note: %d %s; want the answer of a missing note", r.Status, r.Body)
		}
		if strings.Contains(string(r.Body), "alice") || r.Header["Etag"] != "" {
			t.Fatalf("bob's answer leaks: %v %s", r.Header, r.Body)
		}
		// Conditional requests say nothing either.
		if r := clustertest.Do(t, "GET", edgeURL+note, with(bob, "If-None-Match", `"1"`), nil); r.Status != 404 {
			t.Fatalf("bob's If-None-Match: %d", r.Status)
		}
	}
	// Writes: each answered as if the note did not exist, and none applied.
	for _, w := range []struct{ method, body string }{
		{"PUT", `{"secret":"bob's"}`}, {"PATCH", `{"secret":"bob's"}`}, {"DELETE", ""},
	} {
		var body []byte
		if w.body != "" {
			body = []byte(w.body)
		}
		expectProblem(t, clustertest.Do(t, w.method, b+note, bob, body), 404, "not_found")
		expectProblem(t, clustertest.Do(t, w.method, b+note, with(bob, "If-Match", `"1"`), body), 404, "not_found")
	}
	// A write answered 202 before the core refused it: its status tells the same.
	r = clustertest.Do(t, "PUT", b+note, with(bob, "Prefer", "respond-async"), []byte(`{"secret":"bob's"}`))
	var queued struct {
		WriteID string `json:"write_id"`
	}
	if err := json.Unmarshal(r.Body, &queued); r.Status != 202 || err != nil {
		t.Fatalf("bob's write, async: %d %s", r.Status, r.Body)
	}
	clustertest.Eventually(t, 5*time.Second, func() error {
		s := clustertest.Do(t, "GET", b+"/v1/writes/"+queued.WriteID, bob, nil)
		if s.Status != 200 || !strings.Contains(string(s.Body), `"rejected"`) {
			return fmt.Errorf("bob's write status: %d %s", s.Status, s.Body)
		}
		if !strings.Contains(string(s.Body), `"code":"not_found"`) || strings.Contains(string(s.Body), "forbidden") {
			t.Fatalf("the status of bob's refused write tells the note exists: %s", s.Body)
		}
		return nil
	})
	expectUnauthorized(t, clustertest.Do(t, "GET", b+"/v1/writes/"+queued.WriteID, nil, nil), "unauthorized")
	if r := clustertest.Do(t, "GET", a+note, alice, nil); r.Status != 200 || !strings.Contains(string(r.Body), "alice's") || r.Header["Etag"] != `"1"` {
		t.Fatalf("alice's note after bob's writes: %d %v %s", r.Status, r.Header["Etag"], r.Body)
	}
	// Lists and sync show each user only their own.
	if r := clustertest.Do(t, "PUT", a+"/v1/collections/notes/docs/b1", bob, []byte(`{"secret":"bob's"}`)); r.Status != 201 {
		t.Fatalf("bob creates his note: %d %s", r.Status, r.Body)
	}
	for _, edgeURL := range []string{a, b} {
		for who, h := range map[string]map[string]string{"alice": alice, "bob": bob} {
			clustertest.Eventually(t, 5*time.Second, func() error {
				list := clustertest.Do(t, "GET", edgeURL+"/v1/collections/notes/docs", h, nil)
				sync := clustertest.Do(t, "GET", edgeURL+"/v1/sync?collections=notes", h, nil)
				for _, r := range []clustertest.Response{list, sync} {
					if r.Status != 200 {
						return fmt.Errorf("%d %s", r.Status, r.Body)
					}
					s := string(r.Body)
					mine, theirs := `"alice's"`, `"bob's"`
					if who == "bob" {
						mine, theirs = theirs, mine
					}
					if strings.Contains(s, theirs) || !strings.Contains(s, mine) {
						return fmt.Errorf("%s sees %s", who, s)
					}
				}
				if cc := list.Header["Cache-Control"]; !strings.HasPrefix(cc, "private") {
					return fmt.Errorf("an owner-only list is answered with Cache-Control %q", cc)
				}
				return nil
			})
		}
	}
	// The status of alice's write is hers alone.
	clustertest.Eventually(t, 5*time.Second, func() error {
		if r := clustertest.Do(t, "GET", a+"/v1/writes/"+receipt.WriteID, alice, nil); r.Status != 200 || !strings.Contains(string(r.Body), "applied") {
			return fmt.Errorf("alice's write status: %d %s", r.Status, r.Body)
		}
		return nil
	})
	expectProblem(t, clustertest.Do(t, "GET", a+"/v1/writes/"+receipt.WriteID, bob, nil), 404, "not_found")
	// An anonymous request is told to authenticate.
	expectUnauthorized(t, clustertest.Do(t, "GET", a+note, nil, nil), "unauthorized")
	expectUnauthorized(t, clustertest.Do(t, "GET", a+"/v1/sync?collections=notes", nil, nil), "unauthorized")

	// In a collection everyone may read but only owners change, another user gets 403.
	thing := "/v1/collections/things/docs/t1"
	if r := clustertest.Do(t, "PUT", a+thing, alice, []byte(`{"v":1}`)); r.Status != 201 {
		t.Fatalf("alice creates a thing: %d %s", r.Status, r.Body)
	}
	if r := clustertest.Do(t, "GET", b+thing, bob, nil); r.Status != 200 {
		t.Fatalf("bob reads alice's thing: %d %s", r.Status, r.Body)
	}
	expectProblem(t, clustertest.Do(t, "PUT", b+thing, bob, []byte(`{"v":2}`)), 403, "forbidden")
	expectProblem(t, clustertest.Do(t, "DELETE", b+thing, bob, nil), 403, "forbidden")
	if r := clustertest.Do(t, "PUT", b+thing, alice, []byte(`{"v":2}`)); r.Status != 200 {
		t.Fatalf("alice changes her thing: %d %s", r.Status, r.Body)
	}
	// Posts: public reads, authenticated writes.
	post := "/v1/collections/posts/docs/p1"
	expectUnauthorized(t, clustertest.Do(t, "PUT", a+post, nil, []byte(`{"v":1}`)), "unauthorized")
	if r := clustertest.Do(t, "PUT", a+post, alice, []byte(`{"v":1}`)); r.Status != 201 {
		t.Fatalf("alice posts: %d %s", r.Status, r.Body)
	}
	if r := clustertest.Do(t, "GET", b+post, nil, nil); r.Status != 200 {
		t.Fatalf("anonymous read of a post: %d %s", r.Status, r.Body)
	}
}

// TestAPI2BrokenAuthentication: tokens are checked strictly (TestTokenRejections has every
// forgery), logins answer alike whether or not the account exists and are throttled per
// account, refresh tokens work once, and logging out ends the session's access tokens.
func TestAPI2BrokenAuthentication(t *testing.T) {
	c := accountsCluster(t, []string{"a"}, &edge.Config{Rules: rulesOf(t, testRules)})
	base := c.Edge(0)
	tb := tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/signup", nil, credentials("mallory@example.com", "long enough password")), 201)
	wrong := clustertest.Do(t, "POST", base+"/v1/auth/login", nil, credentials("mallory@example.com", "not the password"))
	absent := clustertest.Do(t, "POST", base+"/v1/auth/login", nil, credentials("nobody@example.com", "not the password"))
	if wrong.Status != 401 || string(wrong.Body) != string(absent.Body) {
		t.Fatalf("login answers differ: %s / %s", wrong.Body, absent.Body)
	}
	// A token is needed, and a bad one is refused even where none is needed.
	expectUnauthorized(t, clustertest.Do(t, "GET", base+"/v1/collections/things/docs/x", nil, nil), "unauthorized")
	expectUnauthorized(t, clustertest.Do(t, "GET", base+"/v1/collections/posts/docs/x", bearer(tb.AccessToken+"x"), nil), "invalid_token")
	// Refresh tokens work once.
	next := tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/refresh", nil, refreshBody(tb.RefreshToken)), 200)
	expectUnauthorized(t, clustertest.Do(t, "POST", base+"/v1/auth/refresh", nil, refreshBody(tb.RefreshToken)), "invalid_credentials")
	// ...and the reuse ended the session, the new token included.
	clustertest.Eventually(t, 2*time.Second, func() error {
		if r := clustertest.Do(t, "GET", base+"/v1/collections/things/docs/x", bearer(next.AccessToken), nil); r.Status != 401 {
			return fmt.Errorf("a token of a revoked session answered %d", r.Status)
		}
		return nil
	})
}

// TestAPI3BrokenObjectPropertyLevelAuthorization: a client cannot set the properties the
// server keeps (owner, version, times) through a document's data, and answers carry no
// property of an account (no password hash, no email).
func TestAPI3BrokenObjectPropertyLevelAuthorization(t *testing.T) {
	c := accountsCluster(t, []string{"a"}, &edge.Config{Rules: rulesOf(t, testRules)})
	base := c.Edge(0)
	alice, bob := user(t, base, "alice3@example.com"), user(t, base, "bob3@example.com")
	note := base + "/v1/collections/notes/docs/n"
	body := `{"owner":"someone","version":99,"created_at":"2000-01-01T00:00:00Z","id":"other","collection":"posts"}`
	r := clustertest.Do(t, "PUT", note, bob, []byte(body))
	if r.Status != 201 {
		t.Fatalf("PUT: %d %s", r.Status, r.Body)
	}
	var d struct {
		ID, Collection string
		Version        int64
		CreatedAt      time.Time `json:"created_at"`
		Data           map[string]any
	}
	if err := json.Unmarshal(r.Body, &d); err != nil {
		t.Fatal(err)
	}
	if d.ID != "n" || d.Collection != "notes" || d.Version != 1 || d.CreatedAt.Year() < 2020 || d.Data["owner"] != "someone" {
		t.Fatalf("the data set server properties: %s", r.Body)
	}
	// The note is still bob's: the data's "owner" is only data.
	expectProblem(t, clustertest.Do(t, "GET", note, alice, nil), 404, "not_found")
	// Neither signup, login nor documents show an account's properties.
	login := clustertest.Do(t, "POST", base+"/v1/auth/login", nil, credentials("bob3@example.com", "long enough password"))
	for _, r := range []clustertest.Response{login, clustertest.Do(t, "GET", note, bob, nil)} {
		s := string(r.Body)
		for _, leak := range []string{"argon2", "password", "bob3@example.com", "hash"} {
			if strings.Contains(s, leak) {
				t.Fatalf("answer shows %q: %s", leak, s)
			}
		}
	}
}

// TestAPI4UnrestrictedResourceConsumption: the account routes are limited per address and
// per account, their bodies are small, and lists are bounded.
func TestAPI4UnrestrictedResourceConsumption(t *testing.T) {
	c := accountsCluster(t, []string{"a"}, &edge.Config{
		Rules:         rulesOf(t, testRules),
		AuthRateLimit: ratelimit.Policy{Scope: ratelimit.ScopeIP, Limit: 5, Period: time.Minute, Burst: 5},
	})
	base := c.Edge(0)
	h := user(t, base, "hog@example.com")
	expectProblem(t, clustertest.Do(t, "POST", base+"/v1/auth/login", nil,
		[]byte(`{"email":"hog@example.com","password":"`+strings.Repeat("p", 10_000)+`"}`)), 413, "body_too_large")
	expectProblem(t, clustertest.Do(t, "GET", base+"/v1/collections/posts/docs?limit=100000", h, nil), 400, "bad_request")
	var limited bool
	for i := range 10 {
		r := clustertest.Do(t, "POST", base+"/v1/auth/login", nil, credentials(fmt.Sprintf("guess%d@example.com", i), "a guess, again"))
		if r.Status == 429 {
			expectProblem(t, r, 429, "rate_limited")
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("ten logins from one address in a minute were not limited (limit 5)")
	}
}

// TestAPI5BrokenFunctionLevelAuthorization: there are no functions beyond the documented
// routes (no admin routes on the public listener), and the account routes take only the
// methods they document.
func TestAPI5BrokenFunctionLevelAuthorization(t *testing.T) {
	c := accountsCluster(t, []string{"a"}, &edge.Config{Rules: rulesOf(t, testRules)})
	base := c.Edge(0)
	h := user(t, base, "fn@example.com")
	for _, path := range []string{"/metrics", "/debug/pprof/", "/v1/auth/keys", "/v1/auth/revocations", "/v1/users", "/v1/admin"} {
		for _, hdr := range []map[string]string{nil, h} {
			expectProblem(t, clustertest.Do(t, "GET", base+path, hdr, nil), 404, "route_not_found")
		}
	}
	expectProblem(t, clustertest.Do(t, "PUT", base+"/.well-known/jwks.json", h, []byte(`{"keys":[]}`)), 405, "method_not_allowed")
	expectProblem(t, clustertest.Do(t, "DELETE", base+"/v1/auth/login", h, nil), 405, "method_not_allowed")
}

// TestAPI8SecurityMisconfiguration: answers that depend on who asks are never cacheable by
// shared caches, even when the collection's Cache-Control says public; tokens are never
// cached; 401s say how to authenticate.
func TestAPI8SecurityMisconfiguration(t *testing.T) {
	c := accountsCluster(t, []string{"a"}, &edge.Config{
		Rules:        rulesOf(t, testRules),
		CacheControl: map[string]string{edge.AnyCollection: "public, max-age=60, s-maxage=600"},
	})
	base := c.Edge(0)
	alice := user(t, base, "cfg@example.com")
	for _, coll := range []string{"notes", "things"} {
		url := base + "/v1/collections/" + coll + "/docs/x"
		if r := clustertest.Do(t, "PUT", url, alice, []byte(`{"v":1}`)); r.Status != 201 {
			t.Fatalf("PUT: %d %s", r.Status, r.Body)
		}
		for range 2 {
			r := clustertest.Do(t, "GET", url, alice, nil)
			if cc := r.Header["Cache-Control"]; r.Status != 200 || cc != "private, max-age=60" {
				t.Fatalf("%s: %d Cache-Control %q, want private, max-age=60", coll, r.Status, cc)
			}
		}
	}
	url := base + "/v1/collections/posts/docs/x"
	if r := clustertest.Do(t, "PUT", url, alice, []byte(`{"v":1}`)); r.Status != 201 {
		t.Fatalf("PUT: %d %s", r.Status, r.Body)
	}
	if r := clustertest.Do(t, "GET", url, nil, nil); r.Header["Cache-Control"] != "public, max-age=60, s-maxage=600" {
		t.Fatalf("a public collection: Cache-Control %q", r.Header["Cache-Control"])
	}
	r := clustertest.Do(t, "POST", base+"/v1/auth/login", nil, credentials("cfg@example.com", "long enough password"))
	if r.Header["Cache-Control"] != "no-store" {
		t.Fatalf("tokens with Cache-Control %q", r.Header["Cache-Control"])
	}
	r = clustertest.Do(t, "GET", base+"/v1/collections/things/docs/x", nil, nil)
	if r.Header["Www-Authenticate"] == "" {
		t.Fatal("401 without WWW-Authenticate")
	}
}
