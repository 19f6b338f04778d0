package edge

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/singleflight"

	"github.com/perchhq/perch/edge/ratelimit"
	"github.com/perchhq/perch/gossip"
	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

// Membership is what the edge needs of gossip: the members of the fleet, cheaply, for
// GET /v1/edges. *gossip.Gossip implements it.
type Membership interface {
	Members() []gossip.Member
}

// Edge is one edge server. Create it with New, then call Serve.
type Edge struct {
	cfg Config
	log *slog.Logger
	nc  *nats.Conn
	js  jetstream.JetStream
	// members is set by SetMembership and read by the gossip Watcher and GET /v1/edges.
	members atomic.Pointer[membershipBox]
	cache   *docCache
	cc      *cacheControl
	// fills and coreFills run one fill per key: fills for this edge's misses (from the
	// owner or the core), coreFills for the core reads, which the fills other edges ask of
	// this one share (owner.go).
	fills     singleflight.Group
	coreFills singleflight.Group
	// coreFillReads counts the core reads coreFills have begun: a fill that joins one
	// begun before it asked knows it by its number (fillFromCoreFresh).
	coreFillReads atomic.Uint64
	// ring is the hash ring of the region's edges; ringMu orders its rebuilds.
	ring   atomic.Pointer[gossip.Ring]
	ringMu sync.Mutex
	// peerFills bounds the fills this edge answers for others at once.
	peerFills chan struct{}
	routes    []route
	srv       *fasthttp.Server

	metrics  *metrics
	registry prometheus.Registerer
	// ids makes request ids; tracer is nil without Config.TracerProvider (trace.go).
	ids    *requestIDs
	tracer trace.Tracer
	// limiter decides the rate limits; limiting is set while any policy is in force.
	limiter  *ratelimit.Limiter
	limiting atomic.Bool
	// limitKeys is set while a policy of the key scope is in force: only then is X-Api-Key
	// looked up.
	limitKeys atomic.Bool
	// stopLimiter ends the limiter's sync and waits for it; set by Serve.
	stopLimiter func()
	// shield is the state of the shields against abusive clients and overload (shield.go).
	shield *shield
	// tokens verifies access tokens (auth.go).
	tokens *tokens
	// apiKeys is the set of live API keys, nil until the core told (apikeys.go).
	apiKeys  atomic.Pointer[apiKeySet]
	writes   *writer
	draining atomic.Bool
	// disconnected is set while the edge has lost NATS: hits are then answered marked stale.
	disconnected atomic.Bool
	// disconnectedAt is when NATS was last lost, in seconds of the cache's clock.
	disconnectedAt atomic.Uint32
	// lastSeq is the last change sequence seen per partition, 0 when unknown; owned by the
	// change subscription. resetSequences asks it to forget them (after a reconnection).
	lastSeq []int64
	// firstSeq is the first change sequence seen per partition since lastSeq was last unknown:
	// below it the edge cannot tell an event it had from one it never got. Same owner.
	firstSeq       []int64
	resetSequences atomic.Bool
	serving        chan struct{}
	subs           []*nats.Subscription
	// changes is the change subscription, once made: a slow consumer on it distrusts the
	// cache (onAsyncError).
	changes atomic.Pointer[nats.Subscription]
	// changesStarted counts the change messages onChange has begun. dropDrain, when not 0,
	// is the count by which every message queued before a slow consumer dropped some has
	// been applied: until then their documents go in as version markers (onAsyncError).
	// dropCovered is a lower bound of the count of the last message the edge had received
	// when a drop was reported (it leaves out the last one queued when none was being
	// applied): the gaps it and those before show are the drop's (checkSequence).
	changesStarted atomic.Uint64
	dropDrain      atomic.Uint64
	dropCovered    atomic.Uint64
	// work admits the work on the cache outside requests, until close (work.go).
	work    workGate
	closeMu sync.Mutex
	closed  bool
}

