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

// The API key store (core.APIKeyStore). Changes are immediate transactions on the single
// writer, like the account store's. Its statements are not prepared at Open: they run when an
// operator runs `perch keys` and when a core reads the keys every few seconds, too seldom for
// preparing them to matter.

var _ core.APIKeyStore = (*Store)(nil)

const apiKeyColumns = `id, name, hash, created_at, revoked_at`

// CreateAPIKey inserts k, or fails with an error wrapping core.ErrExists when a key has its id
// or hash (k itself stored already is not an error).
func (s *Store) CreateAPIKey(ctx context.Context, k core.APIKey) error {
	return s.writeTx(ctx, "create api key", func(t *accountTx) error {
		res, err := t.tx.ExecContext(t.ctx, `INSERT INTO api_keys (id, name, hash, created_at) VALUES (?, ?, ?, ?)
			ON CONFLICT DO NOTHING`, k.ID, k.Name, k.Hash, micros(k.Created))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		have, err := scanAPIKey(t.tx.QueryRowContext(t.ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE id = ?`, k.ID))
		if err == nil && have.Name == k.Name && bytes.Equal(have.Hash, k.Hash) {
			return nil // k itself, as pgstore answers a retry
		}
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return fmt.Errorf("api key %s: %w", k.ID, core.ErrExists)
	})
}

// RevokeAPIKey sets the key's revoked_at to now unless it is set, and returns the key.
func (s *Store) RevokeAPIKey(ctx context.Context, id string, now time.Time) (core.APIKey, error) {
	var k core.APIKey
	err := s.writeTx(ctx, "revoke api key", func(t *accountTx) error {
		if _, err := t.tx.ExecContext(t.ctx, `UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`,
			micros(now), id); err != nil {
			return err
		}
		var err error
		k, err = scanAPIKey(t.tx.QueryRowContext(t.ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE id = ?`, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("api key %s: %w", id, core.ErrNotFound)
		}
		return err
	})
	if err != nil {
		return core.APIKey{}, err
	}
	return k, nil
}

// APIKeys returns every key, oldest first (ties by id).
func (s *Store) APIKeys(ctx context.Context) ([]core.APIKey, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+apiKeyColumns+` FROM api_keys ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("read api keys: %w", err)
	}
	var keys []core.APIKey
	for rows.Next() {
		k, err := scanAPIKey(rows)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("read api keys: %w", err), rows.Close())
		}
		keys = append(keys, k)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("read api keys: %w", err)
	}
	return keys, nil
}

func scanAPIKey(row scanner) (core.APIKey, error) {
	var (
		k       core.APIKey
		created int64
		revoked sql.NullInt64
	)
	if err := row.Scan(&k.ID, &k.Name, &k.Hash, &created, &revoked); err != nil {
		return core.APIKey{}, err
	}
	k.Created, k.Revoked = fromMicros(created), nullMicros(revoked)
	return k, nil
}
