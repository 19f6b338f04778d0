package wire

import (
	"encoding/json"
	"time"

	"github.com/perchhq/perch/internal/problem"
)

// Subjects of accounts and tokens. The core issues tokens and answers the edges' account
// requests on AuthSubject (queue group CoreQueue); edges verify tokens themselves with the
// keys the core publishes (KeysSubject) and forget the tokens it revokes (RevokedSubject).
const (
	AuthSubject = "perch.auth"
	// KeysSubject carries the core's JWKS whenever its signing keys change: a new key is
	// published before it signs (auth.Rotation's Lead), so every edge knows it in time.
	KeysSubject = "perch.auth.keys"
	// RevokedSubject carries Revocations, one per message, to every edge.
	RevokedSubject = "perch.auth.revoked"
	// APIKeysSubject carries the core's APIKeySet, the apps' live API keys, whenever a core
	// finds that it changed (it reads them every few seconds: `perch keys` writes only to the
	// database) and once a minute besides, so that an edge that missed one catches up.
	APIKeysSubject = "perch.auth.apikeys"
)

// AuthOp is what an AuthRequest asks.
type AuthOp string

const (
	AuthSignup      AuthOp = "signup"      // Email, Password → Tokens
	AuthLogin       AuthOp = "login"       // Email, Password, TOTP or RecoveryCode → Tokens
	AuthRefresh     AuthOp = "refresh"     // RefreshToken → Tokens
	AuthLogout      AuthOp = "logout"      // RefreshToken → nothing
	AuthOIDC        AuthOp = "oidc"        // Provider, IDToken, Nonce → Tokens
	AuthKeys        AuthOp = "keys"        // → JWKS
	AuthRevocations AuthOp = "revocations" // Since → Revocations
	AuthMe          AuthOp = "me"          // User → Account
	AuthDelete      AuthOp = "delete"      // User → nothing: the account is deleted
	AuthAPIKeys     AuthOp = "apikeys"     // → APIKeys
	// The second factor of the user the edge verified an access token of (User).
	AuthTOTPEnroll  AuthOp = "totp_enroll"  // User → TOTP
	AuthTOTPConfirm AuthOp = "totp_confirm" // User, TOTP → RecoveryCodes
	AuthTOTPDisable AuthOp = "totp_disable" // User, TOTP or RecoveryCode → nothing
	// AuthOIDCLink links the identity of an ID token to the user.
	AuthOIDCLink AuthOp = "oidc_link" // User, Provider, IDToken, Nonce → nothing
)

// AuthRequest is an edge's request to the core's account service. It carries a password in
// clear: the NATS connections of a fleet must be private (TLS beyond one machine), like its
// database's.
type AuthRequest struct {
	Op           AuthOp    `json:"op"`
	Email        string    `json:"email,omitempty"`
	Password     string    `json:"password,omitempty"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Since        time.Time `json:"since,omitzero"`
	// User is the user an edge verified the access token of (me, delete, the TOTP ops,
	// oidc_link).
	User string `json:"user,omitempty"`
	// TOTP is a code of the user's authenticator, RecoveryCode one of their recovery codes.
	TOTP         string `json:"totp,omitempty"`
	RecoveryCode string `json:"recovery_code,omitempty"`
	// Provider names a configured OpenID Connect provider, IDToken is an ID token it
	// signed, and Nonce (optional) the nonce the client sent in its authentication request.
	Provider string `json:"provider,omitempty"`
	IDToken  string `json:"id_token,omitempty"`
	Nonce    string `json:"nonce,omitempty"`
}

// Account is what a user's export says of the account itself: never its password hash.
type Account struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	CreatedAt time.Time `json:"created_at"`
}

// TOTPEnrollment is the answer to AuthTOTPEnroll: the new secret in base32 (RFC 4648, no
// padding) for typing, and the otpauth:// URI for a QR code.
type TOTPEnrollment struct {
	Secret     string `json:"secret"`
	OTPAuthURI string `json:"otpauth_uri"`
}

// RecoveryCodes is the answer to AuthTOTPConfirm, shown to the user once.
type RecoveryCodes struct {
	RecoveryCodes []string `json:"recovery_codes"`
}

// Tokens is the body of a successful signup, login or refresh (DESIGN §3).
type Tokens struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	// ExpiresIn is the access token's life in seconds.
	ExpiresIn int `json:"expires_in"`
}

// AuthResponse is the core's answer to an AuthRequest: a problem, or what the op asked for.
type AuthResponse struct {
	Problem     *problem.Problem `json:"problem,omitempty"`
	Tokens      *Tokens          `json:"tokens,omitempty"`
	JWKS        json.RawMessage  `json:"jwks,omitempty"`
	Revocations []Revocation     `json:"revocations,omitempty"`
	Account     *Account         `json:"account,omitempty"`
	TOTP        *TOTPEnrollment  `json:"totp,omitempty"`
	Recovery    *RecoveryCodes   `json:"recovery,omitempty"`
	// APIKeys is an APIKeySet, as the core publishes it on APIKeysSubject.
	APIKeys json.RawMessage `json:"api_keys,omitempty"`
}

// APIKeySet is the apps' live API keys, as every edge checks X-Api-Key against them.
type APIKeySet struct {
	// Changed is the latest creation or revocation among the stored keys, revoked ones
	// included. Sets come from every core, each on its own schedule: an edge keeps the set
	// it holds over one that changed earlier, so that a set read before a revocation cannot
	// undo it.
	Changed time.Time `json:"changed"`
	Keys    []APIKey  `json:"keys"`
}

// APIKey is one live key: its public id and the SHA-256 of its random bytes
// (auth.HashAPIKey), never the key.
type APIKey struct {
	ID   string `json:"id"`
	Hash []byte `json:"hash"`
}

// Revocation kinds.
const (
	RevokeSession = "session"
	RevokeSubject = "subject"
)

// Revocation ends the access tokens issued at or before At: those of a refresh-token
// family (Kind "session", ID the family, the tokens' sid) or of a user (Kind "subject", ID
// the user, the tokens' sub).
type Revocation struct {
	Kind string    `json:"kind"`
	ID   string    `json:"id"`
	At   time.Time `json:"at"`
}
