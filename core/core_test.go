package core_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/core/sqlitestore"
	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/wire"
)

// runningCore is one core of a test, stoppable as a crash would stop it.
type runningCore struct {
	core   *core.Core
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
}

func startCore(t *testing.T, url string, store core.Store, cfg core.Config) *runningCore {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	c, err := core.New(cfg, nc, store)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc := &runningCore{core: c, nc: nc, cancel: cancel, done: make(chan error, 1)}
	go func() { rc.done <- c.Run(ctx) }()
	select {
	case <-c.Ready():
	case err := <-rc.done:
		t.Fatalf("core: %v", err)
	}
	t.Cleanup(rc.kill)
	return rc
}

// stop stops the core gracefully, as SIGTERM does.
func (rc *runningCore) stop() {
	rc.cancel()
	<-rc.done
	rc.nc.Close()
}

// kill drops the core's connection first, so that nothing delivered to it is acknowledged.
func (rc *runningCore) kill() {
	if rc.nc.IsClosed() {
		return
	}
	rc.nc.Close()
	rc.cancel()
	<-rc.done
}

func testConfig() core.Config {
	cfg := core.LocalConfig()
	cfg.Partitions = 2
	cfg.AckWait = time.Second
	cfg.GroupBatches = 8
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return cfg
}

