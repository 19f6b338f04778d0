package ratelimit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// A usage message (README.md, "Sync messages") is what a limiter publishes every sync
// interval:
//
//	version    byte (1)
//	flags      byte: bit 0 = the sender is leaving
//	node       uvarint length, bytes: the sender's NodeID
//	incarnation 8 bytes, little endian: drawn at random when the sender started
//	seq        uvarint: the sender's round, one more each interval
//	interval   uvarint: the sender's sync interval in milliseconds
//	sections   uvarint count, then per section:
//	  policy   uvarint length, bytes: the policy's String
//	  items    uvarint count, then per item:
//	    key    uvarint length, bytes (1 to 64)
//	    demand uvarint: requests per second seen by the sender, in thousandths (at least 1)
//
// Numbers are in their shortest form, so that a message has one encoding.
// Every message of a round lists each of the sender's policies in at least one section, so
// that the receivers know which limiters enforce which policies; a round too large for one
// message (maxMessageBytes) continues in more messages with the same seq.
const (
	wireVersion = 1
	flagLeave   = 1 << 0

	// maxMessageBytes bounds one published message, well under NATS's default 1 MiB.
	maxMessageBytes = 64 << 10
	maxNodeIDLen    = 128
	maxPolicyIDLen  = 128
	maxSections     = 1024
	maxWireInterval = 60_000 // ms
	maxDemandMilli  = 1 << 50
)

// usage is a decoded message. Its byte slices alias the message.
type usage struct {
	node        string
	incarnation uint64
	seq         uint64
	interval    time.Duration
	leave       bool
	sections    []usageSection
}

type usageSection struct {
	policy []byte
	items  []usageItem
}

type usageItem struct {
	key    []byte
	demand uint64 // thousandths of a request per second
}

// usageHeader is what starts every message of a round.
type usageHeader struct {
	node        string
	incarnation uint64
	seq         uint64
	interval    time.Duration
	leave       bool
}

func appendUsageHeader(dst []byte, h usageHeader, sections int) []byte {
	var flags byte
	if h.leave {
		flags |= flagLeave
	}
	dst = append(dst, wireVersion, flags)
	dst = binary.AppendUvarint(dst, uint64(len(h.node)))
	dst = append(dst, h.node...)
	dst = binary.LittleEndian.AppendUint64(dst, h.incarnation)
	dst = binary.AppendUvarint(dst, h.seq)
	dst = binary.AppendUvarint(dst, uint64(max(h.interval.Milliseconds(), 1)))
	return binary.AppendUvarint(dst, uint64(sections))
}

func appendSectionHeader(dst []byte, policy string, items int) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(policy)))
	dst = append(dst, policy...)
	return binary.AppendUvarint(dst, uint64(items))
}

func appendItem(dst []byte, key string, milli uint64) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	return binary.AppendUvarint(dst, milli)
}

