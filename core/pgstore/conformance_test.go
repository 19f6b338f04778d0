package pgstore_test

import (
	"testing"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/core/pgstore"
	"github.com/perchhq/perch/core/storetest"
	"github.com/perchhq/perch/internal/pgtest"
)

// TestConformance runs the store suite on PostgreSQL, a fresh database per test. It needs
// PERCH_TEST_POSTGRES (see internal/pgtest).
func TestConformance(t *testing.T) {
	storetest.Run(t, func(tb testing.TB, partitions int) core.Store {
		tb.Helper()
		s, err := pgstore.Open(tb.Context(), pgtest.DSN(tb), partitions, nil)
		if err != nil {
			tb.Fatalf("Open: %v", err)
		}
		tb.Cleanup(func() {
			if err := s.Close(); err != nil {
				tb.Errorf("Close: %v", err)
			}
		})
		return s
	})
}
