package edge

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/internal/problem"
)

// The shields of an edge (README.md, "Shields"): size limits and timeouts of the HTTP server,
// a cap on the connections of one client address, allow and deny lists of addresses, the
// client address behind trusted proxies, and load shedding when the core or the write stream
// is saturated. Size limits and timeouts are settings of the fasthttp server (New); the rest
// is here.

// shield holds the state of the shields that is not the HTTP server's.
type shield struct {
	allow, deny, trusted prefixSet
	// filtering is set when an allow or deny list is configured: only then does a request
	// cost an address lookup.
	filtering bool
	conns     connLimiter
	// reads are the reads in flight to the core; writes the writes between being taken and
	// being answered.
	reads, writes gate

	shedTotal    [numShedKinds]prometheus.Counter
	refusedTotal [numRefusals]prometheus.Counter
	collectors   []prometheus.Collector
	shedWarn     [numShedKinds]warnLimiter
	connWarn     warnLimiter
	// refusing counts the refused connections being answered, each on a goroutine of its
	// own for at most about a second (lingerTime, twice).
	refusing atomic.Int32
}

type shedKind int

const (
	shedRead shedKind = iota
	shedWrite
	numShedKinds
)

var shedKinds = [numShedKinds]string{"read", "write"}

type refusal int

const (
	refusedIP refusal = iota
	refusedConns
	numRefusals
)

var refusals = [numRefusals]problem.Code{problem.IPNotAllowed, problem.TooManyConnections}

func newShield(cfg *Config) *shield {
	s := &shield{
		allow:   newPrefixSet(cfg.AllowIPs),
		deny:    newPrefixSet(cfg.DenyIPs),
		trusted: newPrefixSet(cfg.TrustedProxies),
		reads:   gate{max: int64(cfg.MaxCoreReads)},
		writes:  gate{max: int64(cfg.MaxPendingWrites)},
	}
	s.filtering = !s.allow.empty() || !s.deny.empty()
	s.conns = connLimiter{max: cfg.MaxConnsPerIP, trusted: &s.trusted, open: make(map[netip.Addr]int)}
	shed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "perch_edge_shed_total",
		Help: "Requests refused with 503 overloaded because the edge had as many of their kind in flight as it may, by kind: read (reads in flight to the core, MaxCoreReads), write (writes being stored or waiting for their outcome, MaxPendingWrites, or a write lane full for the whole write timeout).",
	}, []string{"kind"})
	for k := range numShedKinds {
		s.shedTotal[k] = shed.WithLabelValues(shedKinds[k])
	}
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "perch_edge_refused_total",
		Help: "Requests and connections refused by the edge's shields, by reason: ip_not_allowed (403: the client address is denied or not allowed), too_many_connections (429: a connection beyond MaxConnsPerIP, closed).",
	}, []string{"reason"})
	for r := range numRefusals {
		s.refusedTotal[r] = refused.WithLabelValues(string(refusals[r]))
	}
	s.collectors = []prometheus.Collector{shed, refused,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "perch_edge_core_reads_in_flight", Help: "Reads this edge has in flight to the core (bounded by MaxCoreReads).",
		}, func() float64 { return float64(s.reads.n.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "perch_edge_pending_writes", Help: "Writes this edge has taken and not yet answered (bounded by MaxPendingWrites).",
		}, func() float64 { return float64(s.writes.n.Load()) }),
	}
	return s
}

// gate counts what is in flight of one kind and bounds it. It takes no lock.
type gate struct {
	n   atomic.Int64
	max int64 // negative: no bound
}

// enter reports whether one more may go in; if so, the caller must call leave once done.
func (g *gate) enter() bool {
	if g.n.Add(1) > g.max && g.max >= 0 {
		g.n.Add(-1)
		return false
	}
	return true
}

func (g *gate) leave() { g.n.Add(-1) }

var (
	problemReadsShed = problem.New(problem.Overloaded,
		"this edge has too many reads waiting for the core; retry after Retry-After")
	problemWritesShed = problem.New(problem.Overloaded,
		"this edge has too many writes waiting to be stored and applied; nothing was stored; retry after Retry-After")
	problemIPNotAllowed = problem.New(problem.IPNotAllowed, "this client address may not use this edge")
)

