package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestJWKSFormat(t *testing.T) {
	k := testKey(t, 1)
	got, err := MarshalJWKS([]PublicKey{k.Public()})
	if err != nil {
		t.Fatal(err)
	}
	x := b64(string(k.Public().Key))
	want := `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + x + `","kid":"` + k.ID + `","alg":"EdDSA","use":"sig"}]}`
	if string(got) != want {
		t.Fatalf("JWKS\n got %s\nwant %s", got, want)
	}
	k.NotAfter = t0
	got, _ = MarshalJWKS([]PublicKey{k.Public()})
	if !strings.Contains(string(got), `"use":"sig","exp":1772600767}`) {
		t.Fatalf("NotAfter not written as exp: %s", got)
	}
	// Marshalling a Key, by mistake or not, gives the public part only.
	b, err := json.Marshal(k)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(b64(string(k.Private.Seed())))) || bytes.Contains(b, []byte(`"d"`)) {
		t.Fatalf("json.Marshal(Key) leaks the private key: %s", b)
	}
}

func TestJWKSRoundTrip(t *testing.T) {
	a, b, c := testKey(t, 1), testKey(t, 2), testKey(t, 3)
	b.NotAfter = t0.Add(time.Hour)
	pubs := []PublicKey{a.Public(), b.Public(), c.Public()}
	data, err := MarshalJWKS(pubs)
	if err != nil {
		t.Fatal(err)
	}
	set, err := ParseJWKS(data)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := NewKeySet(pubs...)
	if !reflect.DeepEqual(set.Keys(), want.Keys()) {
		t.Fatalf("round trip\n got %+v\nwant %+v", set.Keys(), want.Keys())
	}
	if _, ok := set.Lookup(b.ID, t0.Add(time.Hour-time.Second)); !ok {
		t.Fatal("b before its NotAfter")
	}
	if _, ok := set.Lookup(b.ID, t0.Add(time.Hour)); ok {
		t.Fatal("b at its NotAfter")
	}
}

