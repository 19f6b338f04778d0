package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/perchhq/perch/core"
)

// The account store (core.AccountStore). Every change is one SERIALIZABLE transaction through
// runTx and retry, like the write path's, so conflicts are retried and classified in one place
// (sqlerrors.go). Reads of one statement go to the pool directly. Statement texts are fixed,
// so pgx prepares each once per connection.
//
// retry runs a transaction again after an ambiguous commit as well as after a conflict, so each
// transaction below is written to give the same answer when its first attempt did commit:
// CreateUser and CreateRefreshToken accept finding exactly their own row, and UseRefreshToken
// recognises its own rotation by the successor it stored (a blind retry would find the token
// used, call it reused and revoke the family). Two exceptions: NoteLoginFailure may then count
// a failure twice (a throttle's counter, erring on the side of caution), and a reuse whose
// commit was lost is answered RefreshInvalid (the family is revoked either way).

var _ core.AccountStore = (*Store)(nil)

// tx runs fn in a SERIALIZABLE transaction until it commits or fails for good. fn may run more
// than once and must reset what it computes.
func (s *Store) tx(ctx context.Context, what string, fn func(pgx.Tx) error) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	return s.retry(ctx, what, func() error { return s.runTx(ctx, serializable, fn) })
}

const userColumns = `id, email, password_hash, created_at, updated_at`

// CreateUser inserts u, or fails with an error wrapping core.ErrExists when a user has its id
// or email. Finding u itself (same id, email and hash: an earlier attempt whose commit was
// reported lost) is success.
func (s *Store) CreateUser(ctx context.Context, u core.User) error {
	return s.tx(ctx, "create user", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO users (`+userColumns+`) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT DO NOTHING`, u.ID, u.Email, u.PasswordHash, micro(u.CreatedAt), micro(u.UpdatedAt))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			return nil
		}
		have, err := scanUser(tx.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE id = $1`, u.ID))
		if err == nil && have.Email == u.Email && have.PasswordHash == u.PasswordHash {
			return nil
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		return permanentf(fmt.Errorf("user %s <%s>: %w", u.ID, u.Email, core.ErrExists))
	})
}

// UserByEmail returns the user with the email, or an error wrapping core.ErrNotFound.
func (s *Store) UserByEmail(ctx context.Context, email string) (core.User, error) {
	return s.user(ctx, "email", email)
}

// UserByID returns the user with the id, or an error wrapping core.ErrNotFound.
func (s *Store) UserByID(ctx context.Context, id string) (core.User, error) {
	return s.user(ctx, "id", id)
}

func (s *Store) user(ctx context.Context, column, value string) (core.User, error) {
	if err := s.checkOpen(); err != nil {
		return core.User{}, err
	}
	if !storableText(value) {
		return core.User{}, fmt.Errorf("user with %s %q: %w", column, value, core.ErrNotFound)
	}
	// column is one of two constants, so the statement text is fixed per column.
	u, err := scanUser(s.pool.QueryRow(ctx, `SELECT `+userColumns+` FROM users WHERE `+column+` = $1`, value))
	if errors.Is(err, pgx.ErrNoRows) {
		return core.User{}, fmt.Errorf("user with %s %q: %w", column, value, core.ErrNotFound)
	}
	if err != nil {
		return core.User{}, fmt.Errorf("read user: %w", err)
	}
	return u, nil
}

func scanUser(row pgx.Row) (core.User, error) {
	var u core.User
	if err := row.Scan(&u.ID, &u.Email, &u.PasswordHash, &u.CreatedAt, &u.UpdatedAt); err != nil {
		return core.User{}, err
	}
	u.CreatedAt, u.UpdatedAt = u.CreatedAt.UTC(), u.UpdatedAt.UTC()
	return u, nil
}

