package edge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/internal/auth"
	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

// The apps' API keys (X-Api-Key). `perch keys` stores them in the database, the core reads
// them and publishes the live keys' hashes (core/apikeys.go), and every edge checks the
// X-Api-Key of each request against the set it holds in memory: no round trip.

// APIKeyMode is how an edge treats X-Api-Key (Config.APIKeys).
type APIKeyMode string

const (
	// APIKeysOff: X-Api-Key is any name the app gives itself, not checked (perch dev, and
	// the default of the library).
	APIKeysOff APIKeyMode = "off"
	// APIKeysCheck: a request with an X-Api-Key that is not a live key is refused 401
	// invalid_api_key; requests without one are served.
	APIKeysCheck APIKeyMode = "check"
	// APIKeysRequire: every request needs a live key, but those of apiKeyExempt.
	APIKeysRequire APIKeyMode = "require"
)

// ParseAPIKeyMode parses off, check or require.
func ParseAPIKeyMode(s string) (APIKeyMode, error) {
	switch m := APIKeyMode(s); m {
	case APIKeysOff, APIKeysCheck, APIKeysRequire:
		return m, nil
	}
	return "", fmt.Errorf("api keys %q: off, check or require", s)
}

var (
	hdrXAPIKey      = []byte(hdrAPIKey)
	valAPIKeyRealm  = []byte(`ApiKey realm="perch", header="X-Api-Key"`)
	pathJWKS        = []byte("/.well-known/jwks.json")
	pathOpenAPI     = []byte("/v1/openapi.json")
	problemNoAPIKey = problem.New(problem.InvalidAPIKey, "this edge needs the app's API key: X-Api-Key: pk_...")
	problemBadKey   = problem.New(problem.InvalidAPIKey, "the X-Api-Key is not a live API key")
	problemNoKeys   = problem.New(problem.Unavailable, "the API keys are not known to this edge yet")
)

// apiKeySeenMax bounds the keys an apiKeySet remembers having checked (about 150 bytes each).
// A fleet has a key per app and environment, a handful; the bound only keeps a flood of
// distinct keys from growing the map, and keys beyond it cost a hash each.
const apiKeySeenMax = 4096

// apiKeySet is one set of live keys as the core published it. It never changes once
// installed, but for seen: a new set (a key created or revoked) replaces it whole, and with
// it what it remembers, so that a revoked key cannot outlive its set in any cache.
type apiKeySet struct {
	changed time.Time
	byHash  map[[32]byte]string // the SHA-256 of a key's random bytes → its id
	// seen maps keys presented and found in byHash to their ids, so that a key seen before
	// costs a map lookup (~30 ns) instead of its decoding and hash (~200 ns).
	mu   sync.RWMutex
	seen map[string]string
}

func newAPIKeySet(data []byte) (*apiKeySet, error) {
	var w wire.APIKeySet
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, err
	}
	s := &apiKeySet{changed: w.Changed, byHash: make(map[[32]byte]string, len(w.Keys)), seen: map[string]string{}}
	for _, k := range w.Keys {
		if len(k.Hash) != 32 || !auth.ValidAPIKeyID(k.ID) {
			return nil, fmt.Errorf("api key %q: malformed", k.ID)
		}
		s.byHash[[32]byte(k.Hash)] = k.ID
	}
	return s, nil
}

// lookup returns the id of key, or false when it is not a live key of the set. It allocates
// nothing but the first time it sees a key.
func (s *apiKeySet) lookup(key []byte) (string, bool) {
	s.mu.RLock()
	id, ok := s.seen[string(key)]
	s.mu.RUnlock()
	if ok {
		return id, true
	}
	sum, valid := auth.HashAPIKey(key)
	if !valid {
		return "", false
	}
	if id, ok = s.byHash[sum]; ok {
		s.mu.Lock()
		if len(s.seen) < apiKeySeenMax {
			s.seen[string(key)] = id
		}
		s.mu.Unlock()
	}
	return id, ok
}

// apiKeyExempt reports whether path never needs an API key: health checks, which load
// balancers send without one, and the documents that say how to call the API.
func apiKeyExempt(path []byte) bool {
	return bytes.Equal(path, pathHealthz) || bytes.Equal(path, pathReadyz) ||
		bytes.Equal(path, pathJWKS) || bytes.Equal(path, pathOpenAPI)
}

