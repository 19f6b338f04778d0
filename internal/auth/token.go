package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// MaxTokenBytes is the longest access token Verify reads; a longer one is ErrMalformed before
// anything is decoded. Perch's tokens are about 400 bytes.
const MaxTokenBytes = 8 << 10

// Limits on claims, checked when signing and when verifying.
const (
	maxNameLen    = 256 // iss, aud
	maxSubjectLen = 256
	maxIDLen      = 128 // jti, sid
	maxCustom     = 16
	maxCustomName = 64
	maxCustomVal  = 256
)

// TokenType is the typ header of Perch's access tokens (RFC 9068 §2.1). Verify requires it,
// so that no other kind of JWT signed with the same keys passes for an access token.
const TokenType = "at+jwt"

// Config is what the core's signers and the edges' verifiers agree on.
type Config struct {
	// Issuer is the iss claim: who issues the tokens, e.g. the core's public URL. Required;
	// verifiers compare it exactly.
	Issuer string
	// Audience is the aud claim: what the tokens are for, e.g. "perch". Required; verifiers
	// compare it exactly. A token has one audience.
	Audience string
	// TTL is the lifetime of an access token: a signer sets exp = iat + TTL. A verifier
	// treats a token that claims a longer life as expiring at iat + TTL (so raise TTL on
	// the verifiers first), and keeps a revocation TTL + Skew. Default 15 minutes; at most
	// 24 hours.
	TTL time.Duration
	// Skew is the clock difference between signer and verifier that Verify tolerates on
	// exp, nbf and iat. Default 30 seconds; 0 to 5 minutes.
	Skew time.Duration
}

// DefaultConfig returns a Config with the default TTL and Skew; Issuer and Audience are left
// for the caller to set.
func DefaultConfig() Config {
	return Config{TTL: 15 * time.Minute, Skew: 30 * time.Second}
}

// Validate reports the first field of c that is missing or out of bounds.
func (c Config) Validate() error {
	switch {
	case c.Issuer == "" || len(c.Issuer) > maxNameLen:
		return fmt.Errorf("auth: Issuer must be 1 to %d bytes", maxNameLen)
	case c.Audience == "" || len(c.Audience) > maxNameLen:
		return fmt.Errorf("auth: Audience must be 1 to %d bytes", maxNameLen)
	case c.TTL < time.Second || c.TTL > 24*time.Hour:
		return fmt.Errorf("auth: TTL %v not in 1s..24h", c.TTL)
	case c.Skew < 0 || c.Skew > 5*time.Minute:
		return fmt.Errorf("auth: Skew %v not in 0..5m", c.Skew)
	}
	return nil
}

// Claims are the claims of an access token (RFC 7519 §4.1). Times are whole seconds, in UTC.
type Claims struct {
	Issuer    string    // iss
	Subject   string    // sub: the user's id
	Audience  string    // aud
	ExpiresAt time.Time // exp
	NotBefore time.Time // nbf
	IssuedAt  time.Time // iat
	ID        string    // jti: unique per token, for revocation
	// SessionID is the sid claim: the refresh-token family the token was issued from
	// (empty when none), so that a logout can revoke the session's access tokens too.
	SessionID string
	// Custom holds further claims, all strings: at most 16, names of 1 to 64 bytes other
	// than the ones above, values of at most 256 bytes. Nil when there are none. Claims
	// that VerifiedCache returns share this map: treat it as read-only.
	Custom map[string]string
}

// registered are the claim names Claims has fields for; Custom may not use them.
var registered = []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "sid"}

