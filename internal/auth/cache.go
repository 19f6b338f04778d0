package auth

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
)

// VerifiedCache is the edge's hot path for access tokens: it remembers tokens that verified,
// with their claims, so that a client's next request with the same token costs a hash, a map
// lookup and a string comparison instead of a signature check, and allocates nothing.
//
// Entries are keyed by the xxhash of the token (of its signature, see hashedTail), and a hit
// also compares the whole token, so that a hash collision is a miss and never another
// token's claims. An entry is served while the token would still verify: from nbf (or iat,
// if later) − Skew until exp + Skew (exp at most iat + TTL), and while its key is in the
// verifier's key set and before that key's NotAfter; after SetKeys, the first hit of each
// entry looks its kid up again. Revocations (RevokeToken, RevokeSubject, RevokeSession)
// apply to hits and misses alike.
//
// The cache holds at most the number of entries given to NewVerifiedCache, in shards that
// each hold their part; a full shard evicts the expired entries and otherwise the one of a
// few sampled that expires soonest. Only tokens that verified are stored, so entries cannot
// be made by someone without a valid token.
//
// A VerifiedCache is safe for concurrent use. Each shard has its own mutex and the revocation
// list its own, never held together.
type VerifiedCache struct {
	v      *Verifier
	shards []cacheShard
	mask   uint64
	rev    revocations
}

type cacheShard struct {
	mu        sync.Mutex
	m         map[uint64]*cacheEntry
	capacity  int
	hits      uint64
	misses    uint64
	evictions uint64
	_         [64]byte // keeps neighbouring shards' locks off one cache line
}

type cacheEntry struct {
	token     string
	claims    Claims
	kid       string
	keys      *KeySet // the key set the kid was last found in
	notBefore int64   // UnixNano: served from then on (nbf or iat, the later, − Skew)
	tokenEnd  int64   // UnixNano: the token's own end (exp + Skew, exp at most iat + TTL)
	end       int64   // UnixNano: served until then: tokenEnd, or the key's NotAfter if sooner
}

// evictSample is how many entries a full shard looks at to choose the one it evicts.
const evictSample = 8

// NewVerifiedCache returns a cache in front of v that holds at most maxEntries tokens (at
// least 1). Each entry costs the token and about 400 bytes more (claims, entry, map slot): a
// million entries of 460-byte tokens take about 900 MB. As each shard holds its part, the
// cache may evict before it holds maxEntries in all (about 2% before, measured).
func NewVerifiedCache(v *Verifier, maxEntries int) (*VerifiedCache, error) {
	if v == nil {
		return nil, fmt.Errorf("auth: NewVerifiedCache without a Verifier")
	}
	if maxEntries < 1 {
		return nil, fmt.Errorf("auth: cache of %d entries, want at least 1", maxEntries)
	}
	n := 1
	for n < 64 && maxEntries/(2*n) >= 16 {
		n *= 2
	}
	c := &VerifiedCache{v: v, shards: make([]cacheShard, n), mask: uint64(n - 1)}
	for i := range c.shards {
		c.shards[i].capacity = maxEntries / n
		if i < maxEntries%n {
			c.shards[i].capacity++
		}
		c.shards[i].m = make(map[uint64]*cacheEntry)
	}
	c.rev.ttl = v.cfg.TTL + v.cfg.Skew
	for i := range c.rev.shards {
		c.rev.shards[i].m = make(map[revKey]revEntry)
	}
	return c, nil
}

// Verify returns the claims of token at now, from the cache when it holds the token, and
// otherwise from the Verifier, storing them when the token verifies. The errors are the
// Verifier's, and ErrRevoked. The Claims returned share their Custom map with the cache.
func (c *VerifiedCache) Verify(token string, now time.Time) (Claims, error) {
	return c.verify(xxhash.Sum64String(token[max(0, len(token)-hashedTail):]), token, nil, now)
}

// VerifyBytes is Verify for a token in a byte slice, such as fasthttp's header value; the
// cache copies it when it stores it, and keeps no reference to token.
func (c *VerifiedCache) VerifyBytes(token []byte, now time.Time) (Claims, error) {
	return c.verify(xxhash.Sum64(token[max(0, len(token)-hashedTail):]), "", token, now)
}

