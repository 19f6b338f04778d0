package storetest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/perchhq/perch/core"
)

var accountTests = []test{
	{"CreateUser", testCreateUser},
	{"SetPasswordHash", testSetPasswordHash},
	{"LoginFailures", testLoginFailures},
	{"SigningKeysOrder", testSigningKeysOrder},
	{"UpdateSigningKeys", testUpdateSigningKeys},
	{"UpdateSigningKeysConcurrent", testUpdateSigningKeysConcurrent},
	{"RefreshRotate", testRefreshRotate},
	{"RefreshSuccessorOfFamily", testRefreshSuccessorOfFamily},
	{"RefreshReuseRevokesFamily", testRefreshReuseRevokesFamily},
	{"RefreshExpired", testRefreshExpired},
	{"RefreshRevokedFamily", testRefreshRevokedFamily},
	{"RefreshUnknown", testRefreshUnknown},
	{"RefreshConcurrentUse", testRefreshConcurrentUse},
	{"RevokeRefreshFamily", testRevokeRefreshFamily},
	{"RevokeUser", testRevokeUser},
	{"Revocations", testRevocations},
	{"ExpireAccounts", testExpireAccounts},
}

// A PHC string of the form auth.HashPassword writes; the store never looks inside it.
const phc = "$argon2id$v=19$m=65536,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA"

func (h *harness) newUser(email string, now time.Time) core.User {
	h.tb.Helper()
	u := core.User{ID: h.next("user"), Email: email, PasswordHash: phc, CreatedAt: now, UpdatedAt: now}
	if err := h.store.CreateUser(h.ctx, u); err != nil {
		h.tb.Fatalf("CreateUser(%s): %v", email, err)
	}
	return u
}

func wantUser(tb testing.TB, got, want core.User) {
	tb.Helper()
	if got.ID != want.ID || got.Email != want.Email || got.PasswordHash != want.PasswordHash ||
		!sameTime(got.CreatedAt, want.CreatedAt) || !sameTime(got.UpdatedAt, want.UpdatedAt) {
		tb.Fatalf("user %+v, want %+v (times in UTC to the microsecond)", got, want)
	}
}

// sameTime reports whether got is want as stores return times: in UTC, to the microsecond.
func sameTime(got, want time.Time) bool {
	if want.IsZero() {
		return got.IsZero()
	}
	return got.Equal(micro(want)) && got.Location() == time.UTC
}

func testCreateUser(h *harness) {
	now := h.tick()
	u := h.newUser("ann@example.com", now)
	for _, get := range []struct {
		name string
		fn   func() (core.User, error)
	}{
		{"UserByEmail", func() (core.User, error) { return h.store.UserByEmail(h.ctx, u.Email) }},
		{"UserByID", func() (core.User, error) { return h.store.UserByID(h.ctx, u.ID) }},
	} {
		got, err := get.fn()
		if err != nil {
			h.tb.Fatalf("%s: %v", get.name, err)
		}
		wantUser(h.tb, got, u)
	}

	// Another user with the email, or with the id, is refused, and nothing of it is stored.
	sameEmail := core.User{ID: h.next("user"), Email: u.Email, PasswordHash: phc, CreatedAt: now, UpdatedAt: now}
	if err := h.store.CreateUser(h.ctx, sameEmail); !errors.Is(err, core.ErrExists) {
		h.tb.Fatalf("CreateUser with a taken email: %v, want core.ErrExists", err)
	}
	if got, err := h.store.UserByID(h.ctx, sameEmail.ID); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("UserByID of the refused user: %+v, %v; want core.ErrNotFound", got, err)
	}
	sameID := core.User{ID: u.ID, Email: "bob@example.com", PasswordHash: phc, CreatedAt: now, UpdatedAt: now}
	if err := h.store.CreateUser(h.ctx, sameID); !errors.Is(err, core.ErrExists) {
		h.tb.Fatalf("CreateUser with a taken id: %v, want core.ErrExists", err)
	}
	if got, err := h.store.UserByEmail(h.ctx, sameID.Email); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("UserByEmail of the refused user: %+v, %v; want core.ErrNotFound", got, err)
	}

	// Emails compare byte by byte: another case is another email.
	upper := h.newUser("Ann@example.com", now)
	for email, want := range map[string]core.User{u.Email: u, upper.Email: upper} {
		got, err := h.store.UserByEmail(h.ctx, email)
		if err != nil {
			h.tb.Fatalf("UserByEmail(%s): %v", email, err)
		}
		wantUser(h.tb, got, want)
	}
	for _, email := range []string{"ANN@example.com", "ann@example.com ", "ann", ""} {
		if got, err := h.store.UserByEmail(h.ctx, email); !errors.Is(err, core.ErrNotFound) {
			h.tb.Fatalf("UserByEmail(%q) = %+v, %v; want core.ErrNotFound", email, got, err)
		}
	}
	if got, err := h.store.UserByID(h.ctx, h.next("user")); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("UserByID of an unknown id = %+v, %v; want core.ErrNotFound", got, err)
	}
}

