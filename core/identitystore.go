package core

import (
	"context"
	"time"
)

// IdentityStore is what the account service's external identities (oidc.go) need of a
// database: which user an identity of an OpenID Connect provider (its provider name and the
// provider's sub) is linked to. An identity is linked to at most one user, for good: a
// provider never gives one sub to two people. Deleting a user (DeleteUser) deletes their
// identities in the same transaction.
type IdentityStore interface {
	// UserByIdentity returns the id of the user the identity is linked to, ErrNotFound when
	// it is linked to none.
	UserByIdentity(ctx context.Context, provider, subject string) (string, error)
	// CreateUserWithIdentity stores a new user and links the identity to it, in one
	// transaction: ErrExists, and nothing stored, when another user has u's id or email or
	// the identity is linked already. Finding u and the identity stored already (a retry
	// after a lost commit) is success. id.UserID is ignored: the identity is u's.
	CreateUserWithIdentity(ctx context.Context, u User, id Identity) error
	// LinkIdentity links the identity to an existing user: ErrNotFound when there is no
	// such user, ErrExists when the identity is linked to another user (linked to this one
	// already is success).
	LinkIdentity(ctx context.Context, id Identity) error
}

// Identity is a user's account at an OpenID Connect provider.
type Identity struct {
	Provider string // the name of the provider in AccountsConfig.OIDC
	Subject  string // the provider's sub claim: at most 255 bytes
	UserID   string
	Created  time.Time
}
