package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
)

// Defaults and bounds of Config.
const (
	// DefaultSyncInterval is how often a limiter tells its peers its demand, by default.
	DefaultSyncInterval = 50 * time.Millisecond
	// MaxSyncInterval is the longest sync interval New accepts: the over-admission bound
	// (README.md) grows with it.
	MaxSyncInterval = 100 * time.Millisecond
	// MinSyncInterval is the shortest sync interval New accepts.
	MinSyncInterval = 5 * time.Millisecond
	// DefaultMaxKeys bounds the keys tracked, by default.
	DefaultMaxKeys = 1_000_000
)

const (
	// numShards is the number of independently locked parts of each policy's key table.
	numShards = 256
	// maxKeyLen is the longest key kept as it is; a longer one is kept as its 64-bit hash
	// (hashedKeyLen bytes), so that large API keys cost no more memory or sync bytes.
	maxKeyLen    = 64
	hashedKeyLen = 1 + 8
	// tokenEpsilon absorbs float rounding: a bucket holding 1-1e-9 tokens holds one.
	tokenEpsilon = 1e-9
	// evictSample is how many entries an insert into a full shard looks at to pick the
	// least recently used one.
	evictSample = 8
	// probationIntervals is how long, in sync intervals, a key new to the fleet is held to a
	// 1/N share before this limiter, having heard of no peer using it, takes the rest of its
	// burst. Long enough for the peers' first reports of the key to arrive on a loaded
	// machine (a late report would let every edge take the whole burst), short enough that
	// a lone client waits a fraction of a second for it.
	probationIntervals = 4
	// sweepPeriod is how long one pass of the idle-key sweep over every shard takes.
	sweepPeriod = time.Second
)

// Config configures a Limiter. The zero value of a field means its default.
type Config struct {
	// NodeID names this limiter in its peers' logs; default a random one. Limiters tell
	// themselves apart by a random incarnation number drawn in New, so NodeID needs not be
	// unique, though it helps to read logs (the edge passes its own ID).
	NodeID string
	// Policies are the limits in force; none means every request is allowed. SetPolicies
	// replaces them.
	Policies []Policy
	// SyncInterval is how often the limiter publishes its demand to its peers and updates
	// its shares: from MinSyncInterval to MaxSyncInterval. Default DefaultSyncInterval.
	SyncInterval time.Duration
	// Transport carries usage between the limiters of the fleet. Nil: this limiter is
	// alone and enforces every limit by itself.
	Transport Transport
	// Now is the clock. Default time.Now. It must not go backwards by much; a reading
	// earlier than one already used adds no tokens.
	Now func() time.Time
	// Logger receives sync problems. Default: discard.
	Logger *slog.Logger
	// MaxKeys bounds the (policy, key) pairs tracked, over all policies, local and reported
	// by peers. Beyond it, tracking a new key forgets the least recently used of a few in
	// its shard (README.md, "Memory"); perch_ratelimit_evictions_total counts them.
	// Default DefaultMaxKeys.
	MaxKeys int
}

// DefaultConfig is a Config with every default written out.
func DefaultConfig() Config {
	return Config{SyncInterval: DefaultSyncInterval, MaxKeys: DefaultMaxKeys, Now: time.Now}
}

// Keys names who makes a request, one key per scope. An empty key means the scope does not
// apply to the request (no user for an anonymous request, no API key without X-Api-Key), so
// no policy of that scope counts it. The slices may alias request buffers: the limiter
// copies what it keeps.
type Keys struct {
	IP     []byte
	User   []byte
	APIKey []byte
}

func (k *Keys) get(s Scope) []byte {
	switch s {
	case ScopeIP:
		return k.IP
	case ScopeUser:
		return k.User
	default:
		return k.APIKey
	}
}

func scopeIndex(s Scope) int {
	switch s {
	case ScopeIP:
		return 0
	case ScopeUser:
		return 1
	default:
		return 2
	}
}