func testSetPasswordHash(h *harness) {
	created := h.tick()
	u := h.newUser("ann@example.com", created)
	other := h.newUser("bob@example.com", created)
	changed := h.tick()
	const hash = "$argon2id$v=19$m=65536,t=2,p=1$bmV3c2FsdG5ld3NhbHQ$bmV3aGFzaG5ld2hhc2huZXdoYXNoa"
	if err := h.store.SetPasswordHash(h.ctx, u.ID, hash, changed); err != nil {
		h.tb.Fatalf("SetPasswordHash: %v", err)
	}
	want := u
	want.PasswordHash, want.UpdatedAt = hash, changed
	for _, get := range []func() (core.User, error){
		func() (core.User, error) { return h.store.UserByID(h.ctx, u.ID) },
		func() (core.User, error) { return h.store.UserByEmail(h.ctx, u.Email) },
	} {
		got, err := get()
		if err != nil {
			h.tb.Fatalf("read user: %v", err)
		}
		wantUser(h.tb, got, want)
	}
	got, err := h.store.UserByID(h.ctx, other.ID)
	if err != nil {
		h.tb.Fatalf("UserByID(other): %v", err)
	}
	wantUser(h.tb, got, other)
	if err := h.store.SetPasswordHash(h.ctx, h.next("user"), hash, h.tick()); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("SetPasswordHash of an unknown user: %v, want core.ErrNotFound", err)
	}
}

func testLoginFailures(h *harness) {
	const window = 10 * time.Minute
	key, other := "ann@example.com", "bob@example.com"
	t0 := micro(h.now) // exact, so that the window's bounds can be hit to the microsecond
	note := func(key string, at time.Time, want int) {
		h.tb.Helper()
		n, err := h.store.NoteLoginFailure(h.ctx, key, at, window)
		if err != nil || n != want {
			h.tb.Fatalf("NoteLoginFailure(%s, t0+%v) = %d, %v; want %d", key, at.Sub(t0), n, err, want)
		}
	}
	count := func(key string, at time.Time, want int) {
		h.tb.Helper()
		n, err := h.store.LoginFailures(h.ctx, key, at, window)
		if err != nil || n != want {
			h.tb.Fatalf("LoginFailures(%s, t0+%v) = %d, %v; want %d", key, at.Sub(t0), n, err, want)
		}
	}
	count(key, t0, 0) // unknown key
	note(key, t0, 1)
	note(key, t0.Add(time.Minute), 2)
	note(key, t0.Add(window-time.Microsecond), 3) // the last instant of the window
	count(key, t0.Add(5*time.Minute), 3)
	count(key, t0.Add(window-time.Microsecond), 3)
	count(key, t0.Add(window), 0) // the window is over
	count(other, t0.Add(time.Minute), 0)
	note(other, t0.Add(time.Minute), 1) // keys count apart
	count(key, t0.Add(2*time.Minute), 3)

	// A failure at or after the end starts a new window there: fixed windows, not sliding.
	t1 := t0.Add(window)
	note(key, t1, 1)
	note(key, t1.Add(9*time.Minute), 2)
	count(key, t1.Add(window-time.Microsecond), 2)
	count(key, t1.Add(window), 0)
	note(key, t1.Add(window+time.Hour), 1) // long after: a new window
	count(key, t1.Add(window+time.Hour), 1)

	// Clearing forgets the window; the next failure starts one.
	if err := h.store.ClearLoginFailures(h.ctx, key); err != nil {
		h.tb.Fatalf("ClearLoginFailures: %v", err)
	}
	count(key, t1.Add(window+time.Hour), 0)
	count(other, t0.Add(2*time.Minute), 1)
	note(key, t1.Add(window+time.Hour+time.Second), 1)
	if err := h.store.ClearLoginFailures(h.ctx, "nobody@example.com"); err != nil {
		h.tb.Fatalf("ClearLoginFailures of an unknown key: %v", err)
	}
	// Times with nanoseconds, in another zone, fall in the window they are in once truncated.
	note("zone@example.com", h.now, 1)
	note("zone@example.com", h.now.Add(window-time.Microsecond), 2)
}

func (h *harness) key(id string, created time.Time) core.StoredKey {
	priv := make([]byte, 64)
	rand.Read(priv)
	return core.StoredKey{ID: id, Private: priv, Created: created}
}

func (h *harness) signingKeys() []core.StoredKey {
	h.tb.Helper()
	keys, err := h.store.SigningKeys(h.ctx)
	if err != nil {
		h.tb.Fatalf("SigningKeys: %v", err)
	}
	return keys
}

// wantKeys fails unless got are want, in order, with Created in UTC to the microsecond.
func wantKeys(tb testing.TB, what string, got, want []core.StoredKey) {
	tb.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i].ID == want[i].ID && bytes.Equal(got[i].Private, want[i].Private) && sameTime(got[i].Created, want[i].Created)
	}
	if !ok {
		tb.Fatalf("%s: keys %v, want %v", what, keyIDs(got), keyIDs(want))
	}
}

