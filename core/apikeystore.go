package core

import (
	"context"
	"time"
	"unicode"
	"unicode/utf8"
)

// APIKeyStore is what the apps' API keys (X-Api-Key, the calling app) need of a database:
// `perch keys` creates, lists and revokes them, talking to the database only, and every core
// reads them to publish the live keys' hashes to the edges (apikeys.go). Every method is safe
// for concurrent use; every change is one transaction.
//
// A key is never stored, only its SHA-256 (auth.NewAPIKey): the key is shown once, when it is
// made, and whoever reads the table learns nothing that would pass an edge's check. Revoked
// keys stay, so that a listing says when each was revoked; none is ever deleted.
//
// Times come back in UTC to the microsecond.
type APIKeyStore interface {
	// CreateAPIKey stores a new key; ErrExists when another key has its id or hash (finding
	// k itself, as a retry after a lost commit does, is success).
	CreateAPIKey(ctx context.Context, k APIKey) error
	// RevokeAPIKey marks the key revoked at now and returns it as stored afterwards. A key
	// revoked already keeps its first time. ErrNotFound when no key has the id.
	RevokeAPIKey(ctx context.Context, id string, now time.Time) (APIKey, error)
	// APIKeys returns every stored key, revoked ones included, oldest Created first (ties by
	// ID).
	APIKeys(ctx context.Context) ([]APIKey, error)
}

// APIKey is an app's API key as the store keeps it.
type APIKey struct {
	ID      string    // auth.NewAPIKeyID: "ak_" and a ULID; public, shown in listings and logs
	Name    string    // the operator's label for the app (ValidAPIKeyName)
	Hash    []byte    // auth.HashAPIKey of the key: 32 bytes
	Created time.Time //
	Revoked time.Time // zero while the key is live; set by RevokeAPIKey, ignored by CreateAPIKey
}

// Live reports whether the key is not revoked.
func (k APIKey) Live() bool { return k.Revoked.IsZero() }

// MaxAPIKeyName is the longest name of an API key, in bytes.
const MaxAPIKeyName = 100

// ValidAPIKeyName reports whether name may label an API key: 1 to MaxAPIKeyName bytes of
// UTF-8 without control characters, so that a listing prints it on one line as it is.
func ValidAPIKeyName(name string) bool {
	if name == "" || len(name) > MaxAPIKeyName || !utf8.ValidString(name) {
		return false
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}
