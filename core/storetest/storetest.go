package storetest

import (
	"testing"

	"github.com/perchhq/perch/core"
)

// Partitions is the partition count the suite opens stores with. It is small so that tests
// can place documents in every partition, and more than one so that they can tell partitions
// apart.
const Partitions = 4

// OpenFunc opens an empty store with the given partition count for the test tb. It must
// arrange for the store to be closed when tb ends (tb.Cleanup) and tolerate that the test
// closed it already. It reports its own failures with tb.Fatal.
type OpenFunc func(tb testing.TB, partitions int) core.Store

// Category names a group of the suite's tests. A backend may opt out of a category with
// Except, stating why; the category's tests then show as skipped with that reason.
type Category string

// The categories of the suite, in the order they run. Each is the name of a subtest of Run.
const (
	Writes      Category = "Writes"       // put, create, patch, delete, If-Match, batches
	Replay      Category = "Replay"       // write-id replay and Idempotency-Keys
	Batches     Category = "ApplyBatches" // group commit and the producers' fence
	Events      Category = "Events"       // change events and the outbox
	List        Category = "List"         // orders, prefixes, keyset paging
	Sync        Category = "Sync"         // delta sync across partitions
	Concurrency Category = "Concurrency"  // concurrent writers and readers
	Expire      Category = "Expire"       // forgetting write records and keys
	Owners      Category = "Owners"       // documents' owners: kept, checked, filtered by List and Sync
	Privacy     Category = "Privacy"      // a user's documents (Owned) and the deletion of an account
	Accounts    Category = "Accounts"     // core.AccountStore: users, keys, refresh tokens, revocations
	APIKeys     Category = "APIKeys"      // core.APIKeyStore: the apps' API keys
	TOTP        Category = "TOTP"         // core.TOTPStore: pending and confirmed secrets, steps, recovery codes
	Identities  Category = "Identities"   // core.IdentityStore: identities of OpenID Connect providers linked to users
	Lifecycle   Category = "Lifecycle"    // Close
)

// Option changes how Run runs the suite.
type Option func(*options)

type options struct {
	except map[Category]string
}

// Except skips the tests of category c for the stated reason, which must not be empty: a
// backend that cannot honour part of the contract says so where everyone reads it.
func Except(c Category, reason string) Option {
	return func(o *options) { o.except[c] = reason }
}

type test struct {
	name string
	fn   func(*harness)
}

var suite = []struct {
	category Category
	tests    []test
}{
	{Writes, writeTests},
	{Replay, replayTests},
	{Batches, batchTests},
	{Events, eventTests},
	{List, listTests},
	{Sync, syncTests},
	{Concurrency, concurrencyTests},
	{Expire, expireTests},
	{Owners, ownerTests},
	{Privacy, privacyTests},
	{Accounts, accountTests},
	{APIKeys, apiKeyTests},
	{TOTP, totpTests},
	{Identities, identityTests},
	{Lifecycle, lifecycleTests},
}

// Run runs the conformance suite against the stores open makes, one fresh store per test.
// Subtests are named Category/Test (for example "Writes/PatchMerges") and keep their names
// across versions, so that a backend can run or skip one with -run.
//
// The suite drives a store only through core.Store and decides what to expect from the
// contract in core/store.go and core.ApplyCommand. Beyond what those say, it pins down:
//   - times: the now passed to ApplyBatch (ApplyBatches) is the time of everything the batch
//     (the group) records (the documents' created_at and updated_at, write records,
//     Idempotency-Keys, outbox events, the producers' sequences), so Expire and PendingEvents
//     compare with it; times come back in UTC to the microsecond;
//   - ids compare byte by byte (C collation) in List's id orders and as its tie-breaker;
//     -updated_at is the exact reverse of updated_at;
//   - List and Sync limits: 0 means the default, others are held to [1, max];
//   - More is exact: set if and only if another page has items;
//   - owners: every read returns the owner core.ApplyCommand gave the version (Get, List,
//     Sync, the documents of outcomes, replays and events); an anonymous document has none,
//     and its outcome and event encode without an "owner" key;
//   - accounts: UseRefreshToken stores next with the presented token's Family, UserID and
//     FamilyExpiresAt, whatever next says of them (the caller knows them only from the answer);
//     concurrent uses of one token rotate it once, and the first to find it used is the one
//     reuse; RevokeRefreshFamily returns the token with Revoked at the family's first
//     revocation; ExpireAccounts counts refresh tokens, revocations and login-failure windows;
//   - API keys: APIKeys lists revoked keys too; a second RevokeAPIKey keeps the first time.
//   - TOTP: of 8 concurrent AdvanceTOTPStep calls with one step, or UseRecoveryCode calls
//     with one hash, exactly one reports true.
//   - identities: of 8 concurrent CreateUserWithIdentity calls with one identity, exactly one
//     succeeds and the others fail with ErrExists, having stored nothing.
func Run(t *testing.T, open OpenFunc, opts ...Option) {
	o := options{except: map[Category]string{}}
	for _, opt := range opts {
		opt(&o)
	}
	known := map[Category]bool{}
	for _, c := range suite {
		known[c.category] = true
	}
	for c, reason := range o.except {
		if !known[c] {
			t.Errorf("storetest: Except(%q): no such category", c)
		}
		if reason == "" {
			t.Errorf("storetest: Except(%q) needs a reason", c)
		}
	}
	for _, c := range suite {
		t.Run(string(c.category), func(t *testing.T) {
			if reason, ok := o.except[c.category]; ok {
				t.Skipf("backend opted out of %s: %s", c.category, reason)
			}
			for _, tt := range c.tests {
				t.Run(tt.name, func(t *testing.T) {
					tt.fn(newHarness(t, open))
				})
			}
		})
	}
}
