package edge

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/perchhq/perch/internal/telemetry"
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
	fill, err := e.nc.Subscribe(wire.PeerFillSubject(e.cfg.ID), e.onPeerFill)
	if err != nil {
		_ = out.Unsubscribe()
		_ = ch.Unsubscribe()
		return fmt.Errorf("edge: subscribe peer fills: %w", err)
	}
	for _, s := range []*nats.Subscription{out, ch, fill} {
		// Bursts of events must not be dropped for want of buffer: a dropped event is a
		// distrust of the whole cache (onAsyncError).
		_ = s.SetPendingLimits(1<<20, 256<<20)
	}
	e.subs = append(e.subs, out, ch, fill)
	e.changes.Store(ch)
	e.nc.SetReconnectHandler(e.onReconnect)
	e.nc.SetDisconnectErrHandler(e.onDisconnect)
	e.nc.SetErrorHandler(e.onAsyncError)
	// The subscriptions must be known to the server before the first write is published,
	// or its outcome could go unheard.
	return e.nc.Flush()
}

// onOutcomes installs each applied document in the cache before handing the outcome to the
// waiting request, so that the writer reads its own write.
func (e *Edge) onOutcomes(m *nats.Msg) {
	if !e.work.enter() {
		return
	}
	defer e.work.leave()
	if e.tracer != nil {
		if sc := telemetry.Extract(m.Header); sc.IsSampled() {
			// The last leg of a traced write: the core's outcome back at this edge.
			_, span := e.tracer.Start(trace.ContextWithRemoteSpanContext(context.Background(), sc), "perch.outcomes receive",
				trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attribute.String("messaging.system", "nats"),
					attribute.String("messaging.destination.name", m.Subject), attribute.String("perch.edge", e.cfg.ID)))
			defer span.End()
		}
	}
	var msg wire.Outcomes
	if err := wire.DecodeOutcomes(m.Data, &msg); err != nil {
		e.log.Error("malformed outcomes message", "bytes", len(m.Data), "err", err)
		return
	}
	now := time.Now()
	var l landing
	for i := range msg.Outcomes {
		out := &msg.Outcomes[i]
		if out.Problem != nil || out.Doc == nil || !validDoc(out.Doc) {
			continue
		}
		key := docKey(out.Doc.Collection, out.Doc.ID)
		e.cache.raiseFloor(key, out.Doc.Version, now)
		e.cache.heard(key, out.Doc.Version)
		if out.Replayed {
			// A replayed outcome carries the document as the first write left it, which may
			// be long superseded: only its version is kept, which never lowers what the cache
			// holds, and the writer's next read fetches at least that version.
			e.cache.markVersionLater(out.Doc.Collection, out.Doc.ID, out.Doc.Version, &l)
		} else if epoch, ok := e.writes.epochOf(out.WriteID); ok {
			// In the epoch the write was taken in: its change event comes on another
			// subscription, and events lost meanwhile may be later than it.
			e.cache.putDocumentLater(out.Doc, epoch, &l)
		} else {
			// A write this edge no longer tracks (expired after WriteTimeout and 10 more
			// minutes, or the edge restarted): only the version is kept, which the floor
			// already makes the next read fetch.
			e.cache.markVersionLater(out.Doc.Collection, out.Doc.ID, out.Doc.Version, &l)
		}
		e.forgetFills(key)
		e.cache.retireLists(out.Doc.Collection)
	}
	// In the cache before the writers are answered, so that their next reads are hits.
	e.cache.settle(&l)
	for i := range msg.Outcomes {
		e.writes.deliver(msg.Outcomes[i])
	}
}

// onChange applies a message of change events to the cache: a JSON array of events (or one
// event), in partition order.
func (e *Edge) onChange(m *nats.Msg) {
	if !e.work.enter() {
		return
	}
	defer e.work.leave()
	n := e.changesStarted.Add(1)
	defer e.endDropDrain(m, n)
	if e.resetSequences.Swap(false) {
		clear(e.lastSeq)
		clear(e.firstSeq)
	}
	evs, err := wire.DecodeEventHeads(m.Data)
	if err != nil {
		e.badEvents(m, err)
		return
	}
	var l landing
	for i := range evs {
		e.applyEvent(m, n, &evs[i], &l)
	}
	e.cache.settleAsync(&l)
}

// endDropDrain ends the drain of a slow consumer's queue (onAsyncError) when the change
// message m, the nth, was the last queued before the drop: when n reaches the count
// onAsyncError set, or sooner when nothing else waits behind m (its queue counts m until
// onChange returns).
func (e *Edge) endDropDrain(m *nats.Msg, n uint64) {
	for {
		at := e.dropDrain.Load()
		if at == 0 {
			return
		}
		if n < at {
			if pending, _, err := m.Sub.Pending(); err == nil && pending > 1 {
				return
			}
		}
		if e.dropDrain.CompareAndSwap(at, 0) {
			e.log.Info("change events queued before a drop applied; their documents are fetched when read")
			return
		}
	}
}

