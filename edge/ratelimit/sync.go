package ratelimit

import (
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
)

const (
	// demandHorizon is the time constant of the demand average, in sync intervals.
	demandHorizon = 5
	// peerTimeout is how many of its sync intervals a peer may stay silent before it is
	// taken for gone and its shares return to the others.
	peerTimeout = 3
	// idleWeight divides the headroom to give the weight of a limiter without demand for a
	// key: enough for it to regain a token now and then, little enough not to take much
	// from the busy ones.
	idleWeight = 32
	// activeFloor divides the headroom to give the least demand that keeps a key active
	// (reported and holding its headroom).
	activeFloor = 64
	// errorLogEvery is the least time between two log lines about dropped messages.
	errorLogEvery = 10 * time.Second
	// maxPeers bounds the limiters tracked; messages from more are dropped (as malformed).
	maxPeers = 1024
)

// peerKey identifies a limiter: a restarted edge is a new peer.
type peerKey struct {
	node        string
	incarnation uint64
}

// peer is another limiter heard from.
type peer struct {
	key   peerKey
	seq   atomic.Uint64 // the latest round heard
	alive atomic.Bool

	// Guarded by Limiter.peersMu.
	lastSeen int64
	interval int64
	policies map[string]uint64 // policy id → the last round that listed it
}

// fresh reports whether r is part of the peer's current view: the peer is alive and listed
// the key in its latest round or the one before (a round may arrive in several messages).
func (r *remoteDemand) fresh() bool {
	return r.peer.alive.Load() && r.seq+1 >= r.peer.seq.Load()
}

// tick is one sync round: it updates each active key's demand and share, forgets idle
// keys, and publishes the demand to the peers.
func (l *Limiter) tick() {
	now := l.clock()
	dt := now - l.lastTick
	if dt <= 0 {
		dt = int64(l.interval)
	}
	l.lastTick = now
	l.seq++
	set := l.set.Load()
	l.updatePeers(set, now)

	alpha := 1 - math.Exp(-float64(dt)/float64(demandHorizon*l.interval))
	perSecond := 1e9 / float64(dt)
	items := l.items[:0]
	for pi, st := range set.list {
		for i := range st.shards {
			items = st.tickShard(&st.shards[i], pi, now, perSecond, alpha, items)
		}
	}
	l.sweep(set, now)
	if l.transport != nil {
		l.publish(set, items, false)
	}
	clear(items) // drop the key strings
	l.items = items[:0]
	l.logErrors(now)
}

// tickShard updates the demand and share of the active entries of sh and adds them to the
// report.
func (st *policyState) tickShard(sh *shard, pi int, now int64, perSecond, alpha float64, items []reportItem) []reportItem {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if len(sh.active) == 0 {
		return items
	}
	floor := st.perSecond / float64(max(st.live.Load(), 1)) / activeFloor
	for i := 0; i < len(sh.active); {
		e := sh.active[i]
		if !e.gone {
			e.demand += (float64(e.count)*perSecond - e.demand) * alpha
			e.count = 0
			if e.demand < floor {
				e.demand, e.active = 0, false
			}
		}
		if e.gone || !e.active {
			last := len(sh.active) - 1
			sh.active[i], sh.active[last] = sh.active[last], nil
			sh.active = sh.active[:last]
			if !e.gone {
				e.refill(now)
				st.updateShare(e, now)
			}
			continue
		}
		items = append(items, reportItem{policy: pi, key: e.key, demand: e.demand})
		e.refill(now)
		st.updateShare(e, now)
		if e.topUp > 0 && now >= e.probation {
			// Probation is over: if no peer has reported demand for the key meanwhile, this
			// limiter is the only one using it and gets the rest of the burst.
			if !e.remoteEver {
				e.tokens = min(e.tokens+e.topUp, e.cap)
			}
			e.topUp = 0
		}
		i++
	}
	return items
}

