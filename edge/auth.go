package edge

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/valyala/fasthttp"
	"golang.org/x/sync/singleflight"

	"github.com/perchhq/perch/internal/auth"
	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

// The edge's side of accounts (DESIGN §3): it forwards signup, login, refresh and logout to
// the core, serves the core's key set as /.well-known/jwks.json, and verifies every bearer
// token itself, with the keys the core publishes and a cache of tokens verified before, so
// that an authenticated hit costs no signature check and no round trip.

const groupAuth = "auth" // the rate-limit group of the /v1/auth routes

var (
	hdrAuthorization   = []byte("Authorization")
	hdrWWWAuthenticate = []byte("Www-Authenticate")
	valBearer          = []byte("Bearer")
	valBearerRealm     = []byte(`Bearer realm="perch"`)
	valBearerInvalid   = []byte(`Bearer realm="perch", error="invalid_token"`)
	pathAuthPrefix     = []byte("/v1/auth/")
)

// tokens is the edge's verification of access tokens.
type tokens struct {
	verifier *auth.Verifier
	cache    *auth.VerifiedCache
	// jwks is the key set as the core published it, served as is.
	jwks atomic.Pointer[[]byte]
	// fetches runs one fetch of the key set at a time; lastFetch (unix nanoseconds) spaces
	// the fetches that unknown kids cause, and lastFailure, when the last fetch failed,
	// those made while the edge has no set (mayRetryFirstFetch).
	fetches     singleflight.Group
	lastFetch   atomic.Int64
	lastFailure atomic.Int64
}

func newTokens(cfg *Config) (*tokens, error) {
	v, err := auth.NewVerifier(cfg.Tokens, auth.KeySet{})
	if err != nil {
		return nil, err
	}
	c, err := auth.NewVerifiedCache(v, cfg.TokenCacheEntries)
	if err != nil {
		return nil, err
	}
	return &tokens{verifier: v, cache: c}, nil
}

// subscribeAuth listens for the core's key sets and revocations, then asks for both.
func (e *Edge) subscribeAuth() error {
	keys, err := e.nc.Subscribe(wire.KeysSubject, func(m *nats.Msg) { e.setKeys(m.Data, "published") })
	if err != nil {
		return fmt.Errorf("edge: subscribe keys: %w", err)
	}
	rev, err := e.nc.Subscribe(wire.RevokedSubject, e.onRevocation)
	if err != nil {
		_ = keys.Unsubscribe()
		return fmt.Errorf("edge: subscribe revocations: %w", err)
	}
	e.subs = append(e.subs, keys, rev)
	if e.cfg.APIKeys != APIKeysOff {
		if err := e.subscribeAPIKeys(); err != nil {
			return err
		}
	}
	go e.catchUpAuth()
	return nil
}

var errPending = errors.New("not fetched yet")

// catchUpAuth fetches the key set, the revocations still in force and the live API keys,
// retrying until the core answers: at start, and after a reconnection (what was published
// meanwhile was lost).
func (e *Edge) catchUpAuth() {
	// Each is fetched until it arrives once.
	var keysErr, revErr, apiKeysErr error = errPending, errPending, errPending
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		if keysErr != nil {
			keysErr = e.fetchKeys()
		}
		if revErr != nil {
			revErr = e.fetchRevocations()
		}
		if apiKeysErr != nil {
			apiKeysErr = e.fetchAPIKeys()
		}
		if keysErr == nil && revErr == nil && apiKeysErr == nil {
			return
		}
		select {
		case <-e.serving:
		default:
		}
		e.closeMu.Lock()
		closed := e.closed
		e.closeMu.Unlock()
		if closed {
			return
		}
		e.log.Debug("account keys, revocations or api keys not fetched yet", "keys_err", keysErr,
			"revocations_err", revErr, "api_keys_err", apiKeysErr)
		time.Sleep(delay)
	}
}

// fetchKeys asks the core for its key set, one fetch at a time.
func (e *Edge) fetchKeys() error {
	_, err, _ := e.tokens.fetches.Do("keys", func() (any, error) {
		e.tokens.lastFetch.Store(time.Now().UnixNano())
		resp, p := e.askAuth(&wire.AuthRequest{Op: wire.AuthKeys}, e.cfg.ReadTimeout)
		if p != nil {
			return nil, p
		}
		return nil, e.setKeys(resp.JWKS, "fetched")
	})
	if err != nil {
		e.tokens.lastFailure.Store(time.Now().UnixNano())
	}
	return err
}

