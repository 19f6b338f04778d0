package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"
)

// ID tokens of OpenID Connect providers (OpenID Connect Core 1.0 §2, §3.1.3.7): the JWTs that
// Google, Apple, Microsoft or Auth0 sign for an app (the client) after the user signed in
// there. The core verifies one with the provider's keys (ParseOIDCJWKS, fetched by the core:
// this package does no network I/O) and links its (iss, sub) to a user.
//
// As with access tokens, the token does not say how it is checked: the algorithm is the key's
// (its JWK alg, or RS256 for an RSA key and ES256 for a P-256 key), and the header's alg must
// merely name it. "none", the HMACs and everything else are ErrAlgorithm.

// The algorithms of ID tokens this package verifies.
const (
	AlgRS256 = "RS256" // RSASSA-PKCS1-v1_5 with SHA-256, RSA keys of 2048 to 8192 bits
	AlgES256 = "ES256" // ECDSA on P-256 with SHA-256
)

// Limits on what ParseOIDCJWKS and VerifyIDToken read.
const (
	maxOIDCJWKSBytes = 256 << 10 // providers put certificate chains (x5c) in their sets
	maxOIDCKeys      = 64
	maxIDSubjectLen  = 255 // OpenID Connect Core §2: sub is at most 255 ASCII characters
	maxIDAudiences   = 16
	maxEmailLen      = 320
	maxNonceLen      = 512
	minRSABits       = 2048
	maxRSABits       = 8192
)

// ErrNonce: the ID token's nonce is not the one the client sent with its authentication
// request (a replayed or injected token).
var ErrNonce = errors.New("auth: wrong nonce")

// IDTokenConfig is what an ID token must say to be accepted from one provider.
type IDTokenConfig struct {
	// Issuer is the provider's issuer identifier, e.g. "https://accounts.google.com";
	// compared with iss byte for byte.
	Issuer string
	// Audience is the app's client id at the provider: aud must contain it, and azp, when
	// present (and it must be when aud has several values), must be it.
	Audience string
	// Skew is the clock difference tolerated on exp, iat and nbf (0 to 5 minutes).
	Skew time.Duration
}

// Validate reports the first field of c that is missing or out of bounds.
func (c IDTokenConfig) Validate() error {
	switch {
	case c.Issuer == "" || len(c.Issuer) > maxNameLen:
		return fmt.Errorf("auth: Issuer must be 1 to %d bytes", maxNameLen)
	case c.Audience == "" || len(c.Audience) > maxNameLen:
		return fmt.Errorf("auth: Audience must be 1 to %d bytes", maxNameLen)
	case c.Skew < 0 || c.Skew > 5*time.Minute:
		return fmt.Errorf("auth: Skew %v not in 0..5m", c.Skew)
	}
	return nil
}

// IDClaims are the claims of a verified ID token that Perch uses. Times are whole seconds,
// in UTC; NotBefore is zero when the token has no nbf.
type IDClaims struct {
	Issuer          string
	Subject         string
	Audience        []string
	AuthorizedParty string // azp
	ExpiresAt       time.Time
	IssuedAt        time.Time
	NotBefore       time.Time
	Nonce           string
	// Email is the email claim, as the provider wrote it; EmailVerified whether the
	// provider says the user proved they own it (email_verified, true or "true").
	Email         string
	EmailVerified bool
}

// oidcKey is one verification key of a provider.
type oidcKey struct {
	alg string
	pub crypto.PublicKey // *rsa.PublicKey for RS256, *ecdsa.PublicKey for ES256
}

// OIDCKeySet is a provider's verification keys, by kid. It is immutable and safe for
// concurrent use; the zero OIDCKeySet has no keys.
type OIDCKeySet struct {
	keys map[string]oidcKey
}

// Len is the number of keys in s.
func (s OIDCKeySet) Len() int { return len(s.keys) }

// Has reports whether s has a key with the kid.
func (s OIDCKeySet) Has(kid string) bool {
	_, ok := s.keys[kid]
	return ok
}

// ParseOIDCJWKS reads a provider's JWK Set (its jwks_uri). It keeps the RSA keys of 2048 to
// 8192 bits and the P-256 EC keys meant for signatures, and skips the others (another kty or
// crv, a "use" other than "sig", an "alg" other than RS256 or ES256, or one that does not fit
// the key). A kept key must have a kid (none twice) and no private part; members it does not
// need (x5c, x5t, issuer, ...) are ignored. A set with no key kept is an error. The document
// is read strictly (valid UTF-8, no member name twice, at most 256 KiB); every error wraps
// ErrMalformed.
func ParseOIDCJWKS(data []byte) (OIDCKeySet, error) {
	keys, err := readKeySet(data, maxOIDCJWKSBytes, maxOIDCKeys, "RS256 or ES256", readOIDCJWK)
	if err != nil {
		return OIDCKeySet{}, err
	}
	return OIDCKeySet{keys: keys}, nil
}

