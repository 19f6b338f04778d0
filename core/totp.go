package core

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/perchhq/perch/internal/auth"
	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

// The second factor of the account service: TOTP (RFC 6238) per user, with recovery codes
// (internal/auth has the algorithms). A user enrolls (a secret stored as pending), confirms
// with a code of it (TOTP on, ten recovery codes shown once), and from then on logs in with a
// code, or with a recovery code; a code or a recovery code turns it off again.
//
// Every code is accepted once, whichever core checks it: the store records the step of the
// last TOTP code accepted and advances it only forward (AdvanceTOTPStep), and deletes a
// recovery code's hash in the transaction that accepts it (UseRecoveryCode). A wrong code
// counts as a failed login of the account (NoteLoginFailure), so that the throttle that bounds
// password guesses (LoginAttempts in LoginWindow) bounds code guesses too: 5 guesses in 15
// minutes at 3 in a million each.

// SecretKeyLen is the length of AccountsConfig.SecretKey: an AES-256 key.
const SecretKeyLen = 32

// RecoveryCodeCount is how many recovery codes a confirmation gives.
const RecoveryCodeCount = 10

// sealer encrypts TOTP secrets at rest: AES-256-GCM under the core's secret key, with the
// user's id in the additional data, so that a sealed secret copied to another user's row does
// not open. A sealed secret is a version byte, the 12-byte random nonce, then the ciphertext
// and its tag. Random nonces are safe here: a key seals one secret per enrollment, far below
// GCM's bound of 2^32 messages per key.
type sealer struct{ aead cipher.AEAD }

const (
	sealVersion = 1
	sealAD      = "perch totp secret v1\x00"
)

var errUnsealed = errors.New("sealed TOTP secret does not open")

