package pgstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/perchhq/perch/core"
)

// External identities (core.IdentityStore), in SERIALIZABLE transactions through tx (runTx and
// retry, accounts.go): two first logins of one identity at once conflict on the identity's
// row, and the one retried finds the other's link. After an ambiguous commit, a retry
// recognises its own commit by the identity linked to its user and answers success.

var _ core.IdentityStore = (*Store)(nil)

// UserByIdentity returns the id of the user the identity is linked to, or an error wrapping
// core.ErrNotFound.
func (s *Store) UserByIdentity(ctx context.Context, provider, subject string) (string, error) {
	if err := s.checkOpen(); err != nil {
		return "", err
	}
	if !storableText(provider) || !storableText(subject) {
		return "", fmt.Errorf("identity %s/%s: %w", provider, subject, core.ErrNotFound)
	}
	var id string
	err := s.pool.QueryRow(ctx, `SELECT user_id FROM identities WHERE provider = $1 AND subject = $2`,
		provider, subject).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("identity %s/%s: %w", provider, subject, core.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("read identity: %w", err)
	}
	return id, nil
}

// linkedTo returns the user the identity is linked to in tx, "" for none.
func linkedTo(ctx context.Context, tx pgx.Tx, provider, subject string) (string, error) {
	var id string
	err := tx.QueryRow(ctx, `SELECT user_id FROM identities WHERE provider = $1 AND subject = $2`,
		provider, subject).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return id, err
}

// insertIdentity links the identity to the user; ErrExists when a concurrent transaction
// linked it first.
func insertIdentity(ctx context.Context, tx pgx.Tx, id core.Identity, userID string) error {
	tag, err := tx.Exec(ctx, `INSERT INTO identities (provider, subject, user_id, created_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT DO NOTHING`, id.Provider, id.Subject, userID, micro(id.Created))
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return permanentf(fmt.Errorf("identity %s/%s: %w", id.Provider, id.Subject, core.ErrExists))
	}
	return nil
}

func storableIdentity(id core.Identity) error {
	if !storableText(id.Provider) || !storableText(id.Subject) {
		return fmt.Errorf("identity %q/%q: not storable text", id.Provider, id.Subject)
	}
	return nil
}

// CreateUserWithIdentity inserts u and links the identity to it, or fails with an error
// wrapping core.ErrExists when the id, the email or the identity is taken.
func (s *Store) CreateUserWithIdentity(ctx context.Context, u core.User, id core.Identity) error {
	if err := storableIdentity(id); err != nil {
		return err
	}
	return s.tx(ctx, "create user with identity", func(tx pgx.Tx) error {
		linked, err := linkedTo(ctx, tx, id.Provider, id.Subject)
		if err != nil {
			return err
		}
		if linked != "" {
			if linked == u.ID {
				return nil // u and its identity: an earlier attempt committed
			}
			return permanentf(fmt.Errorf("identity %s/%s: %w", id.Provider, id.Subject, core.ErrExists))
		}
		tag, err := tx.Exec(ctx, `INSERT INTO users (`+userColumns+`) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT DO NOTHING`, u.ID, u.Email, u.PasswordHash, micro(u.CreatedAt), micro(u.UpdatedAt))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return permanentf(fmt.Errorf("user %s <%s>: %w", u.ID, u.Email, core.ErrExists))
		}
		return insertIdentity(ctx, tx, id, u.ID)
	})
}

// LinkIdentity links the identity to an existing user, or fails with an error wrapping
// core.ErrNotFound (no such user) or core.ErrExists (linked to another user).
func (s *Store) LinkIdentity(ctx context.Context, id core.Identity) error {
	if err := storableIdentity(id); err != nil {
		return err
	}
	if !storableText(id.UserID) {
		return fmt.Errorf("user %s: %w", id.UserID, core.ErrNotFound)
	}
	return s.tx(ctx, "link identity", func(tx pgx.Tx) error {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM users WHERE id = $1`, id.UserID).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return permanentf(fmt.Errorf("user %s: %w", id.UserID, core.ErrNotFound))
		}
		if err != nil {
			return err
		}
		linked, err := linkedTo(ctx, tx, id.Provider, id.Subject)
		switch {
		case err != nil:
			return err
		case linked == id.UserID:
			return nil
		case linked != "":
			return permanentf(fmt.Errorf("identity %s/%s: %w", id.Provider, id.Subject, core.ErrExists))
		}
		return insertIdentity(ctx, tx, id, id.UserID)
	})
}
