package auth

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	k := testKey(t, 1)
	s := newSigner(t, k, testConfig())
	v := newVerifier(t, testConfig(), k)
	token, want := issue(t, s, "01J9ZQ4X8V2N6M3K7B5C1D0E9F", t0, func(c *Claims) {
		c.SessionID = "fam-1"
		c.Custom = map[string]string{"app": "notes", "role": "admin"}
	})
	got, err := v.Verify(token, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("claims\n got %+v\nwant %+v", got, want)
	}
	if got.ExpiresAt.Sub(got.IssuedAt) != 15*time.Minute || got.ID == "" || len(token) > 600 {
		t.Fatalf("unexpected token %s (%d bytes) or claims %+v", token, len(token), got)
	}
	// The header is exactly what the README shows.
	h, _, _ := strings.Cut(token, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(h)
	if want := `{"alg":"EdDSA","kid":"` + k.ID + `","typ":"at+jwt"}`; string(raw) != want {
		t.Fatalf("header %s, want %s", raw, want)
	}
	// Two tokens for one subject differ (jti).
	other, _ := issue(t, s, "01J9ZQ4X8V2N6M3K7B5C1D0E9F", t0, nil)
	if other == token {
		t.Fatal("two tokens alike")
	}
}

// TestVerifyRejects: every way a token can be wrong, and the exact sentinel it gets.
func TestVerifyRejects(t *testing.T) {
	k := testKey(t, 1)
	stranger := testKey(t, 2)
	cfg := testConfig()
	s := newSigner(t, k, cfg)
	v := newVerifier(t, cfg, k)
	now := t0.Add(time.Minute)
	good, _ := issue(t, s, "alice", t0, nil)
	h, rest, _ := strings.Cut(good, ".")
	p, sig, _ := strings.Cut(rest, ".")
	hdr := `{"alg":"EdDSA","kid":"` + k.ID + `","typ":"at+jwt"}`
	claims := `{"iss":"https://core.perch.test","sub":"alice","aud":"perch","exp":1772601667,"nbf":1772600767,"iat":1772600767,"jti":"j1"}`
	if got := signRaw(k, hdr, claims); got == "" {
		t.Fatal("signRaw")
	}
	if _, err := v.Verify(signRaw(k, hdr, claims), now); err != nil {
		t.Fatalf("the raw claims of the table do not verify: %v", err)
	}
	with := func(old, new string) string { return strings.Replace(claims, old, new, 1) }
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	hmacToken := func(alg string, secret []byte) string {
		in := b64(`{"alg":"`+alg+`","kid":"`+k.ID+`","typ":"at+jwt"}`) + "." + p
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(in))
		return in + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	pub := k.Public().Key
	for _, tc := range []struct {
		name  string
		token string
		at    time.Time
		want  error
	}{
		{"tampered signature", h + "." + p + "." + flip(sig, 0), now, ErrSignature},
		{"tampered signature end", h + "." + p + "." + flip(sig, 40), now, ErrSignature},
		{"tampered payload", h + "." + b64(strings.Replace(string(mustB64(t, p)), "alice", "admin", 1)) + "." + sig, now, ErrSignature},
		{"tampered header", b64(`{"alg":"EdDSA","kid":"`+k.ID+`","typ":"AT+JWT"}`) + "." + p + "." + sig, now, ErrSignature},
		{"signed by another key under our kid", signCompact(stranger.Private, h, mustB64(t, p)), now, ErrSignature},
		{"alg none", b64(`{"alg":"none","typ":"JWT"}`) + "." + p + ".", now, ErrAlgorithm},
		{"alg none with kid", b64(`{"alg":"none","kid":"`+k.ID+`","typ":"at+jwt"}`) + "." + p + "." + sig, now, ErrAlgorithm},
		{"alg None", b64(`{"alg":"None","kid":"`+k.ID+`","typ":"at+jwt"}`) + "." + p + ".", now, ErrAlgorithm},
		{"HS256 keyed with the public key", hmacToken("HS256", pub), now, ErrAlgorithm},
		{"HS256 keyed with the public key's x", hmacToken("HS256", []byte(base64.RawURLEncoding.EncodeToString(pub))), now, ErrAlgorithm},
		{"HS512", hmacToken("HS512", pub), now, ErrAlgorithm},
		{"RS256", b64(`{"alg":"RS256","kid":"`+k.ID+`","typ":"at+jwt"}`) + "." + p + "." + sig, now, ErrAlgorithm},
		{"ES256", b64(`{"alg":"ES256","kid":"`+k.ID+`","typ":"at+jwt"}`) + "." + p + "." + sig, now, ErrAlgorithm},
		{"alg Ed25519", signRaw(k, `{"alg":"Ed25519","kid":"`+k.ID+`","typ":"at+jwt"}`, claims), now, ErrAlgorithm},
		{"alg eddsa", signRaw(k, `{"alg":"eddsa","kid":"`+k.ID+`","typ":"at+jwt"}`, claims), now, ErrAlgorithm},
		{"no alg", signRaw(k, `{"kid":"`+k.ID+`","typ":"at+jwt"}`, claims), now, ErrAlgorithm},
		{"alg not a string", signRaw(k, `{"alg":1,"kid":"`+k.ID+`","typ":"at+jwt"}`, claims), now, ErrMalformed},
		{"expired", good, t0.Add(15*time.Minute + 30*time.Second), ErrExpired},
		{"expired long ago", good, t0.Add(48 * time.Hour), ErrExpired},
		{"exp beyond the TTL counts as iat+TTL", signRaw(k, hdr, with(`"exp":1772601667`, `"exp":1772690000`)), t0.Add(16 * time.Minute), ErrExpired},
		{"not yet valid", good, t0.Add(-31 * time.Second), ErrNotYetValid},
		{"nbf in the future", signRaw(k, hdr, with(`"nbf":1772600767`, `"nbf":1772601067`)), now, ErrNotYetValid},
		{"iat in the future", signRaw(k, hdr, with(`"iat":1772600767`, `"iat":1772601067`)), now, ErrNotYetValid},
		{"wrong audience", signRaw(k, hdr, with(`"aud":"perch"`, `"aud":"perch-admin"`)), now, ErrAudience},
		{"audience prefix", signRaw(k, hdr, with(`"aud":"perch"`, `"aud":"perc"`)), now, ErrAudience},
		{"audience case", signRaw(k, hdr, with(`"aud":"perch"`, `"aud":"Perch"`)), now, ErrAudience},
		{"audience array", signRaw(k, hdr, with(`"aud":"perch"`, `"aud":["perch"]`)), now, ErrMalformed},
		{"wrong issuer", signRaw(k, hdr, with(`"iss":"https://core.perch.test"`, `"iss":"https://evil.test"`)), now, ErrIssuer},
		{"issuer with a slash", signRaw(k, hdr, with(`"iss":"https://core.perch.test"`, `"iss":"https://core.perch.test/"`)), now, ErrIssuer},
		{"unknown kid", issueWith(t, stranger, cfg), now, ErrUnknownKey},
		{"kid of another length", signRaw(k, `{"alg":"EdDSA","kid":"x","typ":"at+jwt"}`, claims), now, ErrUnknownKey},
		{"no kid", signRaw(k, `{"alg":"EdDSA","typ":"at+jwt"}`, claims), now, ErrMalformed},
		{"oversized", good + strings.Repeat("A", MaxTokenBytes), now, ErrMalformed},
		{"oversized by one", strings.Repeat("A", MaxTokenBytes+1), now, ErrMalformed},
		{"empty", "", now, ErrMalformed},
		{"two dots only", "..", now, ErrMalformed},
		{"bad base64 in the header", "!" + good[1:], now, ErrMalformed},
		{"bad base64 in the payload", h + ".*" + p[1:] + "." + sig, now, ErrMalformed},
		{"bad base64 in the signature", h + "." + p + "." + sig[:10] + "+" + sig[11:], now, ErrMalformed},
		{"standard base64", h + "." + p + "." + strings.NewReplacer("-", "+", "_", "/").Replace(sig) + "/", now, ErrMalformed},
		{"padding", h + "." + p + "." + sig + "==", now, ErrMalformed},
		{"non-canonical base64", h + "." + p + "." + sig[:len(sig)-1] + nonCanonical(sig[len(sig)-1]), now, ErrMalformed},
		{"short signature", h + "." + p + "." + sig[:len(sig)-4], now, ErrMalformed},
		{"empty payload", h + ".." + sig, now, ErrMalformed},
		{"extra dots", good + ".", now, ErrMalformed},
		{"extra part", good + "." + sig, now, ErrMalformed},
		{"two parts", h + "." + p, now, ErrMalformed},
		{"one part", h, now, ErrMalformed},
		{"JWE-like five parts", h + ".." + p + "." + sig + ".x", now, ErrMalformed},
		{"duplicate alg", signRaw(k, `{"alg":"EdDSA","alg":"EdDSA","kid":"`+k.ID+`","typ":"at+jwt"}`, claims), now, ErrMalformed},
		{"duplicate alg none last", signRaw(k, `{"alg":"EdDSA","kid":"`+k.ID+`","typ":"at+jwt","alg":"none"}`, claims), now, ErrMalformed},
		{"duplicate kid", signRaw(k, `{"alg":"EdDSA","kid":"`+k.ID+`","kid":"`+stranger.ID+`","typ":"at+jwt"}`, claims), now, ErrMalformed},
		{"escaped duplicate", signRaw(k, `{"alg":"EdDSA","\u0061lg":"EdDSA","kid":"`+k.ID+`","typ":"at+jwt"}`, claims), now, ErrMalformed},
		{"duplicate sub", signRaw(k, hdr, with(`"sub":"alice"`, `"sub":"alice","sub":"admin"`)), now, ErrMalformed},
		{"duplicate exp", signRaw(k, hdr, with(`"exp":1772601667`, `"exp":1772601667,"exp":1872601667`)), now, ErrMalformed},
		{"duplicate custom", signRaw(k, hdr, with(`"jti":"j1"`, `"jti":"j1","role":"user","role":"admin"`)), now, ErrMalformed},
		{"crit", signRaw(k, `{"alg":"EdDSA","kid":"`+k.ID+`","typ":"at+jwt","crit":["exp"],"exp":1}`, claims), now, ErrMalformed},
		{"crit empty", signRaw(k, `{"alg":"EdDSA","crit":[],"kid":"`+k.ID+`","typ":"at+jwt"}`, claims), now, ErrMalformed},
		{"jku", signRaw(k, `{"alg":"EdDSA","kid":"`+k.ID+`","typ":"at+jwt","jku":"https://evil.test/jwks.json"}`, claims), now, ErrMalformed},
		{"x5u", signRaw(k, `{"alg":"EdDSA","kid":"`+k.ID+`","typ":"at+jwt","x5u":"https://evil.test/cert.pem"}`, claims), now, ErrMalformed},
		{"jwk", signRaw(stranger, `{"alg":"EdDSA","kid":"`+k.ID+`","typ":"at+jwt","jwk":{"kty":"OKP","crv":"Ed25519","x":"`+b64(string(stranger.Public().Key))+`"}}`, claims), now, ErrMalformed},
		{"x5c", signRaw(k, `{"alg":"EdDSA","kid":"`+k.ID+`","typ":"at+jwt","x5c":["MIIB"]}`, claims), now, ErrMalformed},
		{"b64 false", signRaw(k, `{"alg":"EdDSA","kid":"`+k.ID+`","typ":"at+jwt","b64":false}`, claims), now, ErrMalformed},
		{"typ JWT", signRaw(k, `{"alg":"EdDSA","kid":"`+k.ID+`","typ":"JWT"}`, claims), now, ErrMalformed},
		{"no typ", signRaw(k, `{"alg":"EdDSA","kid":"`+k.ID+`"}`, claims), now, ErrMalformed},
		{"header not an object", signRaw(k, `["EdDSA"]`, claims), now, ErrMalformed},
		{"header with trailing data", signRaw(k, hdr+`{}`, claims), now, ErrMalformed},
		{"header not JSON", signRaw(k, `{"alg":"EdDSA",}`, claims), now, ErrMalformed},
		{"header not UTF-8", signRaw(k, `{"alg":"EdDSA","kid":"`+k.ID+`","typ":"at+jwt","x":"`+"\xff"+`"}`, claims), now, ErrMalformed},
		{"claims not JSON", signRaw(k, hdr, `{"sub":"alice"`), now, ErrMalformed},
		{"claims an array", signRaw(k, hdr, `[]`), now, ErrMalformed},
		{"claims with trailing data", signRaw(k, hdr, claims+` 1`), now, ErrMalformed},
		{"no exp", signRaw(k, hdr, with(`"exp":1772601667,`, ``)), now, ErrMalformed},
		{"no sub", signRaw(k, hdr, with(`"sub":"alice",`, ``)), now, ErrMalformed},
		{"empty sub", signRaw(k, hdr, with(`"sub":"alice"`, `"sub":""`)), now, ErrMalformed},
		{"no jti", signRaw(k, hdr, with(`,"jti":"j1"`, ``)), now, ErrMalformed},
		{"fractional exp", signRaw(k, hdr, with(`"exp":1772601667`, `"exp":1772601667.5`)), now, ErrMalformed},
		{"exponent exp", signRaw(k, hdr, with(`"exp":1772601667`, `"exp":1.772601667e9`)), now, ErrMalformed},
		{"string exp", signRaw(k, hdr, with(`"exp":1772601667`, `"exp":"1772601667"`)), now, ErrMalformed},
		{"negative iat", signRaw(k, hdr, with(`"iat":1772600767`, `"iat":-1`)), now, ErrMalformed},
		{"huge exp", signRaw(k, hdr, with(`"exp":1772601667`, `"exp":99999999999999999999`)), now, ErrMalformed},
		{"number custom claim", signRaw(k, hdr, with(`"jti":"j1"`, `"jti":"j1","n":1`)), now, ErrMalformed},
		{"object custom claim", signRaw(k, hdr, with(`"jti":"j1"`, `"jti":"j1","o":{}`)), now, ErrMalformed},
		{"null sid", signRaw(k, hdr, with(`"jti":"j1"`, `"jti":"j1","sid":null`)), now, ErrMalformed},
		{"too many custom claims", signRaw(k, hdr, with(`"jti":"j1"`, `"jti":"j1"`+manyClaims(17))), now, ErrMalformed},
		{"claims not UTF-8", signRaw(k, hdr, with(`"sub":"alice"`, "\"sub\":\"al\xc3ice\"")), now, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(tc.token, tc.at)
			if !wrapsOnly(err, tc.want) {
				t.Fatalf("Verify: %v, want %v only", err, tc.want)
			}
			if !reflect.DeepEqual(c, Claims{}) {
				t.Fatalf("claims %+v returned with the error", c)
			}
		})
	}
}