// readOIDCJWK reads one member of a provider's keys; ok is false for a key ParseOIDCJWKS
// skips.
func readOIDCJWK(dec *json.Decoder) (kid string, k oidcKey, ok bool, err error) {
	m, err := readJWKMembers(dec, false)
	if err != nil {
		return "", k, false, err
	}
	kid = m.kid
	if !m.forSignatures() {
		return "", k, false, nil
	}
	switch {
	case m.kty == "RSA" && (m.alg == "" || m.alg == AlgRS256):
		k.alg = AlgRS256
	case m.kty == "EC" && m.crv == "P-256" && (m.alg == "" || m.alg == AlgES256):
		k.alg = AlgES256
	default:
		return "", k, false, nil
	}
	if m.private {
		return "", k, false, fmt.Errorf("%w: key %q has its private part in the set", ErrMalformed, kid)
	}
	if kid == "" {
		return "", k, false, fmt.Errorf("%w: %s key without kid", ErrMalformed, k.alg)
	}
	if k.alg == AlgRS256 {
		k.pub, err = rsaKey(m.n, m.e)
	} else {
		k.pub, err = p256Key(m.x, m.y)
	}
	if err != nil {
		return "", k, false, fmt.Errorf("%w: key %q: %v", ErrMalformed, kid, err)
	}
	return kid, k, true, nil
}

func rsaKey(n, e string) (*rsa.PublicKey, error) {
	nb, err := b64URL.DecodeString(n)
	if err != nil || len(nb) == 0 || nb[0] == 0 {
		return nil, errors.New("n is not a base64url integer without leading zeros")
	}
	eb, err := b64URL.DecodeString(e)
	if err != nil || len(eb) == 0 || len(eb) > 4 || eb[0] == 0 {
		return nil, errors.New("e is not a base64url integer of at most 4 bytes without leading zeros")
	}
	var ev int64
	for _, c := range eb {
		ev = ev<<8 | int64(c)
	}
	if ev < 3 || ev%2 == 0 || ev > 1<<31-1 {
		return nil, fmt.Errorf("exponent %d", ev)
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: int(ev)}
	if bits := pub.N.BitLen(); bits < minRSABits || bits > maxRSABits {
		return nil, fmt.Errorf("RSA key of %d bits, want %d to %d", bits, minRSABits, maxRSABits)
	}
	return pub, nil
}

func p256Key(x, y string) (*ecdsa.PublicKey, error) {
	xb, err1 := b64URL.DecodeString(x)
	yb, err2 := b64URL.DecodeString(y)
	if err1 != nil || err2 != nil || len(xb) != 32 || len(yb) != 32 {
		return nil, errors.New("x and y are not 32 bytes of base64url each")
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, xb...), yb...))
	if err != nil {
		return nil, fmt.Errorf("not a P-256 point: %v", err)
	}
	return pub, nil
}

