package auth

import "errors"

// The reasons Verify rejects an access token. Each error Verify returns wraps exactly one of
// them (test with errors.Is); the wrapped text says more, for logs, and is never sent to a
// client. The edge answers all of them 401, except that on ErrUnknownKey it first refreshes its
// key set and verifies once more.
var (
	// ErrMalformed: the token (or a refresh token, a recovery code, a key set, a stored key)
	// is not in the expected form: too large, not three base64url parts, a header or claims
	// object that is not strict JSON (duplicate members included), a header member other
	// than alg, kid and typ (jku, x5u, jwk, crit, ...), a missing or ill-typed claim.
	ErrMalformed = errors.New("auth: malformed")
	// ErrAlgorithm: the header names an algorithm other than EdDSA ("none", HS256, RS256,
	// ...). Perch signs with Ed25519 only and never lets a token choose how it is checked.
	ErrAlgorithm = errors.New("auth: algorithm not allowed")
	// ErrSignature: the signature does not verify under the key the header names: the token
	// was altered or was not signed by Perch.
	ErrSignature = errors.New("auth: bad signature")
	// ErrExpired: the token's exp is past (beyond the allowed clock skew).
	ErrExpired = errors.New("auth: token expired")
	// ErrNotYetValid: the token's nbf or iat is in the future (beyond the allowed clock
	// skew).
	ErrNotYetValid = errors.New("auth: token not yet valid")
	// ErrAudience: the token's aud is not exactly the audience this verifier serves.
	ErrAudience = errors.New("auth: wrong audience")
	// ErrIssuer: the token's iss is not exactly the issuer this verifier trusts.
	ErrIssuer = errors.New("auth: wrong issuer")
	// ErrUnknownKey: the key set has no key with the token's kid, or that key's NotAfter has
	// passed. A verifier whose key set may be stale fetches the current one and tries again
	// (at most once per token, and rate-limited: a forged kid costs a fetch otherwise).
	ErrUnknownKey = errors.New("auth: unknown signing key")
	// ErrRevoked: the token verifies but was revoked (by its jti, its subject or its session)
	// through VerifiedCache's Revoke methods.
	ErrRevoked = errors.New("auth: token revoked")
)

// Errors about passwords and keys.
var (
	// ErrPasswordTooShort: HashPassword refuses a password shorter than MinPasswordLen bytes.
	ErrPasswordTooShort = errors.New("auth: password too short")
	// ErrPasswordTooLong: a password longer than MaxPasswordLen bytes is neither hashed nor
	// verified, so that a huge one cannot make the server hash megabytes.
	ErrPasswordTooLong = errors.New("auth: password too long")
	// ErrBadHash: a stored password hash is not an argon2id PHC string this package
	// verifies, or its parameters are outside the bounds (see Params.Validate).
	ErrBadHash = errors.New("auth: bad password hash")
	// ErrNoSigningKey: Rotation.Signing found no key that may sign now.
	ErrNoSigningKey = errors.New("auth: no signing key")
)