// newSealer returns the sealer of key, or nil for no key (TOTP is then off).
func newSealer(key []byte) (*sealer, error) {
	if len(key) == 0 {
		return nil, nil
	}
	if len(key) != SecretKeyLen {
		return nil, fmt.Errorf("secret key of %d bytes, want %d", len(key), SecretKeyLen)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

func (s *sealer) seal(userID string, secret []byte) []byte {
	out := make([]byte, 1+s.aead.NonceSize(), 1+s.aead.NonceSize()+len(secret)+s.aead.Overhead())
	out[0] = sealVersion
	rand.Read(out[1:])
	return s.aead.Seal(out, out[1:], secret, []byte(sealAD+userID))
}

func (s *sealer) open(userID string, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < 1+n+s.aead.Overhead() || sealed[0] != sealVersion {
		return nil, errUnsealed
	}
	secret, err := s.aead.Open(nil, sealed[1:1+n], sealed[1+n:], []byte(sealAD+userID))
	if err != nil {
		return nil, errUnsealed
	}
	return secret, nil
}

var (
	errInvalidTOTP  = problem.New(problem.InvalidTOTP, "the code is wrong or was used already")
	errTOTPRequired = problem.New(problem.TOTPRequired,
		`this account has a second factor: log in again with "totp" (a code of the authenticator app) or "recovery_code"`)
	errTOTPOff = problem.New(problem.Unavailable,
		"two-factor authentication is off on this server: the core has no secret key (perch core --secret-key-file)")
	errTOTPUnreadable = problem.New(problem.Unavailable, "the second factor cannot be checked now")
)

// secondFactor is what a login or a disable brings to prove the second factor: a TOTP code,
// or a recovery code.
type secondFactor struct{ totp, recovery string }

func (f secondFactor) empty() bool { return f.totp == "" && f.recovery == "" }

// user returns the user an edge's TOTP request is for.
func (a *accounts) user(ctx context.Context, id string) (User, error) {
	if id == "" {
		return User{}, problem.New(problem.Unauthorized, "this needs an access token")
	}
	u, err := a.store.UserByID(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return User{}, problem.New(problem.NotFound, "the account of this access token does not exist")
	}
	return u, err
}

// throttled answers too_many_attempts when the account has had its share of failures.
func (a *accounts) throttled(ctx context.Context, key string) error {
	failures, err := a.store.LoginFailures(ctx, key, a.now().UTC(), a.cfg.LoginWindow)
	if err != nil {
		return err
	}
	if failures >= a.cfg.LoginAttempts {
		return problem.New(problem.TooManyAttempts, "too many failed logins for this account; try again later")
	}
	return nil
}

// codeFailed counts a wrong code as a failed login of the account and returns invalid_totp.
func (a *accounts) codeFailed(ctx context.Context, key string) error {
	if _, err := a.store.NoteLoginFailure(ctx, key, a.now().UTC(), a.cfg.LoginWindow); err != nil {
		return err
	}
	return errInvalidTOTP
}

// totpEnroll makes a secret, stores it as the user's pending one (replacing one pending), and
// returns it for the authenticator.
func (a *accounts) totpEnroll(ctx context.Context, userID string) (*wire.TOTPEnrollment, error) {
	if a.sealer == nil {
		return nil, errTOTPOff
	}
	u, err := a.user(ctx, userID)
	if err != nil {
		return nil, err
	}
	secret := auth.GenerateTOTPSecret()
	// The account is only the label the authenticator shows; a colon would end the issuer
	// prefix of the URI's label, so none is kept.
	uri, err := auth.TOTPURI(a.cfg.TOTPIssuer, strings.ReplaceAll(u.Email, ":", "."), secret)
	if err != nil {
		return nil, err
	}
	switch err := a.store.SetPendingTOTP(ctx, u.ID, a.sealer.seal(u.ID, secret), a.now().UTC()); {
	case errors.Is(err, ErrExists):
		return nil, problem.New(problem.AlreadyExists, "two-factor authentication is on already; turn it off first")
	case err != nil:
		return nil, err
	}
	a.log.Info("TOTP enrollment started", "user", u.ID)
	return &wire.TOTPEnrollment{Secret: base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(secret), OTPAuthURI: uri}, nil
}

// totpConfirm turns TOTP on when code is a code of the pending secret, and returns the
// recovery codes, which are not stored in clear and so never shown again.
func (a *accounts) totpConfirm(ctx context.Context, userID, code string) (*wire.RecoveryCodes, error) {
	if a.sealer == nil {
		return nil, errTOTPOff
	}
	u, err := a.user(ctx, userID)
	if err != nil {
		return nil, err
	}
	if err := a.throttled(ctx, u.Email); err != nil {
		return nil, err
	}
	st, err := a.store.TOTP(ctx, u.ID)
	if err != nil {
		return nil, err
	}
	switch {
	case st.On():
		return nil, problem.New(problem.AlreadyExists, "two-factor authentication is on already")
	case st.Pending == nil:
		return nil, problem.New(problem.NotFound, "no enrollment to confirm: start one with POST /v1/me/totp")
	}
	secret, err := a.sealer.open(u.ID, st.Pending)
	if err != nil {
		a.log.Error("a pending TOTP secret does not open with the secret key", "user", u.ID)
		return nil, errTOTPUnreadable
	}
	step, ok := auth.VerifyTOTPAfter(secret, code, a.now(), math.MinInt64)
	if !ok {
		return nil, a.codeFailed(ctx, u.Email)
	}
	codes, hashes, err := auth.NewRecoveryCodes(RecoveryCodeCount, u.ID)
	if err != nil {
		return nil, err
	}
	ok, err = a.store.ConfirmTOTP(ctx, u.ID, st.Pending, hashes, step, a.now().UTC())
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, problem.New(problem.AlreadyExists, "the enrollment changed meanwhile (another one started, or it was confirmed); start again")
	}
	a.log.Info("TOTP turned on", "user", u.ID)
	return &wire.RecoveryCodes{RecoveryCodes: codes}, nil
}

// totpDisable turns TOTP off when f is a valid code (which is used up like a login's).
func (a *accounts) totpDisable(ctx context.Context, userID string, f secondFactor) error {
	if f.empty() {
		return problem.New(problem.BadRequest, `turning two-factor authentication off needs "code": a code of the authenticator or a recovery code`)
	}
	u, err := a.user(ctx, userID)
	if err != nil {
		return err
	}
	if err := a.throttled(ctx, u.Email); err != nil {
		return err
	}
	st, err := a.store.TOTP(ctx, u.ID)
	if err != nil {
		return err
	}
	if !st.On() {
		return problem.New(problem.NotFound, "two-factor authentication is not on")
	}
	if err := a.checkCode(ctx, u, st, f); err != nil {
		return err
	}
	if err := a.store.DisableTOTP(ctx, u.ID); err != nil {
		return err
	}
	a.log.Info("TOTP turned off", "user", u.ID)
	return nil
}

// secondFactor is the part of a login after the password matched: nothing for a user
// without TOTP, else a valid code of f.
func (a *accounts) secondFactor(ctx context.Context, u User, key string, f secondFactor) error {
	st, err := a.store.TOTP(ctx, u.ID)
	if err != nil || !st.On() {
		return err
	}
	if f.empty() {
		return errTOTPRequired
	}
	u.Email = key
	return a.checkCode(ctx, u, st, f)
}

// checkCode accepts f once for a user whose TOTP is on (st): a TOTP code of a step after the
// last one used, which the store then records, or a recovery code, which the store then
// deletes. Anything else counts as a failed login of u.Email.
func (a *accounts) checkCode(ctx context.Context, u User, st TOTPState, f secondFactor) error {
	if f.totp != "" && f.recovery != "" {
		return problem.New(problem.BadRequest, `give "totp" or "recovery_code", not both`)
	}
	if f.recovery != "" {
		hash, err := auth.HashRecoveryCode(u.ID, f.recovery)
		if err != nil {
			return a.codeFailed(ctx, u.Email)
		}
		ok, err := a.store.UseRecoveryCode(ctx, u.ID, hash)
		if err != nil {
			return err
		}
		if !ok {
			return a.codeFailed(ctx, u.Email)
		}
		a.log.Info("recovery code used", "user", u.ID, "left", max(len(st.RecoveryCodes)-1, 0))
		return nil
	}
	if a.sealer == nil {
		a.log.Error("a user has TOTP on, but this core has no secret key to check codes with", "user", u.ID)
		return errTOTPUnreadable
	}
	secret, err := a.sealer.open(u.ID, st.Secret)
	if err != nil {
		a.log.Error("a TOTP secret does not open with the secret key", "user", u.ID)
		return errTOTPUnreadable
	}
	step, ok := auth.VerifyTOTPAfter(secret, f.totp, a.now(), st.LastStep)
	if !ok {
		return a.codeFailed(ctx, u.Email)
	}
	// Another core may have accepted the same code meanwhile: the store's conditional
	// update lets one of them have it.
	if ok, err = a.store.AdvanceTOTPStep(ctx, u.ID, step); err != nil {
		return err
	} else if !ok {
		return a.codeFailed(ctx, u.Email)
	}
	return nil
}