// VerifyIDToken checks an ID token of the provider cfg describes, signed by one of keys, at
// now, and returns its claims. nonce, when not empty, must be the token's nonce. In order:
//
//   - over MaxTokenBytes, not three base64url parts, a header that is not strict JSON with
//     alg and kid, optionally typ "JWT" and x5t or x5t#S256 (ignored), and nothing else
//     (jku, jwk, x5u, x5c, crit, ...): ErrMalformed;
//   - alg neither RS256 nor ES256: ErrAlgorithm;
//   - no key with the kid: ErrUnknownKey (the caller may fetch the set again, once);
//   - alg not the key's algorithm: ErrAlgorithm;
//   - the signature does not verify: ErrSignature;
//   - the claims are not strict JSON with string iss and sub (no control characters), aud a string or an array of
//     strings, integer exp and iat, and, when present, integer nbf, string nonce, azp and
//     email and email_verified a boolean (or "true"/"false"): ErrMalformed;
//   - iss not exactly cfg.Issuer: ErrIssuer;
//   - aud without cfg.Audience, an azp other than it, or several audiences and no azp:
//     ErrAudience;
//   - now at or past exp + Skew: ErrExpired; before nbf − Skew, or iat after now + Skew:
//     ErrNotYetValid;
//   - nonce given and not the token's: ErrNonce.
//
// Other claims (name, picture, at_hash, auth_time, ...) are read for strictness and dropped.
func VerifyIDToken(token string, keys OIDCKeySet, cfg IDTokenConfig, nonce string, now time.Time) (IDClaims, error) {
	if len(token) > MaxTokenBytes {
		return IDClaims{}, fmt.Errorf("%w: token of %d bytes, over %d", ErrMalformed, len(token), MaxTokenBytes)
	}
	h, rest, ok1 := strings.Cut(token, ".")
	p, s, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.IndexByte(s, '.') >= 0 {
		return IDClaims{}, fmt.Errorf("%w: not three parts", ErrMalformed)
	}
	header, err := b64URL.DecodeString(h)
	if err != nil {
		return IDClaims{}, fmt.Errorf("%w: header: %v", ErrMalformed, err)
	}
	alg, kid, err := parseIDHeader(header)
	if err != nil {
		return IDClaims{}, err
	}
	payload, err := b64URL.DecodeString(p)
	if err != nil || len(payload) == 0 {
		return IDClaims{}, fmt.Errorf("%w: payload is not base64url", ErrMalformed)
	}
	sig, err := b64URL.DecodeString(s)
	if err != nil || len(sig) == 0 {
		return IDClaims{}, fmt.Errorf("%w: signature is not base64url", ErrMalformed)
	}
	key, ok := keys.keys[kid]
	if !ok {
		return IDClaims{}, fmt.Errorf("%w: kid %q", ErrUnknownKey, kid)
	}
	if alg != key.alg {
		return IDClaims{}, fmt.Errorf("%w: %s token for a %s key", ErrAlgorithm, alg, key.alg)
	}
	digest := sha256.Sum256([]byte(token[:len(h)+1+len(p)]))
	if !verifySignature(key, digest[:], sig) {
		return IDClaims{}, ErrSignature
	}
	c, err := parseIDClaims(payload)
	if err != nil {
		return IDClaims{}, err
	}
	if err := checkIDClaims(&c, cfg, nonce, now); err != nil {
		return IDClaims{}, err
	}
	return c, nil
}

func verifySignature(k oidcKey, digest, sig []byte) bool {
	switch pub := k.pub.(type) {
	case *rsa.PublicKey:
		return len(sig) == pub.Size() && rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest, sig) == nil
	case *ecdsa.PublicKey:
		// JWS ES256 (RFC 7518 §3.4): r and s, 32 bytes each, not ASN.1.
		if len(sig) != 64 {
			return false
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		return ecdsa.Verify(pub, digest, r, s)
	}
	return false
}

// parseIDHeader reads an ID token's JOSE header and returns its alg and kid.
func parseIDHeader(b []byte) (alg, kid string, err error) {
	h, err := readJOSEHeader(b, true)
	if err != nil {
		return "", "", err
	}
	alg, kid, typ, hasTyp := h.alg, h.kid, h.typ, h.hasTyp
	if alg != AlgRS256 && alg != AlgES256 {
		return "", "", fmt.Errorf("%w: %q", ErrAlgorithm, alg)
	}
	if kid == "" {
		return "", "", fmt.Errorf("%w: no kid", ErrMalformed)
	}
	// RFC 7519 §5.1: "JWT", compared without case. An access token (at+jwt) or any other
	// kind of JWT is not an ID token.
	if t := strings.ToLower(typ); hasTyp && t != "jwt" && t != "application/jwt" {
		return "", "", fmt.Errorf("%w: typ %q", ErrMalformed, typ)
	}
	return alg, kid, nil
}

