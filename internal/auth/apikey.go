package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"strings"

	"github.com/oklog/ulid/v2"
)

// API keys identify the app that calls the edges (X-Api-Key). A key is APIKeyPrefix and 256
// random bits in base64url without padding, 46 characters in all:
//
//	pk_3q2-7wEAZ3dXYl8Z0sK1pZcJ6oF0yq2b4c5d6e7f8g9
//
// The prefix lets a leaked key be found by secret scanners and grep (and told from a refresh
// token, which is the same 256 bits without it); the fixed length and alphabet let an edge
// refuse anything else before hashing it. Each key has a public id (NewAPIKeyID), shown in
// listings, logs and metrics in its place. Only its hash is stored: SHA-256 of the random
// bits, for the reason given at NewRefreshToken.
const (
	APIKeyPrefix = "pk_"
	APIKeyLen    = len(APIKeyPrefix) + RefreshTokenLen
	// APIKeyIDPrefix starts every key id.
	APIKeyIDPrefix = "ak_"
)

// NewAPIKey returns a new API key, to show its operator once, and its hash, to store.
func NewAPIKey() (key string, hash []byte) {
	var raw [32]byte
	rand.Read(raw[:])
	sum := sha256.Sum256(raw[:])
	return APIKeyPrefix + b64URL.EncodeToString(raw[:]), sum[:]
}

// HashAPIKey returns the hash under which key is stored, and false when key is not in the form
// NewAPIKey makes (the prefix, then 43 characters of canonical base64url): such a key cannot
// exist, and costs no hash. It allocates nothing, so that an edge can check the X-Api-Key of
// every request.
func HashAPIKey(key []byte) (sum [32]byte, ok bool) {
	if len(key) != APIKeyLen || string(key[:len(APIKeyPrefix)]) != APIKeyPrefix {
		return sum, false
	}
	var raw [32]byte
	if n, err := b64URL.Decode(raw[:], key[len(APIKeyPrefix):]); err != nil || n != len(raw) {
		return sum, false
	}
	return sha256.Sum256(raw[:]), true
}

// NewAPIKeyID returns a new API key id: APIKeyIDPrefix and a ULID, so that listings sort by
// creation.
func NewAPIKeyID() string { return APIKeyIDPrefix + ulid.Make().String() }

// ValidAPIKeyID reports whether id has the form NewAPIKeyID makes.
func ValidAPIKeyID(id string) bool {
	rest, ok := strings.CutPrefix(id, APIKeyIDPrefix)
	if !ok {
		return false
	}
	_, err := ulid.ParseStrict(rest)
	return err == nil
}