func keyIDs(keys []core.StoredKey) []string {
	ids := make([]string, len(keys))
	for i, k := range keys {
		ids[i] = fmt.Sprintf("%s@%s", k.ID, k.Created.Format(time.RFC3339Nano))
	}
	return ids
}

// setKeys replaces the stored keys with keys and returns what UpdateSigningKeys returned.
func (h *harness) setKeys(keys ...core.StoredKey) []core.StoredKey {
	h.tb.Helper()
	got, err := h.store.UpdateSigningKeys(h.ctx, func([]core.StoredKey) ([]core.StoredKey, bool, error) {
		return slices.Clone(keys), true, nil
	})
	if err != nil {
		h.tb.Fatalf("UpdateSigningKeys: %v", err)
	}
	return got
}

func testSigningKeysOrder(h *harness) {
	if keys := h.signingKeys(); len(keys) != 0 {
		h.tb.Fatalf("new store has keys %v", keyIDs(keys))
	}
	t0 := h.tick()
	newest := h.key("kid-a", t0.Add(2*time.Second))
	tieB := h.key("kid-b", t0.Add(time.Second))
	tieA := h.key("kid-0", t0.Add(time.Second)) // ties by id: kid-0 before kid-b
	oldest := h.key("kid-z", t0)
	want := []core.StoredKey{oldest, tieA, tieB, newest}
	wantKeys(h.tb, "UpdateSigningKeys", h.setKeys(newest, tieB, oldest, tieA), want)
	wantKeys(h.tb, "SigningKeys", h.signingKeys(), want)
}

func testUpdateSigningKeys(h *harness) {
	t0 := h.tick()
	a, b := h.key("kid-a", t0), h.key("kid-b", t0.Add(time.Second))
	h.setKeys(a, b)

	// fn sees the stored keys, oldest first; no change reported: nothing is written, whatever
	// fn returned.
	for _, next := range [][]core.StoredKey{nil, {h.key("kid-c", t0)}} {
		got, err := h.store.UpdateSigningKeys(h.ctx, func(current []core.StoredKey) ([]core.StoredKey, bool, error) {
			wantKeys(h.tb, "fn's argument", current, []core.StoredKey{a, b})
			return next, false, nil
		})
		if err != nil {
			h.tb.Fatalf("UpdateSigningKeys without a change: %v", err)
		}
		wantKeys(h.tb, "UpdateSigningKeys without a change", got, []core.StoredKey{a, b})
		wantKeys(h.tb, "SigningKeys after no change", h.signingKeys(), []core.StoredKey{a, b})
	}

	// A change replaces the keys: a goes, b's stored form changes (as when a key gets its
	// NotAfter), c comes.
	b2 := h.key("kid-b", t0.Add(time.Second))
	c := h.key("kid-c", t0.Add(2*time.Second))
	got, err := h.store.UpdateSigningKeys(h.ctx, func(current []core.StoredKey) ([]core.StoredKey, bool, error) {
		return []core.StoredKey{c, b2}, true, nil
	})
	if err != nil {
		h.tb.Fatalf("UpdateSigningKeys: %v", err)
	}
	wantKeys(h.tb, "UpdateSigningKeys replacing", got, []core.StoredKey{b2, c})
	wantKeys(h.tb, "SigningKeys after replacing", h.signingKeys(), []core.StoredKey{b2, c})

	// fn's error is returned and nothing is written.
	boom := errors.New("boom")
	if got, err := h.store.UpdateSigningKeys(h.ctx, func([]core.StoredKey) ([]core.StoredKey, bool, error) {
		return []core.StoredKey{a}, true, boom
	}); !errors.Is(err, boom) {
		h.tb.Fatalf("UpdateSigningKeys with fn failing: %v, %v; want fn's error", keyIDs(got), err)
	}
	wantKeys(h.tb, "SigningKeys after fn failed", h.signingKeys(), []core.StoredKey{b2, c})

	// A change to no keys removes them all.
	if got := h.setKeys(); len(got) != 0 {
		h.tb.Fatalf("UpdateSigningKeys to none returned %v", keyIDs(got))
	}
	if keys := h.signingKeys(); len(keys) != 0 {
		h.tb.Fatalf("keys %v after removing them all", keyIDs(keys))
	}
}