// setKeys installs a key set. One that does not parse is logged and the keys in force stay.
func (e *Edge) setKeys(data []byte, how string) error {
	ks, err := auth.ParseJWKS(data)
	if err != nil {
		e.log.Error("key set not usable; keeping the keys in force", "how", how, "err", err)
		return err
	}
	e.tokens.verifier.SetKeys(ks)
	b := bytes.Clone(data)
	e.tokens.jwks.Store(&b)
	e.log.Debug("access-token keys installed", "how", how, "keys", ks.Len())
	return nil
}

func (e *Edge) fetchRevocations() error {
	c := e.cfg.Tokens
	since := time.Now().Add(-(c.TTL + c.Skew))
	resp, err := e.askAuth(&wire.AuthRequest{Op: wire.AuthRevocations, Since: since}, e.cfg.ReadTimeout)
	if err != nil {
		return err
	}
	for _, r := range resp.Revocations {
		e.revoke(r)
	}
	return nil
}

func (e *Edge) onRevocation(m *nats.Msg) {
	var r wire.Revocation
	if err := json.Unmarshal(m.Data, &r); err != nil {
		e.log.Error("malformed revocation", "bytes", len(m.Data), "err", err)
		return
	}
	e.revoke(r)
}

func (e *Edge) revoke(r wire.Revocation) {
	switch r.Kind {
	case wire.RevokeSession:
		e.tokens.cache.RevokeSession(r.ID, r.At)
	case wire.RevokeSubject:
		e.tokens.cache.RevokeSubject(r.ID, r.At)
	default:
		e.log.Warn("revocation of an unknown kind ignored", "kind", r.Kind)
		return
	}
	e.metrics.revocations.Inc()
}

// askAuth sends a request to the core's account service and returns its answer, or the
// problem to answer the client with.
func (e *Edge) askAuth(req *wire.AuthRequest, timeout time.Duration) (*wire.AuthResponse, *problem.Problem) {
	data, err := json.Marshal(req)
	if err != nil {
		return nil, problem.New(problem.Internal, "encoding the account request")
	}
	msg, err := e.nc.Request(wire.AuthSubject, data, timeout)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) {
			return nil, problem.New(problem.Unavailable, "the account service did not answer")
		}
		return nil, problem.New(problem.Unavailable, "the account service is unreachable")
	}
	var resp wire.AuthResponse
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		e.log.Error("malformed account answer", "op", req.Op, "err", err)
		return nil, problem.New(problem.Unavailable, "malformed answer from the account service")
	}
	if resp.Problem != nil {
		return nil, resp.Problem
	}
	return &resp, nil
}

// Principals. A request is anonymous (no Authorization header), a user (a bearer token that
// verified), or refused (any other Authorization header: 401, whatever the route's rules).

// user is who a request acts for: the empty string for an anonymous request.
type user = string

// principal verifies the request's bearer token, if it has one. It returns the user's id,
// "" for a request without Authorization, or the problem to answer with: a malformed,
// forged, expired or revoked token is refused even where anonymous requests are allowed, so
// that a client learns at once that its token is bad. A hit in the token cache allocates
// nothing.
func (e *Edge) principal(ctx *fasthttp.RequestCtx) (user, *problem.Problem) {
	h := ctx.Request.Header.PeekCanonical(hdrAuthorization)
	if len(h) == 0 {
		return "", nil
	}
	token, ok := bearerToken(h)
	if !ok {
		e.metrics.tokens.WithLabelValues("malformed").Inc()
		return "", problemBadAuthorization
	}
	now := ctx.Time()
	// Read before verifying: setKeys installs the keys and then the set, so a set that
	// arrives meanwhile shows as a change.
	set := e.tokens.jwks.Load()
	claims, err := e.tokens.cache.VerifyBytes(token, now)
	if errors.Is(err, auth.ErrUnknownKey) {
		if have := e.tokens.jwks.Load(); have != set {
			// The token was checked against the set before the one just installed.
			set = have
			claims, err = e.tokens.cache.VerifyBytes(token, time.Now())
		}
	}
	if errors.Is(err, auth.ErrUnknownKey) {
		switch {
		case set == nil:
			// Before its first set (just started: the fetch of catchUpAuth is in flight, or
			// no core has answered) the edge cannot tell a good token from a bad one, and
			// must not refuse it for its own want of keys. It joins the fetch in flight or
			// starts one, whatever the spacing, but not within firstFetchFloor of one that
			// failed; without a set it answers 503.
			if !e.mayRetryFirstFetch(now) || e.fetchKeys() != nil {
				return "", problemNoSigningKeys
			}
			claims, err = e.tokens.cache.VerifyBytes(token, time.Now())
		case e.mayFetchKeys(now):
			// A key newer than this edge's set (or a forged kid: the spacing bounds what
			// those cost). Fetch the set once, then verify once more.
			if e.fetchKeys() == nil {
				claims, err = e.tokens.cache.VerifyBytes(token, time.Now())
			}
		}
	}
	if err != nil {
		e.metrics.tokens.WithLabelValues(tokenResult(err)).Inc()
		return "", problemInvalidToken
	}
	return claims.Subject, nil
}