// raiseTo sets a to v unless it holds more.
func raiseTo(a *atomic.Uint64, v uint64) {
	for {
		cur := a.Load()
		if cur >= v || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

func (e *Edge) badEvents(m *nats.Msg, err error) {
	e.metrics.events.WithLabelValues("invalid").Inc()
	e.log.Error("malformed change event", "subject", m.Subject, "bytes", len(m.Data), "err", err)
}

// applyEvent updates the cache: in place when the event carries the document, as a version
// marker (the next read fetches) when the document was too large to carry.
// n is the count of the message m (changesStarted).
func (e *Edge) applyEvent(m *nats.Msg, n uint64, h *wire.EventHead, l *landing) {
	ev := &h.ChangeEvent
	if !validEvent(ev) { // the header, before a gap can distrust the cache
		e.badEvents(m, errors.New("invalid event"))
		return
	}
	earlier := false
	switch e.checkSequence(ev, n) {
	case seqRepeated:
		// Published twice (the outbox sweeper), or one of a gap the edge found, lost and sent
		// again by the sweeper: later changes of the document may have come before it, so it
		// is not installed (were its key no longer cached, it would come back older). Only its
		// version is kept, when the cache holds none as high: it never lowers what the cache
		// holds, and makes the next read of a document the gap hid fetch it, even where a
		// fill since the gap copied an owner edge that had not yet found the gap itself.
		e.metrics.events.WithLabelValues("repeated").Inc()
		key := docKey(ev.Collection, ev.ID)
		e.cache.heard(key, ev.Version)
		if !e.cache.has(key, ev.Version) {
			e.cache.markVersionLater(ev.Collection, ev.ID, ev.Version, l)
		}
		return
	case seqEarlier:
		// Older than the first event since the edge started or reconnected: maybe never had
		// (a publish that failed, sent again by the sweeper). Only its version is kept, which
		// never lowers what the cache holds and makes the next read fetch the document.
		earlier = true
	}
	e.cache.heard(docKey(ev.Collection, ev.ID), ev.Version)
	e.metrics.eventDelay.Observe(max(time.Since(ev.UpdatedAt), 0).Seconds())
	// A document installed already (this edge's own write, a fill that raced the event) is
	// not decoded again.
	known := h.HasDoc() && e.cache.has(docKey(ev.Collection, ev.ID), ev.Version)
	if !known {
		err := h.DecodeDoc()
		if err == nil && !validEvent(ev) {
			err = errors.New("invalid document in a valid event")
		}
		if err != nil {
			// The header was good and its sequence is counted: the change happened, only its
			// document cannot be used. The next read of it fetches it.
			e.badEvents(m, err)
			ev.Doc = nil
		}
	}
	// The epoch before the drain: a drop reported meanwhile marks the drain before it
	// distrusts the cache, so a document stamped with the epoch after is known queued before
	// the drop, and not installed.
	epoch := e.cache.epoch.Load()
	drained := e.dropDrain.Load() == 0
	switch {
	case known:
		e.metrics.events.WithLabelValues("known").Inc()
	case ev.Doc != nil && !earlier && drained:
		e.metrics.events.WithLabelValues("document").Inc()
		e.cache.putDocumentLater(ev.Doc, epoch, l)
	case ev.Doc != nil && !earlier:
		// Queued before a drop: a dropped event may have changed the document since, and the
		// drop's distrust came before this. Only its version is kept; the next read fetches it.
		e.metrics.events.WithLabelValues("queued_before_drop").Inc()
		e.cache.markVersionLater(ev.Collection, ev.ID, ev.Version, l)
	default:
		e.metrics.events.WithLabelValues("marker").Inc()
		e.cache.markVersionLater(ev.Collection, ev.ID, ev.Version, l)
	}
	e.forgetFills(docKey(ev.Collection, ev.ID))
	e.cache.retireLists(ev.Collection)
}

// forgetFills makes the next miss of key start a fresh fill: one in flight may read the
// version before the change just heard of.
func (e *Edge) forgetFills(key string) {
	e.fills.Forget(key)
	e.coreFills.Forget(key)
}

// seqOrder is where an event's sequence falls among those its partition has shown the edge.
type seqOrder int

const (
	seqNew      seqOrder = iota // after the last one
	seqRepeated                 // at or before the last one, at or after the first: had already
	seqEarlier                  // before the first one since the sequence was last unknown
)

// checkSequence detects missed change events: each partition numbers its changes without
// gaps, so a jump means events were lost (a slow consumer, a NATS hiccup), and the cache can
// no longer be trusted; it is distrusted whole, since the lost changes could be of any
// document. It reports where the event falls: an event at or before the last one is one
// published twice (the outbox sweeper), had already if it is not before the first one seen.
// A gap in the nth message, one the edge had received when a slow consumer's drop was
// reported (dropCovered), does not distrust the cache again: the events it lacks were
// published before that message, so before the drop's distrust. Called from the change
// subscription only, one event at a time.
func (e *Edge) checkSequence(ev *wire.ChangeEvent, n uint64) seqOrder {
	if ev.Partition < 0 || ev.Partition >= len(e.lastSeq) {
		return seqNew
	}
	last := e.lastSeq[ev.Partition]
	switch {
	case last == 0:
		e.firstSeq[ev.Partition] = ev.Seq
	case ev.Seq < e.firstSeq[ev.Partition]:
		return seqEarlier
	case ev.Seq <= last:
		return seqRepeated
	case ev.Seq > last+1 && n <= e.dropCovered.Load():
		e.metrics.events.WithLabelValues("gap_after_drop").Inc()
		e.log.Debug("change events missed before a reported drop", "partition", ev.Partition, "after", last, "got", ev.Seq)
	case ev.Seq > last+1:
		e.log.Warn("change events missed; distrusting the cache", "partition", ev.Partition, "after", last, "got", ev.Seq)
		e.metrics.events.WithLabelValues("gap").Inc()
		e.cache.distrust()
	}
	e.lastSeq[ev.Partition] = ev.Seq
	return seqNew
}

// onAsyncError hears what NATS reports outside a call. A slow consumer on the change
// subscription has dropped change events that the edge will never have: the cache is
// distrusted at once, rather than when the next event of the same partition shows the gap,
// which for a quiet partition may be never. The messages queued before the drop are applied
// after the distrust, though a dropped event may have changed their documents since: only
// their versions are kept (applyEvent, endDropDrain). Dropped outcomes leave their writers to time
// out and ask GET /v1/writes/{id}; dropped peer fills leave the askers to read the core.
func (e *Edge) onAsyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrSlowConsumer) && sub != nil && sub == e.changes.Load() {
		e.metrics.events.WithLabelValues("dropped").Inc()
		e.log.Warn("change events dropped by a slow consumer; distrusting the cache", "err", err)
		// The messages queued now came before the drop: until they are applied, their
		// documents go in as version markers (applyEvent), and the drain ends at their count
		// (endDropDrain); the gaps they show are this drop's (checkSequence). Of the two
		// counts, the one of messages begun read before the queue is a bound below (the first
		// queued may be one being applied), the one read after it a bound above (one begun in
		// between is counted in both; the queue's emptying still ends the drain). With
		// nothing queued, everything came before the distrust.
		at := uint64(0)
		before := e.changesStarted.Load()
		if queued, _, perr := sub.Pending(); perr == nil && queued > 0 {
			at = e.changesStarted.Load() + uint64(queued)
			raiseTo(&e.dropDrain, at)
			// After the drain's mark: a message that sees this sees the mark.
			raiseTo(&e.dropCovered, before+uint64(queued)-1)
		}
		e.cache.distrust()
		if queued, _, perr := sub.Pending(); at != 0 && perr == nil && queued == 0 {
			// Applied meanwhile, the last of them maybe before it saw the mark.
			e.dropDrain.CompareAndSwap(at, 0)
		}
		return
	}
	subject := ""
	if sub != nil {
		subject = sub.Subject
	}
	e.log.Warn("NATS reported an error", "subject", subject, "err", err)
}