// testUpdateSigningKeysConcurrent has callers that each add a key when there are fewer than a
// limit call UpdateSigningKeys at once: the limit holds, as it would if they ran one after
// the other (the rotation of several cores must not make two new keys).
func testUpdateSigningKeysConcurrent(h *harness) {
	const callers = 4
	t0 := h.tick()
	for round, limit := range []int{1, 3} {
		results := make([][]core.StoredKey, callers)
		errs := make([]error, callers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for c := range callers {
			mine := h.key(fmt.Sprintf("kid-r%d-c%d", round, c), t0.Add(time.Duration(round*callers+c)*time.Second))
			wg.Go(func() {
				<-start
				results[c], errs[c] = h.store.UpdateSigningKeys(h.ctx, func(current []core.StoredKey) ([]core.StoredKey, bool, error) {
					if len(current) >= limit {
						return nil, false, nil
					}
					return append(slices.Clone(current), mine), true, nil
				})
			})
		}
		close(start)
		wg.Wait()
		stored := h.signingKeys()
		if len(stored) != limit {
			h.tb.Fatalf("round %d: %d keys after %d concurrent callers adding below %d: %v", round, len(stored), callers, limit, keyIDs(stored))
		}
		for c := range callers {
			if errs[c] != nil {
				h.tb.Fatalf("round %d caller %d: %v", round, c, errs[c])
			}
			// Each caller returns the keys stored when it ended; the last one to end returns
			// them all.
			if len(results[c]) == 0 || len(results[c]) > limit {
				h.tb.Fatalf("round %d caller %d: returned %v", round, c, keyIDs(results[c]))
			}
			for _, k := range results[c] {
				if !slices.ContainsFunc(stored, func(s core.StoredKey) bool { return s.ID == k.ID }) {
					h.tb.Fatalf("round %d caller %d: returned key %s, which is not stored", round, c, k.ID)
				}
			}
		}
	}
}

// Refresh tokens.

func randomHash() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
}

// refreshToken returns a token issued at issued for the user, in family, which it starts unless
// it is given the family's expiry: life is the token's, familyLife the family's from issued.
func refreshToken(userID, family string, issued time.Time, life, familyLife time.Duration) core.RefreshToken {
	return core.RefreshToken{
		Hash: randomHash(), Family: family, UserID: userID,
		IssuedAt: issued, ExpiresAt: issued.Add(life), FamilyExpiresAt: issued.Add(familyLife),
	}
}

// successor returns the token that rotates t at now.
func successor(t core.RefreshToken, now time.Time) core.RefreshToken {
	n := refreshToken(t.UserID, t.Family, now, time.Hour, 0)
	n.FamilyExpiresAt = t.FamilyExpiresAt
	return n
}

// login stores a token that starts a new family of the user at now, with a life of an hour
// and a family of 30 days.
func (h *harness) login(userID string, now time.Time) core.RefreshToken {
	h.tb.Helper()
	t := refreshToken(userID, h.next("family"), now, time.Hour, 30*24*time.Hour)
	h.createToken(t)
	return t
}

func (h *harness) createToken(t core.RefreshToken) {
	h.tb.Helper()
	if err := h.store.CreateRefreshToken(h.ctx, t); err != nil {
		h.tb.Fatalf("CreateRefreshToken: %v", err)
	}
}

func (h *harness) useToken(hash []byte, next core.RefreshToken, now time.Time) core.RefreshUse {
	h.tb.Helper()
	use, err := h.store.UseRefreshToken(h.ctx, hash, next, now)
	if err != nil {
		h.tb.Fatalf("UseRefreshToken: %v", err)
	}
	return use
}

var resultNames = map[core.RefreshResult]string{
	core.RefreshInvalid: "invalid", core.RefreshRotated: "rotated", core.RefreshReused: "reused",
}

// wantUse fails unless use has the result and its Token is want (times in UTC to the
// microsecond, Used and Revoked included).
func wantUse(tb testing.TB, use core.RefreshUse, result core.RefreshResult, want core.RefreshToken) {
	tb.Helper()
	if use.Result != result {
		tb.Fatalf("UseRefreshToken: %s, want %s", resultNames[use.Result], resultNames[result])
	}
	wantToken(tb, "UseRefreshToken's token", use.Token, want)
}

func wantToken(tb testing.TB, what string, got, want core.RefreshToken) {
	tb.Helper()
	if !bytes.Equal(got.Hash, want.Hash) || got.Family != want.Family || got.UserID != want.UserID ||
		!sameTime(got.IssuedAt, want.IssuedAt) || !sameTime(got.ExpiresAt, want.ExpiresAt) ||
		!sameTime(got.FamilyExpiresAt, want.FamilyExpiresAt) || !sameTime(got.Used, want.Used) ||
		!sameTime(got.Revoked, want.Revoked) {
		tb.Fatalf("%s:\n got %s\nwant %s", what, tokenString(got), tokenString(want))
	}
}

func tokenString(t core.RefreshToken) string {
	return fmt.Sprintf("{hash %x… family %q user %q issued %v expires %v family expires %v used %v revoked %v}",
		t.Hash[:min(4, len(t.Hash))], t.Family, t.UserID, t.IssuedAt, t.ExpiresAt, t.FamilyExpiresAt, t.Used, t.Revoked)
}

// wantUnknown fails unless no token has the hash.
func (h *harness) wantUnknown(hash []byte) {
	h.tb.Helper()
	use := h.useToken(hash, refreshToken("u", "f", h.now, time.Hour, time.Hour), h.now)
	if use.Result != core.RefreshInvalid || !reflect.DeepEqual(use.Token, core.RefreshToken{}) {
		h.tb.Fatalf("UseRefreshToken of a hash that should be unknown: %s, token %s", resultNames[use.Result], tokenString(use.Token))
	}
}

