package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/oklog/ulid/v2"

	"github.com/perchhq/perch/internal/auth"
	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

// AccountsConfig configures the account service: who the tokens say issued them and what for,
// how long they live, how signing keys rotate, how passwords are hashed, and how logins are
// throttled. Edges verify with the same Token settings.
type AccountsConfig struct {
	// Token is the access tokens' issuer, audience, life and tolerated clock skew. Default
	// auth.DefaultConfig with issuer and audience "perch".
	Token auth.Config
	// Rotation is the signing keys' schedule; its TTL and Skew are Token's. Default
	// auth.DefaultRotation.
	Rotation auth.Rotation
	// Password is the argon2id cost of new password hashes. Default auth.DefaultParams.
	Password auth.Params
	// RefreshTTL is the life of one refresh token, FamilyTTL of a login's chain of them.
	// Defaults 30 and 90 days.
	RefreshTTL, FamilyTTL time.Duration
	// LoginAttempts failed logins of one email within LoginWindow make the next ones wait
	// until the window ends (429). Defaults 5 in 15 minutes.
	LoginAttempts int
	LoginWindow   time.Duration
	// Hashing bounds the password hashes computed at once (each holds Password.Memory).
	// Default GOMAXPROCS.
	Hashing int
	// RotateEvery is how often the core checks the signing keys' schedule. Default 1 minute.
	RotateEvery time.Duration
	// APIKeysEvery is how often the core reads the apps' API keys to tell the edges of those
	// created and revoked (apikeys.go): the bound on how long a revoked key is still
	// accepted. Default 10 seconds.
	APIKeysEvery time.Duration
	// SecretKey (SecretKeyLen bytes) seals the users' TOTP secrets at rest (totp.go). Every
	// core of a fleet needs the same one. Without it, two-factor enrollment is refused (503)
	// and users who have TOTP on can log in only with a recovery code.
	SecretKey []byte
	// TOTPIssuer names the service in authenticator apps (the otpauth:// URI's issuer).
	// Default "Perch"; no colon.
	TOTPIssuer string
	// OIDC are the OpenID Connect providers whose ID tokens log in (POST /v1/auth/oidc,
	// oidc.go); none by default. Names are unique.
	OIDC []OIDCProvider
	// OIDCClient fetches the providers' keys. Default: an http.Client with a 5-second
	// timeout.
	OIDCClient *http.Client
	// OIDCRefetch is the least time between two fetches of a provider's keys caused by ID
	// tokens of a kid they lack. Default 1 minute.
	OIDCRefetch time.Duration
}

// DefaultAccountsConfig is the configuration of a production core's account service.
func DefaultAccountsConfig() AccountsConfig {
	tc := auth.DefaultConfig()
	tc.Issuer, tc.Audience = "perch", "perch"
	return AccountsConfig{
		Token: tc, Rotation: auth.DefaultRotation(), Password: auth.DefaultParams(),
		RefreshTTL: 30 * 24 * time.Hour, FamilyTTL: 90 * 24 * time.Hour,
		LoginAttempts: 5, LoginWindow: 15 * time.Minute,
		Hashing: runtime.GOMAXPROCS(0), RotateEvery: time.Minute, APIKeysEvery: 10 * time.Second,
	}
}

