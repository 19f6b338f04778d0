package edge

import (
	"errors"
	"testing"
	"time"

	"github.com/perchhq/perch/internal/wire"
)

// TestLaneProducers: a lane numbers its batches under one producer; a failed publish opens a
// new producer that waits for the last stored batch (After); an idle lane opens one without.
func TestLaneProducers(t *testing.T) {
	l := newLane(1)
	now := time.Now()
	p1, seq, after := l.next(now)
	if seq != 1 || after != nil || p1 == "" {
		t.Fatalf("first batch: %q %d %v", p1, seq, after)
	}
	l.done(seq, now, nil)
	if p, seq, after := l.next(now); p != p1 || seq != 2 || after != nil {
		t.Fatalf("second batch: %q %d %v", p, seq, after)
	}
	l.done(2, now, errors.New("not confirmed stored"))

	p2, seq, after := l.next(now)
	if p2 == p1 || seq != 1 || after == nil || *after != (wire.BatchRef{Producer: p1, Seq: 1}) {
		t.Fatalf("after a failed publish: %q %d %+v, want a new producer after %s#1", p2, seq, after, p1)
	}
	l.done(seq, now, nil)

	later := now.Add(producerIdle + time.Second)
	p3, seq, after := l.next(later)
	if p3 == p2 || seq != 1 || after != nil {
		t.Fatalf("after an idle hour: %q %d %+v, want a new producer without after", p3, seq, after)
	}
}

// gatherLane is a lane whose next batch expects expect commands.
func gatherLane(expect int) *lane {
	l := newLane(64)
	l.expect = expect
	return l
}

func newPending(size int) *pending {
	return &pending{enc: make([]byte, size), created: time.Now(), durable: make(chan error, 1)}
}

// gatherAsync runs l.gather of first in a goroutine; the batch arrives on the channel.
func gatherAsync(l *lane, cfg *Config, first *pending, stop chan struct{}) <-chan []*pending {
	out := make(chan []*pending, 1)
	go func() {
		timer := time.NewTimer(time.Hour)
		timer.Stop()
		batch, carry := l.gather(cfg, first, nil, timer, stop)
		if carry != nil {
			batch = append(batch, nil) // marks a carry, which these tests do not expect
		}
		out <- batch
	}()
	return out
}

// wait returns the batch gathered, failing the test if gather has not returned after a minute:
// with a window of an hour, only a wrongful wait takes that long.
func wait(t *testing.T, out <-chan []*pending) []*pending {
	t.Helper()
	select {
	case b := <-out:
		return b
	case <-time.After(time.Minute):
		t.Fatal("gather still waits")
		return nil
	}
}

// TestLoneWriterDoesNotWait: a writer alone on its lane, one command after the other, never
// waits for others (a window of an hour would show).
func TestLoneWriterDoesNotWait(t *testing.T) {
	cfg := &Config{BatchMax: 128, BatchBytes: 1 << 20, BatchWindow: time.Hour}
	l := newLane(64)
	for range 3 {
		pd := newPending(10)
		b := wait(t, gatherAsync(l, cfg, pd, nil))
		if len(b) != 1 || b[0] != pd {
			t.Fatalf("batch %v, want the one command", b)
		}
		l.answer(b, nil, nil)
	}
}

// TestBatchWaitsForTheWritersExpected: when fewer commands queued than expected, the batch
// waits for the rest, in order, and leaves as soon as they are in.
func TestBatchWaitsForTheWritersExpected(t *testing.T) {
	cfg := &Config{BatchMax: 128, BatchBytes: 1 << 20, BatchWindow: time.Hour}
	l := gatherLane(3)
	p1, p2, p3, p4 := newPending(10), newPending(10), newPending(10), newPending(10)
	out := gatherAsync(l, cfg, p1, nil)
	l.q <- p2
	l.q <- p3
	b := wait(t, out)
	if len(b) != 3 || b[0] != p1 || b[1] != p2 || b[2] != p3 {
		t.Fatalf("batch of %d, want p1, p2, p3", len(b))
	}
	// More than expected, already queued: all of them, without waiting.
	l.q <- p2
	l.q <- p3
	l.q <- p4
	if b := wait(t, gatherAsync(l, cfg, p1, nil)); len(b) != 4 {
		t.Fatalf("batch of %d, want the 4 queued", len(b))
	}
}

// TestWritersInStepShareABatch: writers split over two batches (some queued while the
// batch of the others was stored) are gathered into one: the lane expects both groups.
func TestWritersInStepShareABatch(t *testing.T) {
	cfg := &Config{BatchMax: 128, BatchBytes: 1 << 20, BatchWindow: time.Hour}
	l := newLane(64)
	// Group A (2 writers) was stored; group B (3 writers) queued behind it.
	a := []*pending{newPending(10), newPending(10)}
	for range 3 {
		l.q <- newPending(10)
	}
	// A's writers come back as soon as they are answered.
	for _, pd := range a {
		pd.durable = make(chan error)
		go func() {
			<-pd.durable
			l.q <- newPending(10)
		}()
	}
	l.answer(a, nil, nil)
	if b := wait(t, gatherAsync(l, cfg, <-l.q, nil)); len(b) != 5 {
		t.Fatalf("batch of %d, want the 5 writers of both groups", len(b))
	}
}

// TestBatchWindowEndsTheWait: writers that do not come back hold a batch until its first
// command has waited BatchWindow since it was submitted, no longer.
func TestBatchWindowEndsTheWait(t *testing.T) {
	cfg := &Config{BatchMax: 128, BatchBytes: 1 << 20, BatchWindow: time.Hour}
	first := newPending(10)
	first.created = time.Now().Add(-2 * time.Hour) // queued long since
	l := gatherLane(16)
	l.q <- newPending(10)
	if b := wait(t, gatherAsync(l, cfg, first, nil)); len(b) != 2 {
		t.Fatalf("batch of %d, want the 2 queued, at once", len(b))
	}

	cfg.BatchWindow = 20 * time.Millisecond
	l = gatherLane(16)
	l.q <- newPending(10)
	if b := wait(t, gatherAsync(l, cfg, newPending(10), nil)); len(b) != 2 {
		t.Fatalf("batch of %d, want the 2 that came", len(b))
	}

	// Stopping the edge ends the wait too.
	stop := make(chan struct{})
	cfg.BatchWindow = time.Hour
	out := gatherAsync(gatherLane(16), cfg, newPending(10), stop)
	close(stop)
	if b := wait(t, out); len(b) != 1 {
		t.Fatalf("batch of %d after stop, want 1", len(b))
	}
}

// TestBatchEndsAtItsBounds: a batch waiting for writers still ends at BatchMax commands,
// and a command that would take it past BatchBytes opens the next one instead.
func TestBatchEndsAtItsBounds(t *testing.T) {
	cfg := &Config{BatchMax: 3, BatchBytes: 1 << 20, BatchWindow: time.Hour}
	l := gatherLane(16)
	for range 5 {
		l.q <- newPending(10)
	}
	if b := wait(t, gatherAsync(l, cfg, newPending(10), nil)); len(b) != 3 {
		t.Fatalf("batch of %d, want BatchMax 3", len(b))
	}

	cfg = &Config{BatchMax: 128, BatchBytes: 100, BatchWindow: time.Hour}
	l = gatherLane(16)
	big := newPending(60)
	l.q <- big
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	b, carry := l.gather(cfg, newPending(60), nil, timer, nil)
	if len(b) != 1 || carry != big {
		t.Fatalf("batch of %d, carry %v: want the first alone and the second carried", len(b), carry != nil)
	}
}
