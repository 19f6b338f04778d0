package gossip

import (
	"fmt"
	"log/slog"
	"net"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate receives memberlist's callbacks for a Gossip. memberlist calls
// NotifyJoin, NotifyLeave, NotifyUpdate, NotifyAlive and NotifyConflict with
// its node lock held, so these methods only touch Gossip.mu state and never
// call back into memberlist (see the lock order in README.md).
type delegate struct {
	g *Gossip
}

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.PingDelegate     = (*delegate)(nil)
	_ memberlist.AliveDelegate    = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
)

// NodeMeta implements memberlist.Delegate: the encoded local Meta, which
// New and SetMeta checked against the limit.
func (d *delegate) NodeMeta(limit int) []byte {
	d.g.mu.Lock()
	defer d.g.mu.Unlock()
	if len(d.g.meta) > limit {
		// Unreachable: MetaMaxSize is the only limit memberlist passes.
		return nil
	}
	return d.g.meta
}

// NotifyMsg implements memberlist.Delegate. User messages (limiter sync
// broadcasts) will be dispatched from here.
func (d *delegate) NotifyMsg([]byte) {}

// GetBroadcasts implements memberlist.Delegate. A memberlist
// TransmitLimitedQueue owned by Gossip will answer here.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }

// LocalState implements memberlist.Delegate; no state beyond membership yet.
func (d *delegate) LocalState(join bool) []byte { return nil }

// MergeRemoteState implements memberlist.Delegate; no state beyond
// membership yet.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {}

// NotifyAlive implements memberlist.AliveDelegate: a node whose metadata is
// not a valid Meta for its name is not admitted as a member (another
// program, or a misconfigured edge, on the gossip port).
func (d *delegate) NotifyAlive(n *memberlist.Node) error {
	m, err := decodeMeta(n.Meta)
	if err == nil && m.ID != n.Name {
		err = fmt.Errorf("meta id %q differs from node name", m.ID)
	}
	if err != nil {
		d.g.rejected(n, err)
		return err
	}
	return nil
}

// NotifyJoin implements memberlist.EventDelegate.
func (d *delegate) NotifyJoin(n *memberlist.Node) { d.g.upsert(n, true) }

// NotifyUpdate implements memberlist.EventDelegate.
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.g.upsert(n, false) }

// NotifyLeave implements memberlist.EventDelegate. memberlist calls it for
// a graceful leave and for a death alike (Node.State does not tell them
// apart).
func (d *delegate) NotifyLeave(n *memberlist.Node) { d.g.remove(n.Name) }

// AckPayload implements memberlist.PingDelegate.
func (d *delegate) AckPayload() []byte { return nil }

// NotifyPingComplete implements memberlist.PingDelegate: memberlist's own
// probe of other got a direct ack, which counts as a passed health check.
func (d *delegate) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	d.g.acked(other.Name, time.Now())
}

// NotifyConflict implements memberlist.ConflictDelegate.
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.g.log.Warn("gossip: another member claims a known ID from a different address; ignored",
		slog.String("id", existing.Name),
		slog.String("known_addr", existing.Address()),
		slog.String("other_addr", other.Address()))
}

// memberFromNode builds the Member for n. The meta was validated by
// NotifyAlive; should it still not decode, the member keeps its ID only.
func memberFromNode(n *memberlist.Node) (Member, error) {
	m, err := decodeMeta(n.Meta)
	return Member{
		ID:      n.Name,
		Region:  m.Region,
		URL:     m.URL,
		Weight:  max(m.Weight, 1),
		Addr:    n.Address(),
		Healthy: true,
	}, err
}

func udpAddr(n *memberlist.Node) *net.UDPAddr {
	return &net.UDPAddr{IP: slices.Clone(n.Addr), Port: int(n.Port)}
}
