package system_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/perchhq/perch/internal/clustertest"
	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/wire"
)

// TestDeletedConsumerIsMadeAgain: when the consumer of a write partition goes away under a
// running core (an operator deleted it, JetStream lost its state), the core makes it again
// and the partition's writes are applied, the ones stored meanwhile included.
func TestDeletedConsumerIsMadeAgain(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Regions: []string{"test"}})
	base := c.Edge(0)
	if r := clustertest.Do(t, "PUT", base+"/v1/collections/notes/docs/a", nil, []byte(`{"n":1}`)); r.Status != 201 {
		t.Fatalf("PUT a: %d %s", r.Status, r.Body)
	}
	js, err := jetstream.New(natstest.Connect(t, c.NATSURL()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.Stream(ctx, wire.WriteStream)
	if err != nil {
		t.Fatal(err)
	}
	// The partition of the edge's lane: the consumer that delivered the write.
	name := ""
	for p := range wire.DefaultPartitions {
		cons, err := stream.Consumer(ctx, fmt.Sprintf("perch-core-%d", p))
		if err != nil {
			continue
		}
		if info, err := cons.Info(ctx); err == nil && info.Delivered.Consumer > 0 {
			name = info.Name
		}
	}
	if name == "" {
		t.Fatal("no consumer delivered the write")
	}
	if err := stream.DeleteConsumer(ctx, name); err != nil {
		t.Fatal(err)
	}
	r := clustertest.Do(t, "PUT", base+"/v1/collections/notes/docs/b", map[string]string{"Prefer": "respond-async"}, []byte(`{"n":2}`))
	if r.Status != 202 {
		t.Fatalf("PUT b: %d %s", r.Status, r.Body)
	}
	clustertest.Eventually(t, 20*time.Second, func() error {
		g := clustertest.Do(t, "GET", base+"/v1/collections/notes/docs/b", nil, nil)
		if g.Status != 200 {
			return fmt.Errorf("b, stored after its partition's consumer was deleted: %d", g.Status)
		}
		return nil
	})
	if _, err := stream.Consumer(ctx, name); err != nil {
		t.Fatalf("%s was not made again: %v", name, err)
	}
	// a, applied before, was delivered again by the new consumer: once only.
	if g := clustertest.Do(t, "GET", base+"/v1/collections/notes/docs/a", nil, nil); g.Status != 200 || g.Header["Etag"] != `"1"` {
		t.Fatalf("a after the consumer was made again: %d %s", g.Status, g.Header["Etag"])
	}
}

// TestDeletedStreamIsMadeAgain: when JetStream loses the write stream itself (and with it
// every consumer), the cores make both again, and writes are stored and applied once more.
func TestDeletedStreamIsMadeAgain(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Regions: []string{"test"}})
	base := c.Edge(0)
	js, err := jetstream.New(natstest.Connect(t, c.NATSURL()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Enough writes that the old stream's purged sequence is well past where the new one
	// starts; then wait for the purge, so that the cores remember it.
	for i := range 20 {
		if r := clustertest.Do(t, "PUT", fmt.Sprintf("%s/v1/collections/notes/docs/a%d", base, i), nil, []byte(`{"n":1}`)); r.Status != 201 {
			t.Fatalf("PUT a%d: %d %s", i, r.Status, r.Body)
		}
	}
	streamEmpties := func() {
		t.Helper()
		clustertest.Eventually(t, 20*time.Second, func() error {
			s, err := js.Stream(ctx, wire.WriteStream)
			if err != nil {
				return err
			}
			info, err := s.Info(ctx)
			if err != nil {
				return err
			}
			if info.State.Msgs != 0 {
				return fmt.Errorf("%d applied batches not purged", info.State.Msgs)
			}
			return nil
		})
	}
	streamEmpties()
	if err := js.DeleteStream(ctx, wire.WriteStream); err != nil {
		t.Fatal(err)
	}
	clustertest.Eventually(t, 20*time.Second, func() error {
		r := clustertest.Do(t, "PUT", base+"/v1/collections/notes/docs/b", nil, []byte(`{"n":2}`))
		if r.Status != 201 && r.Status != 200 {
			return fmt.Errorf("PUT b after the stream was deleted: %d %s", r.Status, r.Body)
		}
		return nil
	})
	for i := range 3 {
		if r := clustertest.Do(t, "PUT", fmt.Sprintf("%s/v1/collections/notes/docs/c%d", base, i), nil, []byte(`{"n":3}`)); r.Status != 201 {
			t.Fatalf("PUT c%d: %d %s", i, r.Status, r.Body)
		}
	}
	// The new stream is purged as the old one was.
	streamEmpties()
}
