package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/perchhq/perch/core"
)

// The account store (core.AccountStore). Every change is one immediate transaction on the
// single writer connection, so changes are serialised: UseRefreshToken and UpdateSigningKeys
// read and write with no other writer in between, and fn runs once. Reads of one statement go
// to the read pool. The statements are prepared at Open, like those of ApplyBatches.

var _ core.AccountStore = (*Store)(nil)

// accountStmts are the account store's statements: w's on the writer, bound to each
// transaction with Tx.StmtContext; r's on the read pool.
type accountStmts struct {
	w struct {
		insertUser, userByID, setPassword, noteFailure, clearFailures *sql.Stmt
		keys, deleteKeys, insertKey                                   *sql.Stmt
		insertToken, insertFamily, token, markUsed                    *sql.Stmt
		revokeFamily, revokeUserFamilies, insertRevocation            *sql.Stmt
		expireTokens, expireFamilies, expireRevocations, expireWindow *sql.Stmt
	}
	r struct {
		userByEmail, userByID, failures, keys, revocations *sql.Stmt
	}
}

const (
	userColumns = `id, email, password_hash, created_at, updated_at`
	selectKeys  = `SELECT kid, private_key, created_at FROM signing_keys ORDER BY created_at, kid`
	insertToken = `INSERT INTO refresh_tokens (hash, family, user_id, issued_at, expires_at, family_expires_at)
		VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`
)

func (s *Store) prepareAccounts(ctx context.Context) error {
	w, r := &s.as.w, &s.as.r
	stmts := []struct {
		db  *sql.DB
		dst **sql.Stmt
		sql string
	}{
		{s.w, &w.insertUser, `INSERT INTO users (` + userColumns + `) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`},
		{s.w, &w.userByID, `SELECT ` + userColumns + ` FROM users WHERE id = ?`},
		{s.w, &w.setPassword, `UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?`},
		// The window goes on while it started after now - window (?3); else one starts at now.
		{s.w, &w.noteFailure, `INSERT INTO login_failures (key, window_start, failures) VALUES (?1, ?2, 1)
			ON CONFLICT (key) DO UPDATE SET
				failures = CASE WHEN window_start > ?3 THEN failures + 1 ELSE 1 END,
				window_start = CASE WHEN window_start > ?3 THEN window_start ELSE ?2 END
			RETURNING failures`},
		{s.w, &w.clearFailures, `DELETE FROM login_failures WHERE key = ?`},
		{s.w, &w.keys, selectKeys},
		{s.w, &w.deleteKeys, `DELETE FROM signing_keys`},
		{s.w, &w.insertKey, `INSERT INTO signing_keys (kid, private_key, created_at) VALUES (?, ?, ?)`},
		{s.w, &w.insertToken, insertToken},
		{s.w, &w.insertFamily, `INSERT INTO refresh_families (family, user_id, expires_at) VALUES (?, ?, ?)
			ON CONFLICT DO NOTHING`},
		{s.w, &w.token, `SELECT t.hash, t.family, t.user_id, t.issued_at, t.expires_at, t.family_expires_at,
				t.used_at, f.revoked_at
			FROM refresh_tokens AS t JOIN refresh_families AS f ON f.family = t.family WHERE t.hash = ?`},
		{s.w, &w.markUsed, `UPDATE refresh_tokens SET used_at = ? WHERE hash = ?`},
		{s.w, &w.revokeFamily, `UPDATE refresh_families SET revoked_at = ? WHERE family = ? AND revoked_at IS NULL`},
		{s.w, &w.revokeUserFamilies, `UPDATE refresh_families SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL`},
		{s.w, &w.insertRevocation, `INSERT INTO revocations (kind, id, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`},
		{s.w, &w.expireTokens, `DELETE FROM refresh_tokens WHERE family_expires_at < ?`},
		{s.w, &w.expireFamilies, `DELETE FROM refresh_families WHERE expires_at < ?`},
		{s.w, &w.expireRevocations, `DELETE FROM revocations WHERE at < ?`},
		{s.w, &w.expireWindow, `DELETE FROM login_failures WHERE window_start < ?`},
		{s.r, &r.userByEmail, `SELECT ` + userColumns + ` FROM users WHERE email = ?`},
		{s.r, &r.userByID, `SELECT ` + userColumns + ` FROM users WHERE id = ?`},
		{s.r, &r.failures, `SELECT failures FROM login_failures WHERE key = ? AND window_start > ?`},
		{s.r, &r.keys, selectKeys},
		{s.r, &r.revocations, `SELECT kind, id, at FROM revocations WHERE at >= ? ORDER BY at, kind, id`},
	}
	for _, st := range stmts {
		var err error
		if *st.dst, err = st.db.PrepareContext(ctx, st.sql); err != nil {
			return fmt.Errorf("prepare %q: %w", st.sql, err)
		}
	}
	return nil
}

