package gossip

import (
	"errors"
	"fmt"
	"log"
	"log/slog"
	"time"

	"github.com/hashicorp/memberlist"
)

// ErrInvalidConfig is wrapped by every error [Config.Validate] (and so [New])
// returns for a bad configuration.
var ErrInvalidConfig = errors.New("gossip: invalid config")

// Config configures a [Gossip]. Start from [DefaultConfig] (production, LAN)
// or [LocalConfig] (loopback, tests, perch dev) and set Meta; [New] rejects a
// Config with zero timers rather than guessing them.
//
// The failure-detection timers decide how fast a killed edge disappears. With
// N members, memberlist's probe of the dead member fails within about
// ProbeInterval after it is first probed, the member is then suspect for
// SuspicionMult * max(1, log10(N)) * ProbeInterval (up to
// SuspicionMaxTimeoutMult times that when too few others confirm the
// suspicion), then declared dead and removed. Meanwhile the health pings mark
// it unhealthy after about HealthFailures * HealthInterval.
type Config struct {
	// Meta describes this member to the others. Required: Meta.ID is the
	// memberlist node name and must be unique in the cluster.
	Meta Meta

	// BindAddr is the IP address gossip listens on, UDP and TCP.
	// Default "0.0.0.0" (DefaultConfig), "127.0.0.1" (LocalConfig).
	BindAddr string
	// BindPort is the gossip port, UDP and TCP; 0 lets the OS choose a free
	// one (read it back with Gossip.LocalAddr). Default 7946 (DefaultConfig),
	// 0 (LocalConfig).
	BindPort int
	// AdvertiseAddr is the IP address other members use to reach this one,
	// when it differs from BindAddr (NAT, 0.0.0.0 binds). Optional; empty
	// means memberlist picks BindAddr or, for 0.0.0.0, a private interface
	// address.
	AdvertiseAddr string
	// AdvertisePort is the port other members use to reach this one.
	// Optional; 0 means the bound port.
	AdvertisePort int

	// Join lists host:port gossip addresses of members to join at start.
	// Optional. When none answers, New still succeeds, logs a warning and
	// retries in the background (JoinRetryInterval, doubling up to
	// JoinRetryMax) until a join succeeds and another member is known, or
	// the Gossip is shut down. This edge's own address is skipped, so every
	// edge may be given the same list.
	Join []string
	// JoinRetryInterval is the first wait between background join attempts.
	// Default 1 s (DefaultConfig), 100 ms (LocalConfig).
	JoinRetryInterval time.Duration
	// JoinRetryMax caps the doubling wait between background join attempts.
	// Default 30 s (DefaultConfig), 1 s (LocalConfig).
	JoinRetryMax time.Duration

	// Label, when set, is prefixed to every gossip packet and stream;
	// members only talk to members with the same label, which keeps
	// clusters that share a network apart. Optional, at most 255 bytes.
	Label string
	// SecretKey enables encryption (AES-GCM) of all gossip with this key of
	// 16, 24 or 32 bytes. Optional; without it gossip is plaintext, which
	// memberlist warns about when bound to a public address.
	SecretKey []byte

	// Logger receives memberlist's own log lines at debug level (with the
	// memberlist severity as attribute memberlist_level) and this package's
	// events at info and warn. Optional; nil discards.
	Logger *slog.Logger
	// Watcher is told about member list changes. Optional.
	Watcher Watcher

	// ProbeInterval is the time between memberlist's failure probes (one
	// random member per interval). Default 400 ms (DefaultConfig), 200 ms
	// (LocalConfig).
	ProbeInterval time.Duration
	// ProbeTimeout is how long a direct probe or health ping waits for an
	// ack before trying indirect probes; it should be the network's p99 RTT
	// and must be below ProbeInterval. Default 200 ms (DefaultConfig),
	// 100 ms (LocalConfig).
	ProbeTimeout time.Duration
	// IndirectChecks is the number of members asked to probe a member that
	// failed a direct probe. Default 3 (DefaultConfig), 1 (LocalConfig).
	IndirectChecks int
	// SuspicionMult scales how long a member stays suspect before it is
	// declared dead (see the Config doc). Default 4 (both).
	SuspicionMult int
	// SuspicionMaxTimeoutMult bounds the suspicion time when other members
	// do not confirm the suspicion, as a multiple of the base suspicion
	// time. Default 2 (both); memberlist's own default of 6 would break the
	// 5 s bound.
	SuspicionMaxTimeoutMult int
	// AwarenessMaxMultiplier caps how far memberlist stretches
	// ProbeInterval when it thinks this member itself is degraded.
	// Default 4 (DefaultConfig), 2 (LocalConfig).
	AwarenessMaxMultiplier int

	// GossipInterval is the time between gossip rounds carrying state
	// changes (joins, leaves, suspicions, metadata). Default 100 ms
	// (DefaultConfig), 50 ms (LocalConfig).
	GossipInterval time.Duration
	// GossipNodes is the number of random members each gossip round sends
	// to. Default 3 (both).
	GossipNodes int
	// RetransmitMult scales how many times a state change is retransmitted:
	// RetransmitMult * ceil(log10(N+1)). Default 4 (DefaultConfig), 3
	// (LocalConfig).
	RetransmitMult int
	// GossipToTheDeadTime is how long gossip keeps reaching a dead member,
	// so that a falsely accused one can refute. Default 15 s (DefaultConfig),
	// 2 s (LocalConfig).
	GossipToTheDeadTime time.Duration
	// DeadNodeReclaimTime is how long after its death a member's ID may be
	// taken by a member at another address (an edge restarted on a new IP or
	// port); a gracefully left ID is free at once. 0 means only after the
	// dead member is forgotten. Default 10 s (DefaultConfig), 1 s
	// (LocalConfig).
	DeadNodeReclaimTime time.Duration
	// PushPullInterval is the time between full state syncs with one
	// random member over TCP (anti-entropy); 0 disables them. Default 15 s
	// (DefaultConfig), 5 s (LocalConfig).
	PushPullInterval time.Duration
	// TCPTimeout bounds connecting to, and each read and write of, a TCP
	// stream (joins, push/pull, TCP fallback pings). Default 3 s
	// (DefaultConfig), 1 s (LocalConfig).
	TCPTimeout time.Duration

	// HealthInterval is the time between this edge's health checks of the
	// other members: each member without a successful memberlist probe in
	// the last interval gets a direct ping. Default 400 ms (DefaultConfig),
	// 200 ms (LocalConfig).
	HealthInterval time.Duration
	// HealthFailures is the number of health checks in a row a member must
	// fail to be reported unhealthy; one success makes it healthy again.
	// Default 2 (both).
	HealthFailures int
}

