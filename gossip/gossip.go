package gossip

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// ErrClosed is returned by methods called after [Gossip.Leave] or
// [Gossip.Shutdown].
var ErrClosed = errors.New("gossip: closed")

// Gossip is this edge's membership in the cluster. Create it with [New];
// stop it with [Gossip.Leave] (graceful) or [Gossip.Shutdown] (abrupt). All
// methods are safe for concurrent use.
type Gossip struct {
	cfg       Config
	log       *slog.Logger
	ml        *memberlist.Memberlist
	localAddr string

	// snap is the published member list, replaced whole under mu and read
	// without locks.
	snap atomic.Pointer[snapshot]

	// mu guards the fields below. Order: memberlist's node lock, then mu;
	// never call memberlist with mu held.
	mu       sync.Mutex
	meta     []byte           // encoded local Meta, served to memberlist
	self     Member           // the local member
	peers    map[string]*peer // the other known members, by ID
	gen      uint64           // incremented for each peer admitted
	rejectID map[string]bool  // node names already logged as rejected

	changed chan struct{} // capacity 1; nil without a Watcher
	done    chan struct{} // closed by shutdown
	closed  atomic.Bool

	// lifeMu serializes Leave and Shutdown: memberlist panics on a Leave
	// after Shutdown. Held across the memberlist calls, taken before mu.
	lifeMu sync.Mutex
	wg     sync.WaitGroup // background goroutines
}

// snapshot is an immutable view of the member list.
type snapshot struct {
	members []Member // sorted by ID, self included
	self    Member
}

// peer is the state kept for another member.
type peer struct {
	member  Member
	addr    *net.UDPAddr
	gen     uint64
	fails   int       // health checks failed in a row
	lastAck time.Time // last direct ack: memberlist probe or health ping
}

// New validates cfg, starts gossip on cfg.BindAddr:cfg.BindPort and joins
// cfg.Join. It fails when cfg is invalid (errors wrapping
// [ErrInvalidConfig], and [ErrMetaTooLarge] for Meta) or the port cannot be
// bound. When no join address answers, New still succeeds: it logs a
// warning and keeps trying in the background. New copies the slices in
// cfg it keeps.
func New(cfg Config) (*Gossip, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	meta, err := cfg.Meta.encode()
	if err != nil {
		return nil, err // unreachable after Validate
	}
	cfg.Join = slices.Clone(cfg.Join)
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With(slog.String("gossip_id", cfg.Meta.ID))

	g := &Gossip{
		cfg:      cfg,
		log:      logger,
		meta:     meta,
		peers:    make(map[string]*peer),
		rejectID: make(map[string]bool),
		done:     make(chan struct{}),
	}
	if cfg.Watcher != nil {
		g.changed = make(chan struct{}, 1)
	}
	g.snap.Store(&snapshot{})

	// memberlist.Create announces the local node, which reaches upsert
	// before Create returns.
	ml, err := memberlist.Create(cfg.memberlistConfig(&delegate{g: g}, logger))
	if err != nil {
		return nil, fmt.Errorf("gossip: start on %s:%d: %w", cfg.BindAddr, cfg.BindPort, err)
	}
	g.ml = ml
	g.localAddr = ml.LocalNode().Address()

	if g.changed != nil {
		g.wg.Go(g.notifyLoop)
	}
	g.wg.Go(g.healthLoop)

	if join := g.withoutSelf(cfg.Join); len(join) > 0 {
		if n, err := ml.Join(join); n == 0 || !g.hasPeers() {
			logger.Warn("gossip: no other member answered at the join addresses; retrying in the background",
				slog.Any("join", join), slog.Any("err", err))
			g.wg.Go(func() { g.joinLoop(join) })
		} else {
			logger.Info("gossip: joined", slog.Int("contacted", n), slog.Int("members", len(g.Members())))
		}
	}
	return g, nil
}

// Members returns every member this edge knows, itself included, sorted by
// ID. Members that left or were declared dead are not in it; suspect ones
// are, with Healthy=false. The slice is the caller's. Cheap: it copies a
// snapshot, taking no lock. After Leave or Shutdown it returns the last
// list seen.
func (g *Gossip) Members() []Member {
	return slices.Clone(g.snap.Load().members)
}

// Self returns the local member.
func (g *Gossip) Self() Member {
	return g.snap.Load().self
}

// LocalAddr returns the gossip address other members reach this one at,
// host:port, with the port the OS chose when BindPort was 0.
func (g *Gossip) LocalAddr() string {
	return g.localAddr
}

// Join contacts the members at addrs (host:port) and merges their view of
// the cluster. It returns how many answered; the error is nil when at least
// one did. Join blocks for up to TCPTimeout per address that does not
// answer.
func (g *Gossip) Join(addrs []string) (int, error) {
	if g.closed.Load() {
		return 0, ErrClosed
	}
	n, err := g.ml.Join(addrs)
	if err != nil {
		return n, fmt.Errorf("gossip: join %v: %w", addrs, err)
	}
	return n, nil
}

// SetMeta replaces the local Meta (its ID must not change) and gossips it;
// other members see the update and their Watchers are told. It blocks until
// the update has been broadcast or timeout, which must be positive, passes.
// It returns [ErrMetaTooLarge] when meta does not fit.
func (g *Gossip) SetMeta(meta Meta, timeout time.Duration) error {
	if timeout <= 0 {
		// memberlist would wait without limit, forever if a Leave starts
		// meanwhile.
		return fmt.Errorf("gossip: set meta: timeout %v must be positive", timeout)
	}
	if meta.ID != g.cfg.Meta.ID {
		return fmt.Errorf("gossip: set meta: ID %q cannot change to %q", g.cfg.Meta.ID, meta.ID)
	}
	b, err := meta.encode()
	if err != nil {
		return fmt.Errorf("gossip: set meta: %w", err)
	}
	if g.closed.Load() {
		return ErrClosed
	}
	g.mu.Lock()
	g.meta = b
	g.mu.Unlock()
	if err := g.ml.UpdateNode(timeout); err != nil {
		return fmt.Errorf("gossip: set meta: %w", err)
	}
	return nil
}