// Limiter decides whether requests are within their rate limits. One Limiter serves an
// edge: Allow is called from every request goroutine, Run runs the sync with the other
// edges, SetPolicies reloads the limits. All methods are safe for concurrent use.
//
// Locks: a shard's mutex is never held with another shard's or with peersMu; setMu (which
// serialises SetPolicies) is held with neither.
type Limiter struct {
	log         *slog.Logger
	nodeID      string
	incarnation uint64
	interval    time.Duration
	transport   Transport
	now         func() time.Time
	epoch       time.Time
	maxKeys     int
	metrics     *metrics

	set      atomic.Pointer[policySet]
	setMu    sync.Mutex   // serialises SetPolicies
	shardCap atomic.Int64 // most entries in one shard of one policy

	peersMu sync.Mutex
	peers   map[peerKey]*peer
	live    atomic.Int32 // peers alive, for the metric

	running atomic.Bool

	// Owned by the sync loop (tick).
	seq       uint64
	lastTick  int64
	sweepNext int
	items     []reportItem
	buf       []byte
	lastLog   int64

	decodeErrs    atomic.Int64
	lastDecodeErr atomic.Pointer[string]
	publishErrs   atomic.Int64
}

// New validates cfg and returns a Limiter enforcing cfg.Policies. Allow works at once; Run
// must run for the limiter to share limits with its peers and to forget idle keys.
func New(cfg Config) (*Limiter, error) {
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = DefaultSyncInterval
	}
	if cfg.SyncInterval < MinSyncInterval || cfg.SyncInterval > MaxSyncInterval {
		return nil, fmt.Errorf("ratelimit: sync interval %v: want from %v to %v", cfg.SyncInterval, MinSyncInterval, MaxSyncInterval)
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = DefaultMaxKeys
	}
	if cfg.MaxKeys < 0 {
		return nil, fmt.Errorf("ratelimit: MaxKeys %d: want a positive number", cfg.MaxKeys)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	if cfg.NodeID == "" {
		cfg.NodeID = "limiter-" + hex.EncodeToString(nonce[:4])
	}
	if len(cfg.NodeID) > maxNodeIDLen {
		return nil, fmt.Errorf("ratelimit: node id longer than %d bytes", maxNodeIDLen)
	}
	l := &Limiter{
		log:         cfg.Logger,
		nodeID:      cfg.NodeID,
		incarnation: binary.LittleEndian.Uint64(nonce[:]),
		interval:    cfg.SyncInterval,
		transport:   cfg.Transport,
		now:         cfg.Now,
		epoch:       cfg.Now(),
		maxKeys:     cfg.MaxKeys,
		peers:       make(map[peerKey]*peer),
	}
	l.metrics = newMetrics(l)
	l.set.Store(&policySet{byID: map[string]*policyState{}})
	if err := l.SetPolicies(cfg.Policies); err != nil {
		return nil, err
	}
	return l, nil
}

// clock is the time in nanoseconds since New.
func (l *Limiter) clock() int64 { return int64(l.now().Sub(l.epoch)) }

// Policies returns the policies in force, in their canonical form.
func (l *Limiter) Policies() []Policy {
	set := l.set.Load()
	ps := make([]Policy, len(set.list))
	for i, st := range set.list {
		ps[i] = st.p
	}
	return ps
}

// SetPolicies replaces the policies in force, atomically for Allow: a request is decided by
// either the old set or the new one. A policy present before and after (the same String)
// keeps its buckets; a new or changed one starts fresh, as if first seen. On an error the
// policies in force stay.
func (l *Limiter) SetPolicies(ps []Policy) error {
	canon := make([]Policy, len(ps))
	for i, p := range ps {
		canon[i] = p.canonical()
	}
	if err := validatePolicies(canon); err != nil {
		return fmt.Errorf("ratelimit: %w", err)
	}
	l.setMu.Lock()
	defer l.setMu.Unlock()
	old := l.set.Load()
	next := &policySet{byID: make(map[string]*policyState, len(canon))}
	peers := l.live.Load()
	for _, p := range canon {
		id := p.String()
		st := old.byID[id]
		if st == nil {
			st = newPolicyState(l, p)
			st.live.Store(1 + peers)
		}
		next.list = append(next.list, st)
		next.byID[id] = st
		next.ids = append(next.ids, id)
	}
	perShard := int64(1)
	if n := len(next.list); n > 0 {
		perShard = max(int64(l.maxKeys)/int64(n*numShards), 1)
	}
	l.shardCap.Store(perShard)
	l.set.Store(next)
	l.metrics.retire(old, next)
	return nil
}