// DefaultConfig returns production settings for edges on one LAN: a killed
// edge is unhealthy after 1 to 1.5 s and removed after 2 to 4.5 s. The bound
// of 5 s holds up to 10 members even when no other member confirms the
// suspicion; beyond that the suspicion time grows with log10 N, which
// confirmations from the many other members usually offset. Meta must still
// be set.
func DefaultConfig() Config {
	return Config{
		BindAddr:          "0.0.0.0",
		BindPort:          7946,
		JoinRetryInterval: time.Second,
		JoinRetryMax:      30 * time.Second,

		ProbeInterval:           400 * time.Millisecond,
		ProbeTimeout:            200 * time.Millisecond,
		IndirectChecks:          3,
		SuspicionMult:           4,
		SuspicionMaxTimeoutMult: 2,
		AwarenessMaxMultiplier:  4,

		GossipInterval:      100 * time.Millisecond,
		GossipNodes:         3,
		RetransmitMult:      4,
		GossipToTheDeadTime: 15 * time.Second,
		DeadNodeReclaimTime: 10 * time.Second,
		PushPullInterval:    15 * time.Second,
		TCPTimeout:          3 * time.Second,

		HealthInterval: 400 * time.Millisecond,
		HealthFailures: 2,
	}
}

// LocalConfig returns settings for members on one machine (loopback, a free
// port each): fast timers for tests and perch dev. A killed member is
// unhealthy after 0.5 to 0.7 s and removed after 1 to 2 s. Meta must still be
// set.
func LocalConfig() Config {
	return Config{
		BindAddr:          "127.0.0.1",
		BindPort:          0,
		JoinRetryInterval: 100 * time.Millisecond,
		JoinRetryMax:      time.Second,

		ProbeInterval:           200 * time.Millisecond,
		ProbeTimeout:            100 * time.Millisecond,
		IndirectChecks:          1,
		SuspicionMult:           4,
		SuspicionMaxTimeoutMult: 2,
		AwarenessMaxMultiplier:  2,

		GossipInterval:      50 * time.Millisecond,
		GossipNodes:         3,
		RetransmitMult:      3,
		GossipToTheDeadTime: 2 * time.Second,
		DeadNodeReclaimTime: time.Second,
		PushPullInterval:    5 * time.Second,
		TCPTimeout:          time.Second,

		HealthInterval: 200 * time.Millisecond,
		HealthFailures: 2,
	}
}

