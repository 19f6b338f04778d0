package edge

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/core/sqlitestore"
	"github.com/perchhq/perch/internal/auth"
	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/wire"
)

// TestTokenBeforeKeySet: an edge that has no key set yet (it just started: its first fetch
// is in flight, or no core has answered it) neither refuses a good token as invalid nor
// waits out the fetch spacing. With no core to ask it answers 503 with Retry-After and no
// Bearer challenge, and within firstFetchFloor of that failed fetch it answers so without
// asking again; once a core answers, the same request fetches the set and is served,
// although a fetch was made a moment before. With a set in hand, a token of a kid it does
// not know is refused 401 within the spacing.
func TestTokenBeforeKeySet(t *testing.T) {
	ns := natstest.Start(t)
	e := newTestEdgeOn(t, natstest.Connect(t, ns.URL()), nil)
	cacheDocument(t, e, "doc", 256)
	get := func(token string) *fasthttp.RequestCtx {
		ctx := limitedRequest("/v1/collections/bench/docs/doc")
		ctx.Request.Header.Set("Authorization", "Bearer "+token)
		e.serveHTTP(ctx)
		return ctx
	}
	// As at start: the edge has just asked for the set (catchUpAuth), and has no answer.
	e.tokens.lastFetch.Store(time.Now().UnixNano())
	foreign := signedToken(t, e.cfg.Tokens, auth.GenerateKey(time.Now().Add(-time.Minute)))
	ctx := get(foreign)
	if ctx.Response.StatusCode() != 503 || len(ctx.Response.Header.Peek("Retry-After")) == 0 ||
		len(ctx.Response.Header.Peek("WWW-Authenticate")) != 0 {
		t.Fatalf("a token before any key set, no core: %d, Retry-After %q, WWW-Authenticate %q: %s",
			ctx.Response.StatusCode(), ctx.Response.Header.Peek("Retry-After"),
			ctx.Response.Header.Peek("WWW-Authenticate"), ctx.Response.Body())
	}
	fetched := e.tokens.lastFetch.Load()
	if ctx := get(foreign); ctx.Response.StatusCode() != 503 || e.tokens.lastFetch.Load() != fetched {
		t.Fatalf("right after a failed fetch: %d, fetched again: %v", ctx.Response.StatusCode(), e.tokens.lastFetch.Load() != fetched)
	}

	// A core starts; a user signs up through it. The edge is not subscribed to the keys the
	// core publishes (it is not serving), so it has no set until it fetches one.
	token := signupWithCore(t, e, ns.URL())
	if e.tokens.jwks.Load() != nil {
		t.Fatal("the edge has a key set before it fetched one")
	}
	// A fetch was made a moment ago, and the last failure is past the floor.
	e.tokens.lastFetch.Store(time.Now().UnixNano())
	e.tokens.lastFailure.Store(time.Now().Add(-firstFetchFloor).UnixNano())
	if ctx := get(token); ctx.Response.StatusCode() != 200 {
		t.Fatalf("a good token before the key set, a core up: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}

	// Now that the edge has a set, an unknown kid within a second of the last fetch is refused.
	e.tokens.lastFetch.Store(time.Now().UnixNano())
	ctx = get(foreign)
	if ctx.Response.StatusCode() != 401 || string(ctx.Response.Header.Peek("WWW-Authenticate")) != string(valBearerInvalid) {
		t.Fatalf("an unknown kid with a key set: %d, WWW-Authenticate %q", ctx.Response.StatusCode(), ctx.Response.Header.Peek("WWW-Authenticate"))
	}
}

// signedToken is an access token of key for user-1, valid now.
func signedToken(tb testing.TB, cfg auth.Config, key auth.Key) string {
	tb.Helper()
	s, err := auth.NewSigner(key, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tok, err := s.Sign(s.NewClaims("user-1", time.Now()))
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// signupWithCore runs a core (SQLite, cheap password hashing) on the NATS server at url until
// the test ends, signs a user up through e's account requests, and returns the access token.
func signupWithCore(t *testing.T, e *Edge, url string) string {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	store, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "perch.db"), wire.DefaultPartitions, log)
	if err != nil {
		t.Fatal(err)
	}
	cfg := core.LocalConfig()
	cfg.Logger = log
	cfg.Accounts = core.DefaultAccountsConfig()
	cfg.Accounts.Password = auth.Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}
	c, err := core.New(cfg, natstest.Connect(t, url), store)
	if err != nil {
		t.Fatal(err)
	}
	var runErr error
	ended := make(chan struct{})
	go func() { runErr = c.Run(ctx); close(ended) }()
	t.Cleanup(func() {
		cancel()
		<-ended
		if runErr != nil {
			t.Errorf("core: %v", runErr)
		}
		_ = store.Close()
	})
	select {
	case <-c.Ready():
	case <-ended:
		t.FailNow() // the cleanup reports why
	}
	resp, p := e.askAuth(&wire.AuthRequest{Op: wire.AuthSignup, Email: "keys@example.com", Password: "long enough password"}, 10*time.Second)
	if p != nil {
		t.Fatalf("signup: %s", p.Detail)
	}
	return resp.Tokens.AccessToken
}