// SetPasswordHash replaces the user's hash and sets its updated_at to now, or fails with an
// error wrapping core.ErrNotFound.
func (s *Store) SetPasswordHash(ctx context.Context, id, hash string, now time.Time) error {
	if !storableText(id) {
		return fmt.Errorf("user %s: %w", id, core.ErrNotFound)
	}
	return s.tx(ctx, "set password hash", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1`, id, hash, micro(now))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return permanentf(fmt.Errorf("user %s: %w", id, core.ErrNotFound))
		}
		return nil
	})
}

// noteFailure counts a failure in the key's window in one statement: the row's window goes on
// while it started after now - window, and a new one starts at now otherwise.
const noteFailure = `INSERT INTO login_failures (key, window_start, failures) VALUES ($1, $2::TIMESTAMPTZ, 1)
	ON CONFLICT (key) DO UPDATE SET
		failures = CASE WHEN login_failures.window_start > $3::TIMESTAMPTZ THEN login_failures.failures + 1 ELSE 1 END,
		window_start = CASE WHEN login_failures.window_start > $3::TIMESTAMPTZ THEN login_failures.window_start ELSE $2::TIMESTAMPTZ END
	RETURNING failures`

// NoteLoginFailure counts a failed login of key at now and returns the failures of its window.
// A commit whose outcome was lost and is retried may count the failure twice.
func (s *Store) NoteLoginFailure(ctx context.Context, key string, now time.Time, window time.Duration) (int, error) {
	var n int32
	at := micro(now)
	err := s.tx(ctx, "note login failure", func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, noteFailure, key, at, at.Add(-window)).Scan(&n)
	})
	return int(n), err
}

// LoginFailures returns the failures of key's window if now falls in it, else 0.
func (s *Store) LoginFailures(ctx context.Context, key string, now time.Time, window time.Duration) (int, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if !storableText(key) {
		return 0, nil
	}
	var n int32
	err := s.pool.QueryRow(ctx, `SELECT failures FROM login_failures WHERE key = $1 AND window_start > $2`,
		key, micro(now).Add(-window)).Scan(&n)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read login failures: %w", err)
	}
	return int(n), nil
}

// ClearLoginFailures deletes key's window.
func (s *Store) ClearLoginFailures(ctx context.Context, key string) error {
	if !storableText(key) {
		return s.checkOpen()
	}
	return s.tx(ctx, "clear login failures", func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `DELETE FROM login_failures WHERE key = $1`, key)
		return err
	})
}

const selectKeys = `SELECT kid, private_key, created_at FROM signing_keys ORDER BY created_at, kid`

// SigningKeys returns the stored keys, oldest first (ties by kid).
func (s *Store) SigningKeys(ctx context.Context) ([]core.StoredKey, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	keys, err := readKeys(ctx, s.pool)
	if err != nil {
		return nil, fmt.Errorf("read signing keys: %w", err)
	}
	return keys, nil
}

func readKeys(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}) ([]core.StoredKey, error) {
	rows, err := q.Query(ctx, selectKeys)
	if err != nil {
		return nil, err
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (core.StoredKey, error) {
		var k core.StoredKey
		err := row.Scan(&k.ID, &k.Private, &k.Created)
		k.Created = k.Created.UTC()
		return k, err
	})
	if err != nil {
		return nil, err
	}
	return keys, nil
}

// UpdateSigningKeys reads the keys, calls fn, and writes what it returned when it reports a
// change, in one SERIALIZABLE transaction: two cores that both read the keys and both write
// conflict, and the one retried calls fn again with the other's keys. A change deletes the keys
// that are not in next and upserts the others (a key's stored form changes when it gets its
// NotAfter).
func (s *Store) UpdateSigningKeys(ctx context.Context, fn func(current []core.StoredKey) (next []core.StoredKey, changed bool, err error)) ([]core.StoredKey, error) {
	var stored []core.StoredKey
	err := s.tx(ctx, "update signing keys", func(tx pgx.Tx) error {
		current, err := readKeys(ctx, tx)
		if err != nil {
			return fmt.Errorf("read signing keys: %w", err)
		}
		next, changed, err := fn(current)
		if err != nil {
			return permanentf(err)
		}
		if !changed {
			stored = current
			return nil
		}
		next, err = core.NormaliseKeys(next)
		if err != nil {
			return permanentf(err)
		}
		ids := make([]string, len(next))
		privs := make([][]byte, len(next))
		created := make([]time.Time, len(next))
		for i, k := range next {
			ids[i], privs[i], created[i] = k.ID, k.Private, k.Created
		}
		if _, err := tx.Exec(ctx, `DELETE FROM signing_keys WHERE NOT (kid = ANY($1::TEXT[]))`, ids); err != nil {
			return fmt.Errorf("delete signing keys: %w", err)
		}
		if len(next) > 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO signing_keys (kid, private_key, created_at)
				SELECT * FROM unnest($1::TEXT[], $2::BYTEA[], $3::TIMESTAMPTZ[])
				ON CONFLICT (kid) DO UPDATE SET private_key = excluded.private_key, created_at = excluded.created_at`,
				ids, privs, created); err != nil {
				return fmt.Errorf("store signing keys: %w", err)
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

const tokenColumns = `t.hash, t.family, t.user_id, t.issued_at, t.expires_at, t.family_expires_at, t.used_at, f.revoked_at`

// lockToken reads the token with the hash and its family's revocation, and locks both rows: a
// second UseRefreshToken or RevokeRefreshFamily of the family waits for this transaction
// (CockroachDB) or fails with a serialization error once it commits (PostgreSQL), and is
// retried on what it committed.
const lockToken = `SELECT ` + tokenColumns + ` FROM refresh_tokens AS t
	JOIN refresh_families AS f ON f.family = t.family
	WHERE t.hash = $1 FOR UPDATE`

func scanToken(row pgx.Row) (core.RefreshToken, error) {
	var (
		t             core.RefreshToken
		used, revoked *time.Time
	)
	if err := row.Scan(&t.Hash, &t.Family, &t.UserID, &t.IssuedAt, &t.ExpiresAt, &t.FamilyExpiresAt, &used, &revoked); err != nil {
		return core.RefreshToken{}, err
	}
	t.IssuedAt, t.ExpiresAt, t.FamilyExpiresAt = t.IssuedAt.UTC(), t.ExpiresAt.UTC(), t.FamilyExpiresAt.UTC()
	if used != nil {
		t.Used = used.UTC()
	}
	if revoked != nil {
		t.Revoked = revoked.UTC()
	}
	return t, nil
}

const insertToken = `INSERT INTO refresh_tokens (hash, family, user_id, issued_at, expires_at, family_expires_at)
	VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`

// CreateRefreshToken stores t and its family. A hash or family stored already is an error
// wrapping core.ErrExists, except t itself (an earlier attempt whose commit was reported lost).
func (s *Store) CreateRefreshToken(ctx context.Context, t core.RefreshToken) error {
	return s.tx(ctx, "create refresh token", func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, insertToken, t.Hash, t.Family, t.UserID, micro(t.IssuedAt), micro(t.ExpiresAt), micro(t.FamilyExpiresAt))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			have, err := scanToken(tx.QueryRow(ctx, lockToken, t.Hash))
			if err == nil && have.Family == t.Family && have.UserID == t.UserID {
				return nil
			}
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			return permanentf(fmt.Errorf("refresh token: %w", core.ErrExists))
		}
		tag, err = tx.Exec(ctx, `INSERT INTO refresh_families (family, user_id, expires_at) VALUES ($1, $2, $3)
			ON CONFLICT DO NOTHING`, t.Family, t.UserID, micro(t.FamilyExpiresAt))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return permanentf(fmt.Errorf("refresh family %s: %w", t.Family, core.ErrExists))
		}
		return nil
	})
}