// Validate reports the first problem with c, wrapping [ErrInvalidConfig]
// (and [ErrMetaTooLarge] for an oversized Meta). [New] calls it.
func (c Config) Validate() error {
	if c.Meta.ID == "" {
		return fmt.Errorf("%w: Meta.ID is required", ErrInvalidConfig)
	}
	if _, err := c.Meta.encode(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if err := checkPort("BindPort", c.BindPort); err != nil {
		return err
	}
	if err := checkPort("AdvertisePort", c.AdvertisePort); err != nil {
		return err
	}
	if len(c.Label) > memberlist.LabelMaxSize {
		return fmt.Errorf("%w: Label is %d bytes, limit %d", ErrInvalidConfig, len(c.Label), memberlist.LabelMaxSize)
	}
	switch len(c.SecretKey) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("%w: SecretKey must be 16, 24 or 32 bytes, not %d", ErrInvalidConfig, len(c.SecretKey))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"JoinRetryInterval", c.JoinRetryInterval},
		{"ProbeInterval", c.ProbeInterval},
		{"ProbeTimeout", c.ProbeTimeout},
		{"GossipInterval", c.GossipInterval},
		{"TCPTimeout", c.TCPTimeout},
		{"HealthInterval", c.HealthInterval},
	} {
		if d.v <= 0 {
			return fmt.Errorf("%w: %s must be positive (start from DefaultConfig or LocalConfig)", ErrInvalidConfig, d.name)
		}
	}
	if c.ProbeTimeout >= c.ProbeInterval {
		return fmt.Errorf("%w: ProbeTimeout %v must be below ProbeInterval %v", ErrInvalidConfig, c.ProbeTimeout, c.ProbeInterval)
	}
	if c.JoinRetryMax < c.JoinRetryInterval {
		return fmt.Errorf("%w: JoinRetryMax %v is below JoinRetryInterval %v", ErrInvalidConfig, c.JoinRetryMax, c.JoinRetryInterval)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"GossipToTheDeadTime", c.GossipToTheDeadTime},
		{"DeadNodeReclaimTime", c.DeadNodeReclaimTime},
		{"PushPullInterval", c.PushPullInterval},
	} {
		if d.v < 0 {
			return fmt.Errorf("%w: %s must not be negative", ErrInvalidConfig, d.name)
		}
	}
	for _, n := range []struct {
		name string
		v    int
		min  int
	}{
		{"IndirectChecks", c.IndirectChecks, 0},
		{"SuspicionMult", c.SuspicionMult, 1},
		{"SuspicionMaxTimeoutMult", c.SuspicionMaxTimeoutMult, 1},
		{"AwarenessMaxMultiplier", c.AwarenessMaxMultiplier, 1},
		{"GossipNodes", c.GossipNodes, 1},
		{"RetransmitMult", c.RetransmitMult, 1},
		{"HealthFailures", c.HealthFailures, 1},
	} {
		if n.v < n.min {
			return fmt.Errorf("%w: %s is %d, minimum %d (start from DefaultConfig or LocalConfig)", ErrInvalidConfig, n.name, n.v, n.min)
		}
	}
	return nil
}

func checkPort(name string, p int) error {
	if p < 0 || p > 65535 {
		return fmt.Errorf("%w: %s %d is not a port", ErrInvalidConfig, name, p)
	}
	return nil
}

// memberlistConfig translates c into memberlist's configuration, with d
// receiving memberlist's callbacks.
func (c Config) memberlistConfig(d *delegate, logger *slog.Logger) *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.Meta.ID
	mc.BindAddr = c.BindAddr
	mc.BindPort = c.BindPort
	mc.AdvertiseAddr = c.AdvertiseAddr
	mc.AdvertisePort = c.AdvertisePort
	mc.Label = c.Label
	if len(c.SecretKey) > 0 {
		mc.SecretKey = append([]byte(nil), c.SecretKey...)
	}

	mc.ProbeInterval = c.ProbeInterval
	mc.ProbeTimeout = c.ProbeTimeout
	mc.IndirectChecks = c.IndirectChecks
	mc.SuspicionMult = c.SuspicionMult
	mc.SuspicionMaxTimeoutMult = c.SuspicionMaxTimeoutMult
	mc.AwarenessMaxMultiplier = c.AwarenessMaxMultiplier
	mc.GossipInterval = c.GossipInterval
	mc.GossipNodes = c.GossipNodes
	mc.RetransmitMult = c.RetransmitMult
	mc.GossipToTheDeadTime = c.GossipToTheDeadTime
	mc.DeadNodeReclaimTime = c.DeadNodeReclaimTime
	mc.PushPullInterval = c.PushPullInterval
	mc.TCPTimeout = c.TCPTimeout

	mc.Delegate = d
	mc.Events = d
	mc.Ping = d
	mc.Alive = d
	mc.Conflict = d
	mc.Logger = log.New(logWriter{logger}, "", 0)
	return mc
}
