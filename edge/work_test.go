package edge

import (
	"testing"
	"time"

	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/wire"
)

// TestCloseWaitsForWorkOnTheCache: an edge that stops waits for the work its subscriptions
// started (here another edge's fill, held by a slow core) before it closes its cache, and
// the fill is answered.
func TestCloseWaitsForWorkOnTheCache(t *testing.T) {
	ns := natstest.Start(t)
	nc := natstest.Connect(t, ns.URL())
	held, release := stallCore(t, natstest.Connect(t, ns.URL()))
	e, _ := servedEdgeOn(t, nc, "127.0.0.1:0", nil)

	asker := natstest.Connect(t, ns.URL())
	answered := make(chan error, 1)
	go func() {
		_, err := asker.Request(wire.PeerFillSubject(e.ID()), []byte("notes/a"), 30*time.Second)
		answered <- err
	}()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the peer fill did not read the core")
	}
	closed := make(chan struct{})
	go func() {
		e.Close()
		close(closed)
	}()
	select {
	case <-closed:
		close(release)
		t.Fatal("the edge closed its cache while a fill was still at work on it")
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the edge did not close once the fill was done")
	}
	if err := <-answered; err != nil {
		t.Fatalf("the peer fill was not answered: %v", err)
	}
}