// New validates cfg and returns an edge that talks to the core through nc. members may be nil
// (a lone edge lists only itself). The caller owns nc and closes it after Serve returns.
func New(cfg Config, nc *nats.Conn, members Membership) (*Edge, error) {
	if err := cfg.complete(); err != nil {
		return nil, fmt.Errorf("edge config: %w", err)
	}
	if nc == nil {
		return nil, errors.New("edge: a NATS connection is required")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("edge: jetstream: %w", err)
	}
	// A batch, and so every body, must fit in one NATS message of this server.
	if mp := int(nc.MaxPayload()); mp > 0 {
		if limit := mp - batchOverhead; limit < cfg.BatchBytes {
			cfg.BatchBytes = max(limit, 1)
		}
		if cfg.MaxBodyBytes > cfg.BatchBytes {
			cfg.Logger.Warn("the NATS server's max_payload caps request bodies", "max_payload", mp, "max_body_bytes", cfg.BatchBytes)
			cfg.MaxBodyBytes = cfg.BatchBytes
		}
	}
	cc, err := newCacheControl(cfg.CacheControl)
	if err != nil {
		return nil, fmt.Errorf("edge config: %w", err)
	}
	m := newMetrics()
	m.off = cfg.DisableRequestMetrics
	sh := newShield(&cfg)
	m.collectors = append(m.collectors, sh.collectors...)
	cache, err := newDocCache(&cfg, m)
	if err != nil {
		return nil, fmt.Errorf("edge: cache: %w", err)
	}
	reg := cfg.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	reg = prometheus.WrapRegistererWith(prometheus.Labels{"edge": cfg.ID, "region": cfg.Region}, reg)
	if err := m.collectors.Register(reg); err != nil {
		cache.close()
		return nil, fmt.Errorf("edge: metrics: %w", err)
	}
	e := &Edge{
		cfg:      cfg,
		log:      slog.New(newRequestLogHandler(cfg.Logger.Handler())).With("component", "edge", "edge", cfg.ID, "region", cfg.Region),
		nc:       nc,
		js:       js,
		cache:    cache,
		cc:       cc,
		metrics:  m,
		registry: reg,
		shield:   sh,
		ids:      newRequestIDs(),
	}
	if cfg.TracerProvider != nil {
		e.tracer = cfg.TracerProvider.Tracer("github.com/perchhq/perch/edge")
	}
	if e.tokens, err = newTokens(&cfg); err != nil {
		cache.close()
		m.collectors.Unregister(reg)
		return nil, fmt.Errorf("edge config: %w", err)
	}
	e.limiter, err = ratelimit.New(ratelimit.Config{
		NodeID: cfg.ID, Policies: e.withAuthLimit(cfg.RateLimits), SyncInterval: cfg.RateLimitSync,
		Transport: ratelimit.NewNATSTransport(nc, ""), Logger: e.log.With("component", "ratelimit"),
	})
	if err != nil {
		cache.close()
		m.collectors.Unregister(reg)
		return nil, fmt.Errorf("edge config: rate limits: %w", err)
	}
	if err := e.limiter.Collectors().Register(reg); err != nil {
		cache.close()
		m.collectors.Unregister(reg)
		return nil, fmt.Errorf("edge: metrics: %w", err)
	}
	e.limitKeys.Store(hasScope(cfg.RateLimits, ratelimit.ScopeKey))
	e.limiting.Store(limitsBeyondAuth(cfg.RateLimits))
	e.lastSeq = make([]int64, cfg.Partitions)
	e.firstSeq = make([]int64, cfg.Partitions)
	e.peerFills = make(chan struct{}, cfg.PeerFills)
	e.SetMembership(members)
	e.serving = make(chan struct{})
	e.writes = newWriter(e)
	e.routes = e.routeTable()
	if len(e.routes) > maxRoutes {
		return nil, fmt.Errorf("edge: %d routes, metrics hold %d", len(e.routes), maxRoutes)
	}
	for i := range e.routes {
		e.routes[i].index = i
	}
	e.srv = &fasthttp.Server{
		Handler:                       e.serveHTTP,
		ErrorHandler:                  e.serveError,
		Name:                          "perch",
		MaxRequestBodySize:            cfg.MaxBodyBytes,
		ReadTimeout:                   cfg.ReadHeaderTimeout,
		WriteTimeout:                  cfg.WriteTimeout + cfg.ReadHeaderTimeout,
		IdleTimeout:                   cfg.IdleTimeout,
		DisablePreParseMultipartForm:  true,
		NoDefaultContentType:          true,
		DisableHeaderNamesNormalizing: false,
		CloseOnShutdown:               true,
		Logger:                        fasthttpLogger{e.log},
		// Shields (shield.go). The read buffer bounds the request line and headers: 431
		// beyond it. ReadTimeout runs from the accept, or on a kept-alive connection from
		// the request's first byte, and headerReceived gives a body ReadBodyTimeout from the
		// end of the headers. Errors of unreadable requests are logged without the
		// request's bytes, which may hold credentials.
		ReadBufferSize:        cfg.MaxHeaderBytes,
		HeaderReceived:        e.headerReceived,
		SecureErrorLogMessage: true,
	}
	return e, nil
}

// Serving is closed once Serve has subscribed and accepts requests.
func (e *Edge) Serving() <-chan struct{} { return e.serving }

// ID is the edge's id in the fleet.
func (e *Edge) ID() string { return e.cfg.ID }

