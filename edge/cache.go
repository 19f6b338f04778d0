package edge

import (
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"
	"github.com/dgraph-io/ristretto/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/perchhq/perch/internal/wire"
)

// entry is a cached response, shared by every request that hits it. It is immutable once
// stored, but for its compressed forms, which are made on first demand and kept on the side
// (compressedBody). The cache holds one per key, so it is kept to 48 bytes (a size class of
// the allocator; TestEntrySize): with 1 KB documents every 10 bytes of it are 1% of the
// payload. The body is its one other allocation; ETags are made from the version when sent.
type entry struct {
	// version orders entries of one key; an entry never replaces one of a higher version. 0
	// for what has no ETag: a list page, or a document that does not exist.
	version int64
	// body is the response body, ready to send (see bytes), followed by the document's
	// owner (its last ownerLen bytes: one allocation for both); empty for a marker (see
	// stale). It never changes once the entry is made.
	body string
	// forms holds the compressed forms of body: nil until a request wants one.
	forms atomic.Pointer[forms]
	// epoch is the cache's epoch when the entry was stored; an entry of an older epoch is not
	// served (see docCache.distrust).
	epoch uint32
	// expires is when the entry stops being served, in seconds of the cache's clock
	// (docCache.now).
	expires uint32
	// status is the HTTP status to answer with: 200 (the body is application/json), or 404
	// for a tombstone or an absent document (a problem).
	status uint16
	// ownerLen is the length of the owner at the end of body: the user who created the
	// document (wire.Document.Owner), 0 for none. Reads of a collection whose read rule is
	// owner are answered from the entry only for that user.
	ownerLen uint16
	// stale marks an entry that only records that version exists (a change event too large
	// to carry its document): it is never served, and only a fill of version or later may
	// replace it.
	stale bool
	// compressible marks a 200 whose body is at least Config.CompressMinBytes: it may be
	// answered compressed, and every answer from it varies on Accept-Encoding.
	compressible bool
}

// bytes returns the entry's body as the byte slice fasthttp and the compressors take. They
// only read it, and nothing writes to it while the entry lives.
func (e *entry) bytes() []byte {
	return unsafe.Slice(unsafe.StringData(e.body), len(e.body)-int(e.ownerLen))
}

// owner is the user who created the entry's document; empty for none.
func (e *entry) owner() string { return e.body[len(e.body)-int(e.ownerLen):] }

// withOwner makes the body of an entry: a copy of a rendered answer, then its document's
// owner, in one allocation of their size (an entry lives long: no spare capacity); it
// returns the body and the owner's length.
func withOwner(rendered []byte, owner string) (string, uint16) {
	b := make([]byte, len(rendered)+len(owner))
	copy(b[copy(b, rendered):], owner)
	return unsafe.String(unsafe.SliceData(b), len(b)), uint16(len(owner))
}

// maxTagLen is the length of the longest ETag: quotes around a version of 19 digits and a
// coding suffix.
const maxTagLen = 1 + 19 + 3 + 1

// appendTag appends to dst the ETag of the entry's body in coding c: `"3"`, `"3-gz"`,
// `"3-br"`; nothing for an entry without a version (lists have no ETag). With dst on the
// caller's stack it allocates nothing.
func (e *entry) appendTag(dst []byte, c coding) []byte {
	if e.version <= 0 {
		return dst
	}
	dst = append(dst, '"')
	dst = strconv.AppendInt(dst, e.version, 10)
	dst = append(dst, codingSuffixes[c]...)
	return append(dst, '"')
}

// tag returns the ETag of the entry's body in coding c, in a new slice; nil when it has none.
// The hot path uses appendTag.
func (e *entry) tag(c coding) []byte {
	if e.version <= 0 {
		return nil
	}
	return e.appendTag(make([]byte, 0, maxTagLen), c)
}

// form returns the entry's form in coding c, or nil when none was made.
func (e *entry) form(c coding) *form {
	if fs := e.forms.Load(); fs != nil {
		return fs.of[c-1].Load()
	}
	return nil
}