func (h *harness) revocations(since time.Time) []core.Revocation {
	h.tb.Helper()
	revs, err := h.store.Revocations(h.ctx, since)
	if err != nil {
		h.tb.Fatalf("Revocations: %v", err)
	}
	return revs
}

func wantRevocations(tb testing.TB, got, want []core.Revocation) {
	tb.Helper()
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i].Kind == want[i].Kind && got[i].ID == want[i].ID && sameTime(got[i].At, want[i].At)
	}
	if !ok {
		tb.Fatalf("revocations\n got %v\nwant %v", got, want)
	}
}

func testRefreshRotate(h *harness) {
	u := h.newUser("ann@example.com", h.tick())
	t0 := h.tick()
	tok := h.login(u.ID, t0)

	// The presented token comes back as stored before the call; its successor is stored in
	// the family, and rotates in turn.
	prev := tok
	for range 3 {
		now := h.tick()
		next := successor(prev, now)
		wantUse(h.tb, h.useToken(prev.Hash, next, now), core.RefreshRotated, prev)
		prev = next
	}
	if revs := h.revocations(time.Time{}); len(revs) != 0 {
		h.tb.Fatalf("rotations recorded revocations %v", revs)
	}

	// A token with the hash of a stored one, or starting a family that exists, is refused.
	clash := refreshToken(u.ID, h.next("family"), t0, time.Hour, time.Hour)
	clash.Hash = tok.Hash
	if err := h.store.CreateRefreshToken(h.ctx, clash); err == nil {
		h.tb.Fatal("CreateRefreshToken with a stored hash: no error")
	}
	again := refreshToken(u.ID, tok.Family, t0, time.Hour, time.Hour)
	if err := h.store.CreateRefreshToken(h.ctx, again); err == nil {
		h.tb.Fatal("CreateRefreshToken of a family that exists: no error")
	}
	h.wantUnknown(again.Hash)

	// CreateRefreshToken ignores Used and Revoked.
	set := refreshToken(u.ID, h.next("family"), t0, time.Hour, time.Hour)
	set.Used, set.Revoked = t0, t0
	h.createToken(set)
	now := h.tick()
	want := set
	want.Used, want.Revoked = time.Time{}, time.Time{}
	wantUse(h.tb, h.useToken(set.Hash, successor(set, now), now), core.RefreshRotated, want)
}

// testRefreshSuccessorOfFamily: the caller of UseRefreshToken knows the family, user and family
// expiry of the token it presents only from the answer, so the successor takes them from the
// presented token, whatever next says of them.
func testRefreshSuccessorOfFamily(h *harness) {
	tok := h.login("user-1", h.tick())
	for name, next := range map[string]core.RefreshToken{
		"left zero":     {Hash: randomHash(), IssuedAt: h.now, ExpiresAt: h.now.Add(time.Hour)},
		"another":       refreshToken("user-2", h.next("family"), h.now, time.Hour, 31*24*time.Hour),
		"another again": refreshToken("", "", h.now, time.Hour, time.Hour),
	} {
		now := h.tick()
		next.IssuedAt, next.ExpiresAt = now, now.Add(time.Hour)
		stored := next
		stored.Family, stored.UserID, stored.FamilyExpiresAt = tok.Family, tok.UserID, tok.FamilyExpiresAt
		wantUse(h.tb, h.useToken(tok.Hash, next, now), core.RefreshRotated, tok)
		later := h.tick()
		after := successor(stored, later)
		use := h.useToken(next.Hash, after, later)
		if use.Result != core.RefreshRotated {
			h.tb.Fatalf("next %s: the successor is %s, want rotated", name, resultNames[use.Result])
		}
		wantToken(h.tb, "successor of next "+name, use.Token, stored)
		tok = after // the token now current in the family
	}
}

func testRefreshReuseRevokesFamily(h *harness) {
	t0 := h.tick()
	tok := h.login("user-1", t0)
	bystander := h.login("user-1", t0) // another login of the same user
	rotated := h.tick()
	next := successor(tok, rotated)
	wantUse(h.tb, h.useToken(tok.Hash, next, rotated), core.RefreshRotated, tok)

	// The rotated token again: reused. The family is revoked and the second successor is not
	// stored; the answer is the token as it was before the call.
	reused := h.tick()
	stolen := successor(tok, reused)
	used := tok
	used.Used = rotated
	wantUse(h.tb, h.useToken(tok.Hash, stolen, reused), core.RefreshReused, used)
	h.wantUnknown(stolen.Hash)
	wantRevocations(h.tb, h.revocations(time.Time{}), []core.Revocation{{Kind: core.RevokeSession, ID: tok.Family, At: reused}})

	// The successor is now invalid too, and so is the reused token: its family is revoked.
	revokedNext := next
	revokedNext.Revoked = reused
	now := h.tick()
	wantUse(h.tb, h.useToken(next.Hash, successor(next, now), now), core.RefreshInvalid, revokedNext)
	revokedUsed := used
	revokedUsed.Revoked = reused
	wantUse(h.tb, h.useToken(tok.Hash, successor(tok, now), now), core.RefreshInvalid, revokedUsed)
	if revs := h.revocations(time.Time{}); len(revs) != 1 {
		h.tb.Fatalf("revocations %v, want the family's one", revs)
	}
	// Other families are not affected.
	wantUse(h.tb, h.useToken(bystander.Hash, successor(bystander, now), now), core.RefreshRotated, bystander)
}

