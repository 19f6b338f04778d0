package edge

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/perchhq/perch/internal/wire"
)

// subscribe listens for the outcomes of this edge's writes and for every change event.
func (e *Edge) subscribe() error {
	out, err := e.nc.Subscribe(wire.OutcomeSubject(e.cfg.ID), e.onOutcomes)
	if err != nil {
		return fmt.Errorf("edge: subscribe outcomes: %w", err)
	}
	ch, err := e.nc.Subscribe(wire.ChangeSubjectPrefix+">", e.onChange)
	if err != nil {
		_ = out.Unsubscribe()
		return fmt.Errorf("edge: subscribe changes: %w", err)
	}
	for _, s := range []*nats.Subscription{out, ch} {
		// Bursts of events must not be dropped for want of buffer: a dropped event costs a
		// stale entry until the TTL.
		_ = s.SetPendingLimits(1<<20, 256<<20)
	}
	e.subs = append(e.subs, out, ch)
	e.nc.SetReconnectHandler(e.onReconnect)
	// The subscriptions must be known to the server before the first write is published,
	// or its outcome could go unheard.
	return e.nc.Flush()
}

// onOutcomes installs each applied document in the cache before handing the outcome to the
// waiting request, so that the writer reads its own write.
func (e *Edge) onOutcomes(m *nats.Msg) {
	var msg wire.Outcomes
	if err := json.Unmarshal(m.Data, &msg); err != nil {
		e.log.Error("malformed outcomes message", "bytes", len(m.Data), "err", err)
		return
	}
	now := time.Now()
	for i := range msg.Outcomes {
		out := msg.Outcomes[i]
		// A replayed outcome carries the document as the first write left it, which may be
		// long superseded: it must not go into the cache.
		if out.Problem == nil && !out.Replayed && out.Doc != nil && validDoc(out.Doc) {
			key := docKey(out.Doc.Collection, out.Doc.ID)
			e.cache.raiseFloor(key, out.Doc.Version, now)
			e.cache.putDocument(out.Doc)
			e.fills.Forget(key)
			e.cache.retireLists(out.Doc.Collection)
		}
		e.writes.deliver(out)
	}
}

// onChange applies a change event to the cache: in place when it carries the document, as a
// version marker (the next read fetches) when the document was too large to carry.
func (e *Edge) onChange(m *nats.Msg) {
	if e.resetSequences.Swap(false) {
		clear(e.lastSeq)
	}
	var ev wire.ChangeEvent
	if err := json.Unmarshal(m.Data, &ev); err != nil || !validEvent(&ev) {
		e.metrics.events.WithLabelValues("invalid").Inc()
		e.log.Error("malformed change event", "subject", m.Subject, "bytes", len(m.Data), "err", err)
		return
	}
	e.checkSequence(&ev)
	if ev.Doc != nil {
		e.metrics.events.WithLabelValues("document").Inc()
		e.cache.putDocument(ev.Doc)
	} else {
		e.metrics.events.WithLabelValues("marker").Inc()
		e.cache.markVersion(ev.Collection, ev.ID, ev.Version)
	}
	e.fills.Forget(docKey(ev.Collection, ev.ID))
	e.cache.retireLists(ev.Collection)
}

// checkSequence detects missed change events: each partition numbers its changes without
// gaps, so a jump means events were lost (a slow consumer, a NATS hiccup), and the cache can
// no longer be trusted; it is distrusted whole, since the lost changes could be of any
// document. A repeated or older sequence is an event published twice (the outbox sweeper)
// and harmless. Called from the change subscription only, one event at a time.
func (e *Edge) checkSequence(ev *wire.ChangeEvent) {
	if ev.Partition < 0 || ev.Partition >= len(e.lastSeq) {
		return
	}
	last := e.lastSeq[ev.Partition]
	if last != 0 && ev.Seq > last+1 {
		e.log.Warn("change events missed; distrusting the cache", "partition", ev.Partition, "after", last, "got", ev.Seq)
		e.metrics.events.WithLabelValues("gap").Inc()
		e.cache.distrust()
	}
	if ev.Seq > last {
		e.lastSeq[ev.Partition] = ev.Seq
	}
}

// onReconnect distrusts the cache: events published while the edge was away are lost to it.
func (e *Edge) onReconnect(*nats.Conn) {
	e.log.Warn("reconnected to NATS; change events may have been missed, distrusting the cache")
	e.cache.distrust()
	e.resetSequences.Store(true)
}

func validEvent(ev *wire.ChangeEvent) bool {
	if !wire.ValidCollection(ev.Collection) || !wire.ValidName(ev.ID) || ev.Version < 1 {
		return false
	}
	if ev.Doc == nil {
		return true
	}
	return ev.Doc.Collection == ev.Collection && ev.Doc.ID == ev.ID && ev.Doc.Version == ev.Version &&
		ev.Doc.Deleted == ev.Deleted && validDoc(ev.Doc)
}

func validDoc(d *wire.Document) bool {
	return wire.ValidCollection(d.Collection) && wire.ValidName(d.ID) && d.Version >= 1 &&
		(d.Deleted || len(d.Data) == 0 || json.Valid(d.Data))
}
