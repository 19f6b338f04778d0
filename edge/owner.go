package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/perchhq/perch/gossip"
	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/telemetry"
	"github.com/perchhq/perch/internal/wire"
)

// Owner fill: every document key has an owner among the edges of a region, by a hash ring
// of the region's healthy members (gossip.Ring). An edge that misses a key it does not own
// asks the owner (perch.fill.<owner>) instead of the core; the owner answers from its cache
// or fills from the core once, however many edges ask at the same time. So a region fetches
// a key from the core once per refresh, not once per edge. See README.md, "Owner fill".

// Headers of a peer fill's reply.
const (
	hdrPeerVersion = "Perch-Version"
	hdrPeerStatus  = "Perch-Status"
	hdrPeerOwner   = "Perch-Owner"
	// hdrPeerBusy marks the refusal of an owner that answers as many fills as it may.
	hdrPeerBusy = "Perch-Busy"
	// hdrPeerAge is the age in seconds of an answer from the owner's cache (docCache.age):
	// the asker serves its copy for what is left of the TTL, no longer than the owner would.
	hdrPeerAge = "Perch-Age"
	// hdrPeerDistrusted, on a request, is how many seconds ago the asker last distrusted its
	// cache (a gap in the change events, a reconnection): the owner may have missed the same
	// changes without knowing it yet, so it answers from its cache only with an entry it
	// stored since, and reads the core otherwise.
	hdrPeerDistrusted = "Perch-Distrusted"
	// hdrPeerMaxAge, on a request, is the oldest answer in seconds that the asker can keep
	// for at least a second (its TTL less one): an owner whose entry is older, its own TTL
	// being longer, reads the core, rather than hand over a copy the asker would store
	// expired and ask for again at its next read.
	hdrPeerMaxAge = "Perch-Max-Age"
)

// maxPeerAge bounds the age a peer fill's reply may give: more than any TTL.
const maxPeerAge = math.MaxUint32 / 2

// MembersChanged implements gossip.Watcher: it rebuilds the ring of the edge's region.
func (e *Edge) MembersChanged() { e.rebuildRing() }

// rebuildRing makes the ring of the region's members this edge can reach, itself included.
// An unhealthy member leaves this edge's ring at once (its keys are filled by their next
// owner or the core) and comes back when it answers again. Keys keep their cache entries
// whatever the ring does: only misses take the new owners.
func (e *Edge) rebuildRing() {
	m := e.membership()
	if m == nil {
		return
	}
	var ms []gossip.Member
	self := false
	healthy, unhealthy := 0, 0
	for _, mb := range m.Members() {
		if mb.Healthy {
			healthy++
		} else {
			unhealthy++
		}
		if mb.Region != e.cfg.Region || !mb.Healthy && mb.ID != e.cfg.ID {
			continue
		}
		self = self || mb.ID == e.cfg.ID
		ms = append(ms, mb)
	}
	if !self {
		ms = append(ms, gossip.Member{ID: e.cfg.ID, Region: e.cfg.Region, Weight: 1, Healthy: true})
	}
	e.ringMu.Lock()
	defer e.ringMu.Unlock()
	r := gossip.NewRing(ms, gossip.DefaultRingPoints)
	old := e.ring.Swap(r)
	if !sameMembers(old, r) {
		ids := make([]string, 0, r.Len())
		for _, mb := range r.Members() {
			ids = append(ids, mb.ID)
		}
		e.log.Info("hash ring changed", "members", strings.Join(ids, ","))
		if old != nil {
			e.metrics.ringChanges.Inc()
		}
	}
	e.metrics.ringMembers.Set(float64(r.Len()))
	e.metrics.gossipMembers[0].Set(float64(healthy))
	e.metrics.gossipMembers[1].Set(float64(unhealthy))
}

func sameMembers(a, b *gossip.Ring) bool {
	am, bm := a.Members(), b.Members()
	if len(am) != len(bm) {
		return false
	}
	for i := range am {
		if am[i].ID != bm[i].ID || am[i].Weight != bm[i].Weight {
			return false
		}
	}
	return true
}

// remoteOwner returns the owner of key when it is another edge.
func (e *Edge) remoteOwner(key string) (gossip.Member, bool) {
	o, ok := e.ring.Load().Owner(key)
	if !ok || o.ID == e.cfg.ID {
		return gossip.Member{}, false
	}
	return o, true
}

// errOwnerBusy is a peer fill refused because the owner answers as many as it may.
var errOwnerBusy = errors.New("the owner edge is busy")