// updateShare sets e's share of the policy's rate from the demand of every limiter, as this
// one knows it. A limiter with demand d for the key weighs d + h, one without weighs h/32,
// with h = rate / N (N limiters enforcing the policy); the share is this limiter's weight
// over the sum. Every limiter computes the same weights from the same reports, so the shares
// add up to one. The headroom h keeps the shares of limiters with little demand from
// swinging with every request; the idle weight lets a limiter that has not seen the key for
// a while regain a token for it now and then. It prunes stale peer reports.
func (st *policyState) updateShare(e *entry, now int64) {
	n := max(st.live.Load(), 1)
	h := st.perSecond / float64(n)
	idle := h / idleWeight
	mine := idle
	if e.active {
		mine = e.demand + h
	}
	sum := mine
	others := 0
	kept := e.remote[:0]
	for _, r := range e.remote {
		if !r.fresh() {
			continue
		}
		kept = append(kept, r)
		sum += r.demand + h
		others++
	}
	clear(e.remote[len(kept):])
	e.remote = kept
	if silent := int(n) - 1 - others; silent > 0 {
		sum += float64(silent) * idle
	}
	s := mine / sum
	if now < e.probation {
		s = min(s, 1/float64(n))
	}
	e.setShare(st, s)
}

// sweep visits the next shards of the idle-key sweep, so that every shard is visited once
// per sweepPeriod. It forgets the keys that nobody has used for long enough that their
// bucket would be full again, and brings the shares of the others up to date.
func (l *Limiter) sweep(set *policySet, now int64) {
	per := int((numShards*int64(l.interval) + int64(sweepPeriod) - 1) / int64(sweepPeriod))
	for j := range per {
		i := (l.sweepNext + j) % numShards
		for _, st := range set.list {
			st.sweepShard(&st.shards[i], now)
		}
	}
	l.sweepNext = (l.sweepNext + per) % numShards
}

func (st *policyState) sweepShard(sh *shard, now int64) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	for _, e := range sh.m {
		if e.active {
			continue
		}
		e.refill(now)
		st.updateShare(e, now)
		if len(e.remote) == 0 && now-max(e.seen, e.remoteSeen) >= st.idleTTL {
			st.remove(sh, e)
		}
	}
}

// updatePeers forgets the peers that have gone silent and counts the limiters enforcing
// each policy.
func (l *Limiter) updatePeers(set *policySet, now int64) {
	l.peersMu.Lock()
	defer l.peersMu.Unlock()
	for k, p := range l.peers {
		interval := min(max(p.interval, int64(l.interval)), int64(MaxSyncInterval))
		if now-p.lastSeen > peerTimeout*interval+int64(l.interval) {
			l.dropPeer(k, p)
			l.log.Info("rate limit peer lost", "peer", p.key.node)
		}
	}
	for _, st := range set.list {
		n := int32(1)
		for _, p := range l.peers {
			if seq, ok := p.policies[st.id]; ok && seq+1 >= p.seq.Load() {
				n++
			}
		}
		st.live.Store(n)
	}
}

// dropPeer forgets p; the caller holds peersMu.
func (l *Limiter) dropPeer(k peerKey, p *peer) {
	p.alive.Store(false)
	delete(l.peers, k)
	l.live.Add(-1)
}

// receive applies a message from the transport.
func (l *Limiter) receive(msg []byte) {
	u, err := decodeUsage(msg)
	if err != nil {
		l.decodeErrs.Add(1)
		s := err.Error()
		l.lastDecodeErr.Store(&s)
		l.metrics.syncErrors.decode.Inc()
		return
	}
	if u.incarnation == l.incarnation && u.node == l.nodeID {
		return // our own
	}
	l.metrics.received.messages.Inc()
	l.metrics.received.bytes.Add(float64(len(msg)))
	now := l.clock()
	p := l.notePeer(&u, now)
	if p == nil {
		return
	}
	set := l.set.Load()
	for _, s := range u.sections {
		st := set.byID[string(s.policy)]
		if st == nil {
			continue // a policy this limiter does not enforce
		}
		for _, it := range s.items {
			st.applyRemote(l, p, u.seq, it.key, float64(it.demand)/1000, now)
		}
	}
}