// Allow decides a request in route group group (the edge's name for the route's kind, e.g.
// "reads"; policies without a group apply to every group) made by k. Every policy whose
// scope has a key in k and whose group matches counts the request; it is allowed when each
// of them has a token, and then takes one from each. The Decision describes the most
// restrictive of them: the one that refused with the longest wait, else the one with the
// fewest requests left.
//
// Allow does not block beyond short critical sections and, for a key already tracked, does
// not allocate. It never keeps k's slices.
func (l *Limiter) Allow(group string, k Keys) Decision {
	set := l.set.Load()
	if len(set.list) == 0 {
		return Decision{Allowed: true}
	}
	return l.decide(set, l.clock(), group, k)
}

// AllowAt is Allow at time now, for a caller that has read the clock already (fasthttp's
// RequestCtx.Time, say): reading the clock can be a third of Allow's cost. now must come
// from the clock of Config.Now (time.Now by default).
func (l *Limiter) AllowAt(now time.Time, group string, k Keys) Decision {
	set := l.set.Load()
	if len(set.list) == 0 {
		return Decision{Allowed: true}
	}
	return l.decide(set, int64(now.Sub(l.epoch)), group, k)
}

func (l *Limiter) decide(set *policySet, now int64, group string, k Keys) Decision {
	d := Decision{Allowed: true}
	var (
		stored [3][hashedKeyLen]byte
		hashes [3]uint64
		ready  [3]bool
		denied = -1
	)
	for i, st := range set.list {
		if st.p.Group != "" && st.p.Group != group {
			continue
		}
		si := scopeIndex(st.p.Scope)
		key := k.get(st.p.Scope)
		if len(key) == 0 {
			continue
		}
		if len(key) > maxKeyLen {
			if !ready[si] {
				stored[si][0] = 0xff
				binary.LittleEndian.PutUint64(stored[si][1:], xxhash.Sum64(key))
			}
			key = stored[si][:]
		}
		if !ready[si] {
			hashes[si] = xxhash.Sum64(key)
			ready[si] = true
		}
		v := st.take(l, key, hashes[si], now, denied < 0)
		if !v.ok {
			if denied < 0 {
				denied = i
			}
			if d.Allowed || v.retry > d.RetryAfter {
				d = Decision{Allowed: false, Reset: v.reset, RetryAfter: v.retry, st: st}
			}
		} else if d.Allowed && (d.st == nil || v.remaining < d.Remaining) {
			d = Decision{Allowed: true, Remaining: v.remaining, Reset: v.reset, st: st}
		}
	}
	if denied > 0 {
		// Give back the tokens taken by the policies before the one that refused.
		for _, st := range set.list[:denied] {
			if st.p.Group != "" && st.p.Group != group {
				continue
			}
			si := scopeIndex(st.p.Scope)
			key := k.get(st.p.Scope)
			if len(key) == 0 {
				continue
			}
			if len(key) > maxKeyLen {
				key = stored[si][:]
			}
			st.refund(key, hashes[si])
		}
	}
	return d
}

// policySet is the policies in force; it is replaced whole, never changed.
type policySet struct {
	list []*policyState
	byID map[string]*policyState
	ids  []string // each policy's id, in list's order
}

// policyState is one policy's buckets.
type policyState struct {
	p         Policy
	id        string  // p.String(), the policy's identity between edges
	name      string  // p.Name()
	perSecond float64 // Limit per second
	perNano   float64 // Limit per nanosecond
	burst     float64
	period    int64 // ns
	fullTime  int64 // ns for an empty bucket to fill at the whole rate: burst / rate
	idleTTL   int64 // ns without any demand after which a key is forgotten

	header   []byte // the RateLimit-Policy item
	rlPrefix []byte // the start of the RateLimit item, up to "r="

	live atomic.Int32 // limiters enforcing this policy, this one included (at least 1)
	keys atomic.Int64 // entries in shards

	allowed, limited counter

	shards [numShards]shard
}