func (a *accountStmts) all() []*sql.Stmt {
	w, r := &a.w, &a.r
	return []*sql.Stmt{
		w.insertUser, w.userByID, w.setPassword, w.noteFailure, w.clearFailures, w.keys, w.deleteKeys,
		w.insertKey, w.insertToken, w.insertFamily, w.token, w.markUsed, w.revokeFamily,
		w.revokeUserFamilies, w.insertRevocation, w.expireTokens, w.expireFamilies, w.expireRevocations,
		w.expireWindow,
		r.userByEmail, r.userByID, r.failures, r.keys, r.revocations,
	}
}

// writeTx runs fn in one immediate transaction on the writer and commits it, or rolls it back
// when fn fails.
func (s *Store) writeTx(ctx context.Context, what string, fn func(t *accountTx) error) (err error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: begin: %w", what, err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, rollback(tx))
		}
	}()
	if err := fn(&accountTx{ctx: ctx, tx: tx}); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: commit: %w", what, err)
	}
	return nil
}

type accountTx struct {
	ctx context.Context
	tx  *sql.Tx
}

func (t *accountTx) exec(st *sql.Stmt, args ...any) (int64, error) {
	res, err := t.tx.StmtContext(t.ctx, st).ExecContext(t.ctx, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t *accountTx) row(st *sql.Stmt, args ...any) *sql.Row {
	return t.tx.StmtContext(t.ctx, st).QueryRowContext(t.ctx, args...)
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func nullMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMicros(v.Int64)
}

// CreateUser inserts u, or fails with an error wrapping core.ErrExists when another user has
// its id or email (u itself stored already is not an error).
func (s *Store) CreateUser(ctx context.Context, u core.User) error {
	return s.writeTx(ctx, "create user", func(t *accountTx) error {
		n, err := t.exec(s.as.w.insertUser, u.ID, u.Email, u.PasswordHash, micros(u.CreatedAt), micros(u.UpdatedAt))
		if err != nil {
			return err
		}
		if n == 0 {
			have, err := scanUser(t.row(s.as.w.userByID, u.ID))
			if err == nil && have.Email == u.Email && have.PasswordHash == u.PasswordHash {
				return nil // u itself, as pgstore answers a retry
			}
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			return fmt.Errorf("user %s <%s>: %w", u.ID, u.Email, core.ErrExists)
		}
		return nil
	})
}

// UserByEmail returns the user with the email, or an error wrapping core.ErrNotFound.
func (s *Store) UserByEmail(ctx context.Context, email string) (core.User, error) {
	return readUser(s.as.r.userByEmail.QueryRowContext(ctx, email), "email", email)
}

// UserByID returns the user with the id, or an error wrapping core.ErrNotFound.
func (s *Store) UserByID(ctx context.Context, id string) (core.User, error) {
	return readUser(s.as.r.userByID.QueryRowContext(ctx, id), "id", id)
}

func readUser(row *sql.Row, column, value string) (core.User, error) {
	u, err := scanUser(row)
	if errors.Is(err, sql.ErrNoRows) {
		return core.User{}, fmt.Errorf("user with %s %q: %w", column, value, core.ErrNotFound)
	}
	if err != nil {
		return core.User{}, fmt.Errorf("read user: %w", err)
	}
	return u, nil
}

func scanUser(row scanner) (core.User, error) {
	var (
		u                core.User
		created, updated int64
	)
	if err := row.Scan(&u.ID, &u.Email, &u.PasswordHash, &created, &updated); err != nil {
		return core.User{}, err
	}
	u.CreatedAt, u.UpdatedAt = fromMicros(created), fromMicros(updated)
	return u, nil
}

// SetPasswordHash replaces the user's hash and sets its updated_at to now, or fails with an
// error wrapping core.ErrNotFound.
func (s *Store) SetPasswordHash(ctx context.Context, id, hash string, now time.Time) error {
	return s.writeTx(ctx, "set password hash", func(t *accountTx) error {
		n, err := t.exec(s.as.w.setPassword, hash, micros(now), id)
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("user %s: %w", id, core.ErrNotFound)
		}
		return nil
	})
}

