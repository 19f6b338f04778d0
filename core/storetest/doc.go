// Package storetest is the conformance suite of core.Store: one set of tests that every store
// backend runs (core/sqlitestore always, core/pgstore against PostgreSQL and CockroachDB when
// a database is given), so that the core cannot tell backends apart.
//
// A backend's test calls Run with a function that opens an empty store:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(tb testing.TB, partitions int) core.Store {
//			s, err := Open(tb.Context(), filepath.Join(tb.TempDir(), "perch.db"), partitions, nil)
//			if err != nil {
//				tb.Fatal(err)
//			}
//			tb.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// Every test gets a fresh store. The tests are grouped in categories (Writes, Replay,
// ApplyBatches, Events, List, Sync, Concurrency, Expire, Owners, Accounts, Lifecycle); a backend that
// cannot honour one says so with Except and a reason, and the category shows as skipped with
// it (the model is spicedb's datastore test suite).
//
// The suite decides what to expect from the Store contract (core/store.go and
// core/accountstore.go) and from core.ApplyCommand, never from a backend. Where the contract leaves a choice open, Run's
// documentation says which the suite requires.
package storetest