// check reports whether c is complete and within the limits.
func (c *Claims) check() error {
	switch {
	case c.Issuer == "" || len(c.Issuer) > maxNameLen:
		return fmt.Errorf("%w: iss must be 1 to %d bytes", ErrMalformed, maxNameLen)
	case c.Audience == "" || len(c.Audience) > maxNameLen:
		return fmt.Errorf("%w: aud must be 1 to %d bytes", ErrMalformed, maxNameLen)
	case c.Subject == "" || len(c.Subject) > maxSubjectLen:
		return fmt.Errorf("%w: sub must be 1 to %d bytes", ErrMalformed, maxSubjectLen)
	case c.ID == "" || len(c.ID) > maxIDLen:
		return fmt.Errorf("%w: jti must be 1 to %d bytes", ErrMalformed, maxIDLen)
	case len(c.SessionID) > maxIDLen:
		return fmt.Errorf("%w: sid longer than %d bytes", ErrMalformed, maxIDLen)
	case len(c.Custom) > maxCustom:
		return fmt.Errorf("%w: more than %d custom claims", ErrMalformed, maxCustom)
	}
	for _, t := range []time.Time{c.ExpiresAt, c.NotBefore, c.IssuedAt} {
		if u := t.Unix(); u < 1 || u > maxNumDate {
			return fmt.Errorf("%w: time %v out of range", ErrMalformed, t)
		}
	}
	for name, v := range c.Custom {
		if name == "" || len(name) > maxCustomName || slices.Contains(registered, name) {
			return fmt.Errorf("%w: custom claim name %q", ErrMalformed, name)
		}
		if len(v) > maxCustomVal {
			return fmt.Errorf("%w: custom claim %q longer than %d bytes", ErrMalformed, name, maxCustomVal)
		}
		if !utf8.ValidString(name) || !utf8.ValidString(v) {
			return fmt.Errorf("%w: custom claim %q is not UTF-8", ErrMalformed, name)
		}
	}
	// JSON carries text: a string that is not UTF-8 would come back changed.
	for _, s := range []string{c.Issuer, c.Subject, c.Audience, c.ID, c.SessionID} {
		if !utf8.ValidString(s) {
			return fmt.Errorf("%w: claim %q is not UTF-8", ErrMalformed, s)
		}
	}
	return nil
}

// Signer signs access tokens with one key: the core makes one for the key that signs now
// (Rotation.Signing) and a new one when that changes. A Signer is immutable and safe for
// concurrent use.
type Signer struct {
	key    Key
	cfg    Config
	header string // the encoded JOSE header, the same for every token
}

// NewSigner returns a signer that signs with k under c. It fails when c is invalid or k is
// not a complete key whose ID is its thumbprint.
func NewSigner(k Key, c Config) (*Signer, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if err := k.check(); err != nil {
		return nil, err
	}
	kid, _ := json.Marshal(k.ID)
	h := `{"alg":"EdDSA","kid":` + string(kid) + `,"typ":"` + TokenType + `"}`
	return &Signer{key: k, cfg: c, header: b64URL.EncodeToString([]byte(h))}, nil
}

// KeyID is the kid of the signer's key.
func (s *Signer) KeyID() string { return s.key.ID }

// NewClaims returns the claims of a token for subject issued at now: iss and aud from the
// Config, iat and nbf now (in whole seconds), exp TTL later, and a random 128-bit jti. The
// caller may set SessionID and Custom before Sign.
func (s *Signer) NewClaims(subject string, now time.Time) Claims {
	iat := time.Unix(now.Unix(), 0).UTC()
	var id [16]byte
	rand.Read(id[:])
	return Claims{
		Issuer:    s.cfg.Issuer,
		Subject:   subject,
		Audience:  s.cfg.Audience,
		IssuedAt:  iat,
		NotBefore: iat,
		ExpiresAt: iat.Add(s.cfg.TTL).Truncate(time.Second),
		ID:        b64URL.EncodeToString(id[:]),
	}
}