// NoteLoginFailure counts a failed login of key at now and returns the failures of its window,
// in one upsert.
func (s *Store) NoteLoginFailure(ctx context.Context, key string, now time.Time, window time.Duration) (int, error) {
	var n int
	err := s.writeTx(ctx, "note login failure", func(t *accountTx) error {
		at := micros(now)
		return t.row(s.as.w.noteFailure, key, at, micros(now.Add(-window))).Scan(&n)
	})
	return n, err
}

// LoginFailures returns the failures of key's window if now falls in it, else 0.
func (s *Store) LoginFailures(ctx context.Context, key string, now time.Time, window time.Duration) (int, error) {
	var n int
	err := s.as.r.failures.QueryRowContext(ctx, key, micros(now.Add(-window))).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read login failures: %w", err)
	}
	return n, nil
}

// ClearLoginFailures deletes key's window.
func (s *Store) ClearLoginFailures(ctx context.Context, key string) error {
	return s.writeTx(ctx, "clear login failures", func(t *accountTx) error {
		_, err := t.exec(s.as.w.clearFailures, key)
		return err
	})
}

// SigningKeys returns the stored keys, oldest first (ties by kid).
func (s *Store) SigningKeys(ctx context.Context) ([]core.StoredKey, error) {
	rows, err := s.as.r.keys.QueryContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("read signing keys: %w", err)
	}
	return scanKeys(rows)
}

func scanKeys(rows *sql.Rows) ([]core.StoredKey, error) {
	var keys []core.StoredKey
	for rows.Next() {
		var (
			k       core.StoredKey
			created int64
		)
		if err := rows.Scan(&k.ID, &k.Private, &created); err != nil {
			return nil, errors.Join(fmt.Errorf("read signing keys: %w", err), rows.Close())
		}
		k.Created = fromMicros(created)
		keys = append(keys, k)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("read signing keys: %w", err)
	}
	return keys, nil
}

// UpdateSigningKeys reads the keys, calls fn (once: the writer's transaction has no
// competitor) and, when it reports a change, replaces the keys with what it returned.
func (s *Store) UpdateSigningKeys(ctx context.Context, fn func(current []core.StoredKey) (next []core.StoredKey, changed bool, err error)) ([]core.StoredKey, error) {
	var stored []core.StoredKey
	err := s.writeTx(ctx, "update signing keys", func(t *accountTx) error {
		rows, err := t.tx.StmtContext(t.ctx, s.as.w.keys).QueryContext(t.ctx)
		if err != nil {
			return fmt.Errorf("read signing keys: %w", err)
		}
		current, err := scanKeys(rows)
		if err != nil {
			return err
		}
		next, changed, err := fn(current)
		if err != nil {
			return err
		}
		if !changed {
			stored = current
			return nil
		}
		if next, err = core.NormaliseKeys(next); err != nil {
			return err
		}
		if _, err := t.exec(s.as.w.deleteKeys); err != nil {
			return fmt.Errorf("delete signing keys: %w", err)
		}
		for _, k := range next {
			if _, err := t.exec(s.as.w.insertKey, k.ID, k.Private, micros(k.Created)); err != nil {
				return fmt.Errorf("store signing key %s: %w", k.ID, err)
			}
		}
		stored = next
		return nil
	})
	if err != nil {
		return nil, err
	}
	return stored, nil
}