// enterRead is called by a read about to go to the core; false means it must not go: it has
// been counted as shed and is to be answered with problemReadsShed (a value shared by every
// shed read, like problemWritesShed: never change them). Otherwise the caller must call
// e.shield.reads.leave once the read is done.
func (e *Edge) enterRead() bool {
	if e.shield.reads.enter() {
		return true
	}
	e.shed(shedRead, &e.shield.reads)
	return false
}

// enterWrite is enterRead for a write about to be queued.
func (e *Edge) enterWrite() bool {
	if e.shield.writes.enter() {
		return true
	}
	e.shed(shedWrite, &e.shield.writes)
	return false
}

// shed counts a request refused for want of capacity behind the edge. Its answer is logged at
// debug level, like every refusal (writeProblem); this warns at most every warnInterval, so
// that a saturated core does not also flood the logs.
func (e *Edge) shed(k shedKind, g *gate) {
	s := e.shield
	s.shedTotal[k].Inc()
	if held, ok := s.shedWarn[k].allow(time.Now()); ok {
		e.log.Warn("shedding load: answering 503 overloaded", "kind", shedKinds[k],
			"bound", g.max, "in_flight", g.n.Load(), "shed_since_last_warning", held+1)
	}
}

// warnInterval is the least time between two warnings of one kind about refused requests.
const warnInterval = 10 * time.Second

// warnLimiter lets a warning through at most every warnInterval.
type warnLimiter struct {
	next atomic.Int64 // unix nanoseconds
	held atomic.Int64
}

// allow reports whether a warning may be logged at now, and how many were held back since the
// last one that was.
func (w *warnLimiter) allow(now time.Time) (int64, bool) {
	next := w.next.Load()
	if now.UnixNano() < next || !w.next.CompareAndSwap(next, now.Add(warnInterval).UnixNano()) {
		w.held.Add(1)
		return 0, false
	}
	return w.held.Swap(0), true
}

// admit applies the allow and deny lists to a request from ip (its clientIP), before anything
// else is done with it, and answers 403 ip_not_allowed to a refused one. /healthz and
// /readyz are exempt: load balancers probe from their own addresses, which an allow list of
// clients need not name, and those answers reveal nothing and cost nothing. The connection is closed after a
// refusal unless it is a trusted proxy's, which carries the requests of other clients too.
func (e *Edge) admit(ctx *fasthttp.RequestCtx, ip netip.Addr) bool {
	s := e.shield
	if path := ctx.Path(); string(path) == "/healthz" || string(path) == "/readyz" {
		return true
	}
	if s.allowed(ip) {
		return true
	}
	s.refusedTotal[refusedIP].Inc()
	e.log.DebugContext(ctx, "request refused", "client", ip, "peer", ctx.RemoteAddr().String(),
		"method", string(ctx.Method()), "path", string(ctx.Path()),
		"status", problemIPNotAllowed.Status, "code", problemIPNotAllowed.Code)
	if !s.trusted.contains(addrOf(ctx.RemoteAddr())) {
		ctx.SetConnectionClose()
	}
	writeProblem(ctx, problemIPNotAllowed)
	e.metrics.observe(unknownRoute, ctx)
	return false
}

// allowed reports whether the lists let ip in: not denied and, when there is an allow list, on
// it. An address the edge could not tell (the zero Addr) is on no list.
func (s *shield) allowed(ip netip.Addr) bool {
	if s.deny.contains(ip) {
		return false
	}
	return s.allow.empty() || s.allow.contains(ip)
}

// clientIP is the address of the client that sent the request: the TCP peer, unless the peer
// is a trusted proxy (Config.TrustedProxies); then the right-most address of X-Forwarded-For
// that is not a trusted proxy (see forwardedWalk for the details and what a malformed header
// yields). IPv4-mapped IPv6 addresses come back as IPv4. It is the zero Addr when the peer
// is not a TCP address (an in-memory listener) and no trusted proxy named a client.
//
// It allocates nothing when the peer is not trusted or sends no X-Forwarded-For, and the Addr
// it returns shares no memory with the request: it may be kept.
func (e *Edge) clientIP(ctx *fasthttp.RequestCtx) netip.Addr {
	peer := addrOf(ctx.RemoteAddr())
	t := &e.shield.trusted
	if t.empty() || !t.contains(peer) {
		return peer
	}
	var w forwardedWalk
	// Only the header section counts: the values of a trailer section (which fasthttp keeps
	// with the headers) come from the client, past every proxy.
	for k, v := range ctx.Request.Header.All() {
		if len(k) == len(hdrXForwardedFor) && bytes.EqualFold(k, hdrXForwardedFor) {
			w.add(v, t)
		}
	}
	return w.client(peer)
}