func (c *AccountsConfig) complete() error {
	d := DefaultAccountsConfig()
	if c.Token.Issuer == "" {
		c.Token.Issuer = d.Token.Issuer
	}
	if c.Token.Audience == "" {
		c.Token.Audience = d.Token.Audience
	}
	if c.Token.TTL == 0 {
		c.Token.TTL = d.Token.TTL
	}
	if c.Token.Skew == 0 {
		c.Token.Skew = d.Token.Skew
	}
	if err := c.Token.Validate(); err != nil {
		return err
	}
	if c.Rotation == (auth.Rotation{}) {
		c.Rotation = d.Rotation
	}
	c.Rotation.TTL, c.Rotation.Skew = c.Token.TTL, c.Token.Skew
	if err := c.Rotation.Validate(); err != nil {
		return err
	}
	if c.Password == (auth.Params{}) {
		c.Password = d.Password
	}
	if err := c.Password.Validate(); err != nil {
		return err
	}
	if c.RefreshTTL <= 0 {
		c.RefreshTTL = d.RefreshTTL
	}
	if c.FamilyTTL < c.RefreshTTL {
		c.FamilyTTL = max(d.FamilyTTL, c.RefreshTTL)
	}
	if c.LoginAttempts <= 0 {
		c.LoginAttempts = d.LoginAttempts
	}
	if c.LoginWindow <= 0 {
		c.LoginWindow = d.LoginWindow
	}
	if c.Hashing <= 0 {
		c.Hashing = d.Hashing
	}
	if c.RotateEvery <= 0 {
		c.RotateEvery = d.RotateEvery
	}
	if c.APIKeysEvery <= 0 {
		c.APIKeysEvery = d.APIKeysEvery
	}
	if n := len(c.SecretKey); n != 0 && n != SecretKeyLen {
		return fmt.Errorf("secret key of %d bytes, want %d", n, SecretKeyLen)
	}
	if c.TOTPIssuer == "" {
		c.TOTPIssuer = "Perch"
	}
	if strings.Contains(c.TOTPIssuer, ":") || len(c.TOTPIssuer) > 256 {
		return fmt.Errorf("TOTP issuer %q: at most 256 bytes, no colon", c.TOTPIssuer)
	}
	names := make(map[string]bool, len(c.OIDC))
	for _, p := range c.OIDC {
		if err := p.Validate(); err != nil {
			return err
		}
		if names[p.Name] {
			return fmt.Errorf("oidc provider %q configured twice", p.Name)
		}
		names[p.Name] = true
	}
	if c.OIDCRefetch <= 0 {
		c.OIDCRefetch = time.Minute
	}
	return nil
}

// accounts is the account service of one core: signup, login, refresh, logout, the signing
// keys and their JWKS, and the revocations the edges must apply. Every core runs one; they
// share nothing but the database, so each decision that two cores could race on (an email
// taken, a refresh token used, a key added) is the store's, in one transaction.
type accounts struct {
	cfg   AccountsConfig
	store interface {
		AccountStore
		TOTPStore
		IdentityStore
	}
	keyStore APIKeyStore
	nc       *nats.Conn
	log      *slog.Logger
	now      func() time.Time
	m        *metrics
	// hashing bounds the argon2id computations in flight.
	hashing chan struct{}
	// sealer seals TOTP secrets; nil without a secret key.
	sealer *sealer
	// oidc are the configured OpenID Connect providers, by name.
	oidc map[string]*oidcProvider

	mu     sync.Mutex
	signer *auth.Signer
	jwks   []byte // the JWKS published last
	// apiKeys is the wire.APIKeySet read last (apikeys.go).
	apiKeys []byte
}

func newAccounts(cfg AccountsConfig, store Store, nc *nats.Conn, log *slog.Logger, now func() time.Time, m *metrics) *accounts {
	a := &accounts{cfg: cfg, store: store, keyStore: store, nc: nc, log: log.With("component", "accounts"), now: now, m: m,
		hashing: make(chan struct{}, cfg.Hashing), oidc: newOIDCProviders(cfg)}
	// complete checked the key's length, so this cannot fail.
	a.sealer, _ = newSealer(cfg.SecretKey)
	if a.sealer == nil {
		a.log.Info("no secret key: two-factor authentication (TOTP) is off; enrollments are refused")
	}
	return a
}