// newer reports whether e may replace cur: a higher version, or the same version bringing the
// document that a stale marker lacked, made in a later epoch, or good for longer (a refill of
// an expired entry). Versions never go down, even across epochs: a version the edge once held
// existed, and any later fill is at least as new.
func (e *entry) newer(cur *entry) bool {
	if e.version != cur.version {
		return e.version > cur.version
	}
	if e.stale {
		return false
	}
	return cur.stale || e.epoch > cur.epoch || e.epoch == cur.epoch && e.expires > cur.expires
}

// docCache holds rendered documents and list pages. Documents are keyed by "collection/id";
// list pages by "collection\x00generation\x00query", where the generation of a collection
// grows with every change to it, so that a change retires its pages without finding them.
//
// Safe for concurrent use. ristretto applies new keys asynchronously and may refuse them, so
// nothing here relies on a Set landing: a refused Set only costs a later miss. The version
// order is enforced by ristretto's ShouldUpdate under its shard lock, for the asynchronous
// path as well, so two racing Sets of one key keep the higher version.
type docCache struct {
	c *ristretto.Cache[string, *entry]
	// ttl is how long an entry is served, in seconds of now.
	ttl uint32
	// now is the cache's clock: whole seconds since start, moved on by tick. A hit checks an
	// entry's expiry against it with one atomic load, where a clock read would cost tens of
	// nanoseconds (BenchmarkClock).
	now   atomic.Uint32
	start time.Time
	// stop ends tick, which closes done as it returns; close does it once.
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	// compressMin is the least body size of a compressible entry; 0 disables compression.
	compressMin int
	// gens maps a collection to *atomic.Int64, its list generation.
	gens sync.Map
	// epoch grows when the edge may have missed change events (a gap in a partition's
	// sequence, a reconnection to NATS): every entry made before is then distrusted at once,
	// without walking the cache.
	epoch atomic.Uint32
	// distrusts remembers when the last few epochs began (staleFor), under distrustMu.
	distrustMu sync.Mutex
	distrusts  [8]distrustAt
	// floors holds, for a few seconds, the version of each document this edge's writes
	// produced: a fill that started before the write committed must not install or serve
	// an older version to the writer (read-your-writes even when the cache refused the
	// write's own entry).
	// Floors live in two generations, swapped every floorTTL, so each is kept between one and
	// two floorTTLs and none is ever searched for.
	floorMu   sync.Mutex
	floors    map[string]int64
	oldFloors map[string]int64
	rotated   time.Time
	// pending holds, for each key with fills in flight, the highest version the edge has
	// heard of since the first of them began (pendingFill), under pendingMu.
	pendingMu sync.Mutex
	pending   map[string]*pendingFill
	// settles hands the settler the runs of sets of change events that did not land at once
	// (settleAsync), so that the change subscription never waits for ristretto's buffer;
	// settled is closed when the settler has stopped.
	settles chan settleReq
	settled chan struct{}
	// closing guards ristretto against a Set or Wait while it closes (close takes it for
	// writing, and sets closed): a change event or a fill may still be under way.
	closing sync.RWMutex
	closed  bool
}

// settleReq is a run for the settler to settle; done, when not nil, is closed after it.
type settleReq struct {
	l    landing
	done chan struct{}
}

// floorTTL is how long a write's version floor is kept at least: longer than any fill takes.
const floorTTL = 10 * time.Second

// avgEntryCost is the cost of an entry assumed when Config.CacheItems is not set, to size
// ristretto's counters from CacheBytes: a JSON document of a mobile API of one to a few KiB,
// charged half its body again for its compressed forms (cost), with the list pages, tens of
// KiB each, raising the mean. A 256 MiB cache is then expected to hold 64Ki entries.
const avgEntryCost = 4 << 10

// countersPerItem is ristretto's advice: ten counters per item the cache holds when full.
const countersPerItem = 10