// hashedTail is how much of the end of a token the cache hashes to find its entry: the last
// 64 characters are all signature, 384 bits that differ between any two tokens, so hashing
// the rest as well would cost time and add nothing. (A token made to share the tail of
// another finds that entry, fails the comparison of the whole token, and is verified.)
const hashedTail = 64

// verify looks up the token given as str, or as b when b is not nil.
func (c *VerifiedCache) verify(h uint64, str string, b []byte, now time.Time) (Claims, error) {
	ns := now.UnixNano()
	keys := c.v.keys.Load()
	sh := &c.shards[h&c.mask]
	sh.mu.Lock()
	if e := sh.m[h]; e != nil {
		same := false
		if b != nil {
			same = e.token == string(b)
		} else {
			same = e.token == str
		}
		if same && ns >= e.notBefore && ns < e.end && (e.keys == keys || e.recheck(keys, now)) {
			sh.hits++
			cl := e.claims
			sh.mu.Unlock()
			if err := c.rev.check(&cl, now); err != nil {
				return Claims{}, err
			}
			return cl, nil
		}
		if same {
			delete(sh.m, h) // it no longer verifies; Verify below says why
		}
	}
	sh.misses++
	sh.mu.Unlock()

	if b != nil {
		str = string(b)
	}
	cl, kid, err := c.v.verify(str, now, keys)
	if err != nil {
		return Claims{}, err
	}
	if err := c.rev.check(&cl, now); err != nil {
		return Claims{}, err
	}
	e := &cacheEntry{token: str, claims: cl, kid: kid, keys: keys,
		notBefore: latest(cl.NotBefore, cl.IssuedAt).Add(-c.v.cfg.Skew).UnixNano(),
		tokenEnd:  c.v.expiry(&cl).UnixNano(),
	}
	e.end = e.tokenEnd
	if k, ok := keys.keys[kid]; ok && !k.NotAfter.IsZero() && k.NotAfter.UnixNano() < e.end {
		e.end = k.NotAfter.UnixNano()
	}
	sh.mu.Lock()
	sh.insert(h, e, ns)
	sh.mu.Unlock()
	return cl, nil
}

// recheck looks the entry's kid up in keys, which replaced the set it was verified with, and
// reports whether it is still served. Called with the shard locked.
func (e *cacheEntry) recheck(keys *KeySet, now time.Time) bool {
	k, ok := keys.keys[e.kid]
	if !ok {
		return false
	}
	e.keys = keys
	e.end = e.tokenEnd
	if !k.NotAfter.IsZero() && k.NotAfter.UnixNano() < e.end {
		e.end = k.NotAfter.UnixNano()
	}
	return now.UnixNano() < e.end
}

// insert stores e under h, evicting when the shard is full. Called with the shard locked.
func (sh *cacheShard) insert(h uint64, e *cacheEntry, now int64) {
	if _, ok := sh.m[h]; !ok && len(sh.m) >= sh.capacity {
		var victim uint64
		victimEnd := int64(1<<63 - 1)
		n := 0
		for k, o := range sh.m {
			if o.end <= now {
				delete(sh.m, k)
				sh.evictions++
			} else if o.end < victimEnd {
				victim, victimEnd = k, o.end
			}
			if n++; n == evictSample {
				break
			}
		}
		if len(sh.m) >= sh.capacity {
			delete(sh.m, victim)
			sh.evictions++
		}
	}
	sh.m[h] = e
}

// RevokeToken revokes the token whose jti is id, decided at at: Verify answers ErrRevoked for
// it from now on, cached or not. The revocation is kept TTL + Skew after at, when the token
// has expired anyway.
func (c *VerifiedCache) RevokeToken(id string, at time.Time) { c.rev.add(revToken, id, at) }