// notePeer records that the sender of u is alive; nil when it is leaving.
func (l *Limiter) notePeer(u *usage, now int64) *peer {
	k := peerKey{u.node, u.incarnation}
	l.peersMu.Lock()
	defer l.peersMu.Unlock()
	p := l.peers[k]
	if u.leave {
		if p != nil {
			l.dropPeer(k, p)
			l.log.Info("rate limit peer left", "peer", u.node)
		}
		return nil
	}
	if p == nil {
		if len(l.peers) >= maxPeers {
			l.decodeErrs.Add(1)
			s := "more than " + strconv.Itoa(maxPeers) + " peers: ignoring " + u.node
			l.lastDecodeErr.Store(&s)
			return nil
		}
		p = &peer{key: k, policies: make(map[string]uint64)}
		p.alive.Store(true)
		l.peers[k] = p
		l.live.Add(1)
		l.log.Info("rate limit peer joined", "peer", u.node)
	}
	p.lastSeen = now
	p.interval = int64(u.interval)
	if u.seq > p.seq.Load() {
		p.seq.Store(u.seq)
	}
	for _, s := range u.sections {
		if seq, ok := p.policies[string(s.policy)]; !ok || u.seq > seq {
			p.policies[string(s.policy)] = u.seq
		}
	}
	if len(p.policies) > maxSections {
		// A peer dropped policies on reloads: forget the ones it no longer lists.
		for id, seq := range p.policies {
			if seq+1 < p.seq.Load() {
				delete(p.policies, id)
			}
		}
	}
	return p
}

// applyRemote records peer p's demand for key.
func (st *policyState) applyRemote(l *Limiter, p *peer, seq uint64, key []byte, demand float64, now int64) {
	sh := &st.shards[xxhash.Sum64(key)%numShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[string(key)]
	if e == nil {
		e = st.insert(l, sh, key, now, false)
	}
	e.remoteEver = true
	e.remoteSeen = now
	found := false
	for i := range e.remote {
		if r := &e.remote[i]; r.peer == p {
			r.seq, r.demand = seq, demand
			found = true
			break
		}
	}
	if !found {
		e.remote = append(e.remote, remoteDemand{peer: p, seq: seq, demand: demand})
	}
	e.refill(now)
	st.updateShare(e, now)
}

// publish sends the round's report (or, with leave, the goodbye).
func (l *Limiter) publish(set *policySet, items []reportItem, leave bool) {
	h := usageHeader{node: l.nodeID, incarnation: l.incarnation, seq: l.seq, interval: l.interval, leave: leave}
	l.buf = encodeUsage(l.buf[:0], h, set.ids, items, maxMessageBytes, func(msg []byte) {
		if err := l.transport.Publish(msg); err != nil {
			l.publishErrs.Add(1)
			l.metrics.syncErrors.publish.Inc()
			return
		}
		l.metrics.sent.messages.Inc()
		l.metrics.sent.bytes.Add(float64(len(msg)))
	})
}

// leave tells the peers that this limiter stops, so that they take over its shares now
// rather than after peerTimeout.
func (l *Limiter) leave() {
	if l.transport == nil {
		return
	}
	l.seq++
	l.publish(&policySet{}, nil, true)
	if f, ok := l.transport.(Flusher); ok {
		_ = f.Flush()
	}
}

// logErrors logs, at most once per errorLogEvery, how many messages were dropped.
func (l *Limiter) logErrors(now int64) {
	if now-l.lastLog < int64(errorLogEvery) && l.lastLog != 0 {
		return
	}
	logged := false
	if n := l.decodeErrs.Swap(0); n > 0 {
		last := ""
		if p := l.lastDecodeErr.Load(); p != nil {
			last = *p
		}
		l.log.Warn("dropped malformed rate limit usage messages", "count", n, "last_error", last)
		logged = true
	}
	if n := l.publishErrs.Swap(0); n > 0 {
		l.log.Warn("could not publish rate limit usage", "count", n)
		logged = true
	}
	if logged {
		l.lastLog = now
	}
}