// newDocCache makes the cache of an edge: at most cfg.CacheBytes, with counters for
// cfg.CacheItems entries (default CacheBytes / avgEntryCost), entries served for cfg.CacheTTL
// and compressible from cfg.CompressMinBytes (<= 0 disables compression). Its clock runs
// until close.
//
// ristretto's counters (a count-min sketch and a bloom filter) are allocated up front, about
// 3.5 bytes each, rounded up to powers of two: for a 256 MiB cache, 1Mi counters and 3 MiB.
// Fewer counters than ten per entry held make admission and eviction pick worse once the
// cache is full (colliding counts), never wrongly.
func newDocCache(cfg *Config, m *metrics) (*docCache, error) {
	evictions := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "perch_edge_cache_evictions_total", Help: "Cache entries evicted to stay within the cost bound (expired entries included: they stay until evicted).",
	})
	m.collectors = append(m.collectors, evictions)
	items := cfg.CacheItems
	if items <= 0 {
		items = cfg.CacheBytes / avgEntryCost
	}
	// No entry costs less than its struct (cost), so no more can fit: counters beyond that
	// would be memory for nothing.
	items = min(items, cfg.CacheBytes/int64(unsafe.Sizeof(entry{})))
	c, err := ristretto.NewCache(&ristretto.Config[string, *entry]{
		NumCounters: max(items*countersPerItem, 1e4),
		MaxCost:     cfg.CacheBytes,
		BufferItems: 64,
		KeyToHash: func(k string) (uint64, uint64) {
			return xxhash.Sum64String(k), 0
		},
		ShouldUpdate: func(next, cur *entry) bool { return next.newer(cur) },
		OnEvict:      func(*ristretto.Item[*entry]) { evictions.Inc() },
		// Costs are the entry, its body and an allowance for its compressed forms (cost);
		// ristretto adds its own bookkeeping of an item, so MaxCost bounds most of the real
		// memory.
		Cost: nil,
	})
	if err != nil {
		return nil, err
	}
	m.collectors = append(m.collectors,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "perch_edge_cache_bytes", Help: "Cost of the entries the cache holds, in bytes: rendered responses, their compressed forms' allowance and bookkeeping (see perch_edge_cache_max_bytes).",
		}, func() float64 { return float64(c.MaxCost() - c.RemainingCost()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "perch_edge_cache_max_bytes", Help: "The cache's bound of perch_edge_cache_bytes (--cache-bytes).",
		}, func() float64 { return float64(c.MaxCost()) }))
	ttl := min((cfg.CacheTTL+time.Second-1)/time.Second, math.MaxUint32/2)
	dc := &docCache{c: c, ttl: uint32(max(ttl, 1)), start: time.Now(), stop: make(chan struct{}), done: make(chan struct{}),
		compressMin: max(cfg.CompressMinBytes, 0), floors: map[string]int64{}, oldFloors: map[string]int64{}, rotated: time.Now(),
		pending: map[string]*pendingFill{},
		settles: make(chan settleReq, 1024), settled: make(chan struct{})}
	go dc.tick()
	go dc.settler()
	return dc, nil
}

// tick moves the clock on every second until close. The clock is read from the monotonic
// time since start, so a late tick does not make it lag for longer, and it never goes back.
func (dc *docCache) tick() {
	defer close(dc.done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			dc.advance(uint32(time.Since(dc.start) / time.Second))
		case <-dc.stop:
			return
		}
	}
}

// advance moves the clock on to s, unless it is there already.
func (dc *docCache) advance(s uint32) {
	for {
		cur := dc.now.Load()
		if s <= cur || dc.now.CompareAndSwap(cur, s) {
			return
		}
	}
}

// valid reports whether e may be served: made in the current epoch, not expired and not a
// marker.
func (dc *docCache) valid(e *entry) bool {
	return !e.stale && e.epoch == dc.epoch.Load() && dc.now.Load() < e.expires
}

// staleUsable reports whether e may answer stale-if-error, the edge unable to refresh it: a
// document, not a marker, at most one TTL past its expiry.
func (dc *docCache) staleUsable(e *entry) bool {
	return !e.stale && uint64(dc.now.Load()) < uint64(e.expires)+uint64(dc.ttl)
}

// distrust retires every entry at once: the edge may have missed change events.
func (dc *docCache) distrust() { dc.distrustSince(dc.now.Load()) }