func mustB64(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// nonCanonical returns another base64url character that decodes to the same bytes as c
// when it ends a 64-byte value (the last character of 86 carries 2 unused bits).
func nonCanonical(c byte) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	return string(alphabet[strings.IndexByte(alphabet, c)|1])
}

func manyClaims(n int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(`,"c` + string(rune('a'+i)) + `":"v"`)
	}
	return b.String()
}

func issueWith(tb testing.TB, k Key, c Config) string {
	tb.Helper()
	token, _ := issue(tb, newSigner(tb, k, c), "alice", t0, nil)
	return token
}

// TestVerifySkew: exp, nbf and iat are accepted within Skew, and not a second beyond.
func TestVerifySkew(t *testing.T) {
	k := testKey(t, 1)
	cfg := testConfig()
	v := newVerifier(t, cfg, k)
	token, c := issue(t, newSigner(t, k, cfg), "alice", t0, nil)
	for _, tc := range []struct {
		at   time.Time
		want error
	}{
		{c.NotBefore.Add(-30 * time.Second), nil},
		{c.NotBefore.Add(-30*time.Second - time.Nanosecond), ErrNotYetValid},
		{c.ExpiresAt, nil},
		{c.ExpiresAt.Add(30*time.Second - time.Nanosecond), nil},
		{c.ExpiresAt.Add(30 * time.Second), ErrExpired},
	} {
		if _, err := v.Verify(token, tc.at); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("at %v: %v, want %v", tc.at, err, tc.want)
		}
	}
	cfg.Skew = 0
	strict := newVerifier(t, cfg, k)
	if _, err := strict.Verify(token, c.ExpiresAt); !errors.Is(err, ErrExpired) {
		t.Errorf("no skew, at exp: %v", err)
	}
}