// rotate brings the stored signing keys up to the schedule (adding a key when due, retiring
// and dropping old ones), picks the key to sign with, and publishes the JWKS to the edges
// when it changed. Every core runs it on a timer; the store decides which core's new key
// wins.
func (a *accounts) rotate(ctx context.Context) error {
	now := a.now()
	var keys []auth.Key
	stored, err := a.store.UpdateSigningKeys(ctx, func(current []StoredKey) ([]StoredKey, bool, error) {
		parsed, err := parseKeys(current)
		if err != nil {
			return nil, false, err
		}
		next, changed, err := a.cfg.Rotation.Next(parsed, now)
		if err != nil || !changed {
			return current, false, err
		}
		out := make([]StoredKey, len(next))
		for i, k := range next {
			blob, err := k.MarshalPrivate()
			if err != nil {
				return nil, false, err
			}
			out[i] = StoredKey{ID: k.ID, Private: blob, Created: k.Created}
		}
		return out, true, nil
	})
	if err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	if keys, err = parseKeys(stored); err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	signing, err := a.cfg.Rotation.Signing(keys, now)
	if err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	signer, err := auth.NewSigner(signing, a.cfg.Token)
	if err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	jwks, err := auth.MarshalJWKS(a.cfg.Rotation.Published(keys, now))
	if err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	a.mu.Lock()
	changed := string(jwks) != string(a.jwks)
	if a.signer == nil || a.signer.KeyID() != signer.KeyID() {
		a.log.Info("signing access tokens", "kid", signer.KeyID())
	}
	a.signer, a.jwks = signer, jwks
	a.mu.Unlock()
	if changed {
		if err := a.nc.Publish(wire.KeysSubject, jwks); err != nil {
			a.log.Warn("publishing the key set", "err", err)
		}
	}
	return nil
}

