package edge

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/perchhq/perch/edge/ratelimit"
	"github.com/perchhq/perch/internal/auth"
	"github.com/perchhq/perch/internal/wire"
)

// Config tunes an edge. The zero value of a field means its default.
type Config struct {
	// ID names the edge in the fleet and in the subject of its write outcomes. It must be
	// unique among running edges; the default is "<region>-<random>".
	ID string
	// Region is where the edge runs, e.g. "eu-west". Required.
	Region string
	// PublicURL is the URL clients use to reach this edge, listed by GET /v1/edges.
	PublicURL string
	// Partitions is the number of write partitions; it must match the core's. Default
	// wire.DefaultPartitions.
	Partitions int
	// Stream configures the write stream, which the edge creates if it is missing.
	Stream wire.StreamOptions
	// WriteTimeout is how long a write waits for its outcome before it is answered 202 with a
	// receipt. Default 2s.
	WriteTimeout time.Duration
	// ReadTimeout bounds a cache fill from the core. Default 2s.
	ReadTimeout time.Duration
	// MaxBodyBytes is the largest request body accepted; larger ones get 413. Default 1 MiB.
	MaxBodyBytes int
	// WriteLanes is how many write partitions this edge publishes to (see
	// wire.WritePartition). Writes to one document always take the same lane, so they are
	// applied in the order the edge took them; fewer lanes make larger batches (fewer
	// stream messages and transactions per write), more lanes apply in parallel. Default 1.
	WriteLanes int
	// BatchMax is the most commands one write batch carries. Default 128.
	BatchMax int
	// BatchBytes is the most data bytes one write batch carries. Default 4 MiB.
	BatchBytes int
	// BatchWindow bounds how long a batch waits for more commands. A batch takes every
	// command that queued while the one before was being stored; when that is fewer than the
	// lane expects (the writers the batch before just answered, and the commands queued
	// behind it), it waits for the rest, but only until its first command has waited
	// BatchWindow since it was submitted. A lone writer therefore never waits. Writers that
	// do not come back (open-loop load) are still expected, so such load waits the window
	// on most batches. Default 1ms.
	BatchWindow time.Duration
	// CacheBytes bounds the memory of cached responses. Default 256 MiB.
	CacheBytes int64
	// CacheItems is the number of entries the cache is expected to hold when full. It sizes
	// the counters of the cache's admission policy, ten per entry and about 3.5 bytes each,
	// allocated up front (rounded up to powers of two). Fewer entries than the cache really
	// holds make admission and eviction choose worse once it is full (a lower hit ratio,
	// never a wrong answer); more cost memory for nothing. Default CacheBytes / 4 KiB, for
	// documents of one to a few KiB charged for their compressed forms, and list pages:
	// 64Ki entries and 3 MiB of counters for 256 MiB. Set it for a cache of smaller entries
	// (perch edge --cache-items). At most CacheBytes / 48 count, the most entries that fit.
	CacheItems int64
	// CompressMinBytes is the least body size, in bytes, of a cached JSON answer (a document
	// or a list page) that is sent compressed to a client that accepts it (gzip or br, by
	// Accept-Encoding). Smaller bodies gain too little for the CPU and the header bytes.
	// Default 1024; negative disables compression.
	CompressMinBytes int
	// CacheTTL is the longest an entry is served without an event confirming it: the safety
	// net when change events are lost. Default 5 minutes.
	CacheTTL time.Duration
	// CacheControl is the Cache-Control header of the cacheable answers (200 and 304) to
	// reads of a collection's documents and pages, by collection; AnyCollection for every
	// collection not named. Values are checked by ParseCacheControl. Default for a collection
	// without one: "no-cache" (clients and shared caches revalidate every time, with the
	// ETag). Tombstones and stale answers always say "no-cache", problems "no-store". The
	// edge honours a collection's stale-while-revalidate=N itself: a document of it that
	// went stale at most N seconds ago is answered at once, marked stale, while it is
	// fetched in the background.
	CacheControl map[string]string
	// RateLimits are the rate-limit policies in force at start (SetRateLimits replaces
	// them): global across every edge of the fleet that shares the NATS of this one, each
	// edge deciding locally from its share (see edge/ratelimit). Default none.
	RateLimits []ratelimit.Policy
	// RateLimitHeaders puts RateLimit-Policy and RateLimit on every answer a policy counts,
	// not only on its 429s, so that clients can pace themselves. Off by default: the two
	// header writes cost a cache hit about a quarter of its time on the edge
	// (BenchmarkGetHitRateLimit).
	RateLimitHeaders bool
	// RateLimitSync is how often the edge tells the others its rate-limit usage; the error
	// of a limit is about rate × RateLimitSync. From 5 ms to 100 ms; default 50 ms.
	RateLimitSync time.Duration
	// Rules are the access rules of the collections (rules.go): who may read and write
	// them. Nil is every collection open to everyone (perch dev without a rules file);
	// perch edge without one uses DefaultRules.
	Rules *Rules
	// AuthRateLimit is the limit per client address on the account routes (/v1/auth/...),
	// where passwords are guessed; policies of the group "auth" replace it, and policies of
	// no group apply there as everywhere. The core throttles logins per account besides.
	// Default ip:30/m:10@auth; a policy with Limit 0 (and any other field set) turns it off.
	AuthRateLimit ratelimit.Policy
	// Tokens is what the edge checks access tokens against: the issuer and audience the
	// core signs them with, their life and the clock skew tolerated. Default the core's
	// (core.DefaultAccountsConfig): issuer and audience "perch", 15 minutes, 30 seconds.
	Tokens auth.Config
	// APIKeys is how the edge treats X-Api-Key: APIKeysOff (any name of the app, not
	// checked), APIKeysCheck (a key given must be live, else 401 invalid_api_key) or
	// APIKeysRequire (every request but health checks, the JWKS and the OpenAPI document
	// needs a live key). Keys are made by `perch keys create`; the core publishes the live
	// ones' hashes (apikeys.go). When checked, the key's id stands for the app in the `key`
	// rate-limit scope and the scope of Idempotency-Keys, so the key itself is never
	// stored. Default APIKeysOff.
	APIKeys APIKeyMode
	// TokenCacheEntries bounds the verified tokens the edge remembers, so that a request
	// with a token seen before costs no signature check. Default 100,000 (about 90 MB when
	// full).
	TokenCacheEntries int
	// PeerFills is how many fills of the keys it owns this edge answers for the other edges
	// of its region at once; beyond it they read the core themselves. Default 256.
	PeerFills int
	// ReadHeaderTimeout, IdleTimeout: the HTTP server's timeouts against slow or idle
	// clients. Defaults 10s and 60s.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration

	// Shields: what keeps a client, or a crowd of them, from taking the edge down (see
	// "Shields" in README.md). Like every field, zero means the default; for the bounds
	// below that say so, a negative value turns the bound off.
	//
	// MaxHeaderBytes bounds the request line and headers together, in bytes; a request with
	// more gets 431 and its connection is closed. It is also the read buffer each connection
	// holds. Default 16 KiB; at least 1 KiB.
	MaxHeaderBytes int
	// ReadBodyTimeout bounds the arrival of a request body, counted from the end of its
	// headers (ReadHeaderTimeout bounds the headers, counted from the connection's accept or,
	// on a kept-alive connection, from the request's first byte; IdleTimeout the wait for
	// that byte). A body too slow gets 408 and its connection is closed. Default 30s.
	ReadBodyTimeout time.Duration
	// MaxConnsPerIP caps the connections open at once from one client address (an IPv6
	// client by its /64), trusted proxies excepted. A connection beyond it is answered 429
	// too_many_connections, with Retry-After, and closed. Default 256; negative: no cap.
	MaxConnsPerIP int
	// AllowIPs and DenyIPs filter requests by client address (see TrustedProxies), before
	// anything else is done with them: an address in DenyIPs, or outside a non-empty
	// AllowIPs, is answered 403 ip_not_allowed. DenyIPs wins. GET /healthz and /readyz are
	// exempt, for load balancers. IPv4-mapped IPv6 prefixes count as IPv4. Default empty:
	// everyone.
	AllowIPs []netip.Prefix
	DenyIPs  []netip.Prefix
	// TrustedProxies are the proxies and load balancers whose X-Forwarded-For the edge
	// believes: the client of a request from one of them is the right-most address of the
	// header that is not a trusted proxy (Edge.clientIP). Default empty: the client is the
	// TCP peer, and X-Forwarded-For is ignored.
	TrustedProxies []netip.Prefix
	// MaxCoreReads bounds the reads this edge has in flight to the core at once (cache
	// fills, list pages, sync, write status); a read beyond it is answered 503 overloaded
	// with Retry-After. Hits never reach the core and are never refused. Default 1024;
	// negative: no bound.
	MaxCoreReads int
	// MaxPendingWrites bounds the writes this edge holds at once between taking them and
	// answering them: queued for their batch, being stored, or waiting for their outcome.
	// A write beyond it is answered 503 overloaded with Retry-After, before it is queued.
	// Default 4096; negative: no bound.
	MaxPendingWrites int

	// DrainDelay is how long the edge keeps serving after it is asked to stop, with /readyz
	// answering 503, so that load balancers take it out before it closes its listener.
	// Default 0 (perch edge sets it from --drain-delay).
	DrainDelay time.Duration
	// Metrics is where the edge registers its Prometheus metrics, labelled with its edge id
	// and region; they are removed when the edge stops. Default: a registry of its own, not
	// exposed.
	Metrics prometheus.Registerer
	// DisableRequestMetrics turns off the metrics recorded on every request: the request
	// counter and latency histogram and the cache's lookup counter (hits, misses). It is
	// there to measure what they cost (bench); the other metrics are kept.
	DisableRequestMetrics bool
	// TracerProvider makes the spans of the requests the edge traces (OpenTelemetry): those
	// that carry a W3C traceparent, sampled as its flag says, and TraceSampleRatio of the
	// others. A traced request's span is the parent of its read from the core and of the
	// write batch that carries it, whose trace context goes to the core in the NATS
	// message's headers. Default nil: no spans; a client's traceparent still gives the
	// trace_id of the request's log lines.
	TracerProvider trace.TracerProvider
	// TraceSampleRatio is the share of the requests without a traceparent that the edge
	// traces, from 0 (default: none, and such a request costs nothing more than without a
	// tracer) to 1 (all).
	TraceSampleRatio float64
	// Logger receives the edge's structured logs. Every line about a request carries its
	// request_id (the client's X-Request-Id when well-formed, else one the edge made, echoed
	// in the answer) and, when it is traced or sent a traceparent, its trace_id. Default
	// slog.Default().
	Logger *slog.Logger
}

