package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/perchhq/perch/internal/auth"
	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

// External identities: POST /v1/auth/oidc logs in with an ID token of a configured OpenID
// Connect provider. The core verifies the token (auth.VerifyIDToken) with the provider's keys,
// which it fetches over HTTPS and caches, and answers like a login: the user the identity is
// linked to, or a new user linked to it.

// OIDCProvider is an OpenID Connect provider whose ID tokens the account service accepts.
type OIDCProvider struct {
	// Name is what clients call the provider in POST /v1/auth/oidc ("google"), and what the
	// identities of its users are stored under: 1 to 32 of a-z, 0-9, '-' and '_'. Renaming a
	// provider orphans its identities.
	Name string
	// Issuer is the provider's issuer identifier, an https:// URL that ID tokens carry as
	// iss exactly ("https://accounts.google.com").
	Issuer string
	// Audience is the app's client id at the provider: ID tokens must be issued to it.
	Audience string
	// JWKSURL is where the provider publishes its keys (https://). Empty: the jwks_uri of
	// the issuer's /.well-known/openid-configuration, read at the first login.
	JWKSURL string
}

var providerName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// Validate reports what is wrong with p.
func (p OIDCProvider) Validate() error {
	if !providerName.MatchString(p.Name) {
		return fmt.Errorf("oidc provider %q: the name must be 1 to 32 of a-z, 0-9, '-' and '_'", p.Name)
	}
	if err := httpsURL(p.Issuer); err != nil {
		return fmt.Errorf("oidc provider %s: issuer: %w", p.Name, err)
	}
	if p.Audience == "" || len(p.Audience) > 256 {
		return fmt.Errorf("oidc provider %s: the audience (client id) must be 1 to 256 bytes", p.Name)
	}
	if p.JWKSURL != "" {
		if err := httpsURL(p.JWKSURL); err != nil {
			return fmt.Errorf("oidc provider %s: jwks url: %w", p.Name, err)
		}
	}
	return nil
}

// httpsURL checks that s is an absolute https:// URL: the keys that decide who may log in
// are never fetched in clear.
func httpsURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" || len(s) > 256 {
		return fmt.Errorf("%q is not an https:// URL of at most 256 bytes", s)
	}
	return nil
}

// ParseOIDCProvider reads the form of `perch core --oidc`: NAME=ISSUER,AUDIENCE[,JWKS_URL].
func ParseOIDCProvider(s string) (OIDCProvider, error) {
	name, rest, ok := strings.Cut(s, "=")
	parts := strings.Split(rest, ",")
	if !ok || len(parts) < 2 || len(parts) > 3 {
		return OIDCProvider{}, fmt.Errorf("oidc provider %q: want NAME=ISSUER,AUDIENCE[,JWKS_URL]", s)
	}
	p := OIDCProvider{Name: name, Issuer: parts[0], Audience: parts[1]}
	if len(parts) == 3 {
		p.JWKSURL = parts[2]
	}
	return p, p.Validate()
}

// Fetching keys. A provider's keys are fetched at its first login, again when they are older
// than oidcKeysMaxAge (providers rotate; a key they dropped stops being accepted), and on an
// ID token whose kid they lack, at most once per OIDCRefetch: a forged kid costs one fetch a
// minute, not one per request.
const (
	oidcKeysMaxAge   = time.Hour
	oidcFetchTimeout = 5 * time.Second
	maxOIDCDocBytes  = 256 << 10
)

// oidcProvider is one provider and its cached keys.
type oidcProvider struct {
	cfg     OIDCProvider
	idCfg   auth.IDTokenConfig
	client  *http.Client
	refetch time.Duration

	mu        sync.Mutex // held during a fetch: one at a time per provider
	jwksURL   string     // cfg.JWKSURL, or the discovered one
	keys      auth.OIDCKeySet
	fetched   time.Time // of keys
	attempted time.Time // the last fetch, successful or not
}

func newOIDCProviders(cfg AccountsConfig) map[string]*oidcProvider {
	client := cfg.OIDCClient
	if client == nil {
		client = &http.Client{Timeout: oidcFetchTimeout}
	}
	ps := make(map[string]*oidcProvider, len(cfg.OIDC))
	for _, p := range cfg.OIDC {
		ps[p.Name] = &oidcProvider{cfg: p, client: client, refetch: cfg.OIDCRefetch, jwksURL: p.JWKSURL,
			idCfg: auth.IDTokenConfig{Issuer: p.Issuer, Audience: p.Audience, Skew: cfg.Token.Skew}}
	}
	return ps
}