// milliDemand is a demand in requests per second as it travels: thousandths, at least one.
func milliDemand(d float64) uint64 {
	m := math.Round(d * 1000)
	switch {
	case !(m >= 1):
		return 1
	case m > maxDemandMilli:
		return maxDemandMilli
	}
	return uint64(m)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func itemLen(key string, milli uint64) int {
	return uvarintLen(uint64(len(key))) + len(key) + uvarintLen(milli)
}

// reportItem is one key's demand for one policy (an index into the policy list), collected
// by a tick.
type reportItem struct {
	policy int
	key    string
	demand float64
}

// encodeUsage encodes a round: each policy of ids, with its items (sorted by policy), in as
// many messages of at most limit bytes as it takes, and calls emit with each. emit must not
// keep the message. buf is reused and returned.
func encodeUsage(buf []byte, h usageHeader, ids []string, items []reportItem, limit int, emit func([]byte)) []byte {
	// Sections per message are counted before they are written: plan, then write.
	type part struct{ policy, lo, hi int }
	var parts []part
	start := func() int {
		return len(appendUsageHeader(buf[:0], h, maxSections))
	}
	size := start()
	flush := func() {
		buf = appendUsageHeader(buf[:0], h, len(parts))
		for _, p := range parts {
			buf = appendSectionHeader(buf, ids[p.policy], p.hi-p.lo)
			for _, it := range items[p.lo:p.hi] {
				buf = appendItem(buf, it.key, milliDemand(it.demand))
			}
		}
		emit(buf)
		parts = parts[:0]
		size = start()
	}
	next := 0
	for pi, id := range ids {
		lo := next
		for next < len(items) && items[next].policy == pi {
			next++
		}
		hi := next
		for {
			head := uvarintLen(uint64(len(id))) + len(id) + 3
			if size+head > limit || len(parts) == maxSections {
				flush()
			}
			size += head
			end := lo
			for end < hi {
				n := itemLen(items[end].key, milliDemand(items[end].demand))
				if size+n > limit && (len(parts) > 0 || end > lo) {
					break // (an item always fits in a message of its own)
				}
				size += n
				end++
			}
			parts = append(parts, part{pi, lo, end})
			if end == hi {
				break
			}
			flush()
			lo = end
		}
	}
	if len(parts) > 0 || len(ids) == 0 {
		flush()
	}
	return buf
}

// errMalformed wraps every decoding error.
var errMalformed = errors.New("malformed usage message")

// decodeUsage reads a message published by a peer: outside input, checked for every bound.
func decodeUsage(b []byte) (usage, error) {
	var u usage
	r := reader{b: b}
	if v := r.byte(); r.err == nil && v != wireVersion {
		return u, fmt.Errorf("%w: version %d", errMalformed, v)
	}
	flags := r.byte()
	if r.err == nil && flags&^flagLeave != 0 {
		return u, fmt.Errorf("%w: unknown flags %#x", errMalformed, flags)
	}
	u.leave = flags&flagLeave != 0
	node := r.bytes(maxNodeIDLen)
	if r.err == nil && len(node) == 0 {
		return u, fmt.Errorf("%w: empty node id", errMalformed)
	}
	u.node = string(node)
	u.incarnation = r.fixed64()
	u.seq = r.uvarint()
	ms := r.uvarint()
	if r.err == nil && (ms == 0 || ms > maxWireInterval) {
		return u, fmt.Errorf("%w: sync interval %dms", errMalformed, ms)
	}
	u.interval = time.Duration(ms) * time.Millisecond
	n := r.uvarint()
	if r.err == nil && n > maxSections {
		return u, fmt.Errorf("%w: %d sections", errMalformed, n)
	}
	if r.err != nil {
		return u, r.err
	}
	u.sections = make([]usageSection, 0, n)
	for range n {
		var s usageSection
		s.policy = r.bytes(maxPolicyIDLen)
		if r.err == nil && len(s.policy) == 0 {
			return u, fmt.Errorf("%w: empty policy", errMalformed)
		}
		k := r.uvarint()
		// An item takes at least 3 bytes.
		if r.err == nil && k > uint64(len(r.b)/3) {
			return u, fmt.Errorf("%w: %d items in %d bytes", errMalformed, k, len(r.b))
		}
		if r.err != nil {
			return u, r.err
		}
		s.items = make([]usageItem, k)
		for i := range s.items {
			it := &s.items[i]
			it.key = r.bytes(maxKeyLen)
			if r.err == nil && len(it.key) == 0 {
				return u, fmt.Errorf("%w: empty key", errMalformed)
			}
			it.demand = r.uvarint()
			if r.err == nil && (it.demand == 0 || it.demand > maxDemandMilli) {
				return u, fmt.Errorf("%w: demand %d", errMalformed, it.demand)
			}
			if r.err != nil {
				return u, r.err
			}
		}
		u.sections = append(u.sections, s)
	}
	if len(r.b) != 0 {
		return u, fmt.Errorf("%w: %d bytes after the end", errMalformed, len(r.b))
	}
	return u, nil
}

// reader reads the fields of a message; after the first error every read returns zero.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: truncated %s", errMalformed, what)
	}
	r.b = nil
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) < 1 {
		r.fail("header")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) fixed64() uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.fail("incarnation")
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("number")
		return 0
	}
	if n > 1 && r.b[n-1] == 0 {
		r.err = fmt.Errorf("%w: number not in its shortest form", errMalformed)
		r.b = nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

// bytes reads a length-prefixed field of at most limit bytes.
func (r *reader) bytes(limit int) []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(limit) {
		r.err = fmt.Errorf("%w: field of %d bytes, more than %d", errMalformed, n, limit)
		r.b = nil
		return nil
	}
	if uint64(len(r.b)) < n {
		r.fail("field")
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}
