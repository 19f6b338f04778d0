package auth

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// b64URL is the base64url of JOSE (RFC 7515 §2): no padding, and strict, so that a value has
// exactly one encoding and a token cannot be re-encoded into another string that verifies.
var b64URL = base64.RawURLEncoding.Strict()

// Limits on what ParseJWKS and ParsePrivateKey read.
const (
	maxKeyIDLen  = 128
	maxJWKSBytes = 64 << 10
	maxJWKSKeys  = 256 // members of "keys", of any type
	maxEdKeys    = 64  // Ed25519 keys kept
	maxKeyBytes  = 1 << 10
	maxNumDate   = 253402300799 // 9999-12-31T23:59:59Z, the largest NumericDate accepted
)

// Key is a signing key with its place in the rotation (see Rotation). The core keeps its keys
// in the database (MarshalPrivate, ParsePrivateKey); only their public parts leave it, in the
// JWKS.
type Key struct {
	// ID is the key's kid: the RFC 7638 thumbprint of its public key, so that a kid names
	// one key forever.
	ID string
	// Private is the Ed25519 private key.
	Private ed25519.PrivateKey
	// Created is when the key was made; it signs from Created + Rotation.Lead.
	Created time.Time
	// NotAfter is when the key stops verifying: every token it signed has expired by then.
	// Zero while the key has no successor. Rotation sets it, in whole seconds.
	NotAfter time.Time
}

// GenerateKey makes a new key created at now, with no NotAfter.
func GenerateKey(now time.Time) Key {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		// crypto/rand does not fail (it never returns an error since Go 1.24).
		panic("auth: ed25519.GenerateKey: " + err.Error())
	}
	return Key{ID: Thumbprint(pub), Private: priv, Created: now.UTC()}
}

// Public is the public part of k, as it is published. (Its Key is nil when k has no valid
// private key.)
func (k Key) Public() PublicKey {
	var pub ed25519.PublicKey
	if len(k.Private) == ed25519.PrivateKeySize {
		pub, _ = k.Private.Public().(ed25519.PublicKey)
	}
	return PublicKey{ID: k.ID, Key: pub, NotAfter: k.NotAfter}
}

// MarshalJSON writes the public part of k only, as a JWK (see PublicKey.MarshalJSON), so
// that a Key marshalled by accident, into a log or a response, gives away nothing. Storage
// uses MarshalPrivate.
func (k Key) MarshalJSON() ([]byte, error) { return k.Public().MarshalJSON() }

// storedKey is the storage form of a Key.
type storedKey struct {
	ID       string     `json:"kid"`
	Seed     string     `json:"seed"`
	Created  time.Time  `json:"created"`
	NotAfter *time.Time `json:"not_after,omitempty"`
}

// MarshalPrivate encodes k, private key included, for the database: a JSON object with the
// kid, the 32-byte Ed25519 seed in base64url, and the times in RFC 3339. What stores it
// holds a secret: the store encrypts it at rest or keeps it where only the core reads.
func (k Key) MarshalPrivate() ([]byte, error) {
	if err := k.check(); err != nil {
		return nil, err
	}
	s := storedKey{ID: k.ID, Seed: b64URL.EncodeToString(k.Private.Seed()), Created: k.Created.UTC()}
	if !k.NotAfter.IsZero() {
		na := k.NotAfter.UTC()
		s.NotAfter = &na
	}
	return json.Marshal(s)
}

