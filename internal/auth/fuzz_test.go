package auth

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

// FuzzVerify: any string either verifies or fails with exactly one sentinel, and the only
// strings that verify are the tokens the signer made: a valid token cannot be re-encoded,
// padded or re-ordered into another string that verifies.
func FuzzVerify(f *testing.F) {
	k := testKey(f, 1)
	cfg := testConfig()
	s := newSigner(f, k, cfg)
	v := newVerifier(f, cfg, k)
	c := newCache(f, v, 16)
	signed := make(map[string]bool)
	// The tokens are deterministic (a fixed key and jti), so that the fuzzing workers, which
	// run this setup again, sign the same ones.
	for i, edit := range []func(*Claims){
		func(*Claims) {},
		func(c *Claims) { c.SessionID = "fam-1" },
		func(c *Claims) { c.Custom = map[string]string{"app": "notes", "r\u00f4le": "<admin>"} },
	} {
		token, _ := issue(f, s, "alice", t0, func(c *Claims) { c.ID = fmt.Sprint("jti-", i); edit(c) })
		signed[token] = true
		f.Add(token)
		h, rest, _ := strings.Cut(token, ".")
		p, sig, _ := strings.Cut(rest, ".")
		f.Add(h + "." + p + ".")
		f.Add(b64(`{"alg":"none"}`) + "." + p + ".")
		f.Add(b64(`{"alg":"HS256","kid":"`+k.ID+`","typ":"at+jwt"}`) + "." + p + "." + sig)
		f.Add(token + "." + sig)
	}
	hdr := `{"alg":"EdDSA","kid":"` + k.ID + `","typ":"at+jwt"}`
	for _, payload := range []string{
		`{"iss":"https://core.perch.test","sub":"alice","sub":"bob","aud":"perch","exp":1772601667,"nbf":1772600767,"iat":1772600767,"jti":"j"}`,
		`{"iss":"https://core.perch.test","sub":"alice","aud":"perch","exp":1772601667,"nbf":1772600767,"iat":1772600767,"jti":"j","x":1}`,
	} {
		f.Add(signRaw(k, hdr, payload))
	}
	f.Add("")
	f.Add("..")
	f.Add(strings.Repeat(".", 100))
	now := t0.Add(time.Minute)
	f.Fuzz(func(t *testing.T, token string) {
		got, err := v.Verify(token, now)
		if err == nil {
			if !signed[token] {
				t.Fatalf("%q verifies and was not signed by the signer", token)
			}
		} else {
			n := 0
			for _, s := range sentinels {
				if errors.Is(err, s) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("%q: %v wraps %d sentinels", token, err, n)
			}
		}
		// The cache agrees with the verifier, twice (a miss, then a hit or a miss again).
		for range 2 {
			cached, cerr := c.Verify(token, now)
			if (cerr == nil) != (err == nil) || !reflect.DeepEqual(cached, got) {
				t.Fatalf("%q: cache %+v, %v; verifier %+v, %v", token, cached, cerr, got, err)
			}
		}
	})
}

// FuzzParseJWKS: any document either fails or gives keys that marshal and parse back to the
// same keys.
func FuzzParseJWKS(f *testing.F) {
	a, b := testKey(f, 1), testKey(f, 2)
	b.NotAfter = t0
	doc, err := MarshalJWKS([]PublicKey{a.Public(), b.Public()})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(doc)
	f.Add([]byte(`{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"},{"kty":"OKP","crv":"Ed25519","kid":"k","x":"` + b64(string(a.Public().Key)) + `","key_ops":["verify"]}]}`))
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"` + b64(string(a.Public().Key)) + `","d":"x"}]}`))
	f.Add([]byte(`{"keys":[],"keys":[]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		set, err := ParseJWKS(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		out, err := MarshalJWKS(set.Keys())
		if err != nil {
			t.Fatalf("parsed keys do not marshal: %v", err)
		}
		again, err := ParseJWKS(out)
		if err != nil || !reflect.DeepEqual(again.Keys(), set.Keys()) {
			t.Fatalf("%s → %s → %+v, %v", data, out, again.Keys(), err)
		}
	})
}

