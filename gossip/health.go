package gossip

import (
	"log/slog"
	"net"
	"sync"
	"time"
)

// Health checking. memberlist decides membership (SWIM probes, indirect
// probes, suspicion, death) but keeps its suspect state private, so gossip
// keeps its own per-member health: a member is healthy while this edge gets
// direct acks from it. Every HealthInterval each other member whose last
// ack is older than HealthInterval gets a direct UDP ping (memberlist's
// Ping, waiting ProbeTimeout); memberlist's own successful probes count as
// acks (PingDelegate), so a member memberlist just probed costs nothing
// extra. HealthFailures failed checks in a row make a member unhealthy; one
// ack makes it healthy again.

// healthLoop runs the health checks until the Gossip stops.
func (g *Gossip) healthLoop() {
	t := time.NewTicker(g.cfg.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-g.done:
			return
		case <-t.C:
			g.checkHealth()
		}
	}
}

type healthTarget struct {
	id   string
	gen  uint64
	addr *net.UDPAddr
}

// checkHealth pings, in parallel, every member without a recent ack, and
// records the results. It returns within about ProbeTimeout.
func (g *Gossip) checkHealth() {
	start := time.Now()
	var targets []healthTarget
	g.mu.Lock()
	for id, p := range g.peers {
		if start.Sub(p.lastAck) >= g.cfg.HealthInterval {
			targets = append(targets, healthTarget{id: id, gen: p.gen, addr: p.addr})
		}
	}
	g.mu.Unlock()
	if len(targets) == 0 {
		return
	}

	ok := make([]bool, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Go(func() {
			_, err := g.ml.Ping(t.id, t.addr)
			ok[i] = err == nil
		})
	}
	wg.Wait()
	if g.closed.Load() {
		return
	}

	now := time.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	changed := false
	for i, t := range targets {
		p, found := g.peers[t.id]
		if !found || p.gen != t.gen {
			continue // left, or left and came back, meanwhile
		}
		if ok[i] {
			changed = g.ackLocked(p, now) || changed
			continue
		}
		if p.lastAck.After(start) {
			continue // memberlist's probe got an ack while we waited
		}
		p.fails++
		if p.fails == g.cfg.HealthFailures {
			p.member.Healthy = false
			changed = true
			g.log.Info("gossip: member unhealthy",
				slog.String("id", t.id), slog.Int("failed_checks", p.fails))
		}
	}
	if changed {
		g.changedLocked()
	}
}

// acked records a direct ack from member id at time at.
func (g *Gossip) acked(id string, at time.Time) {
	if g.closed.Load() {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if p, ok := g.peers[id]; ok && g.ackLocked(p, at) {
		g.changedLocked()
	}
}

// ackLocked marks p as answering at time at and reports whether its health
// changed. g.mu must be held.
func (g *Gossip) ackLocked(p *peer, at time.Time) bool {
	if at.After(p.lastAck) {
		p.lastAck = at
	}
	p.fails = 0
	if p.member.Healthy {
		return false
	}
	p.member.Healthy = true
	g.log.Info("gossip: member healthy again", slog.String("id", p.member.ID))
	return true
}