// bearerToken returns the token of an Authorization header of the Bearer scheme (RFC 6750
// §2.1: the scheme in any case, one or more spaces, the token), or false for any other
// header. The token aliases h.
func bearerToken(h []byte) ([]byte, bool) {
	if len(h) <= len(valBearer)+1 || !bytes.EqualFold(h[:len(valBearer)], valBearer) || h[len(valBearer)] != ' ' {
		return nil, false
	}
	token := bytes.TrimRight(bytes.TrimLeft(h[len(valBearer)+1:], " "), " ")
	if len(token) == 0 {
		return nil, false
	}
	return token, true
}

// mayFetchKeys reports whether a token of an unknown kid may make the edge fetch the key set:
// at most once a second.
func (e *Edge) mayFetchKeys(now time.Time) bool {
	last := e.tokens.lastFetch.Load()
	return now.UnixNano()-last >= int64(time.Second)
}

// firstFetchFloor is how long after a failed fetch of the key set a request, while the edge
// has none, answers 503 without asking again: it bounds what the requests cost the core
// and NATS then (they come before the rate limits) to about ten fetches a second.
const firstFetchFloor = 100 * time.Millisecond

// mayRetryFirstFetch reports whether a request may fetch the key set while the edge has none:
// not within firstFetchFloor of a fetch that failed.
func (e *Edge) mayRetryFirstFetch(now time.Time) bool {
	return now.UnixNano()-e.tokens.lastFailure.Load() >= int64(firstFetchFloor)
}

// tokenResult is the metrics label of a refused token.
func tokenResult(err error) string {
	for _, s := range []struct {
		err   error
		label string
	}{
		{auth.ErrExpired, "expired"}, {auth.ErrNotYetValid, "not_yet_valid"}, {auth.ErrRevoked, "revoked"},
		{auth.ErrUnknownKey, "unknown_key"}, {auth.ErrSignature, "bad_signature"}, {auth.ErrAlgorithm, "bad_algorithm"},
		{auth.ErrIssuer, "wrong_issuer"}, {auth.ErrAudience, "wrong_audience"},
	} {
		if errors.Is(err, s.err) {
			return s.label
		}
	}
	return "malformed"
}

var (
	problemBadAuthorization = problem.New(problem.InvalidToken, "the Authorization header must be: Bearer <access token>")
	problemInvalidToken     = problem.New(problem.InvalidToken, "the access token is invalid, expired or revoked; refresh it or log in again")
	problemNoSigningKeys    = problem.New(problem.Unavailable, "this edge does not have the keys that verify access tokens yet; retry")
	problemNeedsToken       = problem.New(problem.Unauthorized, "this needs an access token: Authorization: Bearer <token>")
)

// refuseAuth answers a request whose credentials could not be accepted: a 401 with the
// WWW-Authenticate challenge of RFC 6750, or the edge's own problem (503 while it has no
// keys).
func (e *Edge) refuseAuth(ctx *fasthttp.RequestCtx, p *problem.Problem) {
	if p.Status == fasthttp.StatusUnauthorized {
		challenge := valBearerRealm
		if p.Code == problem.InvalidToken {
			challenge = valBearerInvalid
		}
		ctx.Response.Header.SetCanonical(hdrWWWAuthenticate, challenge)
	}
	ctx.Response.Header.SetCanonical(hdrCacheStatus, csBypass)
	e.writeProblem(ctx, p)
}

// The account routes.

type credentialsJSON struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	// TOTP and RecoveryCode are a login's second factor (totp.go), for accounts that have
	// it on; signup takes neither.
	TOTP         string `json:"totp,omitempty"`
	RecoveryCode string `json:"recovery_code,omitempty"`
}