// UseRefreshToken is one refresh in one transaction that locks the token and its family (see
// core.RefreshDecision for the rules, which both stores share). Beyond the first attempt it
// first looks for next: finding it stored means that an earlier attempt rotated the token and
// committed although its commit was reported failed, and the answer is that attempt's.
func (s *Store) UseRefreshToken(ctx context.Context, hash []byte, next core.RefreshToken, now time.Time) (core.RefreshUse, error) {
	at := micro(now)
	var (
		use      core.RefreshUse
		attempts int
	)
	err := s.tx(ctx, "use refresh token", func(tx pgx.Tx) error {
		use = core.RefreshUse{}
		attempts++
		t, err := scanToken(tx.QueryRow(ctx, lockToken, hash))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // invalid: no such token
		}
		if err != nil {
			return fmt.Errorf("read refresh token: %w", err)
		}
		if attempts > 1 {
			if done, ok, err := s.usedBefore(ctx, tx, t, next, at); err != nil || ok {
				use = done
				return err
			}
		}
		use = core.RefreshUse{Result: core.RefreshDecision(t, at), Token: t}
		switch use.Result {
		case core.RefreshReused:
			return s.revokeFamily(ctx, tx, t.Family, at)
		case core.RefreshRotated:
			succ, err := core.Successor(t, next)
			if err != nil {
				return permanentf(err)
			}
			if _, err := tx.Exec(ctx, `UPDATE refresh_tokens SET used_at = $2 WHERE hash = $1`, hash, at); err != nil {
				return fmt.Errorf("mark refresh token used: %w", err)
			}
			tag, err := tx.Exec(ctx, insertToken, succ.Hash, succ.Family, succ.UserID,
				micro(succ.IssuedAt), micro(succ.ExpiresAt), micro(succ.FamilyExpiresAt))
			if err != nil {
				return fmt.Errorf("store successor: %w", err)
			}
			if tag.RowsAffected() == 0 {
				return permanentf(fmt.Errorf("successor refresh token: %w", core.ErrExists))
			}
		}
		return nil
	})
	if err != nil {
		return core.RefreshUse{}, err
	}
	return use, nil
}

