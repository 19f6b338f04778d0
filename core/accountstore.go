package core

import (
	"context"
	"errors"
	"time"
)

// ErrExists is returned by AccountStore.CreateUser when the email belongs to a user already.
var ErrExists = errors.New("already exists")

// AccountStore is what the core's account service (accounts.go) needs of a database: users,
// the signing keys of access tokens, refresh tokens in families, the revocations the edges
// must hear of, and the counters that throttle logins. Every method is safe for concurrent
// use; every change is one transaction (SERIALIZABLE where the backend has levels), so that
// stateless core workers sharing the database cannot break the rules below by racing.
//
// Secrets are never stored in clear: a user's password is kept as its PHC string
// (auth.HashPassword), a refresh token as its SHA-256 (auth.HashRefreshToken). A signing key's
// private part is stored as given (auth.Key.MarshalPrivate): only the core reads the database.
//
// Emails are compared as given, byte for byte; the account service normalises them first.
// Times come back in UTC to the microsecond.
type AccountStore interface {
	// CreateUser stores a new user; ErrExists when another user has the email (or the id).
	CreateUser(ctx context.Context, u User) error
	// UserByEmail returns the user with the email, ErrNotFound when there is none.
	UserByEmail(ctx context.Context, email string) (User, error)
	// UserByID returns the user with the id, ErrNotFound when there is none.
	UserByID(ctx context.Context, id string) (User, error)
	// SetPasswordHash replaces the user's password hash and sets UpdatedAt to now;
	// ErrNotFound when there is no such user.
	SetPasswordHash(ctx context.Context, id, hash string, now time.Time) error

	// NoteLoginFailure counts a failed login for key (an email, whether or not an account
	// has it) and returns the failures counted in the window that now falls in. A window
	// starts with the first failure after the previous window ended (window after its start)
	// and counts every failure until then: a fixed window per key, not a sliding one.
	NoteLoginFailure(ctx context.Context, key string, now time.Time, window time.Duration) (int, error)
	// LoginFailures returns the failures of key's window if now still falls in it, else 0.
	LoginFailures(ctx context.Context, key string, now time.Time, window time.Duration) (int, error)
	// ClearLoginFailures forgets key's failures (after a successful login).
	ClearLoginFailures(ctx context.Context, key string) error

	// SigningKeys returns the stored signing keys, oldest Created first (ties by ID).
	SigningKeys(ctx context.Context) ([]StoredKey, error)
	// UpdateSigningKeys reads the stored keys, calls fn with them (oldest first), and, when
	// fn reports a change, replaces them with what fn returned, all in one transaction: two
	// cores rotating at once cannot both add a key (one of them is retried, and fn then sees
	// the other's key). It returns the keys stored when it ends. fn may be called more than
	// once and must not keep its argument.
	UpdateSigningKeys(ctx context.Context, fn func(current []StoredKey) (next []StoredKey, changed bool, err error)) ([]StoredKey, error)

	// CreateRefreshToken stores a refresh token that starts a family (signup, login).
	CreateRefreshToken(ctx context.Context, t RefreshToken) error
	// UseRefreshToken is one refresh: it finds the token with the hash and, in one
	// transaction:
	//   - RefreshInvalid when there is none, it expired (ExpiresAt or FamilyExpiresAt at or
	//     before now), or its family was revoked; nothing changes;
	//   - RefreshReused when it was used before: the family is revoked now (a Revocation of
	//     kind "session" with the family's id is recorded) and next is not stored;
	//   - RefreshRotated otherwise: the token is marked used (at most one concurrent call can
	//     do so) and next is stored as its successor: in the presented token's family, for
	//     its user, with its FamilyExpiresAt (next's own Family, UserID and FamilyExpiresAt
	//     are ignored: the caller does not know them before the lookup).
	// Token is the stored token that was presented (zero when RefreshInvalid because there
	// was none).
	UseRefreshToken(ctx context.Context, hash []byte, next RefreshToken, now time.Time) (RefreshUse, error)
	// RevokeRefreshFamily revokes the family of the token with the hash (logout) and records
	// a Revocation of kind "session" at now, and returns the token. A family revoked already
	// stays revoked at its first time and records nothing more. ErrNotFound when no token
	// has the hash.
	RevokeRefreshFamily(ctx context.Context, hash []byte, now time.Time) (RefreshToken, error)
	// RevokeUser revokes every family of the user and records a Revocation of kind
	// "subject" with the user's id at now (a password change, an account deleted).
	RevokeUser(ctx context.Context, userID string, now time.Time) error
	// DeleteUser deletes the user, their refresh tokens and identities, revokes their families, and
	// records a Revocation of kind "subject" with the user's id at now, in one transaction
	// (DELETE /v1/me; the user's documents are deleted through the write path before).
	// ErrNotFound when there is no such user.
	DeleteUser(ctx context.Context, id string, now time.Time) error
	// Revocations returns the revocations recorded at or after since, oldest first.
	Revocations(ctx context.Context, since time.Time) ([]Revocation, error)
	// ExpireAccounts forgets refresh tokens whose family expired before the time, the
	// revocations recorded before it, and login-failure windows that started before it, and
	// returns how many rows it removed.
	ExpireAccounts(ctx context.Context, before time.Time) (int64, error)
}

// User is one account.
type User struct {
	ID           string // a ULID
	Email        string // normalised by the account service
	PasswordHash string // a PHC string (auth.HashPassword)
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// StoredKey is a signing key as the store keeps it.
type StoredKey struct {
	ID      string    // the key's kid (auth.Key.ID)
	Private []byte    // auth.Key.MarshalPrivate
	Created time.Time // auth.Key.Created, for the order
}

// RefreshToken is a refresh token as the store keeps it.
type RefreshToken struct {
	Hash            []byte // auth.HashRefreshToken of the token
	Family          string // auth.NewFamilyID, one per login
	UserID          string
	IssuedAt        time.Time
	ExpiresAt       time.Time // of this token
	FamilyExpiresAt time.Time // of every token of the family
	// Used and Revoked are the times the token was used and its family revoked; zero when
	// not. Set by the store, ignored by CreateRefreshToken and UseRefreshToken's next.
	Used, Revoked time.Time
}

// RefreshResult is what UseRefreshToken did.
type RefreshResult int

const (
	RefreshInvalid RefreshResult = iota // unknown, expired or revoked: nothing changed
	RefreshRotated                      // marked used; its successor stored
	RefreshReused                       // used before: the family is now revoked
)

// RefreshUse is the result of UseRefreshToken.
type RefreshUse struct {
	Result RefreshResult
	Token  RefreshToken // the token presented, as stored before the call
}

// Revocation kinds, as auth.VerifiedCache takes them.
const (
	RevokeSession = "session" // the access tokens of a refresh-token family (claim sid)
	RevokeSubject = "subject" // every access token of a user (claim sub)
)

// Revocation is the end of access tokens issued at or before At: those of the family (kind
// "session") or of the user (kind "subject") named by ID.
type Revocation struct {
	Kind string
	ID   string
	At   time.Time
}
