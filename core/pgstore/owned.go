package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/internal/wire"
)

// Owned returns a page of one owner's live documents across collections, in (collection, id)
// order, from the index documents_owner (owner, collection, id).
func (s *Store) Owned(ctx context.Context, q wire.OwnedQuery) (wire.ListPage, error) {
	if err := s.checkOpen(); err != nil {
		return wire.ListPage{}, err
	}
	limit := core.ListLimit(q.Limit)
	page := wire.ListPage{Items: []wire.Document{}}
	if q.Owner == "" || !storableText(q.Owner) {
		return page, nil // no document has no owner here, nor one PostgreSQL cannot store
	}
	var rows pgx.Rows
	var err error
	if q.After == nil {
		rows, err = s.pool.Query(ctx, `SELECT `+docColumns+` FROM documents
			WHERE owner = $1 AND NOT deleted ORDER BY collection, id LIMIT $2`, q.Owner, limit+1)
	} else {
		// (collection, id) > (c, i), spelt so that the index range starts at c.
		rows, err = s.pool.Query(ctx, `SELECT `+docColumns+` FROM documents
			WHERE owner = $1 AND NOT deleted AND collection >= $2 AND (collection > $2 OR id > $3)
			ORDER BY collection, id LIMIT $4`, q.Owner, q.After.Collection, q.After.ID, limit+1)
	}
	if err != nil {
		return wire.ListPage{}, fmt.Errorf("owned documents: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		d, err := scanDocument(rows)
		if err != nil {
			return wire.ListPage{}, fmt.Errorf("owned documents: %w", err)
		}
		page.Items = append(page.Items, d)
	}
	if err := rows.Err(); err != nil {
		return wire.ListPage{}, fmt.Errorf("owned documents: %w", err)
	}
	if len(page.Items) > limit {
		page.Items, page.More = page.Items[:limit], true
	}
	return page, nil
}

// DeleteUser deletes the user, their refresh tokens and identities, revokes their families (kept, revoked,
// until they expire) and records the subject revocation, in one transaction.
func (s *Store) DeleteUser(ctx context.Context, id string, now time.Time) error {
	at := micro(now)
	return s.tx(ctx, "delete user", func(tx pgx.Tx) error {
		var email string
		if err := tx.QueryRow(ctx, `DELETE FROM users WHERE id = $1 RETURNING email`, id).Scan(&email); err != nil {
			if errors.Is(err, pgx.ErrNoRows) {
				return core.ErrNotFound
			}
			return fmt.Errorf("delete user: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM refresh_tokens WHERE family IN
			(SELECT family FROM refresh_families WHERE user_id = $1)`, id); err != nil {
			return fmt.Errorf("delete refresh tokens: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE refresh_families SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL`,
			id, at); err != nil {
			return fmt.Errorf("revoke families: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM login_failures WHERE key = $1`, email); err != nil {
			return fmt.Errorf("delete login failures: %w", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM identities WHERE user_id = $1`, id); err != nil {
			return fmt.Errorf("delete identities: %w", err)
		}
		return recordRevocation(ctx, tx, core.RevokeSubject, id, at)
	})
}
