package edge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/perchhq/perch/internal/telemetry"
	"github.com/perchhq/perch/internal/wire"
)

// lane is the publisher of one partition.
type lane struct {
	q chan *pending
	// producer and seq fence the lane's batches (wire.Batch): seq is that of the last batch
	// published. stored is the last batch JetStream confirmed stored, at storedAt. Only the
	// lane's goroutine uses them.
	producer string
	seq      int64
	stored   wire.BatchRef
	storedAt time.Time
	// expect is how many commands the next batch waits for (see gather): those the last
	// batch carried, whose writers it just answered, and those that were queued by then.
	// Only the lane's goroutine uses it.
	expect int
}

// producerIdle is how long a lane keeps its producer without publishing. A new producer
// after that keeps the producer's record in the store from outliving core.ProducerRetention
// while the lane still uses it.
const producerIdle = time.Hour

// next returns the producer, sequence and After of the lane's next batch, opening a new
// producer when there is none or it has been idle.
func (l *lane) next(now time.Time) (string, int64, *wire.BatchRef) {
	if l.producer != "" && now.Sub(l.storedAt) > producerIdle {
		l.producer = ""
	}
	var after *wire.BatchRef
	if l.producer == "" {
		l.producer, l.seq = ulid.Make().String(), 0
		// Batches of the producer before may still wait in the stream (a core died with
		// them): the new one's wait for the last that was stored, unless that is old enough
		// to have been applied long since (its record may be gone).
		if l.stored.Producer != "" && now.Sub(l.storedAt) < producerIdle {
			ref := l.stored
			after = &ref
		}
	}
	l.seq++
	return l.producer, l.seq, after
}

// done records the result of publishing the lane's batch seq.
func (l *lane) done(seq int64, at time.Time, err error) {
	if err != nil {
		// The batch may or may not be in the stream: the next one cannot follow it without
		// a gap that would stall the lane, so it opens a new producer, after the last batch
		// known stored. The clients of this one were not promised anything.
		l.producer = ""
		return
	}
	l.stored, l.storedAt = wire.BatchRef{Producer: l.producer, Seq: seq}, at
}

func newLane(queue int) *lane { return &lane{q: make(chan *pending, queue)} }

// runPartition publishes the commands of one partition, one batch at a time, so that the
// stream holds them in the order they were submitted and each batch's predecessor is stored
// before it (the fence of wire.Batch). A batch is group commit at the edge (see gather):
// under load batches fill without waiting, and the core applies whatever queued in the
// stream meanwhile in one transaction.
func (w *writer) runPartition(p int, l *lane) {
	defer w.wg.Done()
	cfg := &w.e.cfg
	batch := make([]*pending, 0, cfg.BatchMax)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// carry is a command that would have made the last batch too large: it opens the next.
	var carry *pending
	for {
		first := carry
		if first == nil {
			select {
			case first = <-l.q:
			case <-w.stopc:
				w.drain(l.q)
				return
			}
		}
		batch, carry = l.gather(cfg, first, batch, timer, w.stopc)
		start := time.Now()
		producer, seq, after := l.next(start)
		err := w.publish(p, &wire.Batch{ID: ulid.Make().String(), Partition: p, Edge: cfg.ID,
			Producer: producer, Seq: seq, After: after}, batch)
		l.done(seq, time.Now(), err)
		w.e.metrics.publish.Observe(time.Since(start).Seconds())
		w.e.metrics.batchSize.Observe(float64(len(batch)))
		l.answer(batch, carry, err)
		clear(batch)
	}
}

// answer tells the writers of batch that publishing it ended with err, and has the next
// batch expect them back, beside every command already waiting (carry and the queue).
// They are counted before any is answered: once answered, a writer may queue again before
// the count and be counted twice.
func (l *lane) answer(batch []*pending, carry *pending, err error) {
	l.expect = len(l.q) + len(batch)
	if carry != nil {
		l.expect++
	}
	for _, pd := range batch {
		pd.durable <- err
	}
}

