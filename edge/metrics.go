package edge

import (
	"bytes"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/perchhq/perch/internal/telemetry"
	"github.com/valyala/fasthttp"
)

// metrics are the edge's Prometheus metrics. Recording costs no allocation on the hit path:
// the children of labelled metrics are resolved once and kept.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	cache    *prometheus.CounterVec
	hits     prometheus.Counter
	misses   prometheus.Counter
	// fillsBy counts cache fills by where they came from (fillSource).
	fillsBy [2]prometheus.Counter
	// peerServedBy counts the fills this edge answered for other edges, by result;
	// peerFallbacks the fills it asked of an owner but took from the core, by reason.
	peerServedBy  *prometheus.CounterVec
	peerFallbacks *prometheus.CounterVec
	ringMembers   prometheus.Gauge
	// ringChanges counts the changes of the ring's members; gossipMembers is the fleet as
	// gossip shows it to this edge, by health (healthy, unhealthy).
	ringChanges   prometheus.Counter
	gossipMembers [2]prometheus.Gauge
	// eventDelay is the time from a change's commit at the core to its event here.
	eventDelay prometheus.Histogram
	// rateLimited counts the requests answered 429 by a rate limit.
	rateLimited prometheus.Counter
	// staleServed counts misses answered with a distrusted entry because the fill failed.
	staleServed prometheus.Counter
	fillErrors  prometheus.Counter
	writes      *prometheus.CounterVec
	batchSize   prometheus.Histogram
	publish     prometheus.Histogram
	events      *prometheus.CounterVec
	// tokens counts the access tokens refused, by reason; revocations those the edge heard of.
	tokens      *prometheus.CounterVec
	revocations prometheus.Counter
	// apiKeysRefused counts the requests refused for their X-Api-Key, by reason.
	apiKeysRefused *prometheus.CounterVec
	// compressed counts the answers sent in each coding but identity; compressions the
	// attempts to make a compressed form, by coding and result (compressResults). Hits of a
	// form already made add to the first only.
	compressed   [numCodings]prometheus.Counter
	compressions [numCodings][numCompressResults]prometheus.Counter

	collectors telemetry.Set
	// off is set by Config.DisableRequestMetrics: observe and the cache's lookup counters
	// record nothing.
	off bool
	// children holds the resolved request counter and histograms of each route (the last
	// slot: no route), method and status, created on first use.
	children [maxRoutes + 1][len(methods)][600]atomic.Pointer[requestChildren]
}

// maxRoutes bounds the route table, for the children array.
const maxRoutes = 24

// methods are the methods metrics tell apart; others count as "other".
var methods = [...]string{"other", fasthttp.MethodGet, fasthttp.MethodHead, fasthttp.MethodPut,
	fasthttp.MethodPost, fasthttp.MethodPatch, fasthttp.MethodDelete}

type requestChildren struct {
	count prometheus.Counter
	// durations holds the histogram of each cache result, created on first use.
	durations [numCacheResults]atomic.Pointer[observer]
}

type observer struct{ prometheus.Observer }

// Cache results of a request, in the cache label of perch_edge_request_duration_seconds: what
// its Cache-Status says.
const (
	cacheNone   = iota // no Cache-Status: writes, errors before a lookup
	cacheHit           // perch; hit
	cacheMiss          // perch; fwd=miss
	cacheStale         // answered possibly stale: detail=stale, detail=disconnected, fwd=stale
	cacheBypass        // perch; fwd=bypass
	numCacheResults
)

var cacheResults = [numCacheResults]string{"none", "hit", "miss", "stale", "bypass"}

// cacheResult classifies a response's Cache-Status (render.go's values).
func cacheResult(cs []byte) int {
	switch {
	case len(cs) == 0:
		return cacheNone
	case bytes.Equal(cs, csHit):
		return cacheHit
	case bytes.Equal(cs, csBypass):
		return cacheBypass
	case bytes.HasPrefix(cs, csMissNotStored):
		return cacheMiss
	default:
		return cacheStale
	}
}

