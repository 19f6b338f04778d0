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

// The API key store (core.APIKeyStore). Changes are SERIALIZABLE transactions through tx (runTx
// and retry), like the account store's, and give the same answer when an earlier attempt's
// commit did happen: CreateAPIKey accepts finding its own row, and RevokeAPIKey keeps the
// first revocation's time and returns the key as stored. APIKeys is one statement on the pool.

var _ core.APIKeyStore = (*Store)(nil)

const apiKeyColumns = `id, name, hash, created_at, revoked_at`

// CreateAPIKey inserts k, or fails with an error wrapping core.ErrExists when a key has its id
// or hash. Finding k itself (an earlier attempt whose commit was reported lost) is success.
func (s *Store) CreateAPIKey(ctx context.Context, k core.APIKey) error {
	if !storableText(k.ID) || !storableText(k.Name) {
		return permanentf(fmt.Errorf("api key %q: id or name is not storable text", k.ID))
	}
	return s.tx(ctx, "create api key", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO api_keys (id, name, hash, created_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT DO NOTHING`, k.ID, k.Name, k.Hash, micro(k.Created))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			return nil
		}
		have, err := scanAPIKey(tx.QueryRow(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE id = $1`, k.ID))
		if err == nil && have.Name == k.Name && bytes.Equal(have.Hash, k.Hash) {
			return nil
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return permanentf(fmt.Errorf("api key %s: %w", k.ID, core.ErrExists))
	})
}

// RevokeAPIKey sets the key's revoked_at to now unless it is set, and returns the key, or
// fails with an error wrapping core.ErrNotFound.
func (s *Store) RevokeAPIKey(ctx context.Context, id string, now time.Time) (core.APIKey, error) {
	if !storableText(id) {
		return core.APIKey{}, fmt.Errorf("api key %q: %w", id, core.ErrNotFound)
	}
	var k core.APIKey
	err := s.tx(ctx, "revoke api key", func(tx pgx.Tx) error {
		var err error
		k, err = scanAPIKey(tx.QueryRow(ctx, `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2)
			WHERE id = $1 RETURNING `+apiKeyColumns, id, micro(now)))
		if errors.Is(err, pgx.ErrNoRows) {
			return permanentf(fmt.Errorf("api key %s: %w", id, core.ErrNotFound))
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
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+apiKeyColumns+` FROM api_keys ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("read api keys: %w", err)
	}
	keys, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (core.APIKey, error) { return scanAPIKey(r) })
	if err != nil {
		return nil, fmt.Errorf("read api keys: %w", err)
	}
	return keys, nil
}

func scanAPIKey(row pgx.Row) (core.APIKey, error) {
	var (
		k       core.APIKey
		revoked *time.Time
	)
	if err := row.Scan(&k.ID, &k.Name, &k.Hash, &k.Created, &revoked); err != nil {
		return core.APIKey{}, err
	}
	k.Created = k.Created.UTC()
	if revoked != nil {
		k.Revoked = revoked.UTC()
	}
	return k, nil
}