// TestRFC8037Vectors: the Ed25519 JWS and thumbprint of RFC 8037 appendix A.
func TestRFC8037Vectors(t *testing.T) {
	d := mustB64(t, "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
	priv := ed25519.NewKeyFromSeed(d)
	pub := priv.Public().(ed25519.PublicKey)
	if x := base64.RawURLEncoding.EncodeToString(pub); x != "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" {
		t.Fatalf("x = %s", x)
	}
	if tp := Thumbprint(pub); tp != "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k" {
		t.Fatalf("thumbprint %s", tp)
	}
	got := signCompact(priv, "eyJhbGciOiJFZERTQSJ9", []byte("Example of Ed25519 signing"))
	want := "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc." +
		"hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
	if got != want {
		t.Fatalf("JWS\n got %s\nwant %s", got, want)
	}
}

// TestSignRefuses: Sign issues nothing that its own verifiers would refuse whatever the time.
func TestSignRefuses(t *testing.T) {
	k := testKey(t, 1)
	s := newSigner(t, k, testConfig())
	for name, edit := range map[string]func(*Claims){
		"other issuer":        func(c *Claims) { c.Issuer = "x" },
		"other audience":      func(c *Claims) { c.Audience = "x" },
		"no subject":          func(c *Claims) { c.Subject = "" },
		"long subject":        func(c *Claims) { c.Subject = strings.Repeat("s", 257) },
		"no jti":              func(c *Claims) { c.ID = "" },
		"exp before iat":      func(c *Claims) { c.ExpiresAt = c.IssuedAt },
		"life over the TTL":   func(c *Claims) { c.ExpiresAt = c.IssuedAt.Add(16 * time.Minute) },
		"nbf before iat":      func(c *Claims) { c.NotBefore = c.IssuedAt.Add(-time.Second) },
		"zero time":           func(c *Claims) { c.IssuedAt = time.Time{} },
		"registered custom":   func(c *Claims) { c.Custom = map[string]string{"sub": "admin"} },
		"empty custom name":   func(c *Claims) { c.Custom = map[string]string{"": "x"} },
		"long custom value":   func(c *Claims) { c.Custom = map[string]string{"x": strings.Repeat("v", 257)} },
		"too many custom":     func(c *Claims) { c.Custom = manyMap(17) },
		"sid over the limits": func(c *Claims) { c.SessionID = strings.Repeat("s", 129) },
		"subject not UTF-8":   func(c *Claims) { c.Subject = "al\xffice" },
		"custom not UTF-8":    func(c *Claims) { c.Custom = map[string]string{"x": "\xc3"} },
	} {
		c := s.NewClaims("alice", t0)
		edit(&c)
		if _, err := s.Sign(c); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// The largest claims allowed still make a token under MaxTokenBytes.
	c := s.NewClaims(strings.Repeat("s", 256), t0)
	c.SessionID = strings.Repeat("f", 128)
	c.Custom = manyMap(16)
	for name := range c.Custom {
		c.Custom[name] = strings.Repeat("v", 256)
	}
	token, err := s.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newVerifier(t, testConfig(), k).Verify(token, t0); err != nil {
		t.Fatal(err)
	}
}

func manyMap(n int) map[string]string {
	m := make(map[string]string, n)
	for i := range n {
		m[strings.Repeat("k", 60)+string(rune('a'+i))] = "v"
	}
	return m
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err == nil {
		t.Fatal("DefaultConfig has no issuer and audience, and validates")
	}
	if err := testConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*Config){
		"no issuer":     func(c *Config) { c.Issuer = "" },
		"no audience":   func(c *Config) { c.Audience = "" },
		"zero TTL":      func(c *Config) { c.TTL = 0 },
		"long TTL":      func(c *Config) { c.TTL = 25 * time.Hour },
		"negative skew": func(c *Config) { c.Skew = -time.Second },
		"long skew":     func(c *Config) { c.Skew = time.Hour },
	} {
		c := testConfig()
		edit(&c)
		if c.Validate() == nil {
			t.Errorf("%s: validates", name)
		}
		if _, err := NewSigner(testKey(t, 1), c); err == nil {
			t.Errorf("%s: NewSigner accepts it", name)
		}
		if _, err := NewVerifier(c, KeySet{}); err == nil {
			t.Errorf("%s: NewVerifier accepts it", name)
		}
	}
	k := testKey(t, 1)
	k.ID = "not-the-thumbprint"
	if _, err := NewSigner(k, testConfig()); err == nil {
		t.Error("NewSigner accepts a key whose kid is not its thumbprint")
	}
}

// TestSetKeys: a verifier sees the key set it was last given.
func TestSetKeys(t *testing.T) {
	a, b := testKey(t, 1), testKey(t, 2)
	v := newVerifier(t, testConfig(), a)
	tb := issueWith(t, b, testConfig())
	if _, err := v.Verify(tb, t0); !errors.Is(err, ErrUnknownKey) {
		t.Fatal(err)
	}
	set, err := NewKeySet(a.Public(), b.Public())
	if err != nil {
		t.Fatal(err)
	}
	v.SetKeys(set)
	if _, err := v.Verify(tb, t0); err != nil {
		t.Fatal(err)
	}
	if v.Keys().Len() != 2 || v.Config() != testConfig() {
		t.Fatal("Keys or Config")
	}
}
