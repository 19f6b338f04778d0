package gossip

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// MetaMaxSize is the largest encoded [Meta] in bytes: memberlist's limit on
// node metadata.
const MetaMaxSize = memberlist.MetaMaxSize

// Meta is what a member tells the others about itself. It travels as JSON in
// memberlist's node metadata, so its encoding must fit in [MetaMaxSize]
// bytes; [New] and [Gossip.SetMeta] reject larger values with
// [ErrMetaTooLarge]. Decoders ignore unknown fields, so later versions may
// add fields and still gossip with this one.
type Meta struct {
	// ID names the member uniquely in the cluster; it is memberlist's node
	// name. Required, and it cannot change for the life of a Gossip.
	ID string `json:"id"`
	// Region is the edge's region, e.g. "eu-west". Optional.
	Region string `json:"region,omitempty"`
	// URL is the edge's public base URL, e.g. "https://eu1.example.com".
	// Optional.
	URL string `json:"url,omitempty"`
	// Weight scales the member's share of the hash ring: a member of weight 2
	// owns about twice the keys of one of weight 1 (a larger machine).
	// Optional; 0 means 1. At most [MaxWeight].
	Weight int `json:"weight,omitempty"`
}

// MaxWeight is the largest [Meta.Weight].
const MaxWeight = 64

// Member is one member of the cluster as this edge sees it.
type Member struct {
	ID     string
	Region string
	URL    string
	// Weight is the member's [Meta.Weight], at least 1.
	Weight int
	// Addr is the member's gossip address, host:port.
	Addr string
	// Healthy is false while this edge gets no answer to its direct pings of
	// the member (HealthFailures in a row): the member is suspect and may be
	// dead. It is always true for the local member.
	Healthy bool
}

// Watcher is told when the member list changes: a member joined, left or
// was declared dead, updated its Meta, or changed health.
//
// MembersChanged carries no arguments: read [Gossip.Members] for the new
// state. Calls come from a single goroutine, one at a time, and coalesce:
// several changes during one call produce one more call, not several. The
// first call (for the local member) may come before [New] has returned. The
// method must not block (a slow watcher delays later notifications, never
// gossip itself) and must not call [Gossip.Leave] or [Gossip.Shutdown],
// which wait for it to return.
type Watcher interface {
	MembersChanged()
}

// ErrMetaTooLarge is returned by [New] and [Gossip.SetMeta] when the encoded
// [Meta] exceeds [MetaMaxSize].
var ErrMetaTooLarge = errors.New("gossip: meta too large")

// encode returns m as memberlist node metadata.
func (m Meta) encode() ([]byte, error) {
	if m.ID == "" {
		return nil, errors.New("gossip: meta: ID is required")
	}
	if m.Weight < 0 || m.Weight > MaxWeight {
		return nil, fmt.Errorf("gossip: meta: weight %d outside 0..%d", m.Weight, MaxWeight)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("gossip: encode meta: %w", err)
	}
	if len(b) > MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes encoded, limit %d", ErrMetaTooLarge, len(b), MetaMaxSize)
	}
	return b, nil
}

// decodeMeta parses node metadata received from the network. It fails on
// anything that is not a JSON object with a non-empty id.
func decodeMeta(b []byte) (Meta, error) {
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, fmt.Errorf("decode meta: %w", err)
	}
	if m.ID == "" {
		return Meta{}, errors.New("decode meta: id is missing")
	}
	if m.Weight < 0 || m.Weight > MaxWeight {
		return Meta{}, fmt.Errorf("decode meta: weight %d outside 0..%d", m.Weight, MaxWeight)
	}
	return m, nil
}