// TestParseJWKSSkipsForeignKeys: keys of other types, curves or uses are skipped, not errors.
func TestParseJWKSSkipsForeignKeys(t *testing.T) {
	k := testKey(t, 1)
	x := b64(string(k.Public().Key))
	ours := `{"kty":"OKP","crv":"Ed25519","x":"` + x + `","kid":"` + k.ID + `","alg":"EdDSA","use":"sig","key_ops":["verify"],"x5c":["MIIB"],"ext":true}`
	doc := `{"keys":[
		{"kty":"RSA","kid":"rsa1","use":"sig","alg":"RS256","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB"},
		{"kty":"EC","crv":"P-256","kid":"ec1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
		{"kty":"OKP","crv":"X25519","kid":"x1","x":"hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo"},
		{"kty":"OKP","crv":"Ed448","kid":"e448","x":"X9dEm1m0Yf0s54fsYWrUah2hNCSFpw4fig6nXYDpZ3jt8SR2m0bHBhvWeD3x5Q9s0foavq_oJWGA"},
		{"kty":"OKP","crv":"Ed25519","kid":"enc","use":"enc","x":"` + x + `"},
		{"kty":"OKP","crv":"Ed25519","kid":"other-alg","alg":"Ed25519ph","x":"` + x + `"},
		{"kty":"OKP","crv":"Ed25519","kid":"sign-only","key_ops":["sign"],"x":"` + x + `"},
		{"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
		` + ours + `
	],"extra":{"ignored":[1,2,3]}}`
	set, err := ParseJWKS([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if got := set.Keys(); len(got) != 1 || got[0].ID != k.ID || !bytes.Equal(got[0].Key, k.Public().Key) {
		t.Fatalf("kept %+v, want only %s", got, k.ID)
	}
	// A JWK without alg and use is ours too.
	set, err = ParseJWKS([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + x + `","kid":"k"}]}`))
	if err != nil || set.Len() != 1 {
		t.Fatalf("bare Ed25519 key: %v", err)
	}
}

func TestParseJWKSRejects(t *testing.T) {
	k := testKey(t, 1)
	x := b64(string(k.Public().Key))
	jwk := func(extra string) string {
		return `{"kty":"OKP","crv":"Ed25519","x":"` + x + `","kid":"` + k.ID + `"` + extra + `}`
	}
	many := make([]string, 65)
	for i := range many {
		many[i] = `{"kty":"OKP","crv":"Ed25519","x":"` + x + `","kid":"k` + string(rune('A'+i)) + `"}`
	}
	for name, doc := range map[string]string{
		"empty":             ``,
		"not an object":     `[]`,
		"no keys":           `{}`,
		"keys not an array": `{"keys":{}}`,
		"no Ed25519 key":    `{"keys":[]}`,
		"only foreign keys": `{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB"}]}`,
		"key not an object": `{"keys":[1]}`,
		"short x":           `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"` + x[:42] + `"}]}`,
		"long x":            `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"` + x + `AAAA"}]}`,
		"x not base64url":   `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":"` + strings.Repeat("+", 43) + `"}]}`,
		"x not a string":    `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k","x":1}]}`,
		"no kid":            `{"keys":[{"kty":"OKP","crv":"Ed25519","x":"` + x + `"}]}`,
		"private part":      `{"keys":[` + jwk(`,"d":"`+b64(string(k.Private.Seed()))+`"`) + `]}`,
		"kid twice":         `{"keys":[` + jwk("") + `,` + jwk("") + `]}`,
		"member twice":      `{"keys":[` + jwk(`,"x":"`+x+`"`) + `]}`,
		"keys twice":        `{"keys":[` + jwk("") + `],"keys":[]}`,
		"bad exp":           `{"keys":[` + jwk(`,"exp":1.5`) + `]}`,
		"bad key_ops":       `{"keys":[` + jwk(`,"key_ops":"verify"`) + `]}`,
		"trailing data":     `{"keys":[` + jwk("") + `]} {}`,
		"not UTF-8":         `{"keys":[` + jwk(`,"n":"`+"\xfe"+`"`) + `]}`,
		"too many keys":     `{"keys":[` + strings.Join(many, ",") + `]}`,
		"too large":         `{"keys":[` + jwk("") + `],"pad":"` + strings.Repeat(" ", 64<<10) + `"}`,
	} {
		if _, err := ParseJWKS([]byte(doc)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := k.Public()
	bad.Key = bad.Key[:31]
	if _, err := MarshalJWKS([]PublicKey{bad}); err == nil {
		t.Error("MarshalJWKS takes a short key")
	}
	if _, err := MarshalJWKS([]PublicKey{k.Public(), k.Public()}); err == nil {
		t.Error("MarshalJWKS takes a kid twice")
	}
	if _, err := NewKeySet(k.Public(), k.Public()); err == nil {
		t.Error("NewKeySet takes a kid twice")
	}
}

func TestStoredKey(t *testing.T) {
	k := GenerateKey(t0.Add(123456789 * time.Nanosecond))
	if k.ID != Thumbprint(k.Public().Key) {
		t.Fatal("GenerateKey: kid is not the thumbprint")
	}
	for _, notAfter := range []time.Time{{}, t0.Add(time.Hour)} {
		k.NotAfter = notAfter
		data, err := k.MarshalPrivate()
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParsePrivateKey(data)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != k.ID || !got.Private.Equal(k.Private) || !got.Created.Equal(k.Created) || !got.NotAfter.Equal(k.NotAfter) {
			t.Fatalf("round trip: %+v, want %+v", got, k)
		}
	}
	data, _ := k.MarshalPrivate()
	other := GenerateKey(t0)
	for name, doc := range map[string]string{
		"other kid":      strings.Replace(string(data), k.ID, other.ID, 1),
		"unknown member": strings.Replace(string(data), `{`, `{"x":1,`, 1),
		"member twice":   strings.Replace(string(data), `{`, `{"kid":"`+k.ID+`",`, 1),
		"short seed":     `{"kid":"` + k.ID + `","seed":"AAAA","created":"2026-01-01T00:00:00Z"}`,
		"no created":     `{"kid":"` + k.ID + `","seed":"` + b64(string(k.Private.Seed())) + `"}`,
		"bad created":    `{"kid":"` + k.ID + `","seed":"` + b64(string(k.Private.Seed())) + `","created":"yesterday"}`,
		"not an object":  `"key"`,
	} {
		if _, err := ParsePrivateKey([]byte(doc)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := (Key{ID: "x"}).MarshalPrivate(); err == nil {
		t.Error("MarshalPrivate of an empty key")
	}
}