// ParsePrivateKey decodes what MarshalPrivate wrote, and checks that the kid is the
// thumbprint of the key. Errors wrap ErrMalformed.
func ParsePrivateKey(data []byte) (Key, error) {
	var k Key
	if len(data) > maxKeyBytes {
		return k, fmt.Errorf("%w: stored key of %d bytes", ErrMalformed, len(data))
	}
	var seed, created, notAfter string
	err := decodeObject(data, func(name string, dec *json.Decoder) error {
		var err error
		switch name {
		case "kid":
			k.ID, err = readString(dec, name, maxKeyIDLen)
		case "seed":
			seed, err = readString(dec, name, 64)
		case "created":
			created, err = readString(dec, name, 64)
		case "not_after":
			notAfter, err = readString(dec, name, 64)
		default:
			err = fmt.Errorf("%w: stored key: unknown member %q", ErrMalformed, name)
		}
		return err
	})
	if err != nil {
		return Key{}, err
	}
	raw, err := b64URL.DecodeString(seed)
	if err != nil || len(raw) != ed25519.SeedSize {
		return Key{}, fmt.Errorf("%w: stored key: seed is not %d bytes of base64url", ErrMalformed, ed25519.SeedSize)
	}
	k.Private = ed25519.NewKeyFromSeed(raw)
	if k.Created, err = time.Parse(time.RFC3339Nano, created); err != nil {
		return Key{}, fmt.Errorf("%w: stored key: created: %v", ErrMalformed, err)
	}
	if notAfter != "" {
		if k.NotAfter, err = time.Parse(time.RFC3339Nano, notAfter); err != nil {
			return Key{}, fmt.Errorf("%w: stored key: not_after: %v", ErrMalformed, err)
		}
	}
	if err := k.check(); err != nil {
		return Key{}, err
	}
	return k, nil
}

// check reports whether k is complete and its ID is its thumbprint.
func (k Key) check() error {
	if len(k.Private) != ed25519.PrivateKeySize {
		return fmt.Errorf("%w: key %q: private key of %d bytes", ErrMalformed, k.ID, len(k.Private))
	}
	if want := Thumbprint(k.Public().Key); k.ID != want {
		return fmt.Errorf("%w: key %q: kid is not the key's thumbprint %s", ErrMalformed, k.ID, want)
	}
	if k.Created.IsZero() {
		return fmt.Errorf("%w: key %q: no creation time", ErrMalformed, k.ID)
	}
	return nil
}

// Thumbprint is the RFC 7638 JWK thumbprint of an Ed25519 public key (RFC 8037 §2): the
// base64url SHA-256 of {"crv":"Ed25519","kty":"OKP","x":"..."}.
func Thumbprint(pub ed25519.PublicKey) string {
	sum := sha256.Sum256([]byte(`{"crv":"Ed25519","kty":"OKP","x":"` + b64URL.EncodeToString(pub) + `"}`))
	return b64URL.EncodeToString(sum[:])
}

// PublicKey is a public key that verifies access tokens, under its kid.
type PublicKey struct {
	// ID is the kid that tokens signed by the key carry in their header.
	ID string
	// Key is the 32-byte Ed25519 public key.
	Key ed25519.PublicKey
	// NotAfter, when not zero, is when the key stops verifying (KeySet.Lookup reports it
	// unknown from then on). In a JWKS it is the member "exp".
	NotAfter time.Time
}

// jwk is a public key as RFC 8037 writes it, in the order of RFC 7517's examples.
type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	// Exp is NotAfter as a NumericDate: a member that RFC 7517 §4 lets a JWK carry and
	// requires other readers to ignore.
	Exp int64 `json:"exp,omitempty"`
}

func (k PublicKey) jwk() (jwk, error) {
	if len(k.Key) != ed25519.PublicKeySize {
		return jwk{}, fmt.Errorf("auth: key %q: public key of %d bytes", k.ID, len(k.Key))
	}
	if k.ID == "" || len(k.ID) > maxKeyIDLen {
		return jwk{}, fmt.Errorf("auth: key %q: kid empty or longer than %d bytes", k.ID, maxKeyIDLen)
	}
	j := jwk{Kty: "OKP", Crv: "Ed25519", X: b64URL.EncodeToString(k.Key), Kid: k.ID, Alg: "EdDSA", Use: "sig"}
	if !k.NotAfter.IsZero() {
		j.Exp = k.NotAfter.Unix() // whole seconds, rounded down: never later than NotAfter
		if j.Exp < 1 || j.Exp > maxNumDate {
			return jwk{}, fmt.Errorf("auth: key %q: NotAfter %v out of range", k.ID, k.NotAfter)
		}
	}
	return j, nil
}

// MarshalJSON writes k as a JWK: {"kty":"OKP","crv":"Ed25519","x":...,"kid":...,
// "alg":"EdDSA","use":"sig"}, with "exp" when NotAfter is set.
func (k PublicKey) MarshalJSON() ([]byte, error) {
	j, err := k.jwk()
	if err != nil {
		return nil, err
	}
	return json.Marshal(j)
}