// Sign returns the compact JWS of c: header {"alg":"EdDSA","kid":...,"typ":"at+jwt"}, c as
// the payload, an Ed25519 signature. Times are written in whole seconds (rounded down). It
// fails, with an error wrapping ErrMalformed, when c would not verify under the signer's
// Config whatever the time (iss or aud not the Config's, a claim missing, over its limit or
// not UTF-8, exp not after iat or more than TTL after it), and when nbf is before iat.
func (s *Signer) Sign(c Claims) (string, error) {
	if err := c.check(); err != nil {
		return "", err
	}
	iat, nbf, exp := c.IssuedAt.Unix(), c.NotBefore.Unix(), c.ExpiresAt.Unix()
	switch {
	case c.Issuer != s.cfg.Issuer:
		return "", fmt.Errorf("%w: iss %q is not the signer's %q", ErrMalformed, c.Issuer, s.cfg.Issuer)
	case c.Audience != s.cfg.Audience:
		return "", fmt.Errorf("%w: aud %q is not the signer's %q", ErrMalformed, c.Audience, s.cfg.Audience)
	case exp <= iat || exp-iat > int64(s.cfg.TTL/time.Second):
		return "", fmt.Errorf("%w: exp must be after iat, by at most %v", ErrMalformed, s.cfg.TTL)
	case nbf < iat:
		return "", fmt.Errorf("%w: nbf before iat", ErrMalformed)
	}
	token := signCompact(s.key.Private, s.header, encodeClaims(&c))
	if len(token) > MaxTokenBytes {
		return "", fmt.Errorf("%w: token of %d bytes", ErrMalformed, len(token))
	}
	return token, nil
}

// signCompact returns header.payload.signature, with header already encoded.
func signCompact(priv ed25519.PrivateKey, header string, payload []byte) string {
	input := header + "." + b64URL.EncodeToString(payload)
	sig := ed25519.Sign(priv, []byte(input))
	return input + "." + b64URL.EncodeToString(sig)
}

// encodeClaims writes c as a JSON object: the registered claims in a fixed order, then the
// custom ones sorted by name.
func encodeClaims(c *Claims) []byte {
	b := make([]byte, 0, 256)
	str := func(name, v string) {
		q, _ := json.Marshal(v)
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":`...)
		b = append(b, q...)
		b = append(b, ',')
	}
	num := func(name string, t time.Time) {
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":`...)
		b = strconv.AppendInt(b, t.Unix(), 10)
		b = append(b, ',')
	}
	b = append(b, '{')
	str("iss", c.Issuer)
	str("sub", c.Subject)
	str("aud", c.Audience)
	num("exp", c.ExpiresAt)
	num("nbf", c.NotBefore)
	num("iat", c.IssuedAt)
	str("jti", c.ID)
	if c.SessionID != "" {
		str("sid", c.SessionID)
	}
	names := make([]string, 0, len(c.Custom))
	for name := range c.Custom {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		q, _ := json.Marshal(name)
		v, _ := json.Marshal(c.Custom[name])
		b = append(b, q...)
		b = append(b, ':')
		b = append(b, v...)
		b = append(b, ',')
	}
	b[len(b)-1] = '}'
	return b
}

// Verifier verifies access tokens against a Config and a KeySet. It is safe for concurrent
// use; SetKeys swaps the keys atomically while Verify runs.
type Verifier struct {
	cfg  Config
	keys atomic.Pointer[KeySet]
}

// NewVerifier returns a verifier for tokens issued under c and signed by a key of keys. It
// fails when c is invalid.
func NewVerifier(c Config, keys KeySet) (*Verifier, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	v := &Verifier{cfg: c}
	v.keys.Store(&keys)
	return v, nil
}

// SetKeys replaces the verifier's keys, e.g. with a JWKS fetched again after ErrUnknownKey
// or on a timer. Tokens verified from then on use the new keys.
func (v *Verifier) SetKeys(keys KeySet) { v.keys.Store(&keys) }

// Keys returns the verifier's current keys.
func (v *Verifier) Keys() KeySet { return *v.keys.Load() }

// Config returns the verifier's Config.
func (v *Verifier) Config() Config { return v.cfg }

// Verify checks token at now and returns its claims. It never trusts the token to say how it
// should be checked: the algorithm is EdDSA (Ed25519) whatever the header says, the key is
// one of the verifier's, looked up by kid, and a header that names anything else (jku, x5u,
// jwk, x5c, crit, ...) is refused. In order:
//
//   - over MaxTokenBytes, not three base64url parts, a header that is not strict JSON with
//     exactly alg, kid and typ "at+jwt": ErrMalformed; alg not "EdDSA": ErrAlgorithm;
//   - no key with the kid, or its NotAfter passed: ErrUnknownKey;
//   - the signature does not verify: ErrSignature;
//   - the claims (read only once the signature verified) are not strict JSON with string
//     iss, sub, aud, jti, integer exp, nbf, iat, an optional string sid and otherwise only
//     string claims within the limits of Claims.Custom: ErrMalformed;
//   - iss not exactly Config.Issuer: ErrIssuer; aud not exactly Config.Audience: ErrAudience;
//   - now at or past exp + Skew (exp counts as at most iat + TTL): ErrExpired;
//   - now before nbf − Skew, or iat after now + Skew: ErrNotYetValid.
//
// The error wraps the sentinel with detail for logs.
func (v *Verifier) Verify(token string, now time.Time) (Claims, error) {
	c, _, err := v.verify(token, now, v.keys.Load())
	return c, err
}