// counter is the part of a Prometheus counter used on the hot path.
type counter interface{ Inc() }

type shard struct {
	mu     sync.Mutex
	m      map[string]*entry
	active []*entry // entries with local demand, visited by every tick
	_      [24]byte // keeps shards on their own cache lines
}

// entry is one key's bucket under one policy, guarded by its shard's mutex.
type entry struct {
	key    string
	tokens float64
	last   int64   // clock reading tokens were last brought up to
	fill   float64 // tokens per nanosecond: rate × share
	cap    float64 // most tokens held: max(burst × share, 1)
	demand float64 // requests per second seen here, an exponentially weighted average
	count  uint32  // requests since the last tick
	active bool    // in shard.active: has local demand
	gone   bool    // no longer in the map
	// remoteEver: a peer reported demand for the key since it was created here.
	remoteEver bool
	// remoteOnly: created from a peer's report, and no request of the key here since.
	remoteOnly bool
	probation  int64   // until then the share is at most 1/N
	topUp      float64 // tokens granted when probation ends without any peer's demand
	seen       int64   // last local request
	remoteSeen int64   // last report of a peer's demand
	remote     []remoteDemand
}

// remoteDemand is one peer's last reported demand for a key.
type remoteDemand struct {
	peer   *peer
	seq    uint64 // the round that reported it
	demand float64
}

func newPolicyState(l *Limiter, p Policy) *policyState {
	st := &policyState{
		p:         p,
		id:        p.String(),
		name:      p.Name(),
		perSecond: float64(p.Limit) / p.Period.Seconds(),
		burst:     float64(p.burst()),
		period:    int64(p.Period),
	}
	st.perNano = st.perSecond / 1e9
	st.fullTime = int64(st.burst / st.perNano)
	st.idleTTL = st.fullTime + 4*int64(l.interval)
	st.header = appendPolicyItem(nil, p)
	st.rlPrefix = append(appendSFString(nil, st.name), ";r="...)
	st.allowed, st.limited = l.metrics.decisionCounters(st.name)
	for i := range st.shards {
		st.shards[i].m = make(map[string]*entry)
	}
	return st
}

// verdict is one policy's answer to one request.
type verdict struct {
	ok        bool
	remaining int
	reset     time.Duration
	retry     time.Duration
}

// take counts a request for key under st and tells whether the bucket has a token; when
// consume is set, it takes it. (After another policy refused the request, the others are
// only asked, so that their demand counts and their state can be reported.)
func (st *policyState) take(l *Limiter, key []byte, h uint64, now int64, consume bool) verdict {
	sh := &st.shards[h%numShards]
	sh.mu.Lock()
	e := sh.m[string(key)]
	if e == nil {
		e = st.insert(l, sh, key, now, true)
	}
	if e.count < 1<<31 {
		e.count++
	}
	if e.remoteOnly {
		e.remoteOnly = false
		// The key's first request here, known until now only from the peers' reports (its
		// share is then 0: this edge had no demand). Like a key first seen here, it gets a
		// 1/N part of the burst at once rather than waiting for its share to grow: at a low
		// rate (a few a minute) that wait would be minutes, and a client whose requests
		// moved to this edge would be refused for it. Each edge grants this once per
		// entry, so the fleet admits at most one burst more than one bucket would, per
		// key and idle period (README.md, "Error bound").
		if n := float64(max(st.live.Load(), 1)); e.cap < st.burst/n {
			e.refill(now)
			e.setShare(st, 1/n)
		}
		e.tokens = max(e.tokens, e.cap)
	}
	e.seen = now
	if !e.active {
		e.active = true
		sh.active = append(sh.active, e)
	}
	e.refill(now)
	has := e.tokens >= 1-tokenEpsilon
	if has && consume {
		e.tokens = max(e.tokens-1, 0)
	}
	tokens, fill, capacity := e.tokens, e.fill, e.cap
	sh.mu.Unlock()

	if has {
		st.allowed.Inc()
	} else {
		st.limited.Inc()
	}
	v := verdict{ok: has, remaining: int(min(tokens+tokenEpsilon, st.burst))}
	if fill > 0 {
		v.reset = time.Duration(math.Ceil(min((capacity-tokens)/fill, float64(st.fullTime))))
		if !has {
			v.retry = time.Duration(math.Ceil(min((1-tokens)/fill, float64(st.period))))
		}
	} else {
		v.reset = time.Duration(st.fullTime)
		v.retry = time.Duration(st.period)
	}
	if !v.ok && v.retry <= 0 {
		v.retry = 1
	}
	return v
}