// FuzzParsePHC: any stored hash either fails with ErrBadHash, or has parameters within the
// bounds and is the one canonical encoding of what it decodes to.
func FuzzParsePHC(f *testing.F) {
	h, _ := HashPassword("correct horse battery staple", fastParams)
	f.Add(h)
	f.Add("$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Xr5f0ZRHcTvnG1hMW9MhPg5u1KdQ1Et1ftkXnw4bV2I")
	f.Add("$argon2id$v=19$m=4294967295,t=1,p=1$c29tZXNhbHQ$c29tZXNhbHRzb21lc2FsdA")
	f.Add("$argon2id$v=19$m=064,t=1,p=1$c29tZXNhbHQ$c29tZXNhbHRzb21lc2FsdA")
	f.Add("$argon2i$v=19$m=65536,t=2,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG")
	f.Add("$argon2id$v=19$m=10,t=1,p=1$00000000000$0000\r0000000000000000000") // base64 skips line breaks
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parsePHC(s)
		if err != nil {
			if !errors.Is(err, ErrBadHash) {
				t.Fatalf("error %v does not wrap ErrBadHash", err)
			}
			return
		}
		if err := p.params.Validate(); err != nil {
			t.Fatalf("%q parsed to invalid parameters: %v", s, err)
		}
		if out := encodePHC(p.params, p.salt, p.key); out != s {
			t.Fatalf("%q re-encodes to %q", s, out)
		}
	})
}

// FuzzHashRefreshToken: only the canonical base64url of 32 bytes is a refresh token, and its
// hash is SHA-256 of those bytes.
func FuzzHashRefreshToken(f *testing.F) {
	token, _ := NewRefreshToken()
	f.Add(token)
	f.Add(token[:42] + "B")
	f.Add(strings.Repeat("+", 43))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := HashRefreshToken(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		raw, derr := base64.RawURLEncoding.DecodeString(s)
		if derr != nil || len(raw) != 32 || base64.RawURLEncoding.EncodeToString(raw) != s {
			t.Fatalf("%q accepted", s)
		}
		if sum := sha256.Sum256(raw); !bytes.Equal(h, sum[:]) {
			t.Fatalf("%q: hash is not SHA-256 of its bytes", s)
		}
	})
}

// FuzzParsePrivateKey: any stored key either fails or round-trips, and its kid is its
// thumbprint.
func FuzzParsePrivateKey(f *testing.F) {
	k := testKey(f, 1)
	data, _ := k.MarshalPrivate()
	f.Add(data)
	k.NotAfter = t0.Add(time.Hour)
	data, _ = k.MarshalPrivate()
	f.Add(data)
	f.Add([]byte(`{"kid":"x","seed":"","created":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := ParsePrivateKey(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if k.ID != Thumbprint(k.Public().Key) {
			t.Fatal("kid is not the thumbprint")
		}
		out, err := k.MarshalPrivate()
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParsePrivateKey(out)
		if err != nil || again.ID != k.ID || !again.Private.Equal(k.Private) ||
			!again.Created.Equal(k.Created) || !again.NotAfter.Equal(k.NotAfter) {
			t.Fatalf("%s → %s → %+v, %v", data, out, again, err)
		}
	})
}

// FuzzHashRecoveryCode: any typed code either fails, or hashes like the canonical code it
// stands for.
func FuzzHashRecoveryCode(f *testing.F) {
	codes, _, _ := NewRecoveryCodes(2, "u")
	for _, c := range codes {
		f.Add(c)
		f.Add(strings.ToUpper(strings.ReplaceAll(c, "-", "")))
	}
	f.Add("oooo-iiii-llll-0000")
	f.Fuzz(func(t *testing.T, code string) {
		h, err := HashRecoveryCode("u", code)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		var canon []byte
		for _, c := range []byte(strings.ToLower(code)) {
			switch c {
			case '-', ' ':
				continue
			case 'i', 'l':
				c = '1'
			case 'o':
				c = '0'
			}
			canon = append(canon, c)
		}
		raw, derr := b32Recovery.DecodeString(string(canon))
		if derr != nil || !bytes.Equal(h, hashRecovery("u", raw)) {
			t.Fatalf("%q: hash is not that of %q", code, canon)
		}
	})
}