// DefaultConfig is the configuration of a production edge, less its Region.
func DefaultConfig() Config {
	return Config{
		Partitions:        wire.DefaultPartitions,
		WriteTimeout:      2 * time.Second,
		ReadTimeout:       2 * time.Second,
		MaxBodyBytes:      1 << 20,
		WriteLanes:        1,
		BatchMax:          128,
		BatchBytes:        4 << 20,
		BatchWindow:       time.Millisecond,
		CacheBytes:        256 << 20,
		CacheTTL:          5 * time.Minute,
		CompressMinBytes:  1024,
		PeerFills:         256,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ReadBodyTimeout:   30 * time.Second,
		MaxConnsPerIP:     256,
		MaxCoreReads:      1024,
		MaxPendingWrites:  4096,
		AuthRateLimit:     ratelimit.Policy{Scope: ratelimit.ScopeIP, Limit: 30, Period: time.Minute, Burst: 10, Group: groupAuth},
		Tokens:            auth.Config{Issuer: "perch", Audience: "perch", TTL: 15 * time.Minute, Skew: 30 * time.Second},
		TokenCacheEntries: 100_000,
	}
}

func (c *Config) complete() error {
	d := DefaultConfig()
	if c.Region == "" {
		return errors.New("region is required")
	}
	if !wire.ValidCollection(c.Region) {
		return fmt.Errorf("region %q: use letters, digits, - and _", c.Region)
	}
	if c.ID == "" {
		c.ID = c.Region + "-" + strings.ToLower(ulid.Make().String()[20:])
	}
	if !wire.ValidCollection(c.ID) {
		return fmt.Errorf("edge id %q: use letters, digits, - and _", c.ID)
	}
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&c.WriteTimeout, d.WriteTimeout)
	set(&c.ReadTimeout, d.ReadTimeout)
	set(&c.BatchWindow, d.BatchWindow)
	set(&c.CacheTTL, d.CacheTTL)
	set(&c.ReadHeaderTimeout, d.ReadHeaderTimeout)
	set(&c.IdleTimeout, d.IdleTimeout)
	if err := c.completeShields(&d); err != nil {
		return err
	}
	if c.Partitions == 0 {
		c.Partitions = d.Partitions
	}
	if c.PeerFills <= 0 {
		c.PeerFills = d.PeerFills
	}
	if c.Partitions < 1 || c.Partitions > 4096 {
		return fmt.Errorf("partitions %d out of range [1,4096]", c.Partitions)
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.WriteLanes <= 0 {
		c.WriteLanes = d.WriteLanes
	}
	if c.BatchMax <= 0 {
		c.BatchMax = d.BatchMax
	}
	c.BatchMax = min(c.BatchMax, wire.MaxBatchCommands)
	if c.BatchBytes <= 0 {
		c.BatchBytes = d.BatchBytes
	}
	if c.CacheBytes <= 0 {
		c.CacheBytes = d.CacheBytes
	}
	if c.CompressMinBytes == 0 {
		c.CompressMinBytes = d.CompressMinBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Rules != nil {
		if err := c.Rules.Validate(); err != nil {
			return fmt.Errorf("rules: %w", err)
		}
	}
	if c.AuthRateLimit == (ratelimit.Policy{}) {
		c.AuthRateLimit = d.AuthRateLimit
	}
	if c.Tokens.Issuer == "" {
		c.Tokens.Issuer = d.Tokens.Issuer
	}
	if c.Tokens.Audience == "" {
		c.Tokens.Audience = d.Tokens.Audience
	}
	if c.Tokens.TTL == 0 {
		c.Tokens.TTL = d.Tokens.TTL
	}
	if c.Tokens.Skew == 0 {
		c.Tokens.Skew = d.Tokens.Skew
	}
	if err := c.Tokens.Validate(); err != nil {
		return fmt.Errorf("tokens: %w", err)
	}
	if c.APIKeys == "" {
		c.APIKeys = APIKeysOff
	}
	if _, err := ParseAPIKeyMode(string(c.APIKeys)); err != nil {
		return err
	}
	if c.TokenCacheEntries <= 0 {
		c.TokenCacheEntries = d.TokenCacheEntries
	}
	if !(c.TraceSampleRatio >= 0 && c.TraceSampleRatio <= 1) {
		return fmt.Errorf("trace sample ratio %v out of range [0,1]", c.TraceSampleRatio)
	}
	return nil
}

// completeShields fills in the defaults of the shields' fields and checks them.
func (c *Config) completeShields(d *Config) error {
	if c.MaxHeaderBytes == 0 {
		c.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if c.MaxHeaderBytes < 1<<10 {
		return fmt.Errorf("max header bytes %d: at least 1024", c.MaxHeaderBytes)
	}
	if c.ReadBodyTimeout <= 0 {
		c.ReadBodyTimeout = d.ReadBodyTimeout
	}
	bound := func(v *int, def int) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = -1 // no bound
		}
	}
	bound(&c.MaxConnsPerIP, d.MaxConnsPerIP)
	bound(&c.MaxCoreReads, d.MaxCoreReads)
	bound(&c.MaxPendingWrites, d.MaxPendingWrites)
	for _, list := range []struct {
		name     string
		prefixes []netip.Prefix
	}{{"allow ips", c.AllowIPs}, {"deny ips", c.DenyIPs}, {"trusted proxies", c.TrustedProxies}} {
		for i, p := range list.prefixes {
			if !p.IsValid() || p.Addr().Zone() != "" {
				return fmt.Errorf("%s[%d] %q: not a CIDR prefix", list.name, i, p)
			}
		}
	}
	return nil
}
