package core

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"
)

// The rules of AccountStore that every store applies the same way, as ApplyCommand is for
// writes: a store reads the rows, lets these decide, and writes what they decided, in its
// transaction.

// RefreshDecision is what UseRefreshToken does with the stored token t presented at now:
// RefreshInvalid when it expired (ExpiresAt or FamilyExpiresAt at or before now) or its
// family was revoked, RefreshReused when it was used before, RefreshRotated otherwise. (A
// token that is not stored is RefreshInvalid without asking.)
func RefreshDecision(t RefreshToken, now time.Time) RefreshResult {
	now = now.Truncate(time.Microsecond)
	switch {
	case !now.Before(t.ExpiresAt), !now.Before(t.FamilyExpiresAt), !t.Revoked.IsZero():
		return RefreshInvalid
	case !t.Used.IsZero():
		return RefreshReused
	}
	return RefreshRotated
}

// Successor returns next as UseRefreshToken stores it after rotating t: in t's family, for
// t's user, expiring with the family. next's own Family, UserID and FamilyExpiresAt are not
// used (the caller knows them only from the answer); Used and Revoked are cleared.
func Successor(t, next RefreshToken) (RefreshToken, error) {
	if len(next.Hash) == 0 {
		return RefreshToken{}, errors.New("successor refresh token without a hash")
	}
	next.Family, next.UserID, next.FamilyExpiresAt = t.Family, t.UserID, t.FamilyExpiresAt
	next.Used, next.Revoked = time.Time{}, time.Time{}
	return next, nil
}

// NormaliseKeys returns keys as a store keeps them: Created in UTC to the microsecond, oldest
// first, ties by ID. A key without an ID, or two with one ID, is an error.
func NormaliseKeys(keys []StoredKey) ([]StoredKey, error) {
	out := make([]StoredKey, len(keys))
	seen := make(map[string]bool, len(keys))
	for i, k := range keys {
		switch {
		case k.ID == "":
			return nil, errors.New("signing key without an id")
		case seen[k.ID]:
			return nil, fmt.Errorf("signing key %s given twice", k.ID)
		}
		seen[k.ID] = true
		k.Created = k.Created.UTC().Truncate(time.Microsecond)
		out[i] = k
	}
	slices.SortFunc(out, func(a, b StoredKey) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}