func newMetrics() *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "perch_edge_requests_total", Help: "HTTP requests answered, by route, method and status.",
		}, []string{"route", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "perch_edge_request_duration_seconds", Help: "Time to answer an HTTP request, by route, method, status and cache result (from Cache-Status: hit, miss, stale, bypass, none).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route", "method", "code", "cache"}),
		cache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "perch_edge_cache_requests_total", Help: "Document and list lookups in the cache, by result: hit, miss, and stale (answered possibly stale: a miss whose fill failed for want of a core, answered with the entry the cache no longer trusted, or a hit while the edge has lost NATS). Hits and misses include the stale ones.",
		}, []string{"result"}),
		peerServedBy: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "perch_edge_peer_fills_served_total", Help: "Fills of keys this edge owns answered for other edges of its region, by result: hit (from the cache), fill (read from the core), error (the core did not answer), busy (refused: too many at once; the asker reads the core), invalid.",
		}, []string{"result"}),
		peerFallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "perch_edge_peer_fill_fallbacks_total", Help: "Fills this edge asked of a key's owner edge but took from the core, by reason: unreachable (no answer, or a malformed one), busy, older (the owner had an older version than this edge has heard of).",
		}, []string{"reason"}),
		rateLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "perch_edge_rate_limited_total", Help: "Requests answered 429 rate_limited (perch_ratelimit_decisions_total has them by policy).",
		}),
		ringMembers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "perch_edge_ring_members", Help: "Edges of this edge's region on its hash ring of key owners, itself included.",
		}),
		ringChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "perch_edge_ring_changes_total", Help: "Changes of the members of this edge's hash ring of key owners (an edge of its region joined, left, or stopped or started answering).",
		}),
		eventDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "perch_edge_change_event_delay_seconds", Help: "Time from a change's commit at the core (the document's updated_at, by the core's clock) to its change event's arrival at this edge: the propagation delay of invalidations. Skew between the hosts' clocks adds to it.",
			Buckets: prometheus.ExponentialBuckets(.0005, 2, 14),
		}),
		fillErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "perch_edge_cache_fill_errors_total", Help: "Cache fills that failed (core unavailable or too slow).",
		}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "perch_edge_writes_total", Help: "Writes by result: applied, replayed, rejected, queued (answered 202), unstored (answered 503).",
		}, []string{"result"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "perch_edge_write_batch_commands", Help: "Commands per write batch published to JetStream.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		publish: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "perch_edge_write_publish_seconds", Help: "Time for JetStream to store a write batch.",
			Buckets: prometheus.ExponentialBuckets(.00025, 2, 14),
		}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "perch_edge_change_events_total", Help: "Change events received, by what they did to the cache: document (installed), known (the cache had that version already), marker (too large to carry: the next read fetches), gap (events were missed: the cache is distrusted), gap_after_drop (the gap of a reported drop: distrusted already), repeated (published again, or one of a gap: only its version is kept), dropped (a slow consumer dropped some: the cache is distrusted; counted once per report, not per event), queued_before_drop (applied after such a drop: only its version is kept), invalid.",
		}, []string{"result"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "perch_edge_tokens_refused_total", Help: "Requests whose access token was refused (401 invalid_token), by reason: malformed, expired, not_yet_valid, revoked, unknown_key, bad_signature, bad_algorithm, wrong_issuer, wrong_audience.",
		}, []string{"reason"}),
		apiKeysRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "perch_edge_api_keys_refused_total", Help: "Requests refused 401 invalid_api_key, by reason: missing (where a key is required), malformed, unknown (never made, or revoked).",
		}, []string{"reason"}),
		revocations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "perch_edge_token_revocations_total", Help: "Revocations of access tokens (a logout, a reused refresh token, a deleted account) applied by this edge.",
		}),
	}
	compressed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "perch_edge_compressed_responses_total", Help: "Answers sent compressed, by content coding (gzip, br).",
	}, []string{"encoding"})
	compressions := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "perch_edge_compressions_total", Help: "Compressed forms of cached answers made, by content coding and result: kept; not_smaller (not kept, the entry is sent uncompressed); skipped (the compressor was overloaded, this answer went uncompressed and the next one tries again). Made once per cache entry and coding: hits do not add to it.",
	}, []string{"encoding", "result"})
	for c := codingGzip; c < numCodings; c++ {
		name := string(codingNames[c])
		m.compressed[c] = compressed.WithLabelValues(name)
		for r, result := range compressResults {
			m.compressions[c][r] = compressions.WithLabelValues(name, result)
		}
	}
	fills := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "perch_edge_cache_fills_total", Help: "Cache fills, one per key however many requests missed, by source: core (read from the core) or peer (from the key's owner edge in the region).",
	}, []string{"source"})
	m.fillsBy[fillCore] = fills.WithLabelValues("core")
	m.fillsBy[fillPeer] = fills.WithLabelValues("peer")
	gossipMembers := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "perch_edge_gossip_members", Help: "Edges of the fleet (every region) that gossip shows this edge, by state: healthy, unhealthy (suspected or unreachable).",
	}, []string{"state"})
	m.gossipMembers[0] = gossipMembers.WithLabelValues("healthy")
	m.gossipMembers[1] = gossipMembers.WithLabelValues("unhealthy")
	m.hits = m.cache.WithLabelValues("hit")
	m.misses = m.cache.WithLabelValues("miss")
	m.staleServed = m.cache.WithLabelValues("stale")
	m.collectors = telemetry.Set{m.requests, m.duration, m.cache, fills, m.peerServedBy, m.peerFallbacks, m.ringMembers, m.ringChanges, gossipMembers, m.eventDelay, m.rateLimited, m.fillErrors, m.writes, m.batchSize, m.publish, m.events,
		compressed, compressions, m.tokens, m.revocations, m.apiKeysRefused}
	return m
}

