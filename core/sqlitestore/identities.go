package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/perchhq/perch/core"
)

// External identities (core.IdentityStore). Each change is one immediate transaction on the
// single writer, so the check that an identity or an email is free and the inserts that take
// it see no other writer in between. The statements are not prepared at Open: they run at
// logins through a provider, not on a hot path.

var _ core.IdentityStore = (*Store)(nil)

// UserByIdentity returns the id of the user the identity is linked to, or an error wrapping
// core.ErrNotFound.
func (s *Store) UserByIdentity(ctx context.Context, provider, subject string) (string, error) {
	var id string
	err := s.r.QueryRowContext(ctx, `SELECT user_id FROM identities WHERE provider = ? AND subject = ?`,
		provider, subject).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("identity %s/%s: %w", provider, subject, core.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("read identity: %w", err)
	}
	return id, nil
}

// linkedTo returns the user the identity is linked to in the transaction, "" for none.
func linkedTo(t *accountTx, provider, subject string) (string, error) {
	var id string
	err := t.tx.QueryRowContext(t.ctx, `SELECT user_id FROM identities WHERE provider = ? AND subject = ?`,
		provider, subject).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return id, err
}

func insertIdentity(t *accountTx, id core.Identity, userID string) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO identities (provider, subject, user_id, created_at) VALUES (?, ?, ?, ?)`,
		id.Provider, id.Subject, userID, micros(id.Created))
	return err
}

// CreateUserWithIdentity inserts u and links the identity to it, or fails with an error
// wrapping core.ErrExists when the id, the email or the identity is taken.
func (s *Store) CreateUserWithIdentity(ctx context.Context, u core.User, id core.Identity) error {
	return s.writeTx(ctx, "create user with identity", func(t *accountTx) error {
		linked, err := linkedTo(t, id.Provider, id.Subject)
		if err != nil {
			return err
		}
		if linked != "" {
			if linked == u.ID {
				return nil // u and its identity, stored already
			}
			return fmt.Errorf("identity %s/%s: %w", id.Provider, id.Subject, core.ErrExists)
		}
		n, err := t.exec(s.as.w.insertUser, u.ID, u.Email, u.PasswordHash, micros(u.CreatedAt), micros(u.UpdatedAt))
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("user %s <%s>: %w", u.ID, u.Email, core.ErrExists)
		}
		return insertIdentity(t, id, u.ID)
	})
}

// LinkIdentity links the identity to an existing user, or fails with an error wrapping
// core.ErrNotFound (no such user) or core.ErrExists (linked to another user).
func (s *Store) LinkIdentity(ctx context.Context, id core.Identity) error {
	return s.writeTx(ctx, "link identity", func(t *accountTx) error {
		if _, err := scanUser(t.row(s.as.w.userByID, id.UserID)); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("user %s: %w", id.UserID, core.ErrNotFound)
		} else if err != nil {
			return err
		}
		linked, err := linkedTo(t, id.Provider, id.Subject)
		switch {
		case err != nil:
			return err
		case linked == id.UserID:
			return nil
		case linked != "":
			return fmt.Errorf("identity %s/%s: %w", id.Provider, id.Subject, core.ErrExists)
		}
		return insertIdentity(t, id, id.UserID)
	})
}
