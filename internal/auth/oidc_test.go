package auth

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/perchhq/perch/internal/oidctest"
)

const testClient = "app-client-id"

func idConfig(issuer string) IDTokenConfig {
	return IDTokenConfig{Issuer: issuer, Audience: testClient, Skew: 30 * time.Second}
}

func oidcKeySet(tb testing.TB, keys ...*oidctest.Key) OIDCKeySet {
	tb.Helper()
	set := make([]map[string]any, 0, len(keys))
	for _, k := range keys {
		set = append(set, k.JWK())
	}
	b, _ := json.Marshal(map[string]any{"keys": set})
	ks, err := ParseOIDCJWKS(b)
	if err != nil {
		tb.Fatalf("ParseOIDCJWKS: %v", err)
	}
	return ks
}

const testIssuer = "https://accounts.example.test"

func idClaims(sub string, now time.Time) map[string]any {
	return map[string]any{"iss": testIssuer, "sub": sub, "aud": testClient, "iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(), "email": "Ann@Example.com", "email_verified": true, "name": "Ann"}
}

func TestVerifyIDToken(t *testing.T) {
	rs, es, other := oidctest.NewKey(t, "rs1", "RS256"), oidctest.NewKey(t, "es1", "ES256"), oidctest.NewKey(t, "rs2", "RS256")
	keys := oidcKeySet(t, rs, es)
	cfg := idConfig(testIssuer)
	now := t0

	for _, k := range []*oidctest.Key{rs, es} {
		c, err := VerifyIDToken(k.Sign(t, idClaims("u1", now)), keys, cfg, "", now)
		if err != nil {
			t.Fatalf("%s: %v", k.Alg, err)
		}
		if c.Subject != "u1" || c.Issuer != testIssuer || !c.EmailVerified || c.Email != "Ann@Example.com" ||
			!c.ExpiresAt.Equal(now.Add(time.Hour)) {
			t.Fatalf("%s: claims %+v", k.Alg, c)
		}
	}

	edit := func(f func(map[string]any)) map[string]any {
		c := idClaims("u1", now)
		f(c)
		return c
	}
	tamper := rs.Sign(t, idClaims("u1", now))
	tamper = tamper[:len(tamper)-4] + "AAAA"
	hdr := func(h map[string]any) string { return rs.SignHeader(t, h, idClaims("u1", now)) }
	for _, tc := range []struct {
		name  string
		token string
		nonce string
		want  error
	}{
		{"wrong issuer", rs.Sign(t, edit(func(c map[string]any) { c["iss"] = testIssuer + "/" })), "", ErrIssuer},
		{"wrong audience", rs.Sign(t, edit(func(c map[string]any) { c["aud"] = "other" })), "", ErrAudience},
		{"audiences without azp", rs.Sign(t, edit(func(c map[string]any) { c["aud"] = []string{testClient, "other"} })), "", ErrAudience},
		{"azp of another client", rs.Sign(t, edit(func(c map[string]any) { c["azp"] = "other" })), "", ErrAudience},
		{"expired", rs.Sign(t, edit(func(c map[string]any) { c["exp"] = now.Add(-31 * time.Second).Unix() })), "", ErrExpired},
		{"issued later", rs.Sign(t, edit(func(c map[string]any) { c["iat"] = now.Add(time.Minute).Unix() })), "", ErrNotYetValid},
		{"not before", rs.Sign(t, edit(func(c map[string]any) { c["nbf"] = now.Add(time.Minute).Unix() })), "", ErrNotYetValid},
		{"wrong nonce", rs.Sign(t, edit(func(c map[string]any) { c["nonce"] = "n-1" })), "n-2", ErrNonce},
		{"nonce missing", rs.Sign(t, idClaims("u1", now)), "n-2", ErrNonce},
		{"alg none", oidctest.Unsigned(t, rs.ID, idClaims("u1", now)), "", ErrAlgorithm},
		{"HS256 keyed with the modulus", oidctest.SignHMAC(t, rs.ID, rs.PublicBytes(), idClaims("u1", now)), "", ErrAlgorithm},
		{"ES256 header on an RSA key", hdr(map[string]any{"alg": "ES256", "kid": rs.ID}), "", ErrAlgorithm},
		{"tampered signature", tamper, "", ErrSignature},
		{"unknown kid", other.Sign(t, idClaims("u1", now)), "", ErrUnknownKey},
		{"jwk in the header", hdr(map[string]any{"alg": "RS256", "kid": rs.ID, "jwk": rs.JWK()}), "", ErrMalformed},
		{"jku in the header", hdr(map[string]any{"alg": "RS256", "kid": rs.ID, "jku": "https://evil.test/keys"}), "", ErrMalformed},
		{"an access token's typ", hdr(map[string]any{"alg": "RS256", "kid": rs.ID, "typ": "at+jwt"}), "", ErrMalformed},
		{"no kid", hdr(map[string]any{"alg": "RS256"}), "", ErrMalformed},
		{"NUL in sub", rs.Sign(t, edit(func(c map[string]any) { c["sub"] = "u\x001" })), "", ErrMalformed},
		{"no sub", rs.Sign(t, edit(func(c map[string]any) { delete(c, "sub") })), "", ErrMalformed},
		{"exp a string", rs.Sign(t, edit(func(c map[string]any) { c["exp"] = "tomorrow" })), "", ErrMalformed},
		{"email_verified a number", rs.Sign(t, edit(func(c map[string]any) { c["email_verified"] = 1 })), "", ErrMalformed},
	} {
		_, err := VerifyIDToken(tc.token, keys, cfg, tc.nonce, now)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}

	// What OpenID Connect allows: several audiences with azp, a nonce, Microsoft's x5t.
	ok := []string{
		rs.Sign(t, edit(func(c map[string]any) { c["aud"] = []string{"other", testClient}; c["azp"] = testClient })),
		rs.Sign(t, edit(func(c map[string]any) { c["email_verified"] = "true" })),
		hdr(map[string]any{"alg": "RS256", "kid": rs.ID, "x5t": "abc"}),
		rs.Sign(t, edit(func(c map[string]any) { c["exp"] = now.Add(-29 * time.Second).Unix() })),
	}
	for i, token := range ok {
		if _, err := VerifyIDToken(token, keys, cfg, "", now); err != nil {
			t.Errorf("accepted token %d: %v", i, err)
		}
	}
	if _, err := VerifyIDToken(rs.Sign(t, edit(func(c map[string]any) { c["nonce"] = "n-1" })), keys, cfg, "n-1", now); err != nil {
		t.Errorf("the right nonce: %v", err)
	}
}

func TestParseOIDCJWKS(t *testing.T) {
	rs, es := oidctest.NewKey(t, "rs1", "RS256"), oidctest.NewKey(t, "es1", "ES256")
	with := func(k *oidctest.Key, f func(map[string]any)) map[string]any {
		j := k.JWK()
		f(j)
		return j
	}
	set := func(keys ...map[string]any) []byte {
		b, _ := json.Marshal(map[string]any{"keys": keys})
		return b
	}
	// Keys for other uses are skipped; Microsoft's extra members are ignored.
	ks, err := ParseOIDCJWKS(set(rs.JWK(), es.JWK(),
		map[string]any{"kty": "oct", "kid": "h", "k": "c2VjcmV0"},
		with(rs, func(j map[string]any) { j["kid"] = "enc"; j["use"] = "enc" }),
		with(rs, func(j map[string]any) { j["kid"] = "ps"; j["alg"] = "PS256" }),
		with(es, func(j map[string]any) { j["kid"] = "x5"; j["x5c"] = []string{"MIIB"}; j["issuer"] = testIssuer }),
	))
	if err != nil || ks.Len() != 3 || !ks.Has("rs1") || !ks.Has("es1") || !ks.Has("x5") {
		t.Fatalf("ParseOIDCJWKS = %d keys, %v; want rs1, es1, x5", ks.Len(), err)
	}
	for name, doc := range map[string][]byte{
		"private part":    set(with(rs, func(j map[string]any) { j["d"] = "AQAB" })),
		"kid twice":       set(rs.JWK(), rs.JWK()),
		"no kid":          set(with(es, func(j map[string]any) { delete(j, "kid") })),
		"short modulus":   set(with(rs, func(j map[string]any) { j["n"] = "AQAB" })),
		"even exponent":   set(with(rs, func(j map[string]any) { j["e"] = "Ag" })),
		"point off curve": set(with(es, func(j map[string]any) { j["y"] = j["x"] })),
		"no usable key":   set(map[string]any{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}),
		"no keys":         []byte(`{}`),
		"duplicate":       []byte(`{"keys":[],"keys":[]}`),
	} {
		if _, err := ParseOIDCJWKS(doc); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

// FuzzVerifyIDToken: any string either verifies or fails with exactly one sentinel, and what
// verifies has the claims that VerifyIDToken promises.
func FuzzVerifyIDToken(f *testing.F) {
	rs, es := oidctest.NewKey(f, "rs1", "RS256"), oidctest.NewKey(f, "es1", "ES256")
	keys := oidcKeySet(f, rs, es)
	cfg := idConfig(testIssuer)
	for _, k := range []*oidctest.Key{rs, es} {
		token := k.Sign(f, idClaims("u1", t0))
		f.Add(token)
		h, rest, _ := strings.Cut(token, ".")
		p, sig, _ := strings.Cut(rest, ".")
		f.Add(h + "." + p + ".")
		f.Add(b64(`{"alg":"none","kid":"rs1"}`) + "." + p + ".")
		f.Add(b64(`{"alg":"HS256","kid":"`+k.ID+`"}`) + "." + p + "." + sig)
		f.Add(token + "." + sig)
	}
	f.Add(rs.SignHeader(f, map[string]any{"alg": "RS256", "kid": "rs1"},
		map[string]any{"iss": testIssuer, "sub": "u", "aud": []string{testClient, "b"}, "azp": testClient, "exp": t0.Unix() + 60, "iat": t0.Unix()}))
	f.Add("")
	f.Add("..")
	sentinels := append(sentinels, ErrNonce)
	f.Fuzz(func(t *testing.T, token string) {
		c, err := VerifyIDToken(token, keys, cfg, "", t0)
		if err == nil {
			if c.Issuer != testIssuer || c.Subject == "" || !strings.Contains(strings.Join(c.Audience, "\x00")+"\x00", testClient+"\x00") ||
				!t0.Before(c.ExpiresAt.Add(cfg.Skew)) {
				t.Fatalf("%q verifies with claims %+v", token, c)
			}
			return
		}
		n := 0
		for _, s := range sentinels {
			if errors.Is(err, s) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%q: %v wraps %d sentinels", token, err, n)
		}
	})
}

// FuzzParseOIDCJWKS: any document either fails with ErrMalformed or gives at least one key.
func FuzzParseOIDCJWKS(f *testing.F) {
	rs, es := oidctest.NewKey(f, "rs1", "RS256"), oidctest.NewKey(f, "es1", "ES256")
	b, _ := json.Marshal(map[string]any{"keys": []any{rs.JWK(), es.JWK()}})
	f.Add(b)
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","kid":"a","x":"","y":""}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","kid":"a","n":"AQAB","e":"AQAB","d":"x"}]}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		ks, err := ParseOIDCJWKS(doc)
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("%q: %v does not wrap ErrMalformed", doc, err)
		}
		if err == nil && ks.Len() == 0 {
			t.Fatalf("%q: no error and no keys", doc)
		}
	})
}
