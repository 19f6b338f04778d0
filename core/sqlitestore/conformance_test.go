package sqlitestore_test

import (
	"path/filepath"
	"testing"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/core/sqlitestore"
	"github.com/perchhq/perch/core/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(tb testing.TB, partitions int) core.Store {
		tb.Helper()
		s, err := sqlitestore.Open(tb.Context(), filepath.Join(tb.TempDir(), "perch.db"), partitions, nil)
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