// fillSource is where a cache fill came from.
type fillSource int

const (
	fillCore fillSource = iota
	fillPeer
)

func (m *metrics) fills(s fillSource) prometheus.Counter { return m.fillsBy[s] }

func (m *metrics) peerServed(result string) prometheus.Counter {
	return m.peerServedBy.WithLabelValues(result)
}

func (m *metrics) peerFallback(reason string) prometheus.Counter {
	return m.peerFallbacks.WithLabelValues(reason)
}

// observe records one answered request: its route, method, status, the cache result its
// Cache-Status header says, and the time since the server began reading it. It allocates
// nothing once the request's children exist.
func (m *metrics) observe(route *route, ctx *fasthttp.RequestCtx) {
	if m.off {
		return
	}
	ri := route.index
	if ri < 0 || ri >= maxRoutes {
		ri = maxRoutes
	}
	mi := methodIndex(ctx.Method())
	status := ctx.Response.StatusCode()
	if status < 0 || status >= 600 {
		status = 0
	}
	slot := &m.children[ri][mi][status]
	ch := slot.Load()
	if ch == nil {
		ch = &requestChildren{count: m.requests.WithLabelValues(route.pattern, methods[mi], strconv.Itoa(status))}
		if !slot.CompareAndSwap(nil, ch) {
			ch = slot.Load()
		}
	}
	cr := cacheResult(ctx.Response.Header.PeekCanonical(hdrCacheStatus))
	o := ch.durations[cr].Load()
	if o == nil {
		o = &observer{m.duration.WithLabelValues(route.pattern, methods[mi], strconv.Itoa(status), cacheResults[cr])}
		if !ch.durations[cr].CompareAndSwap(nil, o) {
			o = ch.durations[cr].Load()
		}
	}
	ch.count.Inc()
	// The server took the time the request began; a second clock read is all this costs.
	o.Observe(time.Since(ctx.Time()).Seconds())
}

// methodIndex maps a method to its place in methods, so that a label never holds client
// input.
func methodIndex(m []byte) int {
	for i := 1; i < len(methods); i++ {
		if string(m) == methods[i] {
			return i
		}
	}
	return 0
}

// hit and miss count a cache lookup (unless request metrics are off).
func (m *metrics) hit() {
	if !m.off {
		m.hits.Inc()
	}
}

func (m *metrics) miss() {
	if !m.off {
		m.misses.Inc()
	}
}
