package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/perchhq/perch/core"
)

// The second factor (core.TOTPStore). Each change is one immediate transaction on the single
// writer, so the conditional ones (confirm, advance the step, use a recovery code) read and
// write with no other writer in between. The statements are not prepared at Open: they run at
// enrollment and at the logins of users who have TOTP on, not on a hot path.

var _ core.TOTPStore = (*Store)(nil)

// TOTP returns the user's second factor, the zero state when there is none.
func (s *Store) TOTP(ctx context.Context, userID string) (core.TOTPState, error) {
	st, err := readTOTP(ctx, s.r, userID)
	if err != nil {
		return core.TOTPState{}, fmt.Errorf("read totp: %w", err)
	}
	return st, nil
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func readTOTP(ctx context.Context, q querier, userID string) (core.TOTPState, error) {
	var (
		st      core.TOTPState
		enabled sql.NullInt64
	)
	err := q.QueryRowContext(ctx, `SELECT secret, pending, last_step, enabled_at FROM totp WHERE user_id = ?`, userID).
		Scan(&st.Secret, &st.Pending, &st.LastStep, &enabled)
	if errors.Is(err, sql.ErrNoRows) {
		return core.TOTPState{}, nil
	}
	if err != nil {
		return core.TOTPState{}, err
	}
	st.Enabled = nullMicros(enabled)
	rows, err := q.QueryContext(ctx, `SELECT hash FROM recovery_codes WHERE user_id = ? ORDER BY hash`, userID)
	if err != nil {
		return core.TOTPState{}, err
	}
	for rows.Next() {
		var h []byte
		if err := rows.Scan(&h); err != nil {
			return core.TOTPState{}, errors.Join(err, rows.Close())
		}
		st.RecoveryCodes = append(st.RecoveryCodes, h)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return core.TOTPState{}, err
	}
	return st, nil
}

// SetPendingTOTP stores the pending secret unless TOTP is on.
func (s *Store) SetPendingTOTP(ctx context.Context, userID string, secret []byte, now time.Time) error {
	if len(secret) == 0 {
		return errors.New("set pending totp: empty secret")
	}
	return s.writeTx(ctx, "set pending totp", func(t *accountTx) error {
		if _, err := scanUser(t.row(s.as.w.userByID, userID)); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("user %s: %w", userID, core.ErrNotFound)
		} else if err != nil {
			return err
		}
		res, err := t.tx.ExecContext(ctx, `INSERT INTO totp (user_id, pending, last_step, updated_at) VALUES (?1, ?2, 0, ?3)
			ON CONFLICT (user_id) DO UPDATE SET pending = ?2, updated_at = ?3 WHERE totp.secret IS NULL`,
			userID, secret, micros(now))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return fmt.Errorf("totp of user %s is on: %w", userID, core.ErrExists)
		}
		return nil
	})
}

// ConfirmTOTP turns TOTP on with the pending secret if it is still the one pending.
func (s *Store) ConfirmTOTP(ctx context.Context, userID string, pending []byte, hashes [][]byte, step int64, now time.Time) (bool, error) {
	var ok bool
	err := s.writeTx(ctx, "confirm totp", func(t *accountTx) error {
		ok = false
		var have []byte
		err := t.tx.QueryRowContext(ctx, `SELECT pending FROM totp WHERE user_id = ? AND secret IS NULL`, userID).Scan(&have)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(pending) == 0 || !bytes.Equal(have, pending) {
			return nil
		}
		if _, err := t.tx.ExecContext(ctx, `UPDATE totp SET secret = pending, pending = NULL, last_step = ?, enabled_at = ?,
			updated_at = ? WHERE user_id = ?`, step, micros(now), micros(now), userID); err != nil {
			return err
		}
		if _, err := t.tx.ExecContext(ctx, `DELETE FROM recovery_codes WHERE user_id = ?`, userID); err != nil {
			return err
		}
		for _, h := range hashes {
			if _, err := t.tx.ExecContext(ctx, `INSERT INTO recovery_codes (user_id, hash) VALUES (?, ?) ON CONFLICT DO NOTHING`,
				userID, h); err != nil {
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
	var ok bool
	err := s.writeTx(ctx, "advance totp step", func(t *accountTx) error {
		res, err := t.tx.ExecContext(ctx, `UPDATE totp SET last_step = ? WHERE user_id = ? AND secret IS NOT NULL AND last_step < ?`,
			step, userID, step)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		ok = n == 1
		return err
	})
	return ok, err
}

// UseRecoveryCode deletes the code's hash if TOTP is on and the hash is stored.
func (s *Store) UseRecoveryCode(ctx context.Context, userID string, hash []byte) (bool, error) {
	var ok bool
	err := s.writeTx(ctx, "use recovery code", func(t *accountTx) error {
		res, err := t.tx.ExecContext(ctx, `DELETE FROM recovery_codes WHERE user_id = ?1 AND hash = ?2
			AND EXISTS (SELECT 1 FROM totp WHERE user_id = ?1 AND secret IS NOT NULL)`, userID, hash)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		ok = n == 1
		return err
	})
	return ok, err
}

// DisableTOTP deletes the user's TOTP row and recovery codes.
func (s *Store) DisableTOTP(ctx context.Context, userID string) error {
	return s.writeTx(ctx, "disable totp", func(t *accountTx) error {
		if _, err := t.tx.ExecContext(ctx, `DELETE FROM recovery_codes WHERE user_id = ?`, userID); err != nil {
			return err
		}
		_, err := t.tx.ExecContext(ctx, `DELETE FROM totp WHERE user_id = ?`, userID)
		return err
	})
}
