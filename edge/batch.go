package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/perchhq/perch/internal/wire"
)

// lane is the publisher of one partition.
type lane struct {
	q chan *pending
	// answered is signalled when the outcomes of one of this lane's batches arrive.
	answered chan struct{}

	mu sync.Mutex
	// unanswered holds when each batch published and not yet answered by the core was
	// published.
	unanswered map[string]time.Time
}

func newLane(queue int) *lane {
	return &lane{q: make(chan *pending, queue), answered: make(chan struct{}, 1), unanswered: make(map[string]time.Time)}
}

// busy reports whether depth batches of the lane are waiting for the core, and until when at
// the latest that can hold back the next one: a batch unanswered for longer than hold no
// longer counts (its core may be slow or gone; the commands are safe in the stream).
func (l *lane) busy(now time.Time, depth int, hold time.Duration) (bool, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	var oldest time.Time
	for id, at := range l.unanswered {
		if now.Sub(at) > hold {
			delete(l.unanswered, id)
			continue
		}
		n++
		if oldest.IsZero() || at.Before(oldest) {
			oldest = at
		}
	}
	return n >= depth, oldest.Add(hold)
}

func (l *lane) published(id string, at time.Time) {
	l.mu.Lock()
	l.unanswered[id] = at
	l.mu.Unlock()
}

// answer records that the core answered batch id; false when the lane did not know it.
func (l *lane) answer(id string) bool {
	l.mu.Lock()
	_, ok := l.unanswered[id]
	delete(l.unanswered, id)
	l.mu.Unlock()
	if ok {
		select {
		case l.answered <- struct{}{}:
		default:
		}
	}
	return ok
}

// runPartition publishes the commands of one partition, one batch at a time, so that the
// stream holds them in the order they were submitted. A batch gathers the commands that
// arrive while the one before is being stored, and for at most BatchWindow after its first.
// While BatchDepth batches of the lane wait for the core, the next one goes on gathering
// until one is answered (or BatchHold passes): the core applies a partition's batches one at a time, so under load
// this turns a queue of small batches into few large ones, each one transaction.
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
		carry = nil
		if first == nil {
			select {
			case first = <-l.q:
			case <-w.stopc:
				w.drain(l.q)
				return
			}
		}
		batch = append(batch[:0], first)
		size := len(first.cmd.Data)
		timer.Reset(cfg.BatchWindow)
		window := true
	gather:
		for len(batch) < cfg.BatchMax && size < cfg.BatchBytes {
			if !window {
				busy, until := l.busy(time.Now(), cfg.BatchDepth, cfg.BatchHold)
				if !busy {
					break
				}
				timer.Reset(time.Until(until))
			}
			select {
			case pd := <-l.q:
				if size+len(pd.cmd.Data) > cfg.BatchBytes {
					carry = pd
					break gather
				}
				batch = append(batch, pd)
				size += len(pd.cmd.Data)
			case <-l.answered:
				if !window {
					timer.Stop()
				}
			case <-timer.C:
				if !window {
					break gather
				}
				window = false
			case <-w.stopc:
				break gather
			}
		}
		timer.Stop()
		start := time.Now()
		// Known as unanswered before it is published: the core may answer before
		// PublishMsg returns.
		id := ulid.Make().String()
		l.published(id, start)
		err := w.publish(p, id, batch)
		if err != nil {
			l.answer(id)
		}
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
func (w *writer) publish(p int, id string, batch []*pending) error {
	cfg := &w.e.cfg
	b := wire.Batch{ID: id, Partition: p, Edge: cfg.ID, Commands: make([]wire.Command, len(batch))}
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