// MarshalJWKS writes keys as a JWK Set (RFC 7517 §5), what GET /.well-known/jwks.json
// answers and what edges fetch: {"keys":[...]} in the order given. It fails on a key that
// is not a 32-byte Ed25519 key with a kid, and on two keys with one kid.
func MarshalJWKS(keys []PublicKey) ([]byte, error) {
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: make([]jwk, 0, len(keys))}
	for i, k := range keys {
		j, err := k.jwk()
		if err != nil {
			return nil, err
		}
		for _, o := range keys[:i] {
			if o.ID == k.ID {
				return nil, fmt.Errorf("auth: kid %q twice", k.ID)
			}
		}
		set.Keys = append(set.Keys, j)
	}
	return json.Marshal(set)
}

// ParseJWKS reads a JWK Set. It keeps the Ed25519 keys (kty "OKP", crv "Ed25519") meant for
// signatures, and skips keys of other types or curves, with a "use" other than "sig", an
// "alg" other than "EdDSA" or "key_ops" without "verify": a set may hold keys for other
// consumers. The kept keys must be well formed: a kid of at most 128 bytes, an x of exactly
// 32 bytes, no private part ("d"), no kid twice. A set with no key kept is an error too, so
// that an edge never swaps its keys for none. The document is read strictly (valid UTF-8, no
// member name twice in an object, at most 64 KiB); every error wraps ErrMalformed.
func ParseJWKS(data []byte) (KeySet, error) {
	keys, err := readKeySet(data, maxJWKSBytes, maxEdKeys, "Ed25519", func(dec *json.Decoder) (string, PublicKey, bool, error) {
		k, ok, err := readJWK(dec)
		return k.ID, k, ok, err
	})
	if err != nil {
		return KeySet{}, err
	}
	return KeySet{keys: keys}, nil
}