type refreshJSON struct {
	RefreshToken string `json:"refresh_token"`
}

type oidcJSON struct {
	Provider string `json:"provider"`
	IDToken  string `json:"id_token"`
	Nonce    string `json:"nonce,omitempty"`
}

// maxAuthBody bounds the body of an account request: an email, a password of at most
// auth.MaxPasswordLen bytes, or a refresh token, with room for JSON escapes.
const maxAuthBody = 8 << 10

func (e *Edge) signup(ctx *fasthttp.RequestCtx, _ params) { e.credentials(ctx, wire.AuthSignup) }
func (e *Edge) login(ctx *fasthttp.RequestCtx, _ params)  { e.credentials(ctx, wire.AuthLogin) }
func (e *Edge) refresh(ctx *fasthttp.RequestCtx, _ params) {
	e.refreshToken(ctx, wire.AuthRefresh)
}
func (e *Edge) logout(ctx *fasthttp.RequestCtx, _ params) { e.refreshToken(ctx, wire.AuthLogout) }

// maxOIDCBody bounds the body of POST /v1/auth/oidc: an ID token of at most
// auth.MaxTokenBytes, a provider's name and a nonce.
const maxOIDCBody = auth.MaxTokenBytes + 2<<10

// oidcLogin serves POST /v1/auth/oidc: a login with an ID token of a configured OpenID
// Connect provider, which the core verifies and links to a user. It answers like a login.
func (e *Edge) oidcLogin(ctx *fasthttp.RequestCtx, _ params) {
	body, ok := e.oidcBody(ctx)
	if !ok {
		return
	}
	e.forwardAuth(ctx, &wire.AuthRequest{Op: wire.AuthOIDC, Provider: body.Provider, IDToken: body.IDToken, Nonce: body.Nonce})
}

// oidcBody reads the body of an OpenID Connect login or link, or answers the problem with
// it (false).
func (e *Edge) oidcBody(ctx *fasthttp.RequestCtx) (oidcJSON, bool) {
	var body oidcJSON
	if !e.authBodyLimit(ctx, &body, maxOIDCBody) {
		return body, false
	}
	if body.Provider == "" || body.IDToken == "" {
		e.writeAuthProblem(ctx, problem.New(problem.BadRequest, `the body must be {"provider": ..., "id_token": ...}`))
		return body, false
	}
	return body, true
}

// linkIdentity serves POST /v1/me/identities: the identity of an ID token is linked to the
// user of the access token, so that either logs in to the account from then on (204).
func (e *Edge) linkIdentity(ctx *fasthttp.RequestCtx, p params) {
	if p.user == "" {
		e.refuseAuth(ctx, problemNeedsToken)
		return
	}
	body, ok := e.oidcBody(ctx)
	if !ok {
		return
	}
	req := &wire.AuthRequest{Op: wire.AuthOIDCLink, User: p.user, Provider: body.Provider, IDToken: body.IDToken, Nonce: body.Nonce}
	if _, pr := e.askAuth(req, e.cfg.WriteTimeout); pr != nil {
		e.writeAuthProblem(ctx, pr)
		return
	}
	e.answerAuth(ctx, fasthttp.StatusNoContent, nil)
}

func (e *Edge) credentials(ctx *fasthttp.RequestCtx, op wire.AuthOp) {
	var body credentialsJSON
	if !e.authBody(ctx, &body) {
		return
	}
	if body.Email == "" || body.Password == "" {
		e.writeAuthProblem(ctx, problem.New(problem.BadRequest, `the body must be {"email": ..., "password": ...}`))
		return
	}
	if op == wire.AuthSignup && (body.TOTP != "" || body.RecoveryCode != "") {
		e.writeAuthProblem(ctx, problem.New(problem.BadRequest, "signup takes no second factor: enroll with POST /v1/me/totp"))
		return
	}
	e.forwardAuth(ctx, &wire.AuthRequest{Op: op, Email: body.Email, Password: body.Password,
		TOTP: body.TOTP, RecoveryCode: body.RecoveryCode})
}

func (e *Edge) refreshToken(ctx *fasthttp.RequestCtx, op wire.AuthOp) {
	var body refreshJSON
	if !e.authBody(ctx, &body) {
		return
	}
	if body.RefreshToken == "" {
		e.writeAuthProblem(ctx, problem.New(problem.BadRequest, `the body must be {"refresh_token": ...}`))
		return
	}
	e.forwardAuth(ctx, &wire.AuthRequest{Op: op, RefreshToken: body.RefreshToken})
}