// fillFromPeer asks owner for key's answer. A problem the owner answers with (the core is
// unavailable to it too) comes back as *problem.Problem; any other error means the owner
// could not be asked or did not answer usefully, and the caller goes to the core.
func (e *Edge) fillFromPeer(rc context.Context, owner gossip.Member, key string) (*entry, uint32, error) {
	out := &nats.Msg{Subject: wire.PeerFillSubject(owner.ID), Data: []byte(key)}
	if e.tracer != nil && trace.SpanFromContext(rc).IsRecording() {
		var span trace.Span
		rc, span = e.tracer.Start(rc, "perch.peer_fill", trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("perch.owner", owner.ID)))
		defer span.End()
		out.Header = telemetry.Inject(rc, nil)
	}
	if out.Header == nil {
		out.Header = nats.Header{}
	}
	out.Header.Set(hdrPeerMaxAge, strconv.FormatUint(uint64(e.cache.ttl-1), 10))
	if d, ok := e.cache.sinceDistrust(); ok {
		out.Header.Set(hdrPeerDistrusted, strconv.FormatUint(uint64(d), 10))
	}
	ctx, cancel := context.WithTimeout(rc, e.cfg.ReadTimeout)
	defer cancel()
	msg, err := e.nc.RequestMsgWithContext(ctx, out)
	if err != nil {
		return nil, 0, err
	}
	return decodePeerFill(msg.Header, msg.Data)
}

// decodePeerFill makes the entry of a peer fill's reply: its headers' version and status and
// its body, a document (200), nothing (404) or a problem (any other status); and the age of
// the owner's entry (0 when the owner read it from the core for this fill).
func decodePeerFill(h nats.Header, body []byte) (*entry, uint32, error) {
	ent, err := decodePeerEntry(h, body)
	if err != nil {
		return nil, 0, err
	}
	var age uint64
	if a := h.Get(hdrPeerAge); a != "" {
		if age, err = strconv.ParseUint(a, 10, 32); err != nil || age > maxPeerAge {
			return nil, 0, fmt.Errorf("peer fill: bad age %q", a)
		}
	}
	return ent, uint32(age), nil
}

// decodePeerEntry is decodePeerFill's entry.
func decodePeerEntry(h nats.Header, body []byte) (*entry, error) {
	if h.Get(hdrPeerBusy) != "" {
		return nil, errOwnerBusy
	}
	version, status := h.Get(hdrPeerVersion), h.Get(hdrPeerStatus)
	st, err := strconv.Atoi(status)
	if err != nil || st < 200 || st > 599 {
		return nil, fmt.Errorf("peer fill: bad status %q", status)
	}
	if st != fasthttp.StatusOK && st != fasthttp.StatusNotFound {
		var p problem.Problem
		if err := json.Unmarshal(body, &p); err != nil || p.Status != st || p.Code == "" {
			return nil, fmt.Errorf("peer fill: status %d without a problem", st)
		}
		return nil, &p
	}
	v, err := strconv.ParseInt(version, 10, 64)
	if err != nil || v < 0 || v == 0 && st == fasthttp.StatusOK {
		return nil, fmt.Errorf("peer fill: bad version %q", version)
	}
	if st == fasthttp.StatusOK && !wire.Valid(body) {
		return nil, errors.New("peer fill: the document is not JSON")
	}
	owner := h.Get(hdrPeerOwner)
	if len(owner) > maxOwnerLen {
		return nil, errors.New("peer fill: owner too long")
	}
	return answerEntry(v, st, body, owner), nil
}

// maxOwnerLen bounds a document owner's length: the longest user id (an access token's sub).
const maxOwnerLen = 256

// answerEntry is the cache entry of a document's answer: version, status 200 or 404, and
// for 200 its rendered body and its document's owner. Version 0 is a document that does not
// exist.
func answerEntry(version int64, status int, body []byte, owner string) *entry {
	if status != fasthttp.StatusOK {
		return &entry{version: version, status: fasthttp.StatusNotFound, body: notFoundString}
	}
	b, n := withOwner(body, owner)
	return &entry{version: version, status: fasthttp.StatusOK, body: b, ownerLen: n}
}

