package edge

import (
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
// stored, but for its compressed forms, which are made on first demand and published once
// each (compressedBody).
type entry struct {
	// version orders entries of one key; an entry never replaces one of a higher version.
	version int64
	// status is the HTTP status to answer with: 200 (the body is application/json), or 404
	// for a tombstone (a problem).
	status int
	// body is the response body, ready to send; nil for a marker (see stale).
	body []byte
	// etag is the ETag of the body as it is; lists have none.
	etag []byte
	// ctags are the ETags of the compressed forms, by coding less one (see codingSuffixes).
	ctags [numCodings - 1][]byte
	// stale marks an entry that only records that version exists (a change event too large
	// to carry its document): it is never served, and only a fill of version or later may
	// replace it.
	stale bool
	// compressible marks a 200 whose body is at least Config.CompressMinBytes: it may be
	// answered compressed, and every answer from it varies on Accept-Encoding.
	compressible bool
	// epoch is the cache's epoch when the entry was made; an entry of an older epoch is not
	// served (see docCache.distrust).
	epoch int64
	// forms are the compressed forms of body, by coding less one: nil until a request wants
	// that coding.
	forms [numCodings - 1]atomic.Pointer[form]
	// formMu is held while a form is made, so that each is made once.
	formMu sync.Mutex
}

// tag returns the ETag of the entry's body in coding c.
func (e *entry) tag(c coding) []byte {
	if c == codingIdentity {
		return e.etag
	}
	return e.ctags[c-1]
}

// newer reports whether e may replace cur: a higher version, or the same version bringing the
// document that a stale marker lacked or made in a later epoch. Versions never go down, even
// across epochs: a version the edge once held existed, and any later fill is at least as new.
func (e *entry) newer(cur *entry) bool {
	if e.version != cur.version {
		return e.version > cur.version
	}
	return cur.stale && !e.stale || e.epoch > cur.epoch && !e.stale
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
	c   *ristretto.Cache[string, *entry]
	ttl time.Duration
	// compressMin is the least body size of a compressible entry; 0 disables compression.
	compressMin int
	// gens maps a collection to *atomic.Int64, its list generation.
	gens sync.Map
	// epoch grows when the edge may have missed change events (a gap in a partition's
	// sequence, a reconnection to NATS): every entry made before is then distrusted at once,
	// without walking the cache.
	epoch atomic.Int64
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
}

// floorTTL is how long a write's version floor is kept at least: longer than any fill takes.
const floorTTL = 10 * time.Second

// newDocCache makes a cache of at most maxBytes whose entries live at most ttl. Entries of 200
// responses of at least compressMin bytes are compressible; compressMin <= 0 disables it.
func newDocCache(maxBytes int64, ttl time.Duration, compressMin int, m *metrics) (*docCache, error) {
	evictions := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "perch_edge_cache_evictions_total", Help: "Cache entries evicted to stay within the cost bound.",
	})
	m.collectors = append(m.collectors, evictions)
	c, err := ristretto.NewCache(&ristretto.Config[string, *entry]{
		// ristretto's advice: ten counters per item. Items average a few KiB.
		NumCounters: max(maxBytes/1024*10, 1e4),
		MaxCost:     maxBytes,
		BufferItems: 64,
		KeyToHash: func(k string) (uint64, uint64) {
			return xxhash.Sum64String(k), 0
		},
		ShouldUpdate: func(next, cur *entry) bool { return next.newer(cur) },
		OnEvict:      func(*ristretto.Item[*entry]) { evictions.Inc() },
		// Costs are the body bytes plus the entry; the internal cost of ristretto's own
		// bookkeeping is counted too, so MaxCost bounds the real memory.
		Cost: nil,
	})
	if err != nil {
		return nil, err
	}
	return &docCache{c: c, ttl: ttl, compressMin: max(compressMin, 0), floors: map[string]int64{}, oldFloors: map[string]int64{}, rotated: time.Now()}, nil
}

// valid reports whether e may be served: made in the current epoch and not a marker.
func (dc *docCache) valid(e *entry) bool {
	return !e.stale && e.epoch == dc.epoch.Load()
}

// distrust retires every entry at once: the edge may have missed change events.
func (dc *docCache) distrust() { dc.epoch.Add(1) }

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

// set stamps e with the cache's epoch and whether it is compressible, and stores it.
func (dc *docCache) set(key string, e *entry) {
	e.epoch = dc.epoch.Load()
	e.compressible = dc.compressMin > 0 && e.status == 200 && len(e.body) >= dc.compressMin
	dc.c.SetWithTTL(key, e, dc.cost(key, e), dc.ttl)
}

// fill stores the entry of a fill and waits until the cache has taken it (or refused it):
// ristretto admits a new key asynchronously, and a miss in between would start a second
// fill, a second core read of the key.
func (dc *docCache) fill(key string, e *entry) {
	dc.set(key, e)
	dc.c.Wait()
}

// cost is what e costs the cache: its bytes, with its compressed forms estimated at half the
// body (one form of API JSON takes a quarter to a half of it, BenchmarkCompress; most clients
// take one coding). ristretto cannot change a cost without a Set, and a Set of an entry
// already served could bring back a version the cache has since let go, so the forms are
// paid for when the entry is stored, made or not.
func (dc *docCache) cost(key string, e *entry) int64 {
	n := len(key) + int(unsafe.Sizeof(*e)) + len(e.body) + len(e.etag)
	for _, t := range e.ctags {
		n += len(t)
	}
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

// markVersion records that version of a document exists without its body.
func (dc *docCache) markVersion(collection, id string, version int64) {
	dc.set(docKey(collection, id), &entry{version: version, stale: true})
}

func documentEntry(d *wire.Document) *entry {
	e := &entry{version: d.Version}
	e.etag, e.ctags = documentETags(d.Version)
	if d.Deleted {
		e.status = 404
		e.body = notFoundBody
	} else {
		e.status = 200
		e.body = renderDocument(nil, d)
	}
	return e
}

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

func (dc *docCache) close() { dc.c.Close() }

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

// documentETags returns the ETag of a version and those of its compressed forms, `"3"`,
// `"3-gz"` and `"3-br"`, made in one allocation.
func documentETags(version int64) (identity []byte, compressed [numCodings - 1][]byte) {
	b := make([]byte, 0, 3*22+8)
	b = append(b, '"')
	b = strconv.AppendInt(b, version, 10)
	b = append(b, '"')
	n := len(b)
	for c := codingGzip; c < numCodings; c++ {
		start := len(b)
		b = append(b, b[:n-1]...)
		b = append(b, codingSuffixes[c]...)
		b = append(b, '"')
		compressed[c-1] = b[start:len(b):len(b)]
	}
	return b[:n:n], compressed
}

// etag is the strong validator of a version: its decimal number in quotes.
func etag(version int64) []byte {
	b := make([]byte, 0, 22)
	b = append(b, '"')
	b = strconv.AppendInt(b, version, 10)
	return append(b, '"')
}