// distrustSince is distrust of what the edge may have missed since at, a second of the
// cache's clock no later than now: the entries count as stale from then (staleFor).
func (dc *docCache) distrustSince(at uint32) {
	dc.distrustMu.Lock()
	defer dc.distrustMu.Unlock()
	ep := dc.epoch.Add(1)
	dc.distrusts[ep%uint32(len(dc.distrusts))] = distrustAt{epoch: ep, at: min(at, dc.now.Load())}
}

// sinceDistrust returns how many seconds ago the cache was last distrusted; false if never.
func (dc *docCache) sinceDistrust() (uint32, bool) {
	dc.distrustMu.Lock()
	ep := dc.epoch.Load()
	d := dc.distrusts[ep%uint32(len(dc.distrusts))]
	dc.distrustMu.Unlock()
	if ep == 0 || d.epoch != ep {
		return 0, false
	}
	return dc.now.Load() - d.at, true
}

// distrustAt records when the cache entered an epoch, in seconds of its clock.
type distrustAt struct {
	epoch uint32
	at    uint32
}

// staleFor returns how long, in seconds, e has not been trusted: since it expired, or since
// the epoch it was made in ended, whichever came first; and false when e is a marker or went
// stale before the last few distrusts the cache remembers (it is then too old to tell).
// A trusted entry has been stale for 0 seconds.
func (dc *docCache) staleFor(e *entry) (uint32, bool) {
	if e.stale {
		return 0, false
	}
	since := e.expires
	if e.epoch != dc.epoch.Load() {
		dc.distrustMu.Lock()
		d := dc.distrusts[(e.epoch+1)%uint32(len(dc.distrusts))]
		dc.distrustMu.Unlock()
		if d.epoch != e.epoch+1 {
			return 0, false
		}
		since = min(since, d.at)
	}
	now := dc.now.Load()
	if now <= since {
		return 0, true
	}
	return now - since, true
}

// raiseFloor records that this edge's write produced version of key.
func (dc *docCache) raiseFloor(key string, version int64, now time.Time) {
	dc.floorMu.Lock()
	dc.rotateFloors(now)
	dc.floors[key] = max(dc.floors[key], version)
	dc.floorMu.Unlock()
}

// floor returns the least version a fill of key may serve.
func (dc *docCache) floor(key string, now time.Time) int64 {
	dc.floorMu.Lock()
	defer dc.floorMu.Unlock()
	dc.rotateFloors(now)
	return max(dc.floors[key], dc.oldFloors[key])
}

func (dc *docCache) rotateFloors(now time.Time) {
	switch d := now.Sub(dc.rotated); {
	case d > 2*floorTTL:
		clear(dc.oldFloors)
		clear(dc.floors)
		dc.rotated = now
	case d > floorTTL:
		dc.floors, dc.oldFloors = dc.oldFloors, dc.floors
		clear(dc.floors)
		dc.rotated = now
	}
}

// get returns the entry of key. key may alias a request buffer: ristretto keeps only its hash.
func (dc *docCache) get(key []byte) (*entry, bool) {
	if len(key) == 0 {
		return nil, false
	}
	return dc.c.Get(unsafe.String(&key[0], len(key)))
}

// set stamps e with the cache's epoch, its expiry and whether it is compressible, and stores
// it. ristretto is given no TTL: an entry past its expiry stays, unserved, until a fill
// replaces it or the cost bound evicts it, and meanwhile still says which version the edge
// last had.
//
// ristretto applies a Set of a key it holds at once, under ShouldUpdate (newer). A key it
// does not hold goes through its admission buffer instead, where the first new item of a key
// is admitted and every later one dropped, whatever its version: two Sets of a new key in a
// row (the create and the update of one document in one change message, a fill and the event
// that overtook it) would keep the older. So when e did not land at once, set waits for the
// buffer and sets again: the key is then held (by e, or by an older entry that the second
// Set replaces under ShouldUpdate) or was refused, which only costs a later miss.
func (dc *docCache) set(key string, e *entry) {
	dc.setIn(key, e, dc.epoch.Load())
}

// setIn is set of an entry made from what was read in epoch: a fill stamps its entry with
// the epoch it started in, so that a distrust while it read leaves the entry distrusted too.
func (dc *docCache) setIn(key string, e *entry, epoch uint32) {
	dc.stamp(e, epoch, 0)
	if !dc.trySet(key, e) {
		dc.settle(&landing{keys: []string{key}, ents: []*entry{e}})
	}
}