func testRefreshExpired(h *harness) {
	t0 := micro(h.now) // exact, so that the bounds can be hit to the microsecond
	// The token expires first.
	tok := refreshToken("user-1", h.next("family"), t0, time.Hour, 2*time.Hour)
	h.createToken(tok)
	for _, at := range []time.Time{tok.ExpiresAt, tok.ExpiresAt.Add(time.Minute)} {
		wantUse(h.tb, h.useToken(tok.Hash, successor(tok, at), at), core.RefreshInvalid, tok)
	}
	// The family expires first.
	fam := refreshToken("user-1", h.next("family"), t0, 3*time.Hour, 2*time.Hour)
	h.createToken(fam)
	for _, at := range []time.Time{fam.FamilyExpiresAt, fam.FamilyExpiresAt.Add(time.Minute)} {
		wantUse(h.tb, h.useToken(fam.Hash, successor(fam, at), at), core.RefreshInvalid, fam)
	}
	// Nothing changed: just before their ends both tokens rotate.
	for _, t := range []core.RefreshToken{tok, fam} {
		at := t.ExpiresAt
		if t.FamilyExpiresAt.Before(at) {
			at = t.FamilyExpiresAt
		}
		at = at.Add(-time.Microsecond)
		wantUse(h.tb, h.useToken(t.Hash, successor(t, at), at), core.RefreshRotated, t)
	}
	if revs := h.revocations(time.Time{}); len(revs) != 0 {
		h.tb.Fatalf("expired tokens recorded revocations %v", revs)
	}
}

func testRefreshRevokedFamily(h *harness) {
	t0 := h.tick()
	tok := h.login("user-1", t0)
	revoked := h.tick()
	if _, err := h.store.RevokeRefreshFamily(h.ctx, tok.Hash, revoked); err != nil {
		h.tb.Fatalf("RevokeRefreshFamily: %v", err)
	}
	now := h.tick()
	next := successor(tok, now)
	want := tok
	want.Revoked = revoked
	wantUse(h.tb, h.useToken(tok.Hash, next, now), core.RefreshInvalid, want)
	h.wantUnknown(next.Hash)
	// Invalid changes nothing: no revocation beyond the logout's.
	wantRevocations(h.tb, h.revocations(time.Time{}), []core.Revocation{{Kind: core.RevokeSession, ID: tok.Family, At: revoked}})
}

func testRefreshUnknown(h *harness) {
	h.login("user-1", h.tick())
	h.wantUnknown(randomHash())
	h.wantUnknown(nil)
	if t, err := h.store.RevokeRefreshFamily(h.ctx, randomHash(), h.tick()); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("RevokeRefreshFamily of an unknown hash: %s, %v; want core.ErrNotFound", tokenString(t), err)
	}
	if revs := h.revocations(time.Time{}); len(revs) != 0 {
		h.tb.Fatalf("revocations %v", revs)
	}
}