func parseKeys(stored []StoredKey) ([]auth.Key, error) {
	keys := make([]auth.Key, 0, len(stored))
	for _, s := range stored {
		k, err := auth.ParsePrivateKey(s.Private)
		if err != nil {
			return nil, fmt.Errorf("stored key %s: %w", s.ID, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// runRotation calls rotate every RotateEvery until ctx ends.
func (a *accounts) runRotation(ctx context.Context) {
	t := time.NewTicker(a.cfg.RotateEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.rotate(ctx); err != nil && ctx.Err() == nil {
				a.log.Error("rotating signing keys", "err", err)
			}
		}
	}
}

// serve answers one request of an edge.
func (a *accounts) serve(ctx context.Context, req *wire.AuthRequest) wire.AuthResponse {
	var resp wire.AuthResponse
	var err error
	switch req.Op {
	case wire.AuthSignup:
		resp.Tokens, err = a.signup(ctx, req.Email, req.Password)
	case wire.AuthLogin:
		resp.Tokens, err = a.login(ctx, req.Email, req.Password, secondFactor{req.TOTP, req.RecoveryCode})
	case wire.AuthRefresh:
		resp.Tokens, err = a.refresh(ctx, req.RefreshToken)
	case wire.AuthOIDC:
		resp.Tokens, err = a.oidcLogin(ctx, req.Provider, req.IDToken, req.Nonce)
	case wire.AuthOIDCLink:
		err = a.oidcLink(ctx, req.User, req.Provider, req.IDToken, req.Nonce)
	case wire.AuthLogout:
		err = a.logout(ctx, req.RefreshToken)
	case wire.AuthKeys:
		a.mu.Lock()
		resp.JWKS = a.jwks
		a.mu.Unlock()
		if resp.JWKS == nil {
			err = problem.New(problem.Unavailable, "no signing keys yet")
		}
	case wire.AuthTOTPEnroll:
		resp.TOTP, err = a.totpEnroll(ctx, req.User)
	case wire.AuthTOTPConfirm:
		resp.Recovery, err = a.totpConfirm(ctx, req.User, req.TOTP)
	case wire.AuthTOTPDisable:
		err = a.totpDisable(ctx, req.User, secondFactor{req.TOTP, req.RecoveryCode})
	case wire.AuthRevocations:
		var rs []Revocation
		rs, err = a.store.Revocations(ctx, req.Since)
		for _, r := range rs {
			resp.Revocations = append(resp.Revocations, wire.Revocation(r))
		}
	case wire.AuthMe:
		resp.Account, err = a.me(ctx, req.User)
	case wire.AuthDelete:
		err = a.deleteAccount(ctx, req.User)
	case wire.AuthAPIKeys:
		a.mu.Lock()
		resp.APIKeys = a.apiKeys
		a.mu.Unlock()
		if resp.APIKeys == nil {
			err = problem.New(problem.Unavailable, "the api keys are not read yet")
		}
	default:
		err = problem.Newf(problem.BadRequest, "unknown account request %q", req.Op)
	}
	result := "ok"
	if err != nil {
		var p *problem.Problem
		if !errors.As(err, &p) {
			a.log.Warn("account request failed", "op", req.Op, "err", err)
			p = problem.New(problem.Unavailable, "the account service is unavailable")
		}
		result = string(p.Code)
		resp = wire.AuthResponse{Problem: p}
	}
	op := string(req.Op)
	switch req.Op {
	case wire.AuthSignup, wire.AuthLogin, wire.AuthRefresh, wire.AuthLogout, wire.AuthKeys, wire.AuthRevocations,
		wire.AuthMe, wire.AuthDelete, wire.AuthAPIKeys, wire.AuthTOTPEnroll, wire.AuthTOTPConfirm, wire.AuthTOTPDisable,
		wire.AuthOIDC, wire.AuthOIDCLink:
	default:
		op = "other"
	}
	a.m.auth.WithLabelValues(op, result).Inc()
	return resp
}

var errInvalidCredentials = problem.New(problem.InvalidCredentials, "invalid credentials")

// NormalizeEmail returns the form in which an email is stored and looked up: trimmed and in
// lower case. It reports false for what cannot be an address: over 254 bytes, not valid
// UTF-8, without one @ between a local part and a domain, or with spaces or control
// characters; and for an address that starts with "oidc:", the prefix of the placeholder
// emails of users created through an identity provider (oidc.go).
func NormalizeEmail(email string) (string, bool) {
	e := strings.ToLower(strings.TrimSpace(email))
	if len(e) == 0 || len(e) > 254 || !utf8.ValidString(e) || strings.HasPrefix(e, "oidc:") {
		return "", false
	}
	at := strings.IndexByte(e, '@')
	if at <= 0 || at == len(e)-1 || strings.IndexByte(e[at+1:], '@') >= 0 || !strings.Contains(e[at+1:], ".") &&
		e[at+1:] != "localhost" {
		return "", false
	}
	for _, r := range e {
		if r <= ' ' || r == 0x7f {
			return "", false
		}
	}
	return e, true
}

// hash runs f with one of the hashing slots, so that a flood of logins waits instead of
// taking the memory of a hash each.
func (a *accounts) hash(ctx context.Context, f func()) error {
	select {
	case a.hashing <- struct{}{}:
	case <-ctx.Done():
		return problem.New(problem.Unavailable, "the account service is busy")
	}
	defer func() { <-a.hashing }()
	f()
	return nil
}

func (a *accounts) signup(ctx context.Context, email, password string) (*wire.Tokens, error) {
	email, ok := NormalizeEmail(email)
	if !ok {
		return nil, problem.New(problem.BadRequest, "email is not a valid address")
	}
	if n := len(password); n < auth.MinPasswordLen || n > auth.MaxPasswordLen {
		return nil, problem.Newf(problem.WeakPassword, "password must be %d to %d bytes", auth.MinPasswordLen, auth.MaxPasswordLen)
	}
	var phc string
	var herr error
	if err := a.hash(ctx, func() { phc, herr = auth.HashPassword(password, a.cfg.Password) }); err != nil {
		return nil, err
	}
	if herr != nil {
		return nil, herr
	}
	now := a.now().UTC()
	u := User{ID: ulid.Make().String(), Email: email, PasswordHash: phc, CreatedAt: now, UpdatedAt: now}
	if err := a.store.CreateUser(ctx, u); errors.Is(err, ErrExists) {
		// Signup is the one answer that says an account exists: without a confirmation
		// mail it cannot do otherwise. The auth routes' rate limit per address bounds
		// how fast anyone can ask.
		return nil, problem.New(problem.AlreadyExists, "an account with this email exists; log in instead")
	} else if err != nil {
		return nil, err
	}
	a.log.Info("account created", "user", u.ID)
	return a.issue(ctx, u.ID, now)
}

func (a *accounts) login(ctx context.Context, email, password string, f secondFactor) (*wire.Tokens, error) {
	key, ok := NormalizeEmail(email)
	if !ok || len(password) > auth.MaxPasswordLen {
		// Malformed input gets the answer of a wrong password, after the same work.
		_ = a.hash(ctx, func() { auth.VerifyDummy("") })
		return nil, errInvalidCredentials
	}
	now := a.now().UTC()
	failures, err := a.store.LoginFailures(ctx, key, now, a.cfg.LoginWindow)
	if err != nil {
		return nil, err
	}
	if failures >= a.cfg.LoginAttempts {
		return nil, problem.New(problem.TooManyAttempts, "too many failed logins for this account; try again later")
	}
	u, err := a.store.UserByEmail(ctx, key)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	var match, rehash bool
	var verr error
	if err := a.hash(ctx, func() {
		if u.PasswordHash == "" {
			a.cfg.Password.VerifyDummy(password)
			return
		}
		match, rehash, verr = a.cfg.Password.Verify(u.PasswordHash, password)
	}); err != nil {
		return nil, err
	}
	if verr != nil {
		a.log.Error("stored password hash unreadable", "user", u.ID, "err", verr)
	}
	if !match {
		if _, err := a.store.NoteLoginFailure(ctx, key, now, a.cfg.LoginWindow); err != nil {
			return nil, err
		}
		return nil, errInvalidCredentials
	}
	// Only now, to someone who knows the password, may the answer say that a second
	// factor is needed.
	if err := a.secondFactor(ctx, u, key, f); err != nil {
		return nil, err
	}
	if failures > 0 {
		if err := a.store.ClearLoginFailures(ctx, key); err != nil {
			return nil, err
		}
	}
	if rehash {
		// The hash was made with other parameters: store one with today's while the
		// password is at hand. A failure here costs nothing but the next login's retry.
		var phc string
		var herr error
		if err := a.hash(ctx, func() { phc, herr = auth.HashPassword(password, a.cfg.Password) }); err == nil && herr == nil {
			if err := a.store.SetPasswordHash(ctx, u.ID, phc, now); err != nil {
				a.log.Warn("storing a rehashed password", "user", u.ID, "err", err)
			}
		}
	}
	return a.issue(ctx, u.ID, now)
}

// issue starts a refresh-token family for the user and returns its first refresh token with
// an access token of the family.
func (a *accounts) issue(ctx context.Context, userID string, now time.Time) (*wire.Tokens, error) {
	token, hash := auth.NewRefreshToken()
	rt := RefreshToken{Hash: hash, Family: auth.NewFamilyID(), UserID: userID, IssuedAt: now,
		ExpiresAt: now.Add(a.cfg.RefreshTTL), FamilyExpiresAt: now.Add(a.cfg.FamilyTTL)}
	if err := a.store.CreateRefreshToken(ctx, rt); err != nil {
		return nil, err
	}
	return a.tokens(userID, rt.Family, token, now)
}

func (a *accounts) tokens(userID, family, refresh string, now time.Time) (*wire.Tokens, error) {
	a.mu.Lock()
	signer := a.signer
	a.mu.Unlock()
	if signer == nil {
		return nil, problem.New(problem.Unavailable, "no signing key yet")
	}
	c := signer.NewClaims(userID, now)
	c.SessionID = family
	access, err := signer.Sign(c)
	if err != nil {
		return nil, err
	}
	return &wire.Tokens{AccessToken: access, RefreshToken: refresh, TokenType: "Bearer",
		ExpiresIn: int(c.ExpiresAt.Sub(c.IssuedAt) / time.Second)}, nil
}

func (a *accounts) refresh(ctx context.Context, token string) (*wire.Tokens, error) {
	hash, err := auth.HashRefreshToken(token)
	if err != nil {
		return nil, errInvalidCredentials
	}
	now := a.now().UTC()
	next, nextHash := auth.NewRefreshToken()
	use, err := a.store.UseRefreshToken(ctx, hash, RefreshToken{Hash: nextHash, IssuedAt: now,
		ExpiresAt: now.Add(a.cfg.RefreshTTL)}, now)
	if err != nil {
		return nil, err
	}
	switch use.Result {
	case RefreshRotated:
		return a.tokens(use.Token.UserID, use.Token.Family, next, now)
	case RefreshReused:
		// One of the two holders of the token is not its user, and nobody can tell which:
		// the family ends, and its access tokens with it.
		a.log.Warn("a used refresh token was presented again; its session is revoked",
			"user", use.Token.UserID, "session", use.Token.Family)
		a.publishRevocation(wire.Revocation{Kind: RevokeSession, ID: use.Token.Family, At: now})
	}
	return nil, errInvalidCredentials
}

func (a *accounts) logout(ctx context.Context, token string) error {
	hash, err := auth.HashRefreshToken(token)
	if err != nil {
		return errInvalidCredentials
	}
	now := a.now().UTC()
	rt, err := a.store.RevokeRefreshFamily(ctx, hash, now)
	switch {
	case errors.Is(err, ErrNotFound):
		return errInvalidCredentials
	case err != nil:
		return err
	}
	at := now
	if !rt.Revoked.IsZero() {
		at = rt.Revoked
	}
	a.publishRevocation(wire.Revocation{Kind: RevokeSession, ID: rt.Family, At: at})
	return nil
}

// me is the account of a user whose access token an edge verified (GET /v1/me/export).
func (a *accounts) me(ctx context.Context, userID string) (*wire.Account, error) {
	u, err := a.store.UserByID(ctx, userID)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil, problem.New(problem.NotFound, "no such account")
	case err != nil:
		return nil, err
	}
	return &wire.Account{ID: u.ID, Email: u.Email, CreatedAt: u.CreatedAt.UTC()}, nil
}

// deleteAccount deletes a user whose documents the edge has deleted (DELETE /v1/me): the
// account, its sessions, and every access token of it on every edge. An account deleted
// already is not an error: the edge may be retrying.
func (a *accounts) deleteAccount(ctx context.Context, userID string) error {
	now := a.now().UTC()
	switch err := a.store.DeleteUser(ctx, userID, now); {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return err
	default:
		a.log.Info("account deleted", "user", userID)
	}
	a.publishRevocation(wire.Revocation{Kind: RevokeSubject, ID: userID, At: now})
	return nil
}

// publishRevocation tells every edge. One lost here is found by the edges that ask for the
// recent revocations when they (re)connect; an edge connected throughout misses it only if
// NATS drops the message, and the token then lives at most its TTL.
func (a *accounts) publishRevocation(r wire.Revocation) {
	data, err := json.Marshal(r)
	if err == nil {
		err = a.nc.Publish(wire.RevokedSubject, data)
	}
	if err != nil {
		a.log.Warn("publishing a revocation", "kind", r.Kind, "err", err)
	}
}

// serveAuth answers the edges' account requests, each in its own goroutine, at most
// ReadConcurrency at once; password hashing inside is bounded apart (Hashing).
func (c *Core) serveAuth(a *accounts) (*readService, error) {
	r := &readService{}
	sem := make(chan struct{}, c.cfg.ReadConcurrency)
	sub, err := c.nc.QueueSubscribe(wire.AuthSubject, wire.CoreQueue, func(m *nats.Msg) {
		sem <- struct{}{}
		r.wg.Add(1)
		go func() {
			defer func() { <-sem; r.wg.Done() }()
			var req wire.AuthRequest
			var resp wire.AuthResponse
			if err := json.Unmarshal(m.Data, &req); err != nil {
				resp.Problem = problem.New(problem.BadRequest, "malformed account request")
			} else {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				resp = a.serve(ctx, &req)
				cancel()
			}
			data, err := json.Marshal(&resp)
			if err != nil {
				c.log.Error("encoding an account answer", "op", req.Op, "err", err)
				return
			}
			if err := m.Respond(data); err != nil {
				c.log.Debug("answering an account request", "op", req.Op, "err", err)
			}
		}()
	})
	if err != nil {
		return nil, fmt.Errorf("core: subscribe %s: %w", wire.AuthSubject, err)
	}
	r.sub = sub
	return r, nil
}