// refund gives back a token taken by take.
func (st *policyState) refund(key []byte, h uint64) {
	sh := &st.shards[h%numShards]
	sh.mu.Lock()
	if e := sh.m[string(key)]; e != nil {
		e.tokens = min(e.tokens+1, e.cap)
	}
	sh.mu.Unlock()
}

// insert tracks a new key, forgetting one if the shard is full. local: the key was first
// seen in a request here, not in a peer's report.
func (st *policyState) insert(l *Limiter, sh *shard, key []byte, now int64, local bool) *entry {
	if int64(len(sh.m)) >= l.shardCap.Load() {
		st.evict(l, sh)
	}
	if len(sh.active) > 64 && len(sh.active) > 2*len(sh.m) {
		sh.compactActive()
	}
	e := &entry{key: string(key), last: now, seen: now}
	n := float64(max(st.live.Load(), 1))
	if local {
		// First seen in the fleet, as far as this limiter knows: a 1/N part of the burst
		// now, the rest when no peer turns out to have seen the key too (tick).
		e.setShare(st, 1/n)
		e.tokens = e.cap
		e.probation = now + probationIntervals*int64(l.interval)
		e.topUp = st.burst - e.tokens
	} else {
		e.seen = 0
		e.remoteSeen = now
		e.remoteOnly = true
		e.setShare(st, 0)
	}
	sh.m[e.key] = e
	st.keys.Add(1)
	return e
}

// evict forgets the least recently used of a few entries of sh.
func (st *policyState) evict(l *Limiter, sh *shard) {
	var victim *entry
	n := 0
	for _, e := range sh.m {
		if victim == nil || max(e.seen, e.remoteSeen) < max(victim.seen, victim.remoteSeen) {
			victim = e
		}
		if n++; n == evictSample {
			break
		}
	}
	if victim != nil {
		st.remove(sh, victim)
		l.metrics.evictions.Inc()
	}
}

func (st *policyState) remove(sh *shard, e *entry) {
	delete(sh.m, e.key)
	e.gone = true
	st.keys.Add(-1)
}

// compactActive drops the forgotten entries from the active list.
func (sh *shard) compactActive() {
	kept := sh.active[:0]
	for _, e := range sh.active {
		if !e.gone {
			kept = append(kept, e)
		}
	}
	clear(sh.active[len(kept):])
	sh.active = kept
}

// refill brings e's tokens up to now.
func (e *entry) refill(now int64) {
	if dt := now - e.last; dt > 0 {
		e.tokens = min(e.tokens+float64(dt)*e.fill, e.cap)
		e.last = now
	}
}

// setShare makes e refill at rate × s and hold at most max(burst × s, 1) tokens. The call
// must follow a refill to the present.
func (e *entry) setShare(st *policyState, s float64) {
	e.fill = st.perNano * s
	e.cap = min(max(st.burst*s, 1), st.burst)
	e.tokens = min(e.tokens, e.cap)
}

// errRunning is returned by a second Run.
var errRunning = errors.New("ratelimit: Run called twice")

// Run syncs with the peers reached through Config.Transport every SyncInterval, and forgets
// idle keys, until ctx is done; then it tells the peers that it leaves (so that they take
// over its share at once) and returns nil. It returns an error when the transport refuses
// the subscription. Call it once.
func (l *Limiter) Run(ctx context.Context) error {
	if !l.running.CompareAndSwap(false, true) {
		return errRunning
	}
	var stop func()
	if l.transport != nil {
		s, err := l.transport.Subscribe(l.receive)
		if err != nil {
			return fmt.Errorf("ratelimit: subscribe to usage: %w", err)
		}
		stop = s
	}
	l.lastTick = l.clock()
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if stop != nil {
				stop()
			}
			l.leave()
			return nil
		case <-t.C:
			l.tick()
		}
	}
}
