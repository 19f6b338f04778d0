// Package auth holds the building blocks of Perch's accounts and tokens (DESIGN §3: POST
// /v1/auth/signup, login, refresh and logout; Authorization: Bearer; GET
// /.well-known/jwks.json): argon2id password hashes, Ed25519-signed access tokens (JWT), the
// rotation of their signing keys and the JWKS that publishes them, a cache of verified
// tokens for the edge's hot path, opaque refresh tokens, TOTP and recovery codes.
//
// Its place: the core issues, the edges verify. The core hashes and checks passwords
// (HashPassword, VerifyPassword, VerifyDummy), keeps its signing keys in the database and
// decides with Rotation which one signs (Signer) and which are published (MarshalJWKS), and
// stores refresh tokens and recovery codes by their hashes. An edge reads the published keys
// (ParseJWKS, over NATS or from the JWKS URL) into a Verifier and checks every request's
// bearer token through a VerifiedCache. The package does no I/O and reads no clock: the
// database, the network and the time (now, passed to every call that needs it) belong to
// the caller. It imports neither edge, core, gossip nor internal/system.
//
// # Guarantees
//
// An access token is checked the one way Perch signs it, whatever its header says: EdDSA
// over Ed25519 with a key of the verifier's key set, found by kid; "none", HMAC, RSA, ECDSA,
// a key carried in the header (jwk, jku, x5u, x5c) and critical extensions (crit) are
// refused. Tokens are read strictly (at most MaxTokenBytes, canonical base64url, JSON
// without duplicate members), so that a token has one meaning and one encoding: no other
// string verifies with the same signature. Every rejection wraps exactly one sentinel error
// (ErrMalformed, ErrAlgorithm, ErrSignature, ErrUnknownKey, ErrIssuer, ErrAudience,
// ErrExpired, ErrNotYetValid, and ErrRevoked from the cache).
//
// Under the schedule of a Rotation, a token signed by the key that Rotation.Signing chose
// verifies with the keys Rotation.Published gives until it expires, whichever keys are made
// and retired meanwhile; after a key's NotAfter, its tokens get ErrUnknownKey.
//
// VerifiedCache answers as Verify would at the same instant (and refuses revoked tokens
// besides); a hit does no signature check and allocates nothing, and never serves the
// claims of another token (the whole token is compared).
//
// Work on input from outside is bounded before it is done: a password over MaxPasswordLen
// bytes is not hashed, a stored hash whose argon2id parameters exceed the bounds of
// Params.Validate (256 MiB, 16 passes, 16 lanes) is refused, a key set over 64 KiB is not
// read. Secrets are compared in constant time.
//
// # Concurrency
//
// Signer, Verifier, KeySet and VerifiedCache are safe for concurrent use; Verifier.SetKeys
// swaps the keys atomically. Config, Params, Rotation, Key and Claims are plain values. The
// functions keep no state; the ones that make secrets read crypto/rand.
//
// README.md has the formats, the rotation schedule, the rules for refresh-token families and
// the measured costs.
package auth