// gather makes the batch that first opens, in batch[:0]: first, then every command that
// queued while the batch before was being stored. When fewer are in than l.expect (the
// writers the batch before answered, who are expected back, and those queued behind it),
// it waits for the rest, but only until first has waited BatchWindow since it was
// submitted, or stop is closed. So a lone writer never waits, writers in step share one
// batch, and no command waits for others longer than BatchWindow. The batch ends at
// BatchMax commands or BatchBytes; carry is then the command that did not fit, to open the
// next one. timer is the lane's, stopped.
func (l *lane) gather(cfg *Config, first *pending, batch []*pending, timer *time.Timer, stop <-chan struct{}) (_ []*pending, carry *pending) {
	batch = append(batch[:0], first)
	size := len(first.enc)
	// add takes pd into the batch, or keeps it to open the next batch when it would make
	// this one too large (then false).
	add := func(pd *pending) bool {
		if size+len(pd.enc)+1 > cfg.BatchBytes {
			carry = pd
			return false
		}
		batch = append(batch, pd)
		size += len(pd.enc) + 1 // and its comma
		return true
	}
	full := func() bool { return carry != nil || len(batch) >= cfg.BatchMax || size >= cfg.BatchBytes }
	if want := min(l.expect, cfg.BatchMax); len(batch) < want {
		timer.Reset(max(0, time.Until(first.created.Add(cfg.BatchWindow))))
	wait:
		for len(batch) < want && !full() {
			select {
			case pd := <-l.q:
				add(pd)
			case <-timer.C:
				break wait
			case <-stop:
				break wait
			}
		}
		timer.Stop()
	}
	// Take what else queued, without waiting.
	for !full() {
		select {
		case pd := <-l.q:
			add(pd)
		default:
			return batch, carry
		}
	}
	return batch, carry
}

// drain fails the commands still queued when the edge stops.
func (w *writer) drain(q chan *pending) {
	for {
		select {
		case pd := <-q:
			pd.durable <- errors.New("edge stopped")
		default:
			return
		}
	}
}

// publish stores one batch in the write stream. A publish whose acknowledgement was lost is
// retried with the same Nats-Msg-Id, which JetStream deduplicates, until the write timeout.
func (w *writer) publish(p int, b *wire.Batch, batch []*pending) error {
	cfg := &w.e.cfg
	encs := make([][]byte, len(batch))
	size := 256
	for i, pd := range batch {
		encs[i] = pd.enc
		size += len(pd.enc) + 1
	}
	data := b.AppendJSONEncoded(make([]byte, 0, size), encs)
	msg := nats.NewMsg(wire.WriteSubject(p))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, b.ID)
	if span := w.traceBatch(msg, b, batch); span != nil {
		defer span.End()
	}

	ctx, cancel := context.WithTimeout(context.Background(), cfg.WriteTimeout)
	defer cancel()
	backoff := 20 * time.Millisecond
	for {
		_, err := w.e.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(wire.WriteStream))
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || errors.Is(err, nats.ErrMaxPayload) {
			return fmt.Errorf("publish batch %s: %w", b.ID, err)
		}
		w.e.log.Debug("publishing write batch; retrying", "batch", b.ID, "partition", p, "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("publish batch %s: %w", b.ID, err)
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// traceBatch starts the span of publishing a batch that carries traced requests, and puts
// its trace context in msg's headers for the core. The batch is one message for many
// requests: its span is the child of the first traced request's and links to the other
// traced ones, so each request's trace leads to it and on to the core's transaction. It
// returns nil, and costs nothing, when no request of the batch is traced.
func (w *writer) traceBatch(msg *nats.Msg, b *wire.Batch, batch []*pending) trace.Span {
	if w.e.tracer == nil {
		return nil
	}
	var parents []trace.SpanContext
	for _, pd := range batch {
		if pd.trace.IsSampled() {
			parents = append(parents, pd.trace)
		}
	}
	if len(parents) == 0 {
		return nil
	}
	ctx, span := telemetry.StartLinked(context.Background(), w.e.tracer, "perch.writes publish", trace.SpanKindProducer, parents,
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.destination.name", msg.Subject),
		attribute.String("perch.batch", b.ID),
		attribute.Int("perch.batch.commands", len(batch)),
		attribute.Int("perch.partition", b.Partition))
	telemetry.Inject(ctx, msg.Header)
	return span
}