// parseIDClaims reads the claims of an ID token whose signature verified.
func parseIDClaims(b []byte) (IDClaims, error) {
	var c IDClaims
	var exp, iat, nbf int64
	var have uint8
	const hIss, hSub, hAud, hExp, hIat = 1, 2, 4, 8, 16
	err := decodeObject(b, func(name string, dec *json.Decoder) error {
		var err error
		switch name {
		case "iss":
			have |= hIss
			c.Issuer, err = readString(dec, name, maxNameLen)
		case "sub":
			have |= hSub
			c.Subject, err = readString(dec, name, maxIDSubjectLen)
		case "aud":
			have |= hAud
			c.Audience, err = readAudience(dec)
		case "exp":
			have |= hExp
			exp, err = readInt(dec, name, maxNumDate)
		case "iat":
			have |= hIat
			iat, err = readInt(dec, name, maxNumDate)
		case "nbf":
			nbf, err = readInt(dec, name, maxNumDate)
		case "nonce":
			c.Nonce, err = readString(dec, name, maxNonceLen)
		case "azp":
			c.AuthorizedParty, err = readString(dec, name, maxNameLen)
		case "email":
			c.Email, err = readString(dec, name, maxEmailLen)
		case "email_verified":
			c.EmailVerified, err = readBool(dec, name)
		default:
			err = skipValue(dec)
		}
		return err
	})
	if err != nil {
		return IDClaims{}, err
	}
	if have != hIss|hSub|hAud|hExp|hIat {
		return IDClaims{}, fmt.Errorf("%w: iss, sub, aud, exp or iat is missing", ErrMalformed)
	}
	if c.Issuer == "" || c.Subject == "" {
		return IDClaims{}, fmt.Errorf("%w: empty iss or sub", ErrMalformed)
	}
	// The subject becomes a database key: no control characters (NUL above all).
	if strings.ContainsFunc(c.Subject, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return IDClaims{}, fmt.Errorf("%w: sub has control characters", ErrMalformed)
	}
	c.ExpiresAt = time.Unix(exp, 0).UTC()
	c.IssuedAt = time.Unix(iat, 0).UTC()
	if nbf != 0 {
		c.NotBefore = time.Unix(nbf, 0).UTC()
	}
	return c, nil
}

// readAudience reads aud: a string, or an array of 1 to 16 strings.
func readAudience(dec *json.Decoder) ([]string, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch t := tok.(type) {
	case string:
		if t == "" || len(t) > maxNameLen {
			return nil, fmt.Errorf("%w: aud must be 1 to %d bytes", ErrMalformed, maxNameLen)
		}
		return []string{t}, nil
	case json.Delim:
		if t != '[' {
			break
		}
		var aud []string
		for dec.More() {
			if len(aud) == maxIDAudiences {
				return nil, fmt.Errorf("%w: more than %d audiences", ErrMalformed, maxIDAudiences)
			}
			a, err := readString(dec, "aud", maxNameLen)
			if err != nil {
				return nil, err
			}
			aud = append(aud, a)
		}
		if _, err := dec.Token(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if len(aud) == 0 {
			return nil, fmt.Errorf("%w: aud is an empty array", ErrMalformed)
		}
		return aud, nil
	}
	return nil, fmt.Errorf("%w: aud is neither a string nor an array of strings", ErrMalformed)
}

// readBool reads a JSON boolean, or the strings "true" and "false" that some providers send
// for email_verified.
func readBool(dec *json.Decoder, name string) (bool, error) {
	tok, err := dec.Token()
	if err != nil {
		return false, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	switch tok {
	case true, "true":
		return true, nil
	case false, "false":
		return false, nil
	}
	return false, fmt.Errorf("%w: %s is not a boolean", ErrMalformed, name)
}

// checkIDClaims checks verified claims against cfg at now (OpenID Connect Core §3.1.3.7).
func checkIDClaims(c *IDClaims, cfg IDTokenConfig, nonce string, now time.Time) error {
	switch {
	case c.Issuer != cfg.Issuer:
		return fmt.Errorf("%w: %q", ErrIssuer, c.Issuer)
	case !slices.Contains(c.Audience, cfg.Audience):
		return fmt.Errorf("%w: %q", ErrAudience, c.Audience)
	case c.AuthorizedParty != "" && c.AuthorizedParty != cfg.Audience:
		return fmt.Errorf("%w: azp %q", ErrAudience, c.AuthorizedParty)
	case len(c.Audience) > 1 && c.AuthorizedParty == "":
		// The token was issued to several parties: only azp says which one asked for it.
		return fmt.Errorf("%w: %d audiences and no azp", ErrAudience, len(c.Audience))
	case !now.Before(c.ExpiresAt.Add(cfg.Skew)):
		return fmt.Errorf("%w: at %v", ErrExpired, c.ExpiresAt)
	case !c.NotBefore.IsZero() && now.Before(c.NotBefore.Add(-cfg.Skew)):
		return fmt.Errorf("%w: not before %v", ErrNotYetValid, c.NotBefore)
	case c.IssuedAt.After(now.Add(cfg.Skew)):
		return fmt.Errorf("%w: issued at %v", ErrNotYetValid, c.IssuedAt)
	case nonce != "" && subtle.ConstantTimeCompare([]byte(nonce), []byte(c.Nonce)) != 1:
		return ErrNonce
	}
	return nil
}
