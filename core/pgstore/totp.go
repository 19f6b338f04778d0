package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/perchhq/perch/core"
)

// The second factor (core.TOTPStore), in SERIALIZABLE transactions through tx (runTx and
// retry, accounts.go). The conditional changes are single statements whose WHERE holds the
// condition (a later step, a stored hash, a secret still pending), so that of two concurrent
// calls one changes the row and the other finds it changed: on PostgreSQL the second waits for
// the first's row lock and then matches nothing, or fails to serialize and is retried on what
// the first committed.
//
// After an ambiguous commit retry runs a transaction again, and each is written so that the
// retry gives the answer of the first attempt where it can tell: ConfirmTOTP recognises its
// own confirmation by the secret it installed. AdvanceTOTPStep and UseRecoveryCode cannot tell
// their own committed change from a rival's and answer false then: the code is refused and
// the user types the next one, which is the safe failure.

var _ core.TOTPStore = (*Store)(nil)

// TOTP returns the user's second factor, the zero state when there is none.
func (s *Store) TOTP(ctx context.Context, userID string) (core.TOTPState, error) {
	if err := s.checkOpen(); err != nil {
		return core.TOTPState{}, err
	}
	if !storableText(userID) {
		return core.TOTPState{}, nil
	}
	var st core.TOTPState
	// One read-only transaction, so that the row and the recovery codes agree.
	err := s.retry(ctx, "read totp", func() error {
		return s.runTx(ctx, serializableRO, func(tx pgx.Tx) error {
			var err error
			st, err = readTOTP(ctx, tx, userID)
			return err
		})
	})
	if err != nil {
		return core.TOTPState{}, err
	}
	return st, nil
}

func readTOTP(ctx context.Context, tx pgx.Tx, userID string) (core.TOTPState, error) {
	var (
		st      core.TOTPState
		enabled *time.Time
	)
	err := tx.QueryRow(ctx, `SELECT secret, pending, last_step, enabled_at FROM totp WHERE user_id = $1`, userID).
		Scan(&st.Secret, &st.Pending, &st.LastStep, &enabled)
	if errors.Is(err, pgx.ErrNoRows) {
		return core.TOTPState{}, nil
	}
	if err != nil {
		return core.TOTPState{}, err
	}
	if enabled != nil {
		st.Enabled = enabled.UTC()
	}
	rows, err := tx.Query(ctx, `SELECT hash FROM recovery_codes WHERE user_id = $1 ORDER BY hash`, userID)
	if err != nil {
		return core.TOTPState{}, err
	}
	if st.RecoveryCodes, err = pgx.CollectRows(rows, pgx.RowTo[[]byte]); err != nil {
		return core.TOTPState{}, err
	}
	return st, nil
}

// SetPendingTOTP stores the pending secret unless TOTP is on.
func (s *Store) SetPendingTOTP(ctx context.Context, userID string, secret []byte, now time.Time) error {
	if len(secret) == 0 {
		return errors.New("set pending totp: empty secret")
	}
	if !storableText(userID) {
		return fmt.Errorf("user %s: %w", userID, core.ErrNotFound)
	}
	at := micro(now)
	return s.tx(ctx, "set pending totp", func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM users WHERE id = $1`, userID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return permanentf(fmt.Errorf("user %s: %w", userID, core.ErrNotFound))
		}
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO totp (user_id, pending, last_step, updated_at) VALUES ($1, $2, 0, $3)
			ON CONFLICT (user_id) DO UPDATE SET pending = excluded.pending, updated_at = excluded.updated_at
			WHERE totp.secret IS NULL`, userID, secret, at)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return permanentf(fmt.Errorf("totp of user %s is on: %w", userID, core.ErrExists))
		}
		return nil
	})
}

// ConfirmTOTP turns TOTP on with the pending secret if it is still the one pending. On a retry
// after an ambiguous commit, finding pending in force with this now as its enabled_at is the
// first attempt's confirmation.
func (s *Store) ConfirmTOTP(ctx context.Context, userID string, pending []byte, hashes [][]byte, step int64, now time.Time) (bool, error) {
	if len(pending) == 0 || !storableText(userID) {
		return false, s.checkOpen()
	}
	at := micro(now)
	var ok bool
	err := s.tx(ctx, "confirm totp", func(tx pgx.Tx) error {
		ok = false
		var (
			secret, have []byte
			enabled      *time.Time
		)
		err := tx.QueryRow(ctx, `SELECT secret, pending, enabled_at FROM totp WHERE user_id = $1 FOR UPDATE`, userID).
			Scan(&secret, &have, &enabled)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if secret != nil {
			ok = bytes.Equal(secret, pending) && enabled != nil && enabled.Equal(at)
			return nil
		}
		if !bytes.Equal(have, pending) {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE totp SET secret = pending, pending = NULL, last_step = $2, enabled_at = $3,
			updated_at = $3 WHERE user_id = $1`, userID, step, at); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM recovery_codes WHERE user_id = $1`, userID); err != nil {
			return err
		}
		if len(hashes) > 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO recovery_codes (user_id, hash)
				SELECT $1, h FROM unnest($2::BYTEA[]) AS h ON CONFLICT DO NOTHING`, userID, hashes); err != nil {
				return err
			}
		}
		ok = true
		return nil
	})
	return ok, err
}

// AdvanceTOTPStep records step if it is after the last one, in one conditional update.
func (s *Store) AdvanceTOTPStep(ctx context.Context, userID string, step int64) (bool, error) {
	if !storableText(userID) {
		return false, s.checkOpen()
	}
	var ok bool
	err := s.tx(ctx, "advance totp step", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE totp SET last_step = $2 WHERE user_id = $1 AND secret IS NOT NULL AND last_step < $2`,
			userID, step)
		ok = err == nil && tag.RowsAffected() == 1
		return err
	})
	return ok, err
}

// UseRecoveryCode deletes the code's hash if TOTP is on and the hash is stored.
func (s *Store) UseRecoveryCode(ctx context.Context, userID string, hash []byte) (bool, error) {
	if !storableText(userID) {
		return false, s.checkOpen()
	}
	var ok bool
	err := s.tx(ctx, "use recovery code", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM recovery_codes WHERE user_id = $1 AND hash = $2
			AND EXISTS (SELECT 1 FROM totp WHERE user_id = $1 AND secret IS NOT NULL)`, userID, hash)
		ok = err == nil && tag.RowsAffected() == 1
		return err
	})
	return ok, err
}

// DisableTOTP deletes the user's TOTP row and recovery codes.
func (s *Store) DisableTOTP(ctx context.Context, userID string) error {
	if !storableText(userID) {
		return s.checkOpen()
	}
	return s.tx(ctx, "disable totp", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM recovery_codes WHERE user_id = $1`, userID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM totp WHERE user_id = $1`, userID)
		return err
	})
}