// stamp gives e the cache's epoch epoch, its expiry and whether it is compressible. age is
// how many seconds old what e holds already is (a copy of another edge's entry): it is
// served for what is left of the TTL, so that a copy of a copy is no fresher than the read
// from the core it came from.
func (dc *docCache) stamp(e *entry, epoch, age uint32) {
	e.epoch = epoch
	e.expires = dc.now.Load() + dc.ttl - min(age, dc.ttl)
	e.compressible = dc.compressMin > 0 && e.status == 200 && len(e.body)-int(e.ownerLen) >= dc.compressMin
}

// age returns how many seconds old the content of e is: since it was read from the core or
// came with a change event, by the cache's clock (see stamp).
func (dc *docCache) age(e *entry) uint32 {
	stored := int64(e.expires) - int64(dc.ttl)
	return uint32(max(int64(dc.now.Load())-stored, 0))
}

// trySet stores e, stamped, as setIn does, without waiting: it reports whether e landed at
// once (or lost, rightly, to an entry at least as new); if not, settle must follow.
func (dc *docCache) trySet(key string, e *entry) bool {
	dc.closing.RLock()
	defer dc.closing.RUnlock()
	if dc.closed {
		return true // nothing to settle: the cache is gone
	}
	if cur, ok := dc.c.Get(key); ok && !e.newer(cur) {
		// Refused by ShouldUpdate anyway; and a refused Set still sets the key's cost in
		// ristretto's policy to e's, so that MaxCost would stop bounding the cache.
		return true
	}
	dc.c.Set(key, e, dc.cost(e))
	cur, ok := dc.c.Get(key)
	return ok && (cur == e || !e.newer(cur))
}

// landing collects the entries of a run of sets (the change events or the outcomes of one
// message) that did not land at once, so that the run waits for ristretto's buffer once
// rather than once per new key: the change and outcome subscriptions are one goroutine each,
// and a wait per event would make them fall behind under load.
type landing struct {
	keys []string
	ents []*entry
}

// setLater is setIn for a run of sets: an entry that did not land at once joins l, for
// settle.
func (dc *docCache) setLater(key string, e *entry, epoch uint32, l *landing) {
	dc.stamp(e, epoch, 0)
	if !dc.trySet(key, e) {
		l.keys, l.ents = append(l.keys, key), append(l.ents, e)
	}
}

// settleAsync is settle done by the settler goroutine; when its queue is full, the caller
// settles l itself. Until it is done, a reader may still get the older entry that got in
// first: a moment, where without it that entry would stay until the TTL.
func (dc *docCache) settleAsync(l *landing) {
	if len(l.keys) == 0 {
		return
	}
	select {
	case dc.settles <- settleReq{l: *l}:
	default:
		dc.settle(l)
	}
}

// settler settles what settleAsync hands it, in order, until the cache closes.
func (dc *docCache) settler() {
	defer close(dc.settled)
	for {
		select {
		case r := <-dc.settles:
			dc.settle(&r.l)
			if r.done != nil {
				close(r.done)
			}
		case <-dc.stop:
			return
		}
	}
}

// flush waits until the settler has settled what it was handed, and ristretto's buffer has
// been applied: what a caller that has just set entries reads next is then what it set.
func (dc *docCache) flush() {
	done := make(chan struct{})
	select {
	case dc.settles <- settleReq{done: done}:
		select {
		case <-done:
		case <-dc.settled:
		}
	case <-dc.stop:
	}
	dc.wait()
}

// wait is ristretto's Wait, unless the cache has been closed: ristretto's Wait on a closed
// cache blocks for ever, or panics while it closes.
func (dc *docCache) wait() {
	dc.closing.RLock()
	defer dc.closing.RUnlock()
	if !dc.closed {
		dc.c.Wait()
	}
}

