package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/perchhq/perch/internal/wire"
)

// runPartition publishes the commands of one partition, one batch at a time, so that the
// stream holds them in the order they were submitted. While a batch is being stored, the next
// one gathers the commands that arrive: under load, batches grow without waiting; when idle, a
// command waits at most BatchWindow for company.
func (w *writer) runPartition(p int, q chan *pending) {
	defer w.wg.Done()
	cfg := &w.e.cfg
	batch := make([]*pending, 0, cfg.BatchMax)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var first *pending
		select {
		case first = <-q:
		case <-w.stopc:
			w.drain(q)
			return
		}
		batch = append(batch[:0], first)
		size := len(first.cmd.Data)
		timer.Reset(cfg.BatchWindow)
	gather:
		for len(batch) < cfg.BatchMax && size < cfg.BatchBytes {
			select {
			case pd := <-q:
				batch = append(batch, pd)
				size += len(pd.cmd.Data)
			case <-timer.C:
				break gather
			}
		}
		timer.Stop()
		start := time.Now()
		err := w.publish(p, batch)
		w.e.metrics.publish.Observe(time.Since(start).Seconds())
		w.e.metrics.batchSize.Observe(float64(len(batch)))
		for _, pd := range batch {
			pd.durable <- err
		}
		clear(batch)
	}
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
func (w *writer) publish(p int, batch []*pending) error {
	cfg := &w.e.cfg
	b := wire.Batch{ID: ulid.Make().String(), Partition: p, Edge: cfg.ID, Commands: make([]wire.Command, len(batch))}
	for i, pd := range batch {
		b.Commands[i] = pd.cmd
	}
	data, err := json.Marshal(&b)
	if err != nil {
		return fmt.Errorf("encode batch: %w", err)
	}
	msg := nats.NewMsg(wire.WriteSubject(p))
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, b.ID)

	ctx, cancel := context.WithTimeout(context.Background(), cfg.WriteTimeout)
	defer cancel()
	backoff := 20 * time.Millisecond
	for {
		_, err = w.e.js.PublishMsg(ctx, msg, jetstream.WithExpectStream(wire.WriteStream))
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
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