// usedBefore recognises, on a retry, a rotation that an earlier attempt of the same call
// committed: the token used at this now and next stored in its family. next's hash is the
// caller's fresh random, so no other call can have stored it. The token is reported as it was
// before that attempt. (A reuse committed so is not recognised: the retry finds the family
// revoked and answers RefreshInvalid, which changes nothing more. Telling it from a concurrent
// reuse at the same microsecond would need a token of the call in the revocation.)
func (s *Store) usedBefore(ctx context.Context, tx pgx.Tx, t core.RefreshToken, next core.RefreshToken, at time.Time) (core.RefreshUse, bool, error) {
	if t.Used.IsZero() || !t.Used.Equal(at) || len(next.Hash) == 0 {
		return core.RefreshUse{}, false, nil
	}
	var family string
	err := tx.QueryRow(ctx, `SELECT family FROM refresh_tokens WHERE hash = $1`, next.Hash).Scan(&family)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return core.RefreshUse{}, false, nil
	case err != nil:
		return core.RefreshUse{}, false, fmt.Errorf("read successor: %w", err)
	case family != t.Family:
		return core.RefreshUse{}, false, nil
	}
	before := t
	before.Used = time.Time{}
	return core.RefreshUse{Result: core.RefreshRotated, Token: before}, true, nil
}

