package core

import (
	"context"
	"time"
)

// TOTPStore is what the account service's second factor (totp.go) needs of a database: per
// user, a TOTP secret pending confirmation or in force, the step of the last code accepted,
// and the hashes of the unused recovery codes. Every method is one transaction, and the
// decisions two cores could race on (a code used twice, a recovery code used twice, a
// confirmation of a secret that was replaced meanwhile) are conditional writes in it, so that
// at most one of two concurrent calls wins.
//
// Secrets come to the store encrypted (the account service seals them with its secret key
// and the user id) and recovery codes as their hashes (auth.NewRecoveryCodes): the store keeps
// the bytes it is given and compares them byte for byte.
type TOTPStore interface {
	// TOTP returns the user's second factor as stored: the zero TOTPState when the user has
	// none (or there is no such user).
	TOTP(ctx context.Context, userID string) (TOTPState, error)
	// SetPendingTOTP stores secret as the user's pending secret, replacing a pending one;
	// ErrExists when TOTP is on for the user (it must be turned off first), ErrNotFound
	// when there is no such user.
	SetPendingTOTP(ctx context.Context, userID string, secret []byte, now time.Time) error
	// ConfirmTOTP turns TOTP on with the pending secret, if it is still pending: the one
	// stored equals pending and TOTP is not on. It then makes it the secret in force, stores
	// hashes as the user's recovery codes (replacing any) and step as the last step used,
	// and reports true. It reports false, changing nothing, otherwise (a second enrollment
	// replaced the secret, or another confirmation won).
	ConfirmTOTP(ctx context.Context, userID string, pending []byte, hashes [][]byte, step int64, now time.Time) (bool, error)
	// AdvanceTOTPStep records step as the last step used if TOTP is on and step is after the
	// one recorded, and reports whether it did: of concurrent calls with one step, exactly
	// one reports true, so a code is accepted once.
	AdvanceTOTPStep(ctx context.Context, userID string, step int64) (bool, error)
	// UseRecoveryCode deletes the user's recovery code with the hash, if TOTP is on and the
	// code is stored, and reports whether it did: of concurrent calls with one code, exactly
	// one reports true.
	UseRecoveryCode(ctx context.Context, userID string, hash []byte) (bool, error)
	// DisableTOTP forgets the user's second factor: the secrets, the step and the recovery
	// codes. Nothing to forget is not an error.
	DisableTOTP(ctx context.Context, userID string) error
}

// TOTPState is a user's second factor as the store keeps it.
type TOTPState struct {
	// Secret is the secret in force (sealed), nil while TOTP is off.
	Secret []byte
	// Pending is the secret of an enrollment not confirmed yet (sealed), or nil.
	Pending []byte
	// LastStep is the RFC 6238 time step of the last code accepted (auth.VerifyTOTPAfter's
	// last); meaningful only while TOTP is on.
	LastStep int64
	// RecoveryCodes are the hashes of the unused recovery codes, in no particular order.
	RecoveryCodes [][]byte
	// Enabled is when TOTP was turned on; zero while it is off.
	Enabled time.Time
}

// On reports whether TOTP is on: logins need a code.
func (s TOTPState) On() bool { return s.Secret != nil }