// authBody checks the account request's media type and size and decodes its JSON body into v (unknown
// members refused, one object, nothing after it).
func (e *Edge) authBody(ctx *fasthttp.RequestCtx, v any) bool {
	return e.authBodyLimit(ctx, v, maxAuthBody)
}

// authBodyLimit is authBody with a body of at most limit bytes.
func (e *Edge) authBodyLimit(ctx *fasthttp.RequestCtx, v any, limit int) bool {
	if ct := ctx.Request.Header.ContentType(); !isJSONContentType(ct) {
		e.writeAuthProblem(ctx, problem.New(problem.UnsupportedMedia, "the body must be application/json"))
		return false
	}
	b := ctx.Request.Body()
	if len(b) > limit {
		e.writeAuthProblem(ctx, problem.Newf(problem.TooLarge, "an account request is at most %d bytes", limit))
		return false
	}
	if err := decodeStrict(b, v); err != nil {
		e.writeAuthProblem(ctx, problem.New(problem.BadJSON, err.Error()))
		return false
	}
	return true
}

func (e *Edge) forwardAuth(ctx *fasthttp.RequestCtx, req *wire.AuthRequest) {
	resp, p := e.askAuth(req, e.cfg.WriteTimeout)
	if p != nil {
		if p.Code == problem.TooManyAttempts {
			ctx.Response.Header.SetCanonical(hdrRetryAfter, []byte("60"))
		}
		e.writeAuthProblem(ctx, p)
		return
	}
	if req.Op == wire.AuthLogout {
		e.answerAuth(ctx, fasthttp.StatusNoContent, nil)
		return
	}
	if resp.Tokens == nil {
		e.writeAuthProblem(ctx, problem.New(problem.Unavailable, "the account service answered without tokens"))
		return
	}
	status := fasthttp.StatusOK
	if req.Op == wire.AuthSignup {
		status = fasthttp.StatusCreated
	}
	e.answerAuth(ctx, status, resp.Tokens)
}

// answerAuth answers an account request that succeeded: with v as JSON, or no body when v
// is nil; never cached, since it may carry tokens or secrets.
func (e *Edge) answerAuth(ctx *fasthttp.RequestCtx, status int, v any) {
	ctx.Response.Header.SetCanonical(hdrCacheControl, valNoStore)
	ctx.Response.Header.SetCanonical(hdrCacheStatus, csBypass)
	if v == nil {
		ctx.SetStatusCode(status)
		return
	}
	writeJSON(ctx, status, v)
}

// writeAuthProblem answers an account request's problem, never cached; a 401 carries the
// Bearer challenge.
func (e *Edge) writeAuthProblem(ctx *fasthttp.RequestCtx, p *problem.Problem) {
	ctx.Response.Header.SetCanonical(hdrCacheControl, valNoStore)
	ctx.Response.Header.SetCanonical(hdrCacheStatus, csBypass)
	if p.Status == fasthttp.StatusUnauthorized {
		ctx.Response.Header.SetCanonical(hdrWWWAuthenticate, valBearerRealm)
	}
	e.writeProblem(ctx, p)
}

var valJWKSCacheControl = []byte("public, max-age=300")

// jwks serves the key set that verifies access tokens (RFC 7517), as the core published it.
func (e *Edge) jwks(ctx *fasthttp.RequestCtx, _ params) {
	ctx.Response.Header.SetCanonical(hdrCacheStatus, csBypass)
	b := e.tokens.jwks.Load()
	if b == nil {
		if err := e.fetchKeys(); err != nil {
			ctx.Response.Header.SetCanonical(hdrRetryAfter, []byte("1"))
			e.writeProblem(ctx, problem.New(problem.Unavailable, "the key set is not known yet"))
			return
		}
		b = e.tokens.jwks.Load()
	}
	ctx.Response.Header.SetCanonical(hdrCacheControl, valJWKSCacheControl)
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentType("application/jwk-set+json")
	ctx.SetBody(*b)
}

func isJSONContentType(ct []byte) bool {
	if i := bytes.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return bytes.EqualFold(bytes.TrimSpace(ct), ctJSON)
}

// decodeStrict decodes one JSON object into v, refusing unknown members and trailing data.
func decodeStrict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("the body is not the expected JSON object: %v", err)
	}
	if d.More() {
		return errors.New("the body has data after its JSON object")
	}
	return nil
}