// routeTable is the API of DESIGN §3 that an edge serves.
func (e *Edge) routeTable() []route {
	return []route{
		newRoute("/v1/collections/{collection}/docs/{id}",
			get(e.getDocument), put(e.putDocument), patch(e.patchDocument), remove(e.deleteDocument)),
		newRoute("/v1/collections/{collection}/docs", get(e.listDocuments), post(e.createDocument)),
		newRoute("/v1/sync", get(e.sync)),
		newRoute("/v1/writes/{id}", get(e.writeStatus)),
		newRoute("/v1/edges", get(e.listEdges)),
		newRoute("/v1/auth/signup", post(e.signup)),
		newRoute("/v1/auth/login", post(e.login)),
		newRoute("/v1/auth/refresh", post(e.refresh)),
		newRoute("/v1/auth/logout", post(e.logout)),
		newRoute("/v1/auth/oidc", post(e.oidcLogin)),
		newRoute("/v1/me/totp", post(e.totpEnroll), remove(e.totpDisable)),
		newRoute("/v1/me/totp/confirm", post(e.totpConfirm)),
		newRoute("/v1/me/identities", post(e.linkIdentity)),
		newRoute("/.well-known/jwks.json", get(e.jwks)),
		newRoute("/v1/me/export", get(e.exportMe)),
		newRoute("/v1/me", remove(e.deleteMe)),
		newRoute("/v1/openapi.json", get(serveOpenAPI)),
		newRoute("/healthz", get(e.healthz)),
		newRoute("/readyz", get(e.readyz)),
	}
}

// Serve subscribes to the core's outcomes and change events, then serves HTTP on ln until ctx
// is cancelled. Then it stops accepting, finishes the requests in flight (writes get their
// outcome or a receipt), and returns nil. Serve closes ln.
func (e *Edge) Serve(ctx context.Context, ln net.Listener) error {
	if _, mismatch, err := wire.EnsureWriteStream(ctx, e.js, e.cfg.Stream); err != nil {
		ln.Close()
		e.close()
		return err
	} else if mismatch != "" {
		e.log.Warn("the write stream differs from this edge's configuration; leaving it as it is", "mismatch", mismatch)
	}
	if err := e.subscribe(); err != nil {
		ln.Close()
		e.close()
		return err
	}
	if err := e.subscribeAuth(); err != nil {
		ln.Close()
		e.close()
		return err
	}
	e.writes.start()
	lctx, stopLimiter := context.WithCancel(context.Background())
	limiterDone := make(chan struct{})
	go func() {
		defer close(limiterDone)
		if err := e.limiter.Run(lctx); err != nil {
			e.log.Error("rate limits are not shared with the other edges", "err", err)
		}
	}()
	e.stopLimiter = func() { stopLimiter(); <-limiterDone }
	e.log.Info("edge serving", "addr", ln.Addr().String(), "url", e.cfg.PublicURL)
	close(e.serving)

	errc := make(chan error, 1)
	go func() { errc <- e.srv.Serve(e.listener(ln)) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		e.draining.Store(true)
		if e.cfg.DrainDelay > 0 {
			// Keep serving while load balancers notice /readyz answering 503.
			e.log.Info("draining: readyz now fails; serving on", "for", e.cfg.DrainDelay)
			time.Sleep(e.cfg.DrainDelay)
		}
		sctx, cancel := context.WithTimeout(context.Background(), e.cfg.WriteTimeout+5*time.Second)
		err = e.srv.ShutdownWithContext(sctx)
		cancel()
		<-errc
	}
	e.close()
	e.log.Info("edge stopped")
	return err
}

// Close releases an edge that will not be served (Serve releases it when it returns).
func (e *Edge) Close() { e.close() }

func (e *Edge) close() {
	e.closeMu.Lock()
	defer e.closeMu.Unlock()
	if e.closed {
		return
	}
	e.closed = true
	e.writes.stop()
	for _, s := range e.subs {
		_ = s.Unsubscribe()
	}
	e.work.shut()
	e.cache.close()
	if e.stopLimiter != nil {
		e.stopLimiter()
	}
	e.limiter.Collectors().Unregister(e.registry)
	e.metrics.collectors.Unregister(e.registry)
}

func (e *Edge) serveHTTP(ctx *fasthttp.RequestCtx) {
	e.setRequestID(ctx)
	if e.traced(ctx) {
		e.serveTraced(ctx)
		return
	}
	e.serve(ctx)
}