// CreateRefreshToken stores t and its family. A hash or family stored already is an error
// wrapping core.ErrExists, unless it is rt itself.
func (s *Store) CreateRefreshToken(ctx context.Context, rt core.RefreshToken) error {
	return s.writeTx(ctx, "create refresh token", func(t *accountTx) error {
		n, err := t.exec(s.as.w.insertToken, rt.Hash, rt.Family, rt.UserID,
			micros(rt.IssuedAt), micros(rt.ExpiresAt), micros(rt.FamilyExpiresAt))
		if err != nil {
			return err
		}
		if n == 0 {
			have, err := s.readToken(t, rt.Hash)
			if err == nil && have.Family == rt.Family && have.UserID == rt.UserID {
				return nil // rt itself, as pgstore answers a retry
			}
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			return fmt.Errorf("refresh token: %w", core.ErrExists)
		}
		if n, err = t.exec(s.as.w.insertFamily, rt.Family, rt.UserID, micros(rt.FamilyExpiresAt)); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("refresh family %s: %w", rt.Family, core.ErrExists)
		}
		return nil
	})
}

func (s *Store) readToken(t *accountTx, hash []byte) (core.RefreshToken, error) {
	var (
		rt                             core.RefreshToken
		issued, expires, familyExpires int64
		used, revoked                  sql.NullInt64
	)
	err := t.row(s.as.w.token, hash).Scan(&rt.Hash, &rt.Family, &rt.UserID, &issued, &expires, &familyExpires, &used, &revoked)
	if err != nil {
		return core.RefreshToken{}, err
	}
	rt.IssuedAt, rt.ExpiresAt, rt.FamilyExpiresAt = fromMicros(issued), fromMicros(expires), fromMicros(familyExpires)
	rt.Used, rt.Revoked = nullMicros(used), nullMicros(revoked)
	return rt, nil
}

// UseRefreshToken is one refresh in one writer transaction, decided by core.RefreshDecision.
func (s *Store) UseRefreshToken(ctx context.Context, hash []byte, next core.RefreshToken, now time.Time) (core.RefreshUse, error) {
	var use core.RefreshUse
	at := now.UTC().Truncate(time.Microsecond)
	err := s.writeTx(ctx, "use refresh token", func(t *accountTx) error {
		rt, err := s.readToken(t, hash)
		if errors.Is(err, sql.ErrNoRows) {
			return nil // invalid: no such token
		}
		if err != nil {
			return fmt.Errorf("read refresh token: %w", err)
		}
		use = core.RefreshUse{Result: core.RefreshDecision(rt, at), Token: rt}
		switch use.Result {
		case core.RefreshReused:
			return s.revokeFamily(t, rt.Family, at)
		case core.RefreshRotated:
			succ, err := core.Successor(rt, next)
			if err != nil {
				return err
			}
			if _, err := t.exec(s.as.w.markUsed, micros(at), hash); err != nil {
				return fmt.Errorf("mark refresh token used: %w", err)
			}
			n, err := t.exec(s.as.w.insertToken, succ.Hash, succ.Family, succ.UserID,
				micros(succ.IssuedAt), micros(succ.ExpiresAt), micros(succ.FamilyExpiresAt))
			if err != nil {
				return fmt.Errorf("store successor: %w", err)
			}
			if n == 0 {
				return fmt.Errorf("successor refresh token: %w", core.ErrExists)
			}
		}
		return nil
	})
	if err != nil {
		return core.RefreshUse{}, err
	}
	return use, nil
}

