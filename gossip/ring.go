package gossip

import (
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// DefaultRingPoints is the number of points a member of weight 1 has on a [Ring]. With 256
// points, the largest share among ten equal members is within about 15% of the mean, and a
// member joining or leaving moves only the keys of its own points.
const DefaultRingPoints = 256

// Ring assigns keys to members by consistent hashing: each member has Weight×points points
// on a circle of 64-bit hashes, and a key belongs to the member of the first point at or
// after the key's hash. Members with the same ID, weight and point count place their points
// alike on every edge, so edges with the same member list agree on every key's owner without
// talking; when the list changes, only the keys of the points that came or went change
// owner (no refill of the whole cache).
//
// A Ring is immutable and safe for concurrent use. Owner costs one hash and a binary
// search, and no allocation.
type Ring struct {
	hashes  []uint64 // sorted
	owners  []int32  // owners[i] is the index in members of the point hashes[i]
	members []Member
}

// NewRing builds a ring of members, points per unit of weight (DefaultRingPoints when
// points <= 0). A member listed twice counts once; the order of members does not matter.
func NewRing(members []Member, points int) *Ring {
	if points <= 0 {
		points = DefaultRingPoints
	}
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	ms = slices.CompactFunc(ms, func(a, b Member) bool { return a.ID == b.ID })
	type point struct {
		hash  uint64
		owner int32
	}
	var pts []point
	buf := make([]byte, 0, 64)
	for i, m := range ms {
		n := points * min(max(m.Weight, 1), MaxWeight)
		for j := range n {
			buf = append(buf[:0], m.ID...)
			buf = append(buf, '#')
			buf = strconv.AppendInt(buf, int64(j), 10)
			pts = append(pts, point{xxhash.Sum64(buf), int32(i)})
		}
	}
	// Ties (two points with one hash) go to the lower member index, the same on every edge.
	slices.SortFunc(pts, func(a, b point) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return int(a.owner - b.owner)
	})
	r := &Ring{members: ms, hashes: make([]uint64, len(pts)), owners: make([]int32, len(pts))}
	for i, p := range pts {
		r.hashes[i], r.owners[i] = p.hash, p.owner
	}
	return r
}

// Owner returns the member that owns key, and false on an empty ring.
func (r *Ring) Owner(key string) (Member, bool) {
	if r == nil || len(r.hashes) == 0 {
		return Member{}, false
	}
	h := xxhash.Sum64String(key)
	i, _ := slices.BinarySearch(r.hashes, h)
	if i == len(r.hashes) {
		i = 0
	}
	return r.members[r.owners[i]], true
}

// Members returns the ring's members, sorted by ID. The slice is the caller's.
func (r *Ring) Members() []Member {
	if r == nil {
		return nil
	}
	return slices.Clone(r.members)
}

// Len is the number of members on the ring.
func (r *Ring) Len() int {
	if r == nil {
		return 0
	}
	return len(r.members)
}