// serve answers a request and returns the route that answered it (unknownRoute for one
// refused before routing).
func (e *Edge) serve(ctx *fasthttp.RequestCtx) *route {
	filtering, limiting := e.shield.filtering, e.limiting.Load()
	auth := bytes.HasPrefix(ctx.Path(), pathAuthPrefix)
	var ip netip.Addr
	if filtering || limiting || auth {
		ip = e.clientIP(ctx)
	}
	if filtering && !e.admit(ctx, ip) {
		return unknownRoute
	}
	var app string
	if e.cfg.APIKeys != APIKeysOff {
		var ok bool
		if app, ok = e.checkAPIKey(ctx); !ok {
			return unknownRoute
		}
	}
	var u user
	if !auth {
		// The account routes take no access token: a client refreshing an expired one
		// may still send it.
		var p *problem.Problem
		if u, p = e.principal(ctx); p != nil {
			e.refuseAuth(ctx, p)
			e.metrics.observe(unknownRoute, ctx)
			return unknownRoute
		}
	}
	if (limiting || auth) && !e.rateLimit(ctx, ip, u, app) {
		return unknownRoute
	}
	return e.dispatchApp(ctx, u, app)
}

// serveError answers the requests fasthttp could not read: too large, too slow, malformed.
func (e *Edge) serveError(ctx *fasthttp.RequestCtx, err error) {
	var p *problem.Problem
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		p = problem.Newf(problem.TooLarge, "request body over the limit of %d bytes", e.cfg.MaxBodyBytes)
	case isTimeout(err):
		p = problem.New(problem.RequestTimeout, "request not received in time")
	case errors.As(err, &small) || errors.Is(err, fasthttp.ErrSmallReadBuffer):
		p = problem.New(problem.HeadersTooLarge, "request headers too large")
	default:
		p = problem.New(problem.BadRequest, "malformed HTTP request")
	}
	e.setRequestID(ctx)
	e.log.DebugContext(ctx, "unreadable request", "remote", ctx.RemoteAddr().String(), "status", p.Status, "err", err)
	ctx.SetConnectionClose()
	// What the client still sends is not read: closing must not reset the answer.
	lingerMark(ctx)
	writeProblem(ctx, p)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (e *Edge) logRejected(ctx *fasthttp.RequestCtx, status int) {
	e.log.DebugContext(ctx, "request rejected", "method", string(ctx.Method()), "path", string(ctx.Path()), "status", status)
}

func (e *Edge) healthz(ctx *fasthttp.RequestCtx, _ params) {
	ctx.Response.Header.SetCanonical(hdrCacheStatus, csBypass)
	writeJSON(ctx, fasthttp.StatusOK, map[string]string{"status": "ok"})
}

// readyz says whether the edge should get traffic: not while it drains, nor while it has no
// NATS connection (it could neither take writes nor fill misses).
func (e *Edge) readyz(ctx *fasthttp.RequestCtx, _ params) {
	ctx.Response.Header.SetCanonical(hdrCacheStatus, csBypass)
	switch {
	case e.draining.Load():
		writeProblem(ctx, problem.New(problem.Unavailable, "draining"))
	case !e.nc.IsConnected():
		writeProblem(ctx, problem.New(problem.Unavailable, "no connection to NATS"))
	case e.cfg.APIKeys != APIKeysOff && e.apiKeys.Load() == nil:
		writeProblem(ctx, problem.New(problem.Unavailable, "the API keys are not known yet"))
	default:
		writeJSON(ctx, fasthttp.StatusOK, map[string]string{"status": "ready"})
	}
}

type edgeJSON struct {
	ID      string `json:"id"`
	Region  string `json:"region"`
	URL     string `json:"url"`
	Healthy bool   `json:"healthy"`
}

func (e *Edge) listEdges(ctx *fasthttp.RequestCtx, _ params) {
	var out []edgeJSON
	if ms := e.membership(); ms != nil {
		for _, m := range ms.Members() {
			out = append(out, edgeJSON{ID: m.ID, Region: m.Region, URL: m.URL, Healthy: m.Healthy})
		}
	}
	if len(out) == 0 {
		out = append(out, edgeJSON{ID: e.cfg.ID, Region: e.cfg.Region, URL: e.cfg.PublicURL, Healthy: !e.draining.Load()})
	}
	ctx.Response.Header.SetCanonical(hdrCacheControl, valPrivateNoCache)
	ctx.Response.Header.SetCanonical(hdrCacheStatus, csBypass)
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"edges": out})
}

type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	// The error a connection ended with is that of reading its last request, which
	// serveError logged with the answer it got, or of writing to a client that went away.
	if strings.HasPrefix(format, "error when serving connection") {
		return
	}
	f.l.Debug(fmt.Sprintf(format, args...), "source", "fasthttp")
}

// SetMembership sets where GET /v1/edges and the hash ring of key owners learn of the fleet.
// Call it before Serve; nil means a lone edge. For the ring to follow the fleet, the edge
// must also be the gossip's Watcher (or MembersChanged called on every change).
func (e *Edge) SetMembership(m Membership) {
	e.members.Store(&membershipBox{m})
	e.rebuildRing()
}

type membershipBox struct{ m Membership }

func (e *Edge) membership() Membership {
	if b := e.members.Load(); b != nil {
		return b.m
	}
	return nil
}