// revokeFamily revokes the family at now and records its revocation, unless it is revoked
// already.
func (s *Store) revokeFamily(t *accountTx, family string, at time.Time) error {
	n, err := t.exec(s.as.w.revokeFamily, micros(at), family)
	if err != nil {
		return fmt.Errorf("revoke family: %w", err)
	}
	if n == 0 {
		return nil
	}
	if _, err := t.exec(s.as.w.insertRevocation, core.RevokeSession, family, micros(at)); err != nil {
		return fmt.Errorf("record revocation: %w", err)
	}
	return nil
}

// RevokeRefreshFamily revokes the family of the token with the hash at now, unless it is
// revoked already, and returns the token as stored after the call (Revoked set to the
// family's first revocation). An error wrapping core.ErrNotFound when no token has the hash.
func (s *Store) RevokeRefreshFamily(ctx context.Context, hash []byte, now time.Time) (core.RefreshToken, error) {
	var rt core.RefreshToken
	at := now.UTC().Truncate(time.Microsecond)
	err := s.writeTx(ctx, "revoke refresh family", func(t *accountTx) error {
		var err error
		rt, err = s.readToken(t, hash)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("refresh token: %w", core.ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("read refresh token: %w", err)
		}
		if !rt.Revoked.IsZero() {
			return nil
		}
		rt.Revoked = at
		return s.revokeFamily(t, rt.Family, at)
	})
	if err != nil {
		return core.RefreshToken{}, err
	}
	return rt, nil
}

// RevokeUser revokes the user's families not revoked yet and records a subject revocation.
func (s *Store) RevokeUser(ctx context.Context, userID string, now time.Time) error {
	return s.writeTx(ctx, "revoke user", func(t *accountTx) error {
		if _, err := t.exec(s.as.w.revokeUserFamilies, micros(now), userID); err != nil {
			return fmt.Errorf("revoke families: %w", err)
		}
		if _, err := t.exec(s.as.w.insertRevocation, core.RevokeSubject, userID, micros(now)); err != nil {
			return fmt.Errorf("record revocation: %w", err)
		}
		return nil
	})
}

// Revocations returns the revocations at or after since, by time (ties by kind and id).
func (s *Store) Revocations(ctx context.Context, since time.Time) ([]core.Revocation, error) {
	rows, err := s.as.r.revocations.QueryContext(ctx, micros(since))
	if err != nil {
		return nil, fmt.Errorf("read revocations: %w", err)
	}
	var revs []core.Revocation
	for rows.Next() {
		var (
			r  core.Revocation
			at int64
		)
		if err := rows.Scan(&r.Kind, &r.ID, &at); err != nil {
			return nil, errors.Join(fmt.Errorf("read revocations: %w", err), rows.Close())
		}
		r.At = fromMicros(at)
		revs = append(revs, r)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("read revocations: %w", err)
	}
	return revs, nil
}

// ExpireAccounts deletes, in one transaction, the refresh tokens and families that expired
// before the time, the revocations recorded before it and the login-failure windows that
// started before it. The families are not counted: they are how this store keeps a family's
// revocation, not rows of the contract.
func (s *Store) ExpireAccounts(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	err := s.writeTx(ctx, "expire accounts", func(t *accountTx) error {
		total = 0
		at := micros(before)
		for _, del := range []struct {
			st    *sql.Stmt
			count bool
		}{
			{s.as.w.expireTokens, true},
			{s.as.w.expireFamilies, false},
			{s.as.w.expireRevocations, true},
			{s.as.w.expireWindow, true},
		} {
			n, err := t.exec(del.st, at)
			if err != nil {
				return err
			}
			if del.count {
				total += n
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return total, nil
}