// Leave tells the other members this one is leaving, waits until that has
// been broadcast or timeout passes (0: no limit), then stops like Shutdown.
// The others drop this member within a few gossip rounds instead of
// detecting a failure. It returns an error when the broadcast timed out
// (the member is stopped all the same), and [ErrClosed] when already
// stopped. A Shutdown during Leave waits for it.
func (g *Gossip) Leave(timeout time.Duration) error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	if g.closed.Load() {
		return ErrClosed
	}
	g.log.Info("gossip: leaving", slog.Duration("timeout", timeout))
	lerr := g.ml.Leave(timeout)
	serr := g.shutdownLocked()
	if lerr != nil {
		return fmt.Errorf("gossip: leave: %w", errors.Join(lerr, serr))
	}
	return serr
}

// Shutdown stops gossip without telling anyone, as a crash would: the
// others detect the failure. It waits for background work, including a
// Watcher call in progress, to finish. Safe to call more than once; later
// calls return nil.
func (g *Gossip) Shutdown() error {
	g.lifeMu.Lock()
	defer g.lifeMu.Unlock()
	return g.shutdownLocked()
}

func (g *Gossip) shutdownLocked() error {
	if !g.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(g.done)
	err := g.ml.Shutdown()
	g.wg.Wait()
	if err != nil {
		return fmt.Errorf("gossip: shutdown: %w", err)
	}
	return nil
}

// withoutSelf drops this member's own address from addrs.
func (g *Gossip) withoutSelf(addrs []string) []string {
	return slices.DeleteFunc(slices.Clone(addrs), func(a string) bool { return a == g.localAddr })
}

// joinLoop retries joining addrs, backing off from JoinRetryInterval to
// JoinRetryMax, until a join contacts someone and another member is known,
// or the Gossip stops.
func (g *Gossip) joinLoop(addrs []string) {
	wait := g.cfg.JoinRetryInterval
	t := time.NewTimer(wait)
	defer t.Stop()
	for attempt := 2; ; attempt++ {
		select {
		case <-g.done:
			return
		case <-t.C:
		}
		n, err := g.ml.Join(addrs)
		if n > 0 && g.hasPeers() {
			g.log.Info("gossip: joined", slog.Int("attempt", attempt), slog.Int("members", len(g.Members())))
			return
		}
		wait = min(2*wait, g.cfg.JoinRetryMax)
		g.log.Debug("gossip: join failed; retrying",
			slog.Int("attempt", attempt), slog.Any("err", err), slog.Duration("next", wait))
		t.Reset(wait)
	}
}

// notifyLoop calls the Watcher once per burst of changes.
func (g *Gossip) notifyLoop() {
	for {
		select {
		case <-g.done:
			return
		case <-g.changed:
		}
		select {
		case <-g.done:
			return
		default:
		}
		g.cfg.Watcher.MembersChanged()
	}
}

// changedLocked publishes a new snapshot and wakes the Watcher. g.mu must
// be held.
func (g *Gossip) changedLocked() {
	ms := make([]Member, 0, len(g.peers)+1)
	ms = append(ms, g.self)
	for _, p := range g.peers {
		ms = append(ms, p.member)
	}
	slices.SortFunc(ms, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	g.snap.Store(&snapshot{members: ms, self: g.self})
	if g.changed != nil {
		select {
		case g.changed <- struct{}{}:
		default: // a notification is already pending
		}
	}
}

func (g *Gossip) hasPeers() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.peers) > 0
}

// upsert records a member that joined (join) or changed its metadata.
func (g *Gossip) upsert(n *memberlist.Node, join bool) {
	if g.closed.Load() {
		return
	}
	m, err := memberFromNode(n)
	if err != nil {
		g.log.Warn("gossip: member metadata does not decode", slog.String("id", n.Name), slog.Any("err", err))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if n.Name == g.cfg.Meta.ID {
		g.self = m
		g.changedLocked()
		return
	}
	p, ok := g.peers[n.Name]
	if join || !ok {
		g.gen++
		g.peers[n.Name] = &peer{member: m, addr: udpAddr(n), gen: g.gen, lastAck: time.Now()}
		g.log.Info("gossip: member joined",
			slog.String("id", m.ID), slog.String("region", m.Region), slog.String("addr", m.Addr))
	} else {
		m.Healthy = p.member.Healthy
		p.member = m
		p.addr = udpAddr(n)
		g.log.Info("gossip: member updated",
			slog.String("id", m.ID), slog.String("region", m.Region), slog.String("url", m.URL))
	}
	g.changedLocked()
}

// remove forgets a member that left or was declared dead.
func (g *Gossip) remove(id string) {
	if g.closed.Load() || id == g.cfg.Meta.ID {
		return // memberlist reports our own Leave too
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.peers[id]; !ok {
		return
	}
	delete(g.peers, id)
	g.log.Info("gossip: member gone", slog.String("id", id))
	g.changedLocked()
}

// rejected logs, once per node name, a node refused for bad metadata.
func (g *Gossip) rejected(n *memberlist.Node, err error) {
	g.mu.Lock()
	seen := g.rejectID[n.Name]
	g.rejectID[n.Name] = true
	g.mu.Unlock()
	if !seen {
		g.log.Warn("gossip: refusing node with invalid metadata",
			slog.String("node", n.Name), slog.String("addr", n.Address()), slog.Any("err", err))
	}
}