// verify is Verify against keys, and also returns the token's kid.
func (v *Verifier) verify(token string, now time.Time, keys *KeySet) (Claims, string, error) {
	if len(token) > MaxTokenBytes {
		return Claims{}, "", fmt.Errorf("%w: token of %d bytes, over %d", ErrMalformed, len(token), MaxTokenBytes)
	}
	h, rest, ok1 := strings.Cut(token, ".")
	p, s, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.IndexByte(s, '.') >= 0 {
		return Claims{}, "", fmt.Errorf("%w: not three parts", ErrMalformed)
	}
	header, err := b64URL.DecodeString(h)
	if err != nil {
		return Claims{}, "", fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	kid, err := parseHeader(header)
	if err != nil {
		return Claims{}, "", err
	}
	payload, err := b64URL.DecodeString(p)
	if err != nil || len(payload) == 0 {
		return Claims{}, "", fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	sig, err := b64URL.DecodeString(s)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Claims{}, "", fmt.Errorf("%w: signature is not %d bytes of base64url", ErrMalformed, ed25519.SignatureSize)
	}
	pub, ok := keys.Lookup(kid, now)
	if !ok {
		return Claims{}, "", fmt.Errorf("%w: kid %q", ErrUnknownKey, kid)
	}
	if !ed25519.Verify(pub, []byte(token[:len(h)+1+len(p)]), sig) {
		return Claims{}, "", ErrSignature
	}
	c, err := parseClaims(payload)
	if err != nil {
		return Claims{}, "", err
	}
	if err := v.checkClaims(&c, now); err != nil {
		return Claims{}, "", err
	}
	return c, kid, nil
}

// checkClaims checks verified claims against the Config at now.
func (v *Verifier) checkClaims(c *Claims, now time.Time) error {
	switch {
	case c.Issuer != v.cfg.Issuer:
		return fmt.Errorf("%w: %q", ErrIssuer, c.Issuer)
	case c.Audience != v.cfg.Audience:
		return fmt.Errorf("%w: %q", ErrAudience, c.Audience)
	case !now.Before(v.expiry(c)):
		return fmt.Errorf("%w: at %v", ErrExpired, c.ExpiresAt)
	case now.Before(c.NotBefore.Add(-v.cfg.Skew)):
		return fmt.Errorf("%w: not before %v", ErrNotYetValid, c.NotBefore)
	case c.IssuedAt.After(now.Add(v.cfg.Skew)):
		return fmt.Errorf("%w: issued at %v", ErrNotYetValid, c.IssuedAt)
	}
	return nil
}

// expiry is the first instant at which the verifier no longer accepts c: exp, or iat + TTL
// if that is sooner, plus the skew.
func (v *Verifier) expiry(c *Claims) time.Time {
	exp := c.ExpiresAt
	if limit := c.IssuedAt.Add(v.cfg.TTL); limit.Before(exp) {
		exp = limit
	}
	return exp.Add(v.cfg.Skew)
}

// joseHeader is what a JOSE header (RFC 7515 §4) may hold for Perch: alg, kid and typ
// (hasTyp when present).
type joseHeader struct {
	alg, kid, typ string
	hasTyp        bool
}

// readJOSEHeader reads a JOSE header. Only alg, kid and typ may appear, and with thumbprints
// also x5t and x5t#S256 (Microsoft sends x5t in ID tokens), which are read and ignored: they
// name a key, they do not bring one, and the kid decides. Anything else is refused.
func readJOSEHeader(b []byte, thumbprints bool) (joseHeader, error) {
	var h joseHeader
	err := decodeObject(b, func(name string, dec *json.Decoder) error {
		var err error
		switch {
		case name == "alg":
			h.alg, err = readString(dec, name, 64)
		case name == "kid":
			h.kid, err = readString(dec, name, maxKeyIDLen)
		case name == "typ":
			h.hasTyp = true
			h.typ, err = readString(dec, name, 64)
		case thumbprints && (name == "x5t" || name == "x5t#S256"):
			_, err = readString(dec, name, 128)
		case name == "crit":
			// RFC 7515 §4.1.11: a recipient that does not understand a listed extension
			// must reject the token, and this one understands none.
			err = fmt.Errorf("%w: crit header", ErrMalformed)
		default:
			// jku, x5u, jwk and x5c bring their own key; cty, b64 and the rest mean nothing
			// to Perch. None is honoured, so none is accepted.
			err = fmt.Errorf("%w: header member %q", ErrMalformed, name)
		}
		return err
	})
	return h, err
}

// parseHeader reads the JOSE header of a Perch access token and returns its kid.
func parseHeader(b []byte) (string, error) {
	h, err := readJOSEHeader(b, false)
	if err != nil {
		return "", err
	}
	alg, kid, typ := h.alg, h.kid, h.typ
	if alg != "EdDSA" {
		return "", fmt.Errorf("%w: %q", ErrAlgorithm, alg)
	}
	if kid == "" {
		return "", fmt.Errorf("%w: no kid", ErrMalformed)
	}
	// RFC 7515 §4.1.9: typ is a media type, compared without case, "application/" implied.
	if t := strings.ToLower(typ); t != TokenType && t != "application/"+TokenType {
		return "", fmt.Errorf("%w: typ %q", ErrMalformed, typ)
	}
	return kid, nil
}

// parseClaims reads the claims of a token whose signature verified.
func parseClaims(b []byte) (Claims, error) {
	var c Claims
	var exp, nbf, iat int64
	var have uint8
	const hIss, hSub, hAud, hExp, hNbf, hIat, hJti = 1, 2, 4, 8, 16, 32, 64
	err := decodeObject(b, func(name string, dec *json.Decoder) error {
		var err error
		switch name {
		case "iss":
			have |= hIss
			c.Issuer, err = readString(dec, name, maxNameLen)
		case "sub":
			have |= hSub
			c.Subject, err = readString(dec, name, maxSubjectLen)
		case "aud":
			have |= hAud
			c.Audience, err = readString(dec, name, maxNameLen)
		case "exp":
			have |= hExp
			exp, err = readInt(dec, name, maxNumDate)
		case "nbf":
			have |= hNbf
			nbf, err = readInt(dec, name, maxNumDate)
		case "iat":
			have |= hIat
			iat, err = readInt(dec, name, maxNumDate)
		case "jti":
			have |= hJti
			c.ID, err = readString(dec, name, maxIDLen)
		case "sid":
			c.SessionID, err = readString(dec, name, maxIDLen)
		default:
			if len(c.Custom) == maxCustom {
				return fmt.Errorf("%w: more than %d custom claims", ErrMalformed, maxCustom)
			}
			if len(name) > maxCustomName {
				return fmt.Errorf("%w: claim name of %d bytes", ErrMalformed, len(name))
			}
			var val string
			if val, err = readString(dec, name, maxCustomVal); err != nil {
				return err
			}
			if c.Custom == nil {
				c.Custom = make(map[string]string)
			}
			c.Custom[name] = val
		}
		return err
	})
	if err != nil {
		return Claims{}, err
	}
	if have != hIss|hSub|hAud|hExp|hNbf|hIat|hJti {
		return Claims{}, fmt.Errorf("%w: a registered claim is missing", ErrMalformed)
	}
	c.ExpiresAt = time.Unix(exp, 0).UTC()
	c.NotBefore = time.Unix(nbf, 0).UTC()
	c.IssuedAt = time.Unix(iat, 0).UTC()
	if err := c.check(); err != nil {
		return Claims{}, err
	}
	return c, nil
}