// settle waits for ristretto's buffer, then sets again, as an update, each entry of l that an
// older one got in before.
func (dc *docCache) settle(l *landing) {
	if len(l.keys) == 0 {
		return
	}
	dc.closing.RLock()
	defer dc.closing.RUnlock()
	if dc.closed {
		return
	}
	dc.c.Wait()
	for i, key := range l.keys {
		e := l.ents[i]
		if cur, ok := dc.c.Get(key); ok && cur != e && e.newer(cur) {
			dc.c.Set(key, e, dc.cost(e))
		}
	}
}

// fill stores the entry of a fill and waits until the cache has taken it (or refused it):
// ristretto admits a new key asynchronously, and a miss in between would start a second
// fill, a second core read of the key.
//
// epoch is the cache's epoch when the fill began to read (docCache.epoch): an entry read
// before a distrust is not trusted after it.
func (dc *docCache) fill(key string, e *entry, epoch uint32) {
	dc.setIn(key, e, epoch)
}

// pendingFill is what the cache hears of a key while fills of it are in flight. A fill may
// read the version before a change that the edge hears of meanwhile (an event, or the
// outcome of its own write), and the change's own entry may not stay in the cache to
// outrank it: ristretto may refuse a new key, or evict it. So the fill checks what was heard
// before it stores (fillDocument).
type pendingFill struct {
	// refs counts the fills in flight that began it; least is the highest version heard of.
	refs  int
	least int64
}

// beginFill registers a fill of key before it reads; endFill must follow. Fills of one key
// that overlap share the record: a version heard of while any of them runs exists, and
// bounds them all.
func (dc *docCache) beginFill(key string) *pendingFill {
	dc.pendingMu.Lock()
	defer dc.pendingMu.Unlock()
	p := dc.pending[key]
	if p == nil {
		p = &pendingFill{}
		dc.pending[key] = p
	}
	p.refs++
	return p
}

// endFill ends what beginFill began.
func (dc *docCache) endFill(key string, p *pendingFill) {
	dc.pendingMu.Lock()
	defer dc.pendingMu.Unlock()
	if p.refs--; p.refs == 0 {
		delete(dc.pending, key)
	}
}

// heard records that version of key exists, for the fills of key in flight. It must come
// before the change's own entry is set, so that a fill either sees it or stores first and is
// then outranked by that entry.
func (dc *docCache) heard(key string, version int64) {
	dc.pendingMu.Lock()
	if p := dc.pending[key]; p != nil {
		p.least = max(p.least, version)
	}
	dc.pendingMu.Unlock()
}

// fillDocument stores the entry of a document fill registered as p, as fill does, unless it
// is older than a version heard of since the fill began, or than a write's floor: it then
// returns that version, for the fill to read again, and stores nothing. age is as stamp's.
func (dc *docCache) fillDocument(key string, e *entry, epoch, age uint32, p *pendingFill) (least int64, stored bool) {
	floor := dc.floor(key, time.Now())
	dc.stamp(e, epoch, age)
	dc.pendingMu.Lock()
	least = max(p.least, floor)
	if e.version < least {
		dc.pendingMu.Unlock()
		return least, false
	}
	// Set under the lock: a change heard of from now on is set after this, and outranks it.
	landed := dc.trySet(key, e)
	dc.pendingMu.Unlock()
	if !landed {
		dc.settle(&landing{keys: []string{key}, ents: []*entry{e}})
	}
	return least, true
}

// current returns the entry of key when the cache holds one it trusts, one a hit would
// serve. A fill looks here first, inside its singleflight (Edge.cached).
func (dc *docCache) current(key string) (*entry, bool) {
	e, ok := dc.c.Get(key)
	if ok && dc.valid(e) {
		return e, true
	}
	return nil, false
}

// holds reports whether the cache holds e under key: whether a fill's entry was stored (the
// cache may refuse one, too costly for its bound or for its admission policy).
func (dc *docCache) holds(key string, e *entry) bool {
	cur, ok := dc.c.Get(key)
	return ok && cur == e
}