func openStore(t *testing.T, partitions int) core.Store {
	t.Helper()
	s, err := sqlitestore.Open(t.Context(), filepath.Join(t.TempDir(), "perch.db"), partitions, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// publisher publishes the batches of one producer straight into the write stream, as an edge's
// lane does.
type publisher struct {
	t        *testing.T
	js       jetstream.JetStream
	producer string
	seq      int64
	writeIDs []string // every command's write id, in the order the producer took them
}

func (p *publisher) batch(commands int) *wire.Batch {
	p.seq++
	b := &wire.Batch{ID: ulid.Make().String(), Partition: 0, Producer: p.producer, Seq: p.seq}
	for range commands {
		id := ulid.Make().String()
		p.writeIDs = append(p.writeIDs, id)
		b.Commands = append(b.Commands, wire.Command{
			WriteID: id, Op: wire.OpPut, Collection: "c", ID: "doc",
			Data: fmt.Appendf(nil, `{"write":%d}`, len(p.writeIDs)),
		})
	}
	return b
}

func (p *publisher) publish(b *wire.Batch) {
	p.t.Helper()
	data, err := json.Marshal(b)
	if err != nil {
		p.t.Fatal(err)
	}
	msg := nats.NewMsg(wire.WriteSubject(b.Partition))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, b.ID)
	if _, err := p.js.PublishMsg(context.Background(), msg); err != nil {
		p.t.Fatal(err)
	}
}

// checkOrder waits until every write of p is applied and checks that they were applied in the
// producer's order: each PUTs the same document, so the n-th must have made version n.
func (p *publisher) checkOrder(store core.Store) {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		d, err := store.Get(context.Background(), "c", "doc")
		if err == nil && d.Version == int64(len(p.writeIDs)) {
			break
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("document at %+v (err %v), want version %d", d, err, len(p.writeIDs))
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i, id := range p.writeIDs {
		out, err := store.WriteOutcome(context.Background(), id)
		if err != nil {
			p.t.Fatalf("write %d (%s): %v", i+1, id, err)
		}
		if out.Problem != nil || out.Doc == nil || out.Doc.Version != int64(i+1) {
			p.t.Fatalf("write %d applied out of order: %+v", i+1, out)
		}
	}
}

func newPublisher(t *testing.T, url string) *publisher {
	nc := natstest.Connect(t, url)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := wire.EnsureWriteStream(t.Context(), js, wire.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	return &publisher{t: t, js: js, producer: ulid.Make().String()}
}

// TestBatchesApplyInProducerOrderAcrossCoreCrashes runs three cores on one partition's
// stream, kills them in turn while batches flow (their delivered, unacknowledged batches are
// redelivered, possibly after later ones were delivered to another core), and checks that
// every write was applied once, in the order its producer published it.
func TestBatchesApplyInProducerOrderAcrossCoreCrashes(t *testing.T) {
	srv := natstest.Start(t)
	cfg := testConfig()
	store := openStore(t, cfg.Partitions)
	p := newPublisher(t, srv.URL())
	cores := []*runningCore{startCore(t, srv.URL(), store, cfg), startCore(t, srv.URL(), store, cfg)}
	for round := range 6 {
		for range 40 {
			p.publish(p.batch(1 + rand.IntN(3)))
		}
		// Kill the oldest core while its batches are in flight, and start another.
		cores[0].kill()
		cores = append(cores[1:], startCore(t, srv.URL(), store, cfg))
		t.Logf("round %d: %d writes published", round, len(p.writeIDs))
	}
	p.checkOrder(store)
	p.waitPurged()
}

// TestBatchDeliveredBeforeItsPredecessorWaits publishes a producer's batches out of order, as
// a redelivery can present them: the later one waits until the earlier one is applied.
func TestBatchDeliveredBeforeItsPredecessorWaits(t *testing.T) {
	srv := natstest.Start(t)
	cfg := testConfig()
	reg := prometheus.NewRegistry()
	cfg.Metrics = reg
	store := openStore(t, cfg.Partitions)
	p := newPublisher(t, srv.URL())
	startCore(t, srv.URL(), store, cfg)
	first, second := p.batch(2), p.batch(2)
	p.publish(second)
	waitGauge(t, reg, "perch_core_batches_waiting", 1)
	if _, err := store.Get(t.Context(), "c", "doc"); err == nil {
		t.Fatal("a batch was applied before its predecessor")
	}
	p.publish(first)
	p.checkOrder(store)
	waitGauge(t, reg, "perch_core_batches_waiting", 0)
	p.waitPurged()
}

// waitPurged waits until the cores have removed every applied batch from the stream.
func (p *publisher) waitPurged() {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := p.js.Stream(context.Background(), wire.WriteStream)
		if err != nil {
			p.t.Fatal(err)
		}
		n := s.CachedInfo().State.Msgs
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%d applied batches still in the stream", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestConsumerOfAnOlderCoreIsUpdated starts a core where an older one left a consumer that
// delivered one batch at a time and had no priority group: the core updates it in place, and
// the batch waiting in the stream is applied.
func TestConsumerOfAnOlderCoreIsUpdated(t *testing.T) {
	srv := natstest.Start(t)
	cfg := testConfig()
	store := openStore(t, cfg.Partitions)
	p := newPublisher(t, srv.URL())
	if _, err := p.js.CreateOrUpdateConsumer(t.Context(), wire.WriteStream, jetstream.ConsumerConfig{
		Durable: "perch-core-0", FilterSubject: wire.WriteSubject(0), AckPolicy: jetstream.AckExplicitPolicy,
		MaxAckPending: 1, MaxDeliver: -1,
	}); err != nil {
		t.Fatal(err)
	}
	p.publish(p.batch(3))
	startCore(t, srv.URL(), store, cfg)
	p.checkOrder(store)
	cons, err := p.js.Consumer(t.Context(), wire.WriteStream, "perch-core-0")
	if err != nil {
		t.Fatal(err)
	}
	if got := cons.CachedInfo().Config; got.PriorityPolicy != jetstream.PriorityPolicyPinned || got.MaxAckPending != 2*cfg.GroupBatches {
		t.Fatalf("consumer config %+v", got)
	}
}

// TestJetStreamThatLostItsStateIsMadeAgain restarts NATS without its data under a running
// core: the write stream and its consumers are gone, and no pull the core had waiting is ever
// told so (they went with the old server). The core finds them gone when it reads them (once
// a second, for the purge), makes the stream and the consumers again, and batches published
// to the new stream are applied.
func TestJetStreamThatLostItsStateIsMadeAgain(t *testing.T) {
	srv := natstest.Start(t)
	cfg := testConfig()
	store := openStore(t, cfg.Partitions)
	p := newPublisher(t, srv.URL())
	startCore(t, srv.URL(), store, cfg)
	p.publish(p.batch(2))
	p.checkOrder(store)

	u, err := url.Parse(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	natstest.StartOn(t, t.TempDir(), port)

	// Nothing but the core makes the stream again: publishing fails until it has.
	b := p.batch(1)
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		msg := nats.NewMsg(wire.WriteSubject(b.Partition))
		msg.Data = data
		msg.Header.Set(jetstream.MsgIDHeader, b.ID)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err := p.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(wire.WriteStream))
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the write stream was not made again: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.checkOrder(store)
}

// TestChangeEventsKeepPartitionOrder applies one batch that changes two collections in turn:
// each run of one collection is one message, and a subscriber to every collection hears the
// partition's changes in sequence order.
func TestChangeEventsKeepPartitionOrder(t *testing.T) {
	srv := natstest.Start(t)
	cfg := testConfig()
	store := openStore(t, cfg.Partitions)
	p := newPublisher(t, srv.URL())
	sub, err := natstest.Connect(t, srv.URL()).SubscribeSync(wire.ChangeSubjectPrefix + ">")
	if err != nil {
		t.Fatal(err)
	}
	startCore(t, srv.URL(), store, cfg)
	b := &wire.Batch{ID: ulid.Make().String(), Producer: p.producer, Seq: 1}
	for i, coll := range []string{"a", "a", "b", "a"} {
		b.Commands = append(b.Commands, wire.Command{WriteID: ulid.Make().String(), Op: wire.OpPut,
			Collection: coll, ID: fmt.Sprint(i), Data: []byte(`{}`)})
	}
	p.publish(b)
	var seqs []int64
	var runs []string
	for len(seqs) < len(b.Commands) {
		msg, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("after events %v: %v", seqs, err)
		}
		var evs []wire.ChangeEvent
		if err := json.Unmarshal(msg.Data, &evs); err != nil {
			t.Fatalf("%s: %v", msg.Data, err)
		}
		for _, ev := range evs {
			if msg.Subject != wire.ChangeSubject(ev.Collection) || ev.Doc == nil {
				t.Fatalf("event %+v on %s", ev, msg.Subject)
			}
			seqs = append(seqs, ev.Seq)
		}
		runs = append(runs, fmt.Sprintf("%s×%d", evs[0].Collection, len(evs)))
	}
	if fmt.Sprint(seqs) != "[1 2 3 4]" || fmt.Sprint(runs) != "[a×2 b×1 a×1]" {
		t.Fatalf("heard seqs %v in messages %v", seqs, runs)
	}
}

// outcomeVersion waits for the outcome of a write and returns the version it made.
func outcomeVersion(t *testing.T, store core.Store, writeID string) int64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := store.WriteOutcome(context.Background(), writeID)
		if err == nil {
			if out.Doc == nil {
				t.Fatalf("write %s: %+v", writeID, out)
			}
			return out.Doc.Version
		}
		if time.Now().After(deadline) {
			t.Fatalf("write %s never applied: %v", writeID, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBatchAfterWaitsForTheReplacedProducer publishes the first batch of a producer that
// replaced another in its lane before the last batch of the old one: it waits for it.
func TestBatchAfterWaitsForTheReplacedProducer(t *testing.T) {
	srv := natstest.Start(t)
	cfg := testConfig()
	store := openStore(t, cfg.Partitions)
	old, repl := newPublisher(t, srv.URL()), newPublisher(t, srv.URL())
	startCore(t, srv.URL(), store, cfg)
	last := old.batch(1)
	first := repl.batch(1)
	first.After = &wire.BatchRef{Producer: old.producer, Seq: last.Seq}
	repl.publish(first)
	time.Sleep(200 * time.Millisecond)
	if _, err := store.Get(t.Context(), "c", "doc"); err == nil {
		t.Fatal("the new producer's batch was applied before the old one's")
	}
	old.publish(last)
	if v := outcomeVersion(t, store, old.writeIDs[0]); v != 1 {
		t.Fatalf("the old producer's write made version %d, want 1", v)
	}
	if v := outcomeVersion(t, store, repl.writeIDs[0]); v != 2 {
		t.Fatalf("the new producer's write made version %d, want 2", v)
	}
}

// TestBatchForcedPastAMissingPredecessor publishes a batch whose predecessor is missing: after
// EarlyLimit it is applied anyway, and when the predecessor turns up after all, its writes are
// applied too (out of order, but not lost).
func TestBatchForcedPastAMissingPredecessor(t *testing.T) {
	srv := natstest.Start(t)
	cfg := testConfig()
	cfg.EarlyLimit = time.Second
	store := openStore(t, cfg.Partitions)
	p := newPublisher(t, srv.URL())
	startCore(t, srv.URL(), store, cfg)
	lost, next := p.batch(2), p.batch(1)
	p.publish(next)
	if v := outcomeVersion(t, store, p.writeIDs[2]); v != 1 {
		t.Fatalf("the forced write made version %d, want 1", v)
	}
	p.publish(lost)
	for i, want := range []int64{2, 3} {
		if v := outcomeVersion(t, store, p.writeIDs[i]); v != want {
			t.Fatalf("late write %d made version %d, want %d", i, v, want)
		}
	}
	p.waitPurged()
}

// waitGauge waits until the gauge name in reg reads want.
func waitGauge(t *testing.T, reg *prometheus.Registry, name string, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := -1.0
		fams, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fams {
			if f.GetName() == name && len(f.GetMetric()) == 1 {
				got = f.GetMetric()[0].GetGauge().GetValue()
			}
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v", name, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pinned is a core that holds the pin of the partition a publisher writes to, having applied
// its first batch. The pin's timeout (AckWait) is an hour, beyond checkOrder's wait: a later
// batch that checkOrder sees applied was not kept waiting for the pin to expire.
type pinned struct {
	url   string
	cfg   core.Config
	store core.Store
	p     *publisher
	core  *runningCore
}

func pinnedPartition(t *testing.T) *pinned {
	srv := natstest.Start(t)
	cfg := testConfig()
	cfg.AckWait = time.Hour
	store := openStore(t, cfg.Partitions)
	p := newPublisher(t, srv.URL())
	rc := startCore(t, srv.URL(), store, cfg)
	p.publish(p.batch(1))
	p.checkOrder(store)
	return &pinned{url: srv.URL(), cfg: cfg, store: store, p: p, core: rc}
}

// TestWrongLostReportCostsNoPin: a report that a partition's consumer is gone when it is
// not (the purger read it while it was being made again) restarts the pull, and the next
// batch is applied at once, not after the pin's timeout.
func TestWrongLostReportCostsNoPin(t *testing.T) {
	pp := pinnedPartition(t)
	pp.core.core.NoteLost(0)
	time.Sleep(200 * time.Millisecond) // the pull is stopped and made again
	pp.p.publish(pp.p.batch(1))
	pp.p.checkOrder(pp.store)
}

// TestGracefulStopHandsPartitionsOver stops the core a partition is pinned to: the other core
// takes the partition at once, not after the pin's timeout.
func TestGracefulStopHandsPartitionsOver(t *testing.T) {
	pp := pinnedPartition(t)
	startCore(t, pp.url, pp.store, pp.cfg)
	pp.core.stop()
	pp.p.publish(pp.p.batch(1))
	pp.p.checkOrder(pp.store)
}