// readKeySet reads a JWK set (RFC 7517 §5) strictly: one object, at most maxBytes, whose
// "keys" array holds at most maxJWKSKeys members, each read by read, which reports whether it
// keeps the key and under which kid. At most maxKept keys are kept, no kid twice, and at
// least one. kind names the keys kept, for errors. Every error wraps ErrMalformed.
func readKeySet[K any](data []byte, maxBytes, maxKept int, kind string, read func(*json.Decoder) (string, K, bool, error)) (map[string]K, error) {
	if len(data) > maxBytes {
		return nil, fmt.Errorf("%w: key set of %d bytes", ErrMalformed, len(data))
	}
	keys := make(map[string]K)
	sawKeys := false
	err := decodeObject(data, func(name string, dec *json.Decoder) error {
		if name != "keys" {
			return skipValue(dec)
		}
		sawKeys = true
		if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
			return fmt.Errorf("%w: keys is not an array", ErrMalformed)
		}
		for n := 0; dec.More(); n++ {
			if n == maxJWKSKeys {
				return fmt.Errorf("%w: more than %d keys", ErrMalformed, maxJWKSKeys)
			}
			kid, k, ok, err := read(dec)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			if _, dup := keys[kid]; dup {
				return fmt.Errorf("%w: kid %q twice", ErrMalformed, kid)
			}
			if len(keys) == maxKept {
				return fmt.Errorf("%w: more than %d %s keys", ErrMalformed, maxKept, kind)
			}
			keys[kid] = k
		}
		if _, err := dec.Token(); err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !sawKeys {
		return nil, fmt.Errorf("%w: no keys member", ErrMalformed)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no %s signature key", ErrMalformed, kind)
	}
	return keys, nil
}

// readVerifyOp reads a JWK's key_ops (RFC 7517 §4.3) and reports whether it allows verify.
func readVerifyOp(dec *json.Decoder) (bool, error) {
	var ops []string
	if dec.Decode(&ops) != nil {
		return false, fmt.Errorf("%w: key_ops is not an array of strings", ErrMalformed)
	}
	return slices.Contains(ops, "verify"), nil
}

// jwkMembers are the members of a JWK (RFC 7517) that Perch reads: of its own Ed25519 keys
// (readJWK) and of OpenID providers' RSA and P-256 keys (readOIDCJWK) alike.
type jwkMembers struct {
	kty, crv, use, alg, kid, n, e, x, y string
	exp                                 int64
	// private is set when the key carries a private part; ops when key_ops is there, verify
	// when it allows verification.
	private, ops, verify bool
}

// forSignatures reports whether the key's use and key_ops let it verify signatures.
func (m *jwkMembers) forSignatures() bool {
	return (m.use == "" || m.use == "sig") && (!m.ops || m.verify)
}

// readJWKMembers reads one member of a JWK set's keys. exp (an extension of Perch's own
// sets: when the key stops signing) is read when withExp is set, else skipped.
func readJWKMembers(dec *json.Decoder, withExp bool) (jwkMembers, error) {
	var m jwkMembers
	err := readObject(dec, func(name string, dec *json.Decoder) error {
		var err error
		switch name {
		case "kty":
			m.kty, err = readString(dec, name, 64)
		case "crv":
			m.crv, err = readString(dec, name, 64)
		case "use":
			m.use, err = readString(dec, name, 64)
		case "alg":
			m.alg, err = readString(dec, name, 64)
		case "kid":
			m.kid, err = readString(dec, name, maxKeyIDLen)
		case "n":
			m.n, err = readString(dec, name, 2*maxRSABits/8)
		case "e":
			m.e, err = readString(dec, name, 16)
		case "x":
			m.x, err = readString(dec, name, 1024)
		case "y":
			m.y, err = readString(dec, name, 64)
		case "exp":
			if !withExp {
				return skipValue(dec)
			}
			m.exp, err = readInt(dec, name, maxNumDate)
		case "d", "p", "q", "dp", "dq", "qi", "oth", "k":
			m.private = true
			err = skipValue(dec)
		case "key_ops":
			m.ops = true
			m.verify, err = readVerifyOp(dec)
		default:
			err = skipValue(dec)
		}
		return err
	})
	return m, err
}

// readJWK reads one member of a JWKS's keys; ok is false for a key ParseJWKS skips.
func readJWK(dec *json.Decoder) (k PublicKey, ok bool, err error) {
	m, err := readJWKMembers(dec, true)
	if err != nil {
		return k, false, err
	}
	k.ID = m.kid
	if m.kty != "OKP" || m.crv != "Ed25519" || (m.alg != "" && m.alg != "EdDSA") || !m.forSignatures() {
		return k, false, nil
	}
	if m.private {
		return k, false, fmt.Errorf("%w: key %q has its private part in the set", ErrMalformed, k.ID)
	}
	if k.ID == "" {
		return k, false, fmt.Errorf("%w: Ed25519 key without kid", ErrMalformed)
	}
	raw, err := b64URL.DecodeString(m.x)
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return k, false, fmt.Errorf("%w: key %q: x is not %d bytes of base64url", ErrMalformed, k.ID, ed25519.PublicKeySize)
	}
	k.Key = raw
	if m.exp != 0 {
		k.NotAfter = time.Unix(m.exp, 0).UTC()
	}
	return k, true, nil
}

// KeySet is the public keys a verifier accepts, by kid: during a rotation, several. A KeySet
// is immutable and safe for concurrent use; the zero KeySet has no keys.
type KeySet struct {
	keys map[string]PublicKey
}

// NewKeySet makes a set of keys. It fails on a key that is not a 32-byte Ed25519 key with a
// kid of at most 128 bytes, and on two keys with one kid.
func NewKeySet(keys ...PublicKey) (KeySet, error) {
	m := make(map[string]PublicKey, len(keys))
	for _, k := range keys {
		if _, err := k.jwk(); err != nil {
			return KeySet{}, err
		}
		if _, dup := m[k.ID]; dup {
			return KeySet{}, fmt.Errorf("auth: kid %q twice", k.ID)
		}
		k.Key = bytes.Clone(k.Key)
		m[k.ID] = k
	}
	return KeySet{keys: m}, nil
}

// Lookup returns the key with the kid, unless there is none or its NotAfter is not after now.
func (s KeySet) Lookup(kid string, now time.Time) (ed25519.PublicKey, bool) {
	k, ok := s.keys[kid]
	if !ok || (!k.NotAfter.IsZero() && !now.Before(k.NotAfter)) {
		return nil, false
	}
	return k.Key, true
}

// Len is the number of keys in s.
func (s KeySet) Len() int { return len(s.keys) }

// Keys returns the keys of s, sorted by kid. The caller must not modify their Key bytes.
func (s KeySet) Keys() []PublicKey {
	out := make([]PublicKey, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b PublicKey) int { return strings.Compare(a.ID, b.ID) })
	return out
}