// testRefreshConcurrentUse presents one token in several calls at once (a client retrying, or
// a thief racing it): exactly one rotates it; the first to see it used calls it reused and
// revokes the family; the others find the family revoked. Only the rotation's successor is
// stored, and it is revoked with the family.
func testRefreshConcurrentUse(h *harness) {
	const callers = 8
	tok := h.login("user-1", h.tick())
	now := h.tick()
	nexts := make([]core.RefreshToken, callers)
	uses := make([]core.RefreshUse, callers)
	errs := make([]error, callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for c := range callers {
		nexts[c] = successor(tok, now)
		wg.Go(func() {
			<-start
			uses[c], errs[c] = h.store.UseRefreshToken(h.ctx, tok.Hash, nexts[c], now)
		})
	}
	close(start)
	wg.Wait()
	count := map[core.RefreshResult]int{}
	winner := -1
	for c := range callers {
		if errs[c] != nil {
			h.tb.Fatalf("caller %d: %v", c, errs[c])
		}
		count[uses[c].Result]++
		if uses[c].Result == core.RefreshRotated {
			winner = c
		}
		if !bytes.Equal(uses[c].Token.Hash, tok.Hash) || uses[c].Token.Family != tok.Family {
			h.tb.Fatalf("caller %d: token %s, want the one presented", c, tokenString(uses[c].Token))
		}
	}
	if count[core.RefreshRotated] != 1 || count[core.RefreshReused] != 1 || count[core.RefreshInvalid] != callers-2 {
		h.tb.Fatalf("%d concurrent uses of one token: %d rotated, %d reused, %d invalid; want 1, 1, %d",
			callers, count[core.RefreshRotated], count[core.RefreshReused], count[core.RefreshInvalid], callers-2)
	}
	wantToken(h.tb, "the rotation's token", uses[winner].Token, tok)
	for c := range callers {
		if c != winner {
			h.wantUnknown(nexts[c].Hash)
		}
	}
	later := h.tick()
	revoked := nexts[winner]
	revoked.Revoked = now
	wantUse(h.tb, h.useToken(nexts[winner].Hash, successor(tok, later), later), core.RefreshInvalid, revoked)
	wantRevocations(h.tb, h.revocations(time.Time{}), []core.Revocation{{Kind: core.RevokeSession, ID: tok.Family, At: now}})
}

func testRevokeRefreshFamily(h *harness) {
	t0 := h.tick()
	tok := h.login("user-1", t0)
	other := h.login("user-1", t0)
	rotated := h.tick()
	next := successor(tok, rotated)
	h.useToken(tok.Hash, next, rotated)

	// Logout with the current token: the family is revoked and the token returned with it.
	logout := h.tick()
	got, err := h.store.RevokeRefreshFamily(h.ctx, next.Hash, logout)
	if err != nil {
		h.tb.Fatalf("RevokeRefreshFamily: %v", err)
	}
	want := next
	want.Revoked = logout
	wantToken(h.tb, "RevokeRefreshFamily", got, want)
	now := h.tick()
	wantUse(h.tb, h.useToken(next.Hash, successor(next, now), now), core.RefreshInvalid, want)
	old := tok
	old.Used, old.Revoked = rotated, logout
	wantUse(h.tb, h.useToken(tok.Hash, successor(tok, now), now), core.RefreshInvalid, old) // revoked, not reused

	// Again, with any token of the family: it stays revoked at its first time and records
	// nothing more.
	for _, t := range []core.RefreshToken{tok, next} {
		got, err := h.store.RevokeRefreshFamily(h.ctx, t.Hash, h.tick())
		if err != nil {
			h.tb.Fatalf("RevokeRefreshFamily again: %v", err)
		}
		if !sameTime(got.Revoked, logout) || got.Family != tok.Family {
			h.tb.Fatalf("RevokeRefreshFamily again: %s, want revoked at %v", tokenString(got), micro(logout))
		}
	}
	wantRevocations(h.tb, h.revocations(time.Time{}), []core.Revocation{{Kind: core.RevokeSession, ID: tok.Family, At: logout}})
	// The user's other login is not affected.
	now = h.tick()
	wantUse(h.tb, h.useToken(other.Hash, successor(other, now), now), core.RefreshRotated, other)
}

func testRevokeUser(h *harness) {
	t0 := h.tick()
	ann, bob := h.newUser("ann@example.com", t0), h.newUser("bob@example.com", t0)
	first, second := h.login(ann.ID, t0), h.login(ann.ID, t0)
	bobs := h.login(bob.ID, t0)
	logout := h.tick()
	if _, err := h.store.RevokeRefreshFamily(h.ctx, first.Hash, logout); err != nil {
		h.tb.Fatalf("RevokeRefreshFamily: %v", err)
	}
	revoked := h.tick()
	if err := h.store.RevokeUser(h.ctx, ann.ID, revoked); err != nil {
		h.tb.Fatalf("RevokeUser: %v", err)
	}
	now := h.tick()
	// Every family of the user is revoked; one revoked before stays at its first time.
	for _, tt := range []struct {
		tok core.RefreshToken
		at  time.Time
	}{{first, logout}, {second, revoked}} {
		want := tt.tok
		want.Revoked = tt.at
		wantUse(h.tb, h.useToken(tt.tok.Hash, successor(tt.tok, now), now), core.RefreshInvalid, want)
	}
	wantUse(h.tb, h.useToken(bobs.Hash, successor(bobs, now), now), core.RefreshRotated, bobs)
	wantRevocations(h.tb, h.revocations(time.Time{}), []core.Revocation{
		{Kind: core.RevokeSession, ID: first.Family, At: logout},
		{Kind: core.RevokeSubject, ID: ann.ID, At: revoked},
	})

	// A user without a family still gets its revocation (its access tokens outlive nothing
	// the store knows of, but the edges must hear of it).
	later := h.tick()
	if err := h.store.RevokeUser(h.ctx, "user-without-logins", later); err != nil {
		h.tb.Fatalf("RevokeUser: %v", err)
	}
	wantRevocations(h.tb, h.revocations(later), []core.Revocation{{Kind: core.RevokeSubject, ID: "user-without-logins", At: later}})
}

func testRevocations(h *harness) {
	t1 := h.tick()
	t2 := h.tick()
	t3 := h.tick()
	// Recorded out of order: they come back in the order of their times.
	for _, r := range []struct {
		id string
		at time.Time
	}{{"user-b", t2}, {"user-a", t1}} {
		if err := h.store.RevokeUser(h.ctx, r.id, r.at); err != nil {
			h.tb.Fatalf("RevokeUser: %v", err)
		}
	}
	tok := h.login("user-c", t1)
	if _, err := h.store.RevokeRefreshFamily(h.ctx, tok.Hash, t3); err != nil {
		h.tb.Fatalf("RevokeRefreshFamily: %v", err)
	}
	a := core.Revocation{Kind: core.RevokeSubject, ID: "user-a", At: t1}
	b := core.Revocation{Kind: core.RevokeSubject, ID: "user-b", At: t2}
	c := core.Revocation{Kind: core.RevokeSession, ID: tok.Family, At: t3}
	wantRevocations(h.tb, h.revocations(time.Time{}), []core.Revocation{a, b, c})
	wantRevocations(h.tb, h.revocations(micro(t1).Add(-time.Microsecond)), []core.Revocation{a, b, c})
	wantRevocations(h.tb, h.revocations(micro(t2)), []core.Revocation{b, c}) // at or after
	wantRevocations(h.tb, h.revocations(micro(t2).Add(time.Microsecond)), []core.Revocation{c})
	wantRevocations(h.tb, h.revocations(micro(t3)), []core.Revocation{c})
	if revs := h.revocations(micro(t3).Add(time.Microsecond)); len(revs) != 0 {
		h.tb.Fatalf("revocations after the last: %v", revs)
	}
}

func testExpireAccounts(h *harness) {
	const window = 72 * time.Hour
	before := micro(h.now)
	// A family that expired an hour before, with a rotated token (two rows); one that expires
	// exactly at the bound, and one that expires later, are kept.
	old := refreshToken("user-1", h.next("family"), before.Add(-48*time.Hour), time.Hour, 47*time.Hour)
	h.createToken(old)
	oldNext := successor(old, old.IssuedAt.Add(time.Minute))
	h.useToken(old.Hash, oldNext, old.IssuedAt.Add(time.Minute))
	edge := refreshToken("user-1", h.next("family"), before.Add(-48*time.Hour), 49*time.Hour, 48*time.Hour)
	h.createToken(edge)
	recent := refreshToken("user-1", h.next("family"), before, time.Hour, 30*24*time.Hour)
	h.createToken(recent)
	// Revocations before the bound go; at and after it they stay.
	for _, r := range []struct {
		id string
		at time.Time
	}{{"gone", before.Add(-2 * time.Hour)}, {"at-bound", before}, {"later", before.Add(time.Minute)}} {
		if err := h.store.RevokeUser(h.ctx, r.id, r.at); err != nil {
			h.tb.Fatalf("RevokeUser: %v", err)
		}
	}
	// Login-failure windows that started before the bound go, even when not over yet.
	for key, at := range map[string]time.Time{"old@example.com": before.Add(-3 * time.Hour), "new@example.com": before} {
		if _, err := h.store.NoteLoginFailure(h.ctx, key, at, window); err != nil {
			h.tb.Fatalf("NoteLoginFailure: %v", err)
		}
	}

	n, err := h.store.ExpireAccounts(h.ctx, before)
	if err != nil {
		h.tb.Fatalf("ExpireAccounts: %v", err)
	}
	if n != 4 {
		h.tb.Fatalf("ExpireAccounts removed %d rows, want 4 (2 refresh tokens, 1 revocation, 1 login-failure window)", n)
	}
	h.wantUnknown(old.Hash)
	h.wantUnknown(oldNext.Hash)
	if t, err := h.store.RevokeRefreshFamily(h.ctx, oldNext.Hash, before); !errors.Is(err, core.ErrNotFound) {
		h.tb.Fatalf("RevokeRefreshFamily of an expired family: %s, %v; want core.ErrNotFound", tokenString(t), err)
	}
	for _, t := range []core.RefreshToken{edge, recent} {
		at := t.IssuedAt.Add(time.Minute)
		wantUse(h.tb, h.useToken(t.Hash, successor(t, at), at), core.RefreshRotated, t)
	}
	wantRevocations(h.tb, h.revocations(time.Time{}), []core.Revocation{
		{Kind: core.RevokeSubject, ID: "at-bound", At: before},
		{Kind: core.RevokeSubject, ID: "later", At: before.Add(time.Minute)},
	})
	for key, want := range map[string]int{"old@example.com": 0, "new@example.com": 1} {
		if got, err := h.store.LoginFailures(h.ctx, key, before, window); err != nil || got != want {
			h.tb.Fatalf("LoginFailures(%s) after ExpireAccounts: %d, %v; want %d", key, got, err, want)
		}
	}
	if n, err := h.store.ExpireAccounts(h.ctx, before); err != nil || n != 0 {
		h.tb.Fatalf("second ExpireAccounts: %d, %v; want 0, nil", n, err)
	}
}
