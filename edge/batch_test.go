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