// onPeerFill answers another edge's fill of a key this edge owns, from the cache or from the
// core, in its own goroutine: one slow core read must not hold up the others. Beyond
// PeerFills at once the asker is told to go to the core itself.
func (e *Edge) onPeerFill(m *nats.Msg) {
	if !e.work.enter() {
		return // stopping: the asking edge reads the core instead
	}
	select {
	case e.peerFills <- struct{}{}:
	default:
		defer e.work.leave()
		e.metrics.peerServed("busy").Inc()
		r := &nats.Msg{Header: nats.Header{}}
		r.Header.Set(hdrPeerBusy, "1")
		r.Header.Set(hdrPeerStatus, "503")
		if err := m.RespondMsg(r); err != nil {
			e.log.Debug("peer fill reply failed", "err", err)
		}
		return
	}
	go func() {
		defer e.work.leave()
		defer func() { <-e.peerFills }()
		e.answerPeerFill(m)
	}()
}

func (e *Edge) answerPeerFill(m *nats.Msg) {
	collection, id, ok := bytes.Cut(m.Data, []byte("/"))
	if !ok || !wire.ValidCollection(collection) || !wire.ValidName(id) {
		e.metrics.peerServed("invalid").Inc()
		e.log.Warn("malformed peer fill request", "bytes", len(m.Data))
		e.replyPeerProblem(m, problem.New(problem.BadName, "collection or document id is not a valid name"))
		return
	}
	key := string(m.Data)
	maxAge, err := peerMaxAge(m.Header)
	if err != nil {
		// Nothing cached is taken then: the core is right whatever the asker meant.
		e.log.Warn("malformed peer fill request", "err", err)
	}
	prior, ok := e.cache.get(m.Data)
	if ok && e.cache.valid(prior) && !e.disconnected.Load() && int64(e.cache.age(prior)) <= maxAge {
		e.metrics.peerServed("hit").Inc()
		e.replyPeerEntry(m, prior)
		return
	}
	var least int64 // a version the owner has heard of bounds its fill, as it does a miss's
	if ok {
		least = prior.version
	}
	rc := context.Background()
	if e.tracer != nil {
		if sc := telemetry.Extract(m.Header); sc.IsSampled() {
			var span trace.Span
			rc, span = e.tracer.Start(trace.ContextWithRemoteSpanContext(rc, sc), "perch.peer_fill serve",
				trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attribute.String("perch.edge", e.cfg.ID)))
			defer span.End()
		}
	}
	ent, perr := e.fillFromCoreFresh(rc, key, string(collection), string(id), least, maxAge)
	if perr != nil {
		e.metrics.peerServed("error").Inc()
		e.replyPeerProblem(m, perr)
		return
	}
	e.metrics.peerServed("fill").Inc()
	e.replyPeerEntry(m, ent)
}

// peerMaxAge returns how many seconds old an answer from the owner's cache may be for a peer
// fill request with headers h (math.MaxInt64: any; negative: none, only a read from the
// core). An asker takes no answer older than its TTL lets it keep (hdrPeerMaxAge); one that
// has distrusted its cache takes only what the owner stored since, with a second on each side
// for the two clocks' whole seconds and the request's way here (hdrPeerDistrusted). A
// malformed header takes none cached, and is returned as the error.
func peerMaxAge(h nats.Header) (int64, error) {
	maxAge := int64(math.MaxInt64)
	for _, f := range [...]struct {
		name  string
		slack int64
	}{{hdrPeerMaxAge, 0}, {hdrPeerDistrusted, 2}} {
		v := h.Get(f.name)
		if v == "" {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return -1, fmt.Errorf("header %s: %q is not a number of seconds", f.name, v)
		}
		maxAge = min(maxAge, int64(n)-f.slack)
	}
	return maxAge, nil
}

func (e *Edge) replyPeerEntry(m *nats.Msg, ent *entry) {
	r := &nats.Msg{Header: nats.Header{}, Data: ent.bytes()}
	r.Header.Set(hdrPeerVersion, strconv.FormatInt(ent.version, 10))
	r.Header.Set(hdrPeerStatus, strconv.Itoa(int(ent.status)))
	if age := e.cache.age(ent); age > 0 {
		r.Header.Set(hdrPeerAge, strconv.FormatUint(uint64(age), 10))
	}
	if o := ent.owner(); o != "" {
		r.Header.Set(hdrPeerOwner, o)
	}
	if err := m.RespondMsg(r); err != nil {
		e.log.Debug("peer fill reply failed", "err", err)
	}
}

func (e *Edge) replyPeerProblem(m *nats.Msg, p *problem.Problem) {
	body, err := json.Marshal(p)
	if err != nil {
		return
	}
	r := &nats.Msg{Header: nats.Header{}, Data: body}
	r.Header.Set(hdrPeerStatus, strconv.Itoa(p.Status))
	if err := m.RespondMsg(r); err != nil {
		e.log.Debug("peer fill reply failed", "err", err)
	}
}