// RevokeSubject revokes every token of the subject (user id) issued at or before at (to the
// second: iat ≤ at), e.g. when the user changes their password or is deleted. A token issued
// in the same second as at is revoked too; tokens issued later are not.
func (c *VerifiedCache) RevokeSubject(subject string, at time.Time) {
	c.rev.add(revSubject, subject, at)
}

// RevokeSession revokes every token with the session id (the sid claim, the refresh-token
// family) issued at or before at, e.g. on logout or when the reuse of a refresh token retires
// its family.
func (c *VerifiedCache) RevokeSession(sid string, at time.Time) { c.rev.add(revSession, sid, at) }

// CacheStats counts what a VerifiedCache did since it was made.
type CacheStats struct {
	Entries     int    // tokens held now
	Hits        uint64 // Verify answered from the cache
	Misses      uint64 // Verify went to the Verifier
	Evictions   uint64 // entries dropped to make room
	Revocations int    // revocations held now
}

// Stats returns the cache's counters. It locks each shard in turn: call it for metrics, not
// per request.
func (c *VerifiedCache) Stats() CacheStats {
	var s CacheStats
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		s.Entries += len(sh.m)
		s.Hits += sh.hits
		s.Misses += sh.misses
		s.Evictions += sh.evictions
		sh.mu.Unlock()
	}
	for i := range c.rev.n {
		s.Revocations += int(c.rev.n[i].Load())
	}
	return s
}

// revocations is the revocation list of a VerifiedCache, sharded by the hash of the value.
type revocations struct {
	n      [revSession + 1]atomic.Int64 // entries of each kind: a hit skips the kinds with none
	ttl    time.Duration
	shards [16]revShard
}

type revKind uint8

const (
	revToken revKind = iota + 1
	revSubject
	revSession
)

type revKey struct {
	kind  revKind
	value string
}

type revEntry struct {
	at  int64 // Unix seconds: tokens issued at or before it are revoked (subject, session)
	end int64 // UnixNano: kept until then
}

type revShard struct {
	mu      sync.RWMutex
	m       map[revKey]revEntry
	pruneAt int // prune when the map reaches this size
}

func (r *revocations) add(kind revKind, value string, at time.Time) {
	if value == "" {
		return
	}
	k := revKey{kind, value}
	e := revEntry{at: at.Unix(), end: at.Add(r.ttl).UnixNano()}
	sh := &r.shards[xxhash.Sum64String(value)&uint64(len(r.shards)-1)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if old, ok := sh.m[k]; ok {
		e.at, e.end = max(e.at, old.at), max(e.end, old.end)
	} else {
		r.n[kind].Add(1)
	}
	sh.m[k] = e
	if len(sh.m) >= sh.pruneAt {
		now := at.UnixNano()
		for k, o := range sh.m {
			if o.end <= now {
				delete(sh.m, k)
				r.n[k.kind].Add(-1)
			}
		}
		sh.pruneAt = max(64, 2*len(sh.m))
	}
}

func (r *revocations) get(kind revKind, value string, now int64) (revEntry, bool) {
	sh := &r.shards[xxhash.Sum64String(value)&uint64(len(r.shards)-1)]
	sh.mu.RLock()
	e, ok := sh.m[revKey{kind, value}]
	sh.mu.RUnlock()
	return e, ok && now < e.end
}

// check returns ErrRevoked when a revocation covers c.
func (r *revocations) check(c *Claims, now time.Time) error {
	ns, iat := now.UnixNano(), c.IssuedAt.Unix()
	if r.n[revToken].Load() > 0 {
		if _, ok := r.get(revToken, c.ID, ns); ok {
			return fmt.Errorf("%w: token %s", ErrRevoked, c.ID)
		}
	}
	if r.n[revSubject].Load() > 0 {
		if e, ok := r.get(revSubject, c.Subject, ns); ok && iat <= e.at {
			return fmt.Errorf("%w: subject %s", ErrRevoked, c.Subject)
		}
	}
	if c.SessionID != "" && r.n[revSession].Load() > 0 {
		if e, ok := r.get(revSession, c.SessionID, ns); ok && iat <= e.at {
			return fmt.Errorf("%w: session %s", ErrRevoked, c.SessionID)
		}
	}
	return nil
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