// checkAPIKey applies Config.APIKeys to the request. It returns the id of the request's key
// when it has a live one, "" when it has none and needs none, or false once it answered the
// request: 401 invalid_api_key, or 503 before the edge has the keys. A key seen before costs
// two map lookups and allocates nothing.
func (e *Edge) checkAPIKey(ctx *fasthttp.RequestCtx) (string, bool) {
	key := ctx.Request.Header.PeekCanonical(hdrXAPIKey)
	if len(key) == 0 && e.cfg.APIKeys != APIKeysRequire || apiKeyExempt(ctx.Path()) {
		return "", true
	}
	if len(key) == 0 {
		e.refuseAPIKey(ctx, problemNoAPIKey, "missing")
		return "", false
	}
	set := e.apiKeys.Load()
	if set == nil {
		ctx.Response.Header.SetCanonical(hdrRetryAfter, []byte("1"))
		ctx.Response.Header.SetCanonical(hdrCacheStatus, csBypass)
		e.writeProblem(ctx, problemNoKeys)
		e.metrics.observe(unknownRoute, ctx)
		return "", false
	}
	id, ok := set.lookup(key)
	if !ok {
		reason := "unknown"
		if _, valid := auth.HashAPIKey(key); !valid {
			reason = "malformed"
		}
		e.refuseAPIKey(ctx, problemBadKey, reason)
		return "", false
	}
	return id, true
}

// refuseAPIKey answers 401 invalid_api_key, never cached, before routing.
func (e *Edge) refuseAPIKey(ctx *fasthttp.RequestCtx, p *problem.Problem, reason string) {
	e.metrics.apiKeysRefused.WithLabelValues(reason).Inc()
	ctx.Response.Header.SetCanonical(hdrWWWAuthenticate, valAPIKeyRealm)
	ctx.Response.Header.SetCanonical(hdrCacheStatus, csBypass)
	e.writeProblem(ctx, p)
	e.metrics.observe(unknownRoute, ctx)
}

// subscribeAPIKeys listens for the core's key sets; catchUpAuth asks for the current one.
func (e *Edge) subscribeAPIKeys() error {
	sub, err := e.nc.Subscribe(wire.APIKeysSubject, func(m *nats.Msg) { e.setAPIKeys(m.Data, "published") })
	if err != nil {
		return fmt.Errorf("edge: subscribe api keys: %w", err)
	}
	e.subs = append(e.subs, sub)
	return nil
}

// fetchAPIKeys asks the core for the live keys. Nothing to do when the edge does not check
// them.
func (e *Edge) fetchAPIKeys() error {
	if e.cfg.APIKeys == APIKeysOff {
		return nil
	}
	resp, p := e.askAuth(&wire.AuthRequest{Op: wire.AuthAPIKeys}, e.cfg.ReadTimeout)
	if p != nil {
		return p
	}
	return e.setAPIKeys(resp.APIKeys, "fetched")
}

// setAPIKeys installs a key set, unless the set in force changed later (a core's set read
// before a change another core already published). One that does not parse is logged and
// the keys in force stay.
func (e *Edge) setAPIKeys(data []byte, how string) error {
	s, err := newAPIKeySet(data)
	if err != nil {
		e.log.Error("api key set not usable; keeping the keys in force", "how", how, "err", err)
		return err
	}
	for {
		cur := e.apiKeys.Load()
		if cur != nil && s.changed.Before(cur.changed) {
			return nil
		}
		if cur != nil && s.changed.Equal(cur.changed) && sameKeys(cur, s) {
			return nil // the same set again: keep what it remembers
		}
		if e.apiKeys.CompareAndSwap(cur, s) {
			e.log.Debug("api keys installed", "how", how, "keys", len(s.byHash))
			return nil
		}
	}
}

func sameKeys(a, b *apiKeySet) bool {
	if len(a.byHash) != len(b.byHash) {
		return false
	}
	for h, id := range a.byHash {
		if b.byHash[h] != id {
			return false
		}
	}
	return true
}