var hdrXForwardedFor = []byte("X-Forwarded-For")

// forwardedWalk finds the client in the X-Forwarded-For values of a request a trusted proxy
// sent, given in order, as one comma-separated list: the right-most address that is not a
// trusted proxy, walking from the right. Each proxy appends the address it took the request
// from, so the elements right of that one were written by trusted proxies, and the elements
// left of it by whoever the client is, and are not believed.
//
//   - Elements are IPv4 or IPv6 addresses, optionally with a port ("192.0.2.1:4711",
//     "[2001:db8::1]:4711"), with white space around them; empty elements are skipped
//     (RFC 9110 §5.6.1).
//   - Every element trusted: the client is the left-most one (a request from inside the
//     proxies' network).
//   - An element that is not an address ("unknown", an obfuscated name, a zone, garbage)
//     ends the walk: the client is the hop right of it, a trusted proxy, or the peer when it
//     is the last element. That proxy could not say who sent it the request, so the request
//     is its own: a malformed header can neither pick the client's address nor give it the
//     standing of an untrusted one.
//
// Walking from the right is done in one pass from the left: the result only depends on what
// follows the last element that stops the walk (one not trusted, or malformed).
type forwardedWalk struct {
	addr  netip.Addr
	state uint8
}

const (
	walkEmpty   = iota // no address yet
	walkFound          // addr is the client, unless a later element stops the walk
	walkStopped        // a malformed element: the next address is the client
)

// add takes one X-Forwarded-For value.
func (w *forwardedWalk) add(v []byte, trusted *prefixSet) {
	for len(v) > 0 {
		var elem []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			elem, v = v[:i], v[i+1:]
		} else {
			elem, v = v, nil
		}
		elem = trimOWS(elem)
		if len(elem) == 0 {
			continue
		}
		a, ok := parseForwardedAddr(elem)
		switch {
		case !ok:
			w.state = walkStopped
		case w.state != walkFound || !trusted.contains(a):
			w.addr, w.state = a, walkFound
		}
	}
}

// client is the result of the walk, peer when no address counts.
func (w *forwardedWalk) client(peer netip.Addr) netip.Addr {
	if w.state == walkFound {
		return w.addr
	}
	return peer
}

// maxForwardedElem is longer than any address with a port, "[v6:with:an:embedded:1.2.3.4]:65535".
const maxForwardedElem = 64