// revokeFamily revokes the family at now and records its revocation, unless it is revoked
// already.
func (s *Store) revokeFamily(ctx context.Context, tx pgx.Tx, family string, at time.Time) error {
	tag, err := tx.Exec(ctx, `UPDATE refresh_families SET revoked_at = $2 WHERE family = $1 AND revoked_at IS NULL`, family, at)
	if err != nil {
		return fmt.Errorf("revoke family: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return nil
	}
	return recordRevocation(ctx, tx, core.RevokeSession, family, at)
}

func recordRevocation(ctx context.Context, tx pgx.Tx, kind, id string, at time.Time) error {
	if _, err := tx.Exec(ctx, `INSERT INTO revocations (kind, id, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		kind, id, at); err != nil {
		return fmt.Errorf("record revocation: %w", err)
	}
	return nil
}

// RevokeRefreshFamily revokes the family of the token with the hash at now, unless it is
// revoked already, and returns the token as stored after the call (Revoked set to the
// family's first revocation). An error wrapping core.ErrNotFound when no token has the hash.
func (s *Store) RevokeRefreshFamily(ctx context.Context, hash []byte, now time.Time) (core.RefreshToken, error) {
	at := micro(now)
	var t core.RefreshToken
	err := s.tx(ctx, "revoke refresh family", func(tx pgx.Tx) error {
		var err error
		t, err = scanToken(tx.QueryRow(ctx, lockToken, hash))
		if errors.Is(err, pgx.ErrNoRows) {
			return permanentf(fmt.Errorf("refresh token: %w", core.ErrNotFound))
		}
		if err != nil {
			return fmt.Errorf("read refresh token: %w", err)
		}
		if !t.Revoked.IsZero() {
			return nil
		}
		t.Revoked = at
		return s.revokeFamily(ctx, tx, t.Family, at)
	})
	if err != nil {
		return core.RefreshToken{}, err
	}
	return t, nil
}

// RevokeUser revokes the user's families not revoked yet, in one statement through
// refresh_families_user, and records a subject revocation.
func (s *Store) RevokeUser(ctx context.Context, userID string, now time.Time) error {
	at := micro(now)
	return s.tx(ctx, "revoke user", func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE refresh_families SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL`,
			userID, at); err != nil {
			return fmt.Errorf("revoke families: %w", err)
		}
		return recordRevocation(ctx, tx, core.RevokeSubject, userID, at)
	})
}

// Revocations returns the revocations at or after since, by time (ties by kind and id).
func (s *Store) Revocations(ctx context.Context, since time.Time) ([]core.Revocation, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT kind, id, at FROM revocations WHERE at >= $1 ORDER BY at, kind, id`, micro(since))
	if err != nil {
		return nil, fmt.Errorf("read revocations: %w", err)
	}
	revs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (core.Revocation, error) {
		var r core.Revocation
		err := row.Scan(&r.Kind, &r.ID, &r.At)
		r.At = r.At.UTC()
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("read revocations: %w", err)
	}
	return revs, nil
}

// ExpireAccounts deletes, in transactions of at most expireChunk rows like Expire, the refresh
// tokens and families that expired before the time, the revocations recorded before it and the
// login-failure windows that started before it. The families are not counted: they are how
// this store keeps a family's revocation, not rows of the contract.
func (s *Store) ExpireAccounts(ctx context.Context, before time.Time) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	at := micro(before)
	var total int64
	for _, del := range []struct {
		sql   string
		count bool
	}{
		{`DELETE FROM refresh_tokens WHERE hash IN
			(SELECT hash FROM refresh_tokens WHERE family_expires_at < $1 LIMIT $2)`, true},
		{`DELETE FROM refresh_families WHERE family IN
			(SELECT family FROM refresh_families WHERE expires_at < $1 LIMIT $2)`, false},
		{`DELETE FROM revocations WHERE (kind, id, at) IN
			(SELECT kind, id, at FROM revocations WHERE at < $1 LIMIT $2)`, true},
		{`DELETE FROM login_failures WHERE key IN
			(SELECT key FROM login_failures WHERE window_start < $1 LIMIT $2)`, true},
	} {
		for {
			var n int64
			err := s.tx(ctx, "expire accounts", func(tx pgx.Tx) error {
				tag, err := tx.Exec(ctx, del.sql, at, expireChunk)
				n = tag.RowsAffected()
				return err
			})
			if err != nil {
				return total, err
			}
			if del.count {
				total += n
			}
			if n < expireChunk {
				break
			}
		}
	}
	return total, nil
}