// keySet returns the provider's keys, fetching them when there are none or they are old, or
// when stale is true (a token's kid is unknown) and the last fetch is OIDCRefetch ago. A
// failed fetch keeps the keys there were; an error only when there are none.
func (p *oidcProvider) keySet(ctx context.Context, now time.Time, stale bool) (auth.OIDCKeySet, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	due := p.keys.Len() == 0 || now.Sub(p.fetched) >= oidcKeysMaxAge || stale
	if !due || (!p.attempted.IsZero() && now.Sub(p.attempted) < p.refetch) {
		if p.keys.Len() == 0 {
			return p.keys, false, fmt.Errorf("no keys of provider %s yet", p.cfg.Name)
		}
		return p.keys, false, nil
	}
	p.attempted = now
	keys, err := p.fetch(ctx)
	if err != nil {
		if p.keys.Len() == 0 {
			return p.keys, false, err
		}
		return p.keys, false, nil
	}
	p.keys, p.fetched = keys, now
	return keys, true, nil
}

// fetch reads the provider's key set, discovering its URL first if need be.
func (p *oidcProvider) fetch(ctx context.Context) (auth.OIDCKeySet, error) {
	ctx, cancel := context.WithTimeout(ctx, oidcFetchTimeout)
	defer cancel()
	if p.jwksURL == "" {
		doc, err := p.get(ctx, strings.TrimSuffix(p.cfg.Issuer, "/")+"/.well-known/openid-configuration")
		if err != nil {
			return auth.OIDCKeySet{}, err
		}
		var meta struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(doc, &meta); err != nil {
			return auth.OIDCKeySet{}, fmt.Errorf("provider %s: discovery document: %w", p.cfg.Name, err)
		}
		// OpenID Connect Discovery §4.3: the document's issuer must be the one configured.
		if meta.Issuer != p.cfg.Issuer {
			return auth.OIDCKeySet{}, fmt.Errorf("provider %s: discovery says issuer %q", p.cfg.Name, meta.Issuer)
		}
		if err := httpsURL(meta.JWKSURI); err != nil {
			return auth.OIDCKeySet{}, fmt.Errorf("provider %s: jwks_uri: %w", p.cfg.Name, err)
		}
		p.jwksURL = meta.JWKSURI
	}
	doc, err := p.get(ctx, p.jwksURL)
	if err != nil {
		return auth.OIDCKeySet{}, err
	}
	keys, err := auth.ParseOIDCJWKS(doc)
	if err != nil {
		return auth.OIDCKeySet{}, fmt.Errorf("provider %s: key set: %w", p.cfg.Name, err)
	}
	return keys, nil
}

func (p *oidcProvider) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("provider %s: %w", p.cfg.Name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("provider %s: GET %s: %s", p.cfg.Name, u, resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxOIDCDocBytes+1))
	if err != nil {
		return nil, fmt.Errorf("provider %s: GET %s: %w", p.cfg.Name, u, err)
	}
	if len(b) > maxOIDCDocBytes {
		return nil, fmt.Errorf("provider %s: GET %s: over %d bytes", p.cfg.Name, u, maxOIDCDocBytes)
	}
	return b, nil
}

// verify checks an ID token of the provider, fetching its keys again once when the token's
// kid is unknown to them.
func (p *oidcProvider) verify(ctx context.Context, token, nonce string, now time.Time) (auth.IDClaims, error) {
	keys, fresh, err := p.keySet(ctx, now, false)
	if err != nil {
		return auth.IDClaims{}, err
	}
	c, err := auth.VerifyIDToken(token, keys, p.idCfg, nonce, now)
	if errors.Is(err, auth.ErrUnknownKey) && !fresh {
		if keys, fresh, _ = p.keySet(ctx, now, true); fresh {
			c, err = auth.VerifyIDToken(token, keys, p.idCfg, nonce, now)
		}
	}
	return c, err
}

var errInvalidIDToken = problem.New(problem.InvalidCredentials, "the ID token is not valid for this provider")

// placeholderEmail is the email of a user created through a provider that vouched for no
// address (no email, or email_verified not true): "oidc:", the provider's name, ':' and the
// subject. It is unique, since provider names have no ':', and it is no address anyone can
// sign up or log in with, since NormalizeEmail refuses the prefix "oidc:".
func placeholderEmail(provider, subject string) string {
	return "oidc:" + provider + ":" + subject
}

