package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
)

// RefreshTokenLen is the length of a refresh token: 32 random bytes in base64url without
// padding.
const RefreshTokenLen = 43

// NewRefreshToken returns a new refresh token, to give to the client once, and its hash, to
// store (the token itself is never stored). The token is 256 random bits in base64url; the
// hash is SHA-256 of those bits.
//
// SHA-256 and not argon2id: a slow salted hash protects secrets people choose, which are
// guessable; 256 random bits are not, so one SHA-256 is as safe against a stolen table, and
// being unsalted and fast it lets the store find a token by its hash with an index lookup.
func NewRefreshToken() (token string, hash []byte) {
	var raw [32]byte
	rand.Read(raw[:])
	sum := sha256.Sum256(raw[:])
	return b64URL.EncodeToString(raw[:]), sum[:]
}

// HashRefreshToken returns the hash under which a refresh token from a client is stored, or
// an error wrapping ErrMalformed when token is not in the form NewRefreshToken makes (43
// characters of canonical base64url), so that the store is asked only about tokens that could
// exist.
func HashRefreshToken(token string) ([]byte, error) {
	if len(token) != RefreshTokenLen {
		return nil, fmt.Errorf("%w: refresh token of %d bytes", ErrMalformed, len(token))
	}
	var raw [32]byte
	if n, err := b64URL.Decode(raw[:], []byte(token)); err != nil || n != len(raw) {
		return nil, fmt.Errorf("%w: refresh token is not base64url", ErrMalformed)
	}
	sum := sha256.Sum256(raw[:])
	return sum[:], nil
}

// NewFamilyID returns a new refresh-token family id: 128 random bits in base64url. A family
// is the chain of refresh tokens that one login starts; every token of the chain is stored
// with it, and access tokens issued from it carry it as their sid claim (Claims.SessionID).
func NewFamilyID() string {
	var raw [16]byte
	rand.Read(raw[:])
	return b64URL.EncodeToString(raw[:])
}
