package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/internal/wire"
)

// Owned returns a page of one owner's live documents across collections, in (collection, id)
// order, through documents_owner (owner, collection, id).
func (s *Store) Owned(ctx context.Context, q wire.OwnedQuery) (wire.ListPage, error) {
	limit := core.ListLimit(q.Limit)
	page := wire.ListPage{Items: []wire.Document{}}
	if q.Owner == "" {
		return page, nil
	}
	query := `SELECT ` + docColumns + ` FROM documents INDEXED BY documents_owner WHERE owner = ? AND deleted = 0`
	args := []any{q.Owner}
	if q.After != nil {
		// (collection, id) > (c, i), spelt so that the index range starts at c.
		query += ` AND collection >= ? AND (collection > ? OR id > ?)`
		args = append(args, q.After.Collection, q.After.Collection, q.After.ID)
	}
	query += ` ORDER BY collection, id LIMIT ?`
	args = append(args, limit+1)
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return wire.ListPage{}, fmt.Errorf("owned documents: %w", err)
	}
	for rows.Next() {
		d, err := scanDocument(rows)
		if err != nil {
			return wire.ListPage{}, errors.Join(fmt.Errorf("owned documents: %w", err), rows.Close())
		}
		page.Items = append(page.Items, d)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return wire.ListPage{}, fmt.Errorf("owned documents: %w", err)
	}
	if len(page.Items) > limit {
		page.Items, page.More = page.Items[:limit], true
	}
	return page, nil
}

// DeleteUser deletes the user, their refresh tokens and identities, revokes their families (kept, revoked,
// until they expire) and records the subject revocation, in one transaction on the writer.
func (s *Store) DeleteUser(ctx context.Context, id string, now time.Time) error {
	return s.writeTx(ctx, "delete user", func(t *accountTx) error {
		var email string
		if err := t.tx.QueryRowContext(t.ctx, `DELETE FROM users WHERE id = ? RETURNING email`, id).Scan(&email); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return core.ErrNotFound
			}
			return fmt.Errorf("delete user: %w", err)
		}
		if _, err := t.tx.ExecContext(t.ctx, `DELETE FROM refresh_tokens WHERE family IN
			(SELECT family FROM refresh_families WHERE user_id = ?)`, id); err != nil {
			return fmt.Errorf("delete refresh tokens: %w", err)
		}
		if _, err := t.exec(s.as.w.revokeUserFamilies, micros(now), id); err != nil {
			return fmt.Errorf("revoke families: %w", err)
		}
		if _, err := t.tx.ExecContext(t.ctx, `DELETE FROM login_failures WHERE key = ?`, email); err != nil {
			return fmt.Errorf("delete login failures: %w", err)
		}
		if _, err := t.tx.ExecContext(t.ctx, `DELETE FROM identities WHERE user_id = ?`, id); err != nil {
			return fmt.Errorf("delete identities: %w", err)
		}
		if _, err := t.exec(s.as.w.insertRevocation, core.RevokeSubject, id, micros(now)); err != nil {
			return fmt.Errorf("record revocation: %w", err)
		}
		return nil
	})
}