// verifyIDToken checks an ID token of the named provider, or returns the problem to answer.
func (a *accounts) verifyIDToken(ctx context.Context, provider, token, nonce string, now time.Time) (auth.IDClaims, error) {
	p, ok := a.oidc[provider]
	if !ok {
		if !providerName.MatchString(provider) {
			return auth.IDClaims{}, problem.New(problem.InvalidCredentials, "no such identity provider is configured")
		}
		return auth.IDClaims{}, problem.Newf(problem.InvalidCredentials, "no identity provider %q is configured", provider)
	}
	c, err := p.verify(ctx, token, nonce, now)
	if err == nil {
		return c, nil
	}
	if !isTokenError(err) {
		// The keys could not be fetched: the provider's fault or the network's.
		a.log.Warn("identity provider keys unavailable", "provider", provider, "err", err)
		return auth.IDClaims{}, problem.New(problem.Unavailable, "the identity provider's keys cannot be fetched; try again later")
	}
	a.log.Debug("ID token refused", "provider", provider, "err", err)
	return auth.IDClaims{}, errInvalidIDToken
}

// oidcLogin is POST /v1/auth/oidc.
func (a *accounts) oidcLogin(ctx context.Context, provider, token, nonce string) (*wire.Tokens, error) {
	now := a.now().UTC()
	c, err := a.verifyIDToken(ctx, provider, token, nonce, now)
	if err != nil {
		return nil, err
	}
	userID, err := a.store.UserByIdentity(ctx, provider, c.Subject)
	if err == nil {
		return a.issue(ctx, userID, now)
	}
	if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	email := placeholderEmail(provider, c.Subject)
	if e, ok := NormalizeEmail(c.Email); ok && c.EmailVerified {
		email = e
		switch _, err := a.store.UserByEmail(ctx, e); {
		case err == nil:
			return nil, errEmailHasAccount
		case !errors.Is(err, ErrNotFound):
			return nil, err
		}
	}
	u := User{ID: ulid.Make().String(), Email: email, CreatedAt: now, UpdatedAt: now}
	err = a.store.CreateUserWithIdentity(ctx, u, Identity{Provider: provider, Subject: c.Subject, Created: now})
	if errors.Is(err, ErrExists) {
		// A concurrent first login of the identity won, or the email was just taken.
		if userID, err := a.store.UserByIdentity(ctx, provider, c.Subject); err == nil {
			return a.issue(ctx, userID, now)
		}
		return nil, errEmailHasAccount
	}
	if err != nil {
		return nil, err
	}
	a.log.Info("account created", "user", u.ID, "provider", provider)
	return a.issue(ctx, u.ID, now)
}

// oidcLink is POST /v1/me/identities: it links the identity of an ID token to the user whose
// access token the edge verified. Having both, the user proved they hold both accounts, so
// the token's email plays no part.
func (a *accounts) oidcLink(ctx context.Context, userID, provider, token, nonce string) error {
	now := a.now().UTC()
	c, err := a.verifyIDToken(ctx, provider, token, nonce, now)
	if err != nil {
		return err
	}
	switch err := a.store.LinkIdentity(ctx, Identity{Provider: provider, Subject: c.Subject, UserID: userID, Created: now}); {
	case errors.Is(err, ErrExists):
		return problem.New(problem.AlreadyExists, "this identity is linked to another account")
	case errors.Is(err, ErrNotFound):
		return problem.New(problem.NotFound, "no such account")
	case err != nil:
		return err
	}
	a.log.Info("identity linked", "user", userID, "provider", provider)
	return nil
}

// errEmailHasAccount refuses to link an identity to the account that has its email: the
// provider's word that someone owns an address is not a password, and taking it as one would
// hand the account to whoever controls the address at any provider configured.
var errEmailHasAccount = problem.New(problem.AlreadyExists,
	"an account with this email exists: log in to it first (with its password), then link this identity with POST /v1/me/identities")

// isTokenError reports whether err is the token's fault (a sentinel of auth), not the keys'.
func isTokenError(err error) bool {
	for _, s := range []error{auth.ErrMalformed, auth.ErrAlgorithm, auth.ErrSignature, auth.ErrExpired,
		auth.ErrNotYetValid, auth.ErrAudience, auth.ErrIssuer, auth.ErrUnknownKey, auth.ErrNonce} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}
