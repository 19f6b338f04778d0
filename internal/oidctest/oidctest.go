// Package oidctest starts an OpenID Connect provider for tests: an HTTPS server on loopback
// that serves /.well-known/openid-configuration and a JWK Set, and signs ID tokens (RS256 and
// ES256) with keys made for the test. It is a test helper: production code never imports it.
package oidctest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var b64 = base64.RawURLEncoding

// Key is a signing key of the provider.
type Key struct {
	ID  string
	Alg string // "RS256" or "ES256"
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
}

// NewKey makes a key for alg ("RS256": 2048-bit RSA, "ES256": P-256) named kid.
func NewKey(tb testing.TB, kid, alg string) *Key {
	tb.Helper()
	k := &Key{ID: kid, Alg: alg}
	var err error
	switch alg {
	case "RS256":
		k.rsa, err = rsa.GenerateKey(rand.Reader, 2048)
	case "ES256":
		k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		tb.Fatalf("oidctest: algorithm %q", alg)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// JWK is the public key as a JWK, with kid, alg and use.
func (k *Key) JWK() map[string]any {
	if k.rsa != nil {
		return map[string]any{"kty": "RSA", "kid": k.ID, "alg": k.Alg, "use": "sig",
			"n": b64.EncodeToString(k.rsa.N.Bytes()), "e": b64.EncodeToString(big.NewInt(int64(k.rsa.E)).Bytes())}
	}
	pub := k.ec.PublicKey
	x, y := make([]byte, 32), make([]byte, 32)
	raw, _ := pub.Bytes() // 0x04 || x || y
	copy(x, raw[1:33])
	copy(y, raw[33:])
	return map[string]any{"kty": "EC", "crv": "P-256", "kid": k.ID, "alg": k.Alg, "use": "sig",
		"x": b64.EncodeToString(x), "y": b64.EncodeToString(y)}
}

// PublicBytes is what a careless verifier might use as an HMAC key: the RSA modulus, or the
// EC point, as bytes.
func (k *Key) PublicBytes() []byte {
	if k.rsa != nil {
		return k.rsa.N.Bytes()
	}
	raw, _ := k.ec.PublicKey.Bytes()
	return raw
}

// Sign returns the compact JWS of claims with header {"alg":k.Alg,"kid":k.ID,"typ":"JWT"}.
func (k *Key) Sign(tb testing.TB, claims map[string]any) string {
	tb.Helper()
	return k.SignHeader(tb, map[string]any{"alg": k.Alg, "kid": k.ID, "typ": "JWT"}, claims)
}

// SignHeader signs claims under header with k's algorithm, whatever header says.
func (k *Key) SignHeader(tb testing.TB, header, claims map[string]any) string {
	tb.Helper()
	input := encode(tb, header) + "." + encode(tb, claims)
	digest := sha256.Sum256([]byte(input))
	var sig []byte
	var err error
	if k.rsa != nil {
		sig, err = rsa.SignPKCS1v15(rand.Reader, k.rsa, crypto.SHA256, digest[:])
	} else {
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, k.ec, digest[:])
		if err == nil {
			sig = make([]byte, 64)
			r.FillBytes(sig[:32])
			s.FillBytes(sig[32:])
		}
	}
	if err != nil {
		tb.Fatal(err)
	}
	return input + "." + b64.EncodeToString(sig)
}

// SignHMAC forges a token "signed" HS256 with secret: what a verifier that lets the header
// choose the algorithm would accept when keyed with a public key's bytes.
func SignHMAC(tb testing.TB, kid string, secret []byte, claims map[string]any) string {
	tb.Helper()
	input := encode(tb, map[string]any{"alg": "HS256", "kid": kid, "typ": "JWT"}) + "." + encode(tb, claims)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(input))
	return input + "." + b64.EncodeToString(m.Sum(nil))
}

// Unsigned is a token with {"alg":"none"} and an empty signature.
func Unsigned(tb testing.TB, kid string, claims map[string]any) string {
	tb.Helper()
	return encode(tb, map[string]any{"alg": "none", "kid": kid}) + "." + encode(tb, claims) + "."
}

func encode(tb testing.TB, v any) string {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b64.EncodeToString(b)
}

// Provider is a running provider. Its methods are safe for concurrent use.
type Provider struct {
	// Issuer is the provider's issuer identifier: the server's https:// URL.
	Issuer string
	srv    *httptest.Server

	mu      sync.Mutex
	keys    []*Key
	fetches atomic.Int64
}

// Start starts a provider that publishes keys; it stops when tb ends.
func Start(tb testing.TB, keys ...*Key) *Provider {
	tb.Helper()
	p := &Provider{keys: keys}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": p.Issuer, "jwks_uri": p.Issuer + "/keys",
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256"}})
	})
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, _ *http.Request) {
		p.fetches.Add(1)
		p.mu.Lock()
		set := make([]map[string]any, 0, len(p.keys))
		for _, k := range p.keys {
			set = append(set, k.JWK())
		}
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": set})
	})
	p.srv = httptest.NewTLSServer(mux)
	p.Issuer = p.srv.URL
	tb.Cleanup(p.srv.Close)
	return p
}

// Client is an HTTP client that trusts the provider's certificate.
func (p *Provider) Client() *http.Client { return p.srv.Client() }

// JWKSURL is where the provider serves its keys.
func (p *Provider) JWKSURL() string { return p.Issuer + "/keys" }

// SetKeys replaces the keys the provider publishes.
func (p *Provider) SetKeys(keys ...*Key) {
	p.mu.Lock()
	p.keys = keys
	p.mu.Unlock()
}

// Fetches is how many times the key set was served.
func (p *Provider) Fetches() int64 { return p.fetches.Load() }

// Claims returns the claims of an ID token of the provider for sub and the client aud,
// issued at now and expiring an hour later; edit them before signing.
func (p *Provider) Claims(sub, aud string, now time.Time) map[string]any {
	return map[string]any{"iss": p.Issuer, "sub": sub, "aud": aud, "iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(), "auth_time": now.Unix(), "name": fmt.Sprint("User ", sub)}
}