// parseForwardedAddr parses one element of X-Forwarded-For: an IPv4 address, optionally with
// ":port", or an IPv6 address, bare or in brackets with an optional ":port". Zones are
// refused. An IPv4-mapped IPv6 address comes back as IPv4.
func parseForwardedAddr(b []byte) (netip.Addr, bool) {
	if len(b) == 0 || len(b) > maxForwardedElem {
		return netip.Addr{}, false
	}
	host, bracketed := b, false
	if b[0] == '[' {
		end := bytes.IndexByte(b, ']')
		if end < 0 || !validPort(b[end+1:]) {
			return netip.Addr{}, false
		}
		host, bracketed = b[1:end], true
	} else if i := bytes.IndexByte(b, ':'); i >= 0 && bytes.IndexByte(b[i+1:], ':') < 0 {
		// One colon: an IPv4 address and a port.
		if !validPort(b[i:]) {
			return netip.Addr{}, false
		}
		host = b[:i]
	}
	if len(host) == 0 {
		return netip.Addr{}, false
	}
	for _, c := range host {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == '.' || c == ':') {
			return netip.Addr{}, false
		}
	}
	// host has no zone, so the Addr keeps nothing of the string, which may alias the request.
	a, err := netip.ParseAddr(unsafe.String(&host[0], len(host)))
	if err != nil || bracketed && !a.Is6() {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// validPort reports whether b is empty or ":" and 1 to 5 digits.
func validPort(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	if b[0] != ':' || len(b) < 2 || len(b) > 6 {
		return false
	}
	for _, c := range b[1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// addrOf is the IP address of a TCP address, unmapped; the zero Addr for any other address.
func addrOf(a net.Addr) netip.Addr {
	if t, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(t.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

// prefixSet is a set of prefixes that tells whether an address is in one of them, without
// allocating: a scan for a few prefixes, for many a map lookup per prefix length present.
type prefixSet struct {
	list []netip.Prefix
	// byLen is set for large sets: the prefixes by themselves, and the lengths present,
	// of IPv4 and of IPv6 prefixes.
	byLen        map[netip.Prefix]struct{}
	lens4, lens6 []int
}

// scanMax is the size up to which a prefixSet is scanned.
const scanMax = 16

// newPrefixSet makes the set of ps, which must be valid: masked, IPv4-mapped IPv6 prefixes
// of at least 96 bits made IPv4, duplicates dropped.
func newPrefixSet(ps []netip.Prefix) prefixSet {
	var s prefixSet
	seen := make(map[netip.Prefix]bool)
	for _, p := range ps {
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		p = p.Masked()
		if !seen[p] {
			seen[p] = true
			s.list = append(s.list, p)
		}
	}
	if len(s.list) <= scanMax {
		return s
	}
	s.byLen = make(map[netip.Prefix]struct{}, len(s.list))
	has4, has6 := map[int]bool{}, map[int]bool{}
	for _, p := range s.list {
		s.byLen[p] = struct{}{}
		switch bits := p.Bits(); {
		case p.Addr().Is4() && !has4[bits]:
			has4[bits] = true
			s.lens4 = append(s.lens4, bits)
		case p.Addr().Is6() && !has6[bits]:
			has6[bits] = true
			s.lens6 = append(s.lens6, bits)
		}
	}
	return s
}

func (s *prefixSet) empty() bool { return len(s.list) == 0 }

// contains reports whether a is in one of the prefixes. a must be unmapped.
func (s *prefixSet) contains(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	if s.byLen == nil {
		for _, p := range s.list {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	lens := s.lens6
	if a.Is4() {
		lens = s.lens4
	}
	for _, bits := range lens {
		if p, err := a.Prefix(bits); err == nil {
			if _, ok := s.byLen[p]; ok {
				return true
			}
		}
	}
	return false
}

// headerReceived gives a request with a body ReadBodyTimeout for it, from the end of its
// headers. A request without one keeps the server's settings.
func (e *Edge) headerReceived(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
	if h.ContentLength() == 0 {
		return fasthttp.RequestConfig{}
	}
	return fasthttp.RequestConfig{ReadTimeout: e.cfg.ReadBodyTimeout}
}

// connLimiter counts the open connections of each client address and caps them. It counts
// TCP peers: a trusted proxy's connections are not counted (they carry many clients), and
// a client behind one is bounded by that proxy. An IPv6 client is counted by its /64, which
// one host, or one subscriber of a mobile network, typically holds whole.
//
// fasthttp.Server.MaxConnsPerIP does the same for every peer, proxies included, and answers
// a refused connection with a text/plain 429; this one answers with a problem.
type connLimiter struct {
	max     int // negative: no cap
	trusted *prefixSet

	mu   sync.Mutex // a leaf lock
	open map[netip.Addr]int
}

// connKey is what the connections of a are counted under.
func connKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// admit returns c, wrapped, counted unless its address is not (a trusted proxy, no cap), or
// false when its address has its share open.
func (cl *connLimiter) admit(c net.Conn) (*shieldConn, bool) {
	sc := &shieldConn{Conn: c}
	if cl.max < 0 {
		return sc, true
	}
	a := addrOf(c.RemoteAddr())
	if !a.IsValid() || cl.trusted.contains(a) {
		return sc, true
	}
	key := connKey(a)
	cl.mu.Lock()
	n := cl.open[key]
	if n >= cl.max {
		cl.mu.Unlock()
		return nil, false
	}
	cl.open[key] = n + 1
	cl.mu.Unlock()
	sc.cl, sc.key = cl, key
	return sc, true
}

func (cl *connLimiter) release(key netip.Addr) {
	cl.mu.Lock()
	if n := cl.open[key] - 1; n > 0 {
		cl.open[key] = n
	} else {
		delete(cl.open, key)
	}
	cl.mu.Unlock()
}

// shieldConn is a connection the edge accepted.
type shieldConn struct {
	net.Conn
	// cl counts the connection under key until it is closed; nil when it is not counted.
	cl  *connLimiter
	key netip.Addr
	// linger is set once the edge has answered a request it could not read (serveError):
	// Close then lingers (lingerClose).
	linger atomic.Bool
	closed atomic.Bool
	// rd and wd are its read and write deadlines, armed lazily (deadline.go).
	rd, wd lazyDeadline
}

func (c *shieldConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return c.Conn.Close()
	}
	if c.linger.Load() {
		lingerClose(c.Conn)
	}
	err := c.Conn.Close()
	if c.cl != nil {
		c.cl.release(c.key)
	}
	return err
}

// lingerMark marks the connection of a request the edge answered without reading it whole, so
// that closing it lingers.
func lingerMark(ctx *fasthttp.RequestCtx) {
	if c, ok := ctx.Conn().(*shieldConn); ok {
		c.linger.Store(true)
	}
}

const (
	// lingerTime and lingerBytes bound what lingerClose waits for and reads.
	lingerTime  = 500 * time.Millisecond
	lingerBytes = 256 << 10
)

// lingerClose half-closes c after an answer to a request that was not read whole (too large,
// too slow, refused at once), and reads what the client still sends until it closes its side,
// for at most lingerTime and lingerBytes. Closing a connection with unread data resets it,
// and a reset can destroy an answer still on its way or not yet read by the client: the
// client would see a broken connection instead of the problem.
func lingerClose(c net.Conn) {
	cw, ok := c.(interface{ CloseWrite() error })
	if !ok || cw.CloseWrite() != nil {
		return
	}
	_ = c.SetReadDeadline(time.Now().Add(lingerTime))
	_, _ = io.CopyN(io.Discard, c, lingerBytes)
}

// shieldListener is the edge's listener: it refuses the connections beyond MaxConnsPerIP and
// wraps the others in shieldConn. It hides the type of the connections it accepts, so a TLS
// listener goes around it, never under it.
type shieldListener struct {
	net.Listener
	e *Edge
}

func (e *Edge) listener(ln net.Listener) net.Listener { return &shieldListener{Listener: ln, e: e} }

func (l *shieldListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if sc, ok := l.e.shield.conns.admit(c); ok {
			return sc, nil
		}
		l.e.refuseConn(c)
	}
}

// maxRefusing bounds the refused connections being answered at once; beyond it they are
// closed without an answer.
const maxRefusing = 256

// refuseConn answers a connection beyond MaxConnsPerIP with 429 too_many_connections and
// closes it, on a goroutine of its own. The answer goes out at once, before the request is
// read (as fasthttp's own refusals do), and the connection is closed lingering.
func (e *Edge) refuseConn(c net.Conn) {
	s := e.shield
	s.refusedTotal[refusedConns].Inc()
	peer := addrOf(c.RemoteAddr())
	e.log.Debug("connection refused", "peer", peer, "status", http.StatusTooManyRequests,
		"code", problem.TooManyConnections, "max_conns_per_ip", s.conns.max)
	if held, ok := s.connWarn.allow(time.Now()); ok {
		e.log.Warn("refusing connections beyond MaxConnsPerIP (behind a proxy, is it a trusted proxy?)",
			"peer", peer, "max_conns_per_ip", s.conns.max, "refused_since_last_warning", held+1)
	}
	if s.refusing.Add(1) > maxRefusing {
		s.refusing.Add(-1)
		_ = c.Close()
		return
	}
	go func() {
		defer s.refusing.Add(-1)
		defer c.Close()
		_ = c.SetWriteDeadline(time.Now().Add(lingerTime))
		if _, err := c.Write(tooManyConnsResponse(time.Now())); err == nil {
			lingerClose(c)
		}
	}()
}

var tooManyConnsBody = problem.New(problem.TooManyConnections,
	"too many connections from this client address; send requests on the connections already open").JSON()

// tooManyConnsResponse is the whole HTTP response to a refused connection.
func tooManyConnsResponse(now time.Time) []byte {
	b := make([]byte, 0, 512)
	b = append(b, "HTTP/1.1 429 Too Many Requests\r\nServer: perch\r\nDate: "...)
	b = now.UTC().AppendFormat(b, http.TimeFormat)
	b = append(b, "\r\nContent-Type: "+problem.ContentType+
		"\r\nCache-Control: no-store\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(tooManyConnsBody)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, tooManyConnsBody...)
}
