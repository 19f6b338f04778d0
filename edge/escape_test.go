package edge_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/perchhq/perch/internal/clustertest"
)

// TestBatchesAreSizedByTheirEncoding: a body's encoding in a write batch can be several
// times its bytes (JSON escapes <, > and & as \u003c), so batches are cut by the commands'
// encodings, not their bodies. Concurrent writes whose encodings add up to more than a NATS
// message holds are all stored, in batches of their own; a body within MaxBodyBytes whose
// encoding alone exceeds a batch is refused with 413, not a 503 that no retry could mend.
func TestBatchesAreSizedByTheirEncoding(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Regions: []string{"test"}})
	base := c.Edge(0)
	// ~2.4 MB encoded each, against batches of at most 4 MiB under an 8 MiB max_payload.
	body := []byte(`{"html":"` + strings.Repeat("<b>&", 500<<10/4) + `"}`)
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			r := clustertest.Do(t, "PUT", fmt.Sprintf("%s/v1/collections/pages/docs/p%d", base, i), map[string]string{"Prefer": "respond-async"}, body)
			if r.Status != 202 && r.Status != 201 {
				t.Errorf("PUT p%d of %d bytes: %d %s", i, len(body), r.Status, r.Body)
			}
		})
	}
	wg.Wait()
	huge := []byte(`{"html":"` + strings.Repeat("<b>&", 900<<10/4) + `"}`) // under MaxBodyBytes (1 MiB)
	r := clustertest.Do(t, "PUT", base+"/v1/collections/pages/docs/huge", nil, huge)
	if r.Status != 413 || !strings.Contains(string(r.Body), "body_too_large") {
		t.Fatalf("a body whose encoding exceeds a batch: %d %s", r.Status, r.Body)
	}
}
