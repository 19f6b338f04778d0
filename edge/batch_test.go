package edge

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/perchhq/perch/internal/problem"
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

// The tests of gather run in a synctest bubble, whose clock moves only when every goroutine
// in it waits: the time a gather takes is exact, so each test says how long it must wait.

// gatherConfig is a lane's configuration for the tests: a window of 1 ms.
func gatherConfig() *Config {
	return &Config{BatchMax: 128, BatchBytes: 1 << 20, BatchWindow: time.Millisecond}
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

// gathered is what one gather made, and how long it took.
type gathered struct {
	batch []*pending
	carry *pending
	took  time.Duration
}

// gather runs l.gather of first with a timer of its own.
func gather(l *lane, cfg *Config, first *pending, stop chan struct{}) gathered {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	start := time.Now()
	batch, carry := l.gather(cfg, first, nil, timer, stop)
	return gathered{batch, carry, time.Since(start)}
}

// queueAfter queues pd on l after d.
func queueAfter(l *lane, d time.Duration, pd *pending) {
	go func() {
		time.Sleep(d)
		l.q <- pd
	}()
}

func (g gathered) check(t *testing.T, commands int, took time.Duration) {
	t.Helper()
	if len(g.batch) != commands || g.took != took || g.carry != nil {
		t.Fatalf("batch of %d (carry %v) after %v, want %d after %v", len(g.batch), g.carry != nil, g.took, commands, took)
	}
}

// TestLoneWriterDoesNotWait: a writer alone on its lane, one command after the other, never
// waits for others.
func TestLoneWriterDoesNotWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLane(64)
		for range 3 {
			pd := newPending(10)
			g := gather(l, gatherConfig(), pd, nil)
			g.check(t, 1, 0)
			l.answer(g.batch, nil, nil)
		}
	})
}

// TestBatchWaitsForTheWritersExpected: when fewer commands queued than expected, the batch
// waits for the rest, in order, and leaves as soon as they are in.
func TestBatchWaitsForTheWritersExpected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := gatherLane(3)
		p1, p2, p3 := newPending(10), newPending(10), newPending(10)
		queueAfter(l, 100*time.Microsecond, p2)
		queueAfter(l, 300*time.Microsecond, p3)
		g := gather(l, gatherConfig(), p1, nil)
		g.check(t, 3, 300*time.Microsecond)
		if g.batch[0] != p1 || g.batch[1] != p2 || g.batch[2] != p3 {
			t.Fatal("batch out of order, want p1, p2, p3")
		}
		// More than expected, already queued: all of them, without waiting.
		for range 3 {
			l.q <- newPending(10)
		}
		gather(l, gatherConfig(), newPending(10), nil).check(t, 4, 0)
	})
}

// TestWritersInStepShareABatch: writers split over two batches (some queued while the
// batch of the others was stored) are gathered into one: the lane expects both groups.
func TestWritersInStepShareABatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLane(64)
		// Group A (2 writers) was stored; group B (3 writers) queued behind it.
		a := []*pending{newPending(10), newPending(10)}
		for range 3 {
			l.q <- newPending(10)
		}
		// A's writers come back 50 µs after they are answered.
		for _, pd := range a {
			pd.durable = make(chan error)
			go func() {
				<-pd.durable
				queueAfter(l, 50*time.Microsecond, newPending(10))
			}()
		}
		l.answer(a, nil, nil)
		gather(l, gatherConfig(), <-l.q, nil).check(t, 5, 50*time.Microsecond)
	})
}

// TestAnswerExpectsTheCarry: the command a batch could not take is expected in the next.
func TestAnswerExpectsTheCarry(t *testing.T) {
	l := newLane(64)
	l.q <- newPending(10)
	l.answer([]*pending{newPending(10), newPending(10)}, newPending(10), nil)
	if l.expect != 4 {
		t.Fatalf("expect %d, want 4: 2 writers answered, 1 carried, 1 queued", l.expect)
	}
}

// TestBatchWindowEndsTheWait: writers that do not come back hold a batch until its first
// command has waited BatchWindow since it was submitted, no longer; stopping the edge ends
// the wait too.
func TestBatchWindowEndsTheWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := gatherConfig()
		l := gatherLane(16)
		l.q <- newPending(10)
		gather(l, cfg, newPending(10), nil).check(t, 2, cfg.BatchWindow)

		// Submitted 300 µs before the lane took it: 700 µs left of its window.
		first := newPending(10)
		time.Sleep(300 * time.Microsecond)
		gather(gatherLane(16), cfg, first, nil).check(t, 1, 700*time.Microsecond)

		// Submitted longer ago than the window: no wait.
		first = newPending(10)
		time.Sleep(2 * cfg.BatchWindow)
		gather(gatherLane(16), cfg, first, nil).check(t, 1, 0)

		stop := make(chan struct{})
		go func() {
			time.Sleep(100 * time.Microsecond)
			close(stop)
		}()
		gather(gatherLane(16), cfg, newPending(10), stop).check(t, 1, 100*time.Microsecond)
	})
}

// TestBatchEndsAtItsBounds: a batch waiting for writers still ends at BatchMax commands,
// and a command that would take it past BatchBytes opens the next one instead.
func TestBatchEndsAtItsBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cfg := gatherConfig()
		cfg.BatchMax = 3
		l := gatherLane(16)
		for range 5 {
			l.q <- newPending(10)
		}
		gather(l, cfg, newPending(10), nil).check(t, 3, 0)

		cfg = gatherConfig()
		cfg.BatchBytes = 100
		l = gatherLane(16)
		big := newPending(60)
		l.q <- big
		if g := gather(l, cfg, newPending(60), nil); len(g.batch) != 1 || g.carry != big || g.took != 0 {
			t.Fatalf("batch of %d, carry %v, after %v: want the first alone, at once, and the second carried", len(g.batch), g.carry != nil, g.took)
		}
	})
}

// TestFullLaneRefusesAfterTheWriteTimeout: a command finds room on its lane at once, or
// waits for it up to the write timeout, then is refused as overload (counted as a shed
// write); once the edge stops, it is refused as unavailable.
func TestFullLaneRefusesAfterTheWriteTimeout(t *testing.T) {
	e := newTestEdge(t)
	l := newLane(1) // a lane of one that nothing takes from
	e.cfg.WriteTimeout = 10 * time.Millisecond
	if p := e.writes.queue(l, newPending(10)); p != nil {
		t.Fatalf("a lane with room refused: %v", p)
	}
	if p := e.writes.queue(l, newPending(10)); p == nil || p.Code != problem.Overloaded {
		t.Fatalf("a full lane: %v, want overloaded", p)
	}
	if n := counterValue(t, e.shield.shedTotal[shedWrite]); n != 1 {
		t.Fatalf("shed writes counted %v, want 1", n)
	}
	e.cfg.WriteTimeout = time.Hour
	close(e.writes.stopc)
	if p := e.writes.queue(l, newPending(10)); p == nil || p.Code != problem.Unavailable {
		t.Fatalf("a full lane of a stopped edge: %v, want unavailable", p)
	}
}