// onDisconnect marks the cache's answers stale until NATS is back: changes may be made that
// the edge cannot hear of.
func (e *Edge) onDisconnect(_ *nats.Conn, err error) {
	e.log.Warn("lost NATS; serving the cache marked stale until it is back", "err", err)
	e.disconnectedAt.Store(e.cache.now.Load())
	e.disconnected.Store(true)
}

// onReconnect distrusts the cache: events published while the edge was away are lost to it.
func (e *Edge) onReconnect(*nats.Conn) {
	// Distrusted before the edge stops marking its answers stale: in between, hits (and the
	// fills it answers other edges) would pass off entries of before the outage as current.
	// What was cached is stale from the moment NATS was lost, for stale-while-revalidate's
	// window too, not from now.
	at := e.cache.now.Load()
	if e.disconnected.Load() {
		at = e.disconnectedAt.Load()
	}
	e.cache.distrustSince(at)
	e.disconnected.Store(false)
	e.log.Warn("reconnected to NATS; change events may have been missed, distrusting the cache")
	e.resetSequences.Store(true)
	// Key sets and revocations published meanwhile were lost too.
	go e.catchUpAuth()
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

// validDoc reports whether d is a document the edge can cache and render: a 200 whose body
// is an error would otherwise be served for the TTL.
func validDoc(d *wire.Document) bool {
	return wire.ValidCollection(d.Collection) && wire.ValidName(d.ID) && d.Version >= 1 &&
		(d.Deleted || len(d.Data) == 0 || wire.Valid(d.Data)) && renderableTime(d.CreatedAt) && renderableTime(d.UpdatedAt)
}

// renderableTime reports whether t has an RFC 3339 form: a year of four digits.
func renderableTime(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 0 && y <= 9999
}