// cost is what e costs the cache: its bytes (ristretto keeps only the key's hash), with its
// compressed forms estimated at half the body (one form of API JSON takes a quarter to a half
// of it, BenchmarkCompress; most clients take one coding). ristretto cannot change a cost
// without a Set, and a Set of an entry already served could bring back a version the cache
// has since let go, so the forms are paid for when the entry is stored, made or not.
func (dc *docCache) cost(e *entry) int64 {
	n := int(unsafe.Sizeof(*e)) + len(e.body)
	if e.compressible {
		n += len(e.body) / 2
	}
	return int64(n)
}

// has reports whether the cache serves key at version or later, trusted.
func (dc *docCache) has(key string, version int64) bool {
	e, ok := dc.c.Get(key)
	return ok && dc.valid(e) && e.version >= version
}

// putDocument installs a document version (a tombstone renders as a 404).
func (dc *docCache) putDocument(d *wire.Document) {
	dc.set(docKey(d.Collection, d.ID), documentEntry(d))
}

// putDocumentLater is putDocument in a run of sets, of a document the edge had by epoch
// (setLater).
func (dc *docCache) putDocumentLater(d *wire.Document, epoch uint32, l *landing) {
	dc.setLater(docKey(d.Collection, d.ID), documentEntry(d), epoch, l)
}

// markVersion records that version of a document exists without its body.
func (dc *docCache) markVersion(collection, id string, version int64) {
	dc.set(docKey(collection, id), &entry{version: version, stale: true})
}

// markVersionLater is markVersion in a run of sets (setLater).
func (dc *docCache) markVersionLater(collection, id string, version int64, l *landing) {
	dc.setLater(docKey(collection, id), &entry{version: version, stale: true}, dc.epoch.Load(), l)
}

// documentEntry is the entry of a document version: its rendering, or a 404 for a
// tombstone.
func documentEntry(d *wire.Document) *entry {
	if d.Deleted {
		return &entry{version: d.Version, status: 404, body: notFoundString}
	}
	buf := renderBuffers.Get().(*[]byte)
	rendered := renderDocument((*buf)[:0], d)
	body, n := withOwner(rendered, d.Owner)
	if cap(rendered) <= maxRenderBuffer {
		*buf = rendered[:0]
		renderBuffers.Put(buf)
	}
	return &entry{version: d.Version, status: 200, body: body, ownerLen: n}
}

// renderBuffers hold the renderings of documents on their way into entries (withOwner
// copies them); one larger than maxRenderBuffer is left to the collector.
var renderBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

const maxRenderBuffer = 64 << 10

// listEntry is the entry of a list page, rendered as body, which it keeps.
func listEntry(body []byte) *entry {
	return &entry{status: 200, body: unsafe.String(unsafe.SliceData(body), len(body))}
}

// notFoundString is the body of every 404 entry, shared.
var notFoundString = string(notFoundBody)

// generation returns the current list generation of a collection.
func (dc *docCache) generation(collection string) int64 {
	if g, ok := dc.gens.Load(collection); ok {
		return g.(*atomic.Int64).Load()
	}
	return 0
}

// retireLists makes every cached page of collection unreachable.
func (dc *docCache) retireLists(collection string) {
	g, ok := dc.gens.Load(collection)
	if !ok {
		g, _ = dc.gens.LoadOrStore(collection, new(atomic.Int64))
	}
	g.(*atomic.Int64).Add(1)
}

// close stops the cache's clock and releases the cache. It may be called more than once.
func (dc *docCache) close() {
	dc.closeOnce.Do(func() {
		close(dc.stop)
		<-dc.done
		<-dc.settled
		dc.closing.Lock()
		dc.closed = true
		dc.closing.Unlock()
		dc.c.Close()
	})
}

func docKey(collection, id string) string { return collection + "/" + id }

// appendDocKey appends the document key of collection/id to dst without allocating.
func appendDocKey(dst, collection, id []byte) []byte {
	dst = append(dst, collection...)
	dst = append(dst, '/')
	return append(dst, id...)
}

func listKey(collection string, gen int64, query []byte) string {
	return collection + "\x00" + strconv.FormatInt(gen, 10) + "\x00" + string(query)
}

// etag is the strong validator of a version: its decimal number in quotes.
func etag(version int64) []byte {
	b := make([]byte, 0, 22)
	b = append(b, '"')
	b = strconv.AppendInt(b, version, 10)
	return append(b, '"')
}
