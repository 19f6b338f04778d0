package pgstore_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/perchhq/perch/core/pgstore"
	"github.com/perchhq/perch/internal/pgtest"
	"github.com/perchhq/perch/internal/wire"
)

// BenchmarkApplyBatches measures the store's side of group commit: one transaction applying
// n PUTs of small documents to random keys of one partition. Compare the per-command cost
// (µs/cmd) across sizes: a transaction's fixed cost is spread over its commands.
func BenchmarkApplyBatches(b *testing.B) {
	for _, n := range []int{1, 16, 128, 512} {
		b.Run(fmt.Sprintf("commands=%d", n), func(b *testing.B) {
			s, err := pgstore.Open(b.Context(), pgtest.DSN(b), 1, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			start := time.Now()
			for i := 0; b.Loop(); i++ {
				batch := &wire.Batch{ID: ulid.Make().String(), Producer: "bench", Seq: int64(i + 1)}
				for j := range n {
					batch.Commands = append(batch.Commands, wire.Command{
						WriteID: ulid.Make().String(), Op: wire.OpPut, Collection: "bench",
						ID:   fmt.Sprintf("k%06d", rand.IntN(1_000_000)),
						Data: []byte(fmt.Sprintf(`{"n":%d,"s":"some text of a small document"}`, j)),
					})
				}
				if _, _, err := s.ApplyBatches(b.Context(), []*wire.Batch{batch}, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N*n), "µs/cmd")
		})
	}
}
