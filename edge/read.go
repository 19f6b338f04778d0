package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/telemetry"
	"github.com/perchhq/perch/internal/wire"
)

var valNoCache = []byte("no-cache")

// keyBufs holds buffers for building cache keys: the key of a hit must not cost an allocation,
// and a stack buffer would escape through the cache's hash function.
var keyBufs = sync.Pool{New: func() any {
	b := make([]byte, 0, 2*wire.MaxNameLen+1)
	return &b
}}

// getDocument is the hot path: a hit costs a hash lookup and no allocation.
func (e *Edge) getDocument(ctx *fasthttp.RequestCtx, p params) {
	if !wire.ValidCollection(p.collection) || !wire.ValidName(p.id) {
		e.writeProblem(ctx, problem.New(problem.BadName, "collection or document id is not a valid name"))
		return
	}
	rule, ok := e.allowRead(ctx, p)
	if !ok {
		return
	}
	kb := keyBufs.Get().(*[]byte)
	key := appendDocKey((*kb)[:0], p.collection, p.id)
	ent, ok := e.cache.get(key)
	hit := ok && e.cache.valid(ent)
	skey := ""
	if !hit {
		skey = string(key)
	}
	*kb = key
	keyBufs.Put(kb)
	if hit {
		e.metrics.hit()
		if hidden(rule, ent, p.user) {
			ent = hiddenEntry
		}
		e.serveHit(ctx, ent, rule, p.collection)
		return
	}
	e.metrics.miss()
	prior := ent
	if !ok {
		prior = nil
	}
	rc := e.requestContext(ctx)
	// shown is what the request may be answered with from prior, should it be answered stale:
	// someone else's document in a collection read by owner is shown as one that does not
	// exist, on every path a missing one takes, so that a stranger cannot tell the two
	// apart; its version still bounds the fill.
	shown := prior
	if prior != nil && hidden(rule, prior, p.user) {
		shown = hiddenStandIn(prior)
	}
	if prior != nil && e.revalidating(ctx, rc, skey, p, prior, shown, rule) {
		return
	}
	ent, stored, perr := e.fillDocument(rc, skey, string(p.collection), string(p.id), prior)
	if perr != nil {
		e.serveStaleOr(ctx, shown, perr, rule)
		return
	}
	cs := csMissNotStored
	if stored {
		cs = csMiss
	}
	if hidden(rule, ent, p.user) {
		e.notMine(ctx, cs)
		return
	}
	e.serveEntry(ctx, ent, cs, e.cacheControlOf(rule, p.collection))
}

// serveEntry answers with a cached response, or 304 when the client has its version. A
// compressible entry is answered in the coding Accept-Encoding asks for, made once per entry
// and coding and kept with it; every answer from it carries Vary: Accept-Encoding, 304s
// included (RFC 9110 §15.4.5), and a compressed answer the ETag of its form.
func (e *Edge) serveEntry(ctx *fasthttp.RequestCtx, ent *entry, cacheStatus, cacheControl []byte) {
	h := &ctx.Response.Header
	h.SetCanonical(hdrCacheStatus, cacheStatus)
	if ent.status != fasthttp.StatusOK {
		h.SetCanonical(hdrCacheControl, valNoCache)
		ctx.SetStatusCode(int(ent.status))
		ctx.SetContentTypeBytes(ctProblem)
		ctx.Response.SetBodyRaw(ent.bytes())
		return
	}
	h.SetCanonical(hdrCacheControl, cacheControl)
	c := codingIdentity
	if ent.compressible {
		h.SetCanonical(hdrVary, valAcceptEncoding)
		c = negotiateCoding(ctx.Request.Header.Peek(fasthttp.HeaderAcceptEncoding))
	}
	var tag [maxTagLen]byte
	if ent.version > 0 {
		if inm := ctx.Request.Header.Peek(fasthttp.HeaderIfNoneMatch); len(inm) > 0 {
			if m, ok := ent.matchETag(inm, c); ok {
				h.SetCanonical(hdrETag, ent.appendTag(tag[:0], m))
				ctx.SetStatusCode(fasthttp.StatusNotModified)
				return
			}
		}
	}
	body := ent.bytes()
	if c != codingIdentity {
		if b := e.compressedBody(ent, c); b != nil {
			body = b
			h.SetContentEncodingBytes(codingNames[c])
			e.metrics.compressed[c].Inc()
		} else {
			c = codingIdentity
		}
	}
	if ent.version > 0 {
		h.SetCanonical(hdrETag, ent.appendTag(tag[:0], c))
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.SetContentTypeBytes(ctJSON)
	ctx.Response.SetBodyRaw(body)
}

// revalidating answers a miss on a document that went stale within its collection's
// stale-while-revalidate window with that document (Cache-Status "perch; hit; detail=stale",
// Cache-Control no-cache, so that nothing downstream keeps it), and fills the key in the
// background, once however many requests come meanwhile. It reports whether it answered. An
// edge that lost NATS, or whose cache was distrusted more than a few times since, does not
// answer stale this way: the fill runs in the foreground and stale-if-error applies.
func (e *Edge) revalidating(ctx *fasthttp.RequestCtx, rc context.Context, key string, p params, prior, shown *entry, r Rule) bool {
	window := e.cc.staleWhileRevalidate(p.collection)
	if window == 0 || e.disconnected.Load() {
		return false
	}
	age, ok := e.cache.staleFor(prior)
	if !ok || age > window {
		return false
	}
	collection, id := string(p.collection), string(p.id)
	e.fills.DoChan(key, func() (any, error) {
		// It runs on after the request, maybe after the server has stopped.
		if !e.work.enter() {
			return nil, errStopping
		}
		defer e.work.leave()
		return e.fill(rc, key, collection, id, prior)
	})
	e.metrics.staleServed.Inc()
	e.serveEntry(ctx, shown, csHitStale, staleCacheControl(r))
	return true
}

// fillDocument fills the cache with a document, once per key however many requests miss at
// the same time: from the key's owner edge in the region when that is another edge (which
// fills from the core once for the whole region), else, or when the owner cannot answer, from
// the core. An absent document is cached too, as version 0, so that a flood of reads of a
// missing id does not reach the core; any real version replaces it. prior is the entry the
// cache holds but does not trust, if any: the fill may not answer an older version. rc is
// the requestContext of the request that missed; a fill shared by several has the first's.
// stored reports whether the cache took the entry (Cache-Status's stored).
func (e *Edge) fillDocument(rc context.Context, key, collection, id string, prior *entry) (*entry, bool, *problem.Problem) {
	v, err, _ := e.fills.Do(key, func() (any, error) { return e.fill(rc, key, collection, id, prior) })
	if err != nil {
		return nil, false, asProblem(err)
	}
	ent := v.(*entry)
	return ent, e.cache.holds(key, ent), nil
}

// cached returns the entry of key that a fill, in its singleflight, takes instead of
// reading: one a hit would serve, while the edge hears of changes. A singleflight joins only
// the fills that overlap, so a miss that found no entry just before the last fill of the key
// stored one would otherwise fill again once that one has ended (groupcache looks again
// likewise). While NATS is lost a hit is answered as possibly stale, and a fill another edge
// asks for reads the core (answerPeerFill): a fill does not pass the entry off as fresh.
func (e *Edge) cached(key string) (*entry, bool) {
	if e.disconnected.Load() {
		return nil, false
	}
	return e.cache.current(key)
}

// fill is one fill of a document key, run under the key's singleflight (fills).
func (e *Edge) fill(rc context.Context, key, collection, id string, prior *entry) (any, error) {
	// A fill that raced one of this edge's writes may read the version before it; the
	// write's floor sends it back to the core, which has committed the write. So does a
	// change heard of while it reads (pending).
	pending := e.cache.beginFill(key)
	defer e.cache.endFill(key, pending)
	least := e.cache.floor(key, time.Now())
	if prior != nil {
		least = max(least, prior.version)
	}
	if ent, ok := e.cached(key); ok && ent.version >= least {
		return ent, nil
	}
	if owner, ok := e.remoteOwner(key); ok {
		epoch := e.cache.epoch.Load()
		ent, age, err := e.fillFromPeer(rc, owner, key)
		var p *problem.Problem
		if err == nil && ent.version >= least {
			var stored bool
			if least, stored = e.cache.fillDocument(key, ent, epoch, age, pending); stored {
				e.metrics.fills(fillPeer).Inc()
				return ent, nil
			}
			// Older than a change heard of meanwhile: the core has that change.
		}
		switch {
		case errors.As(err, &p):
			// The owner could not reach the core either.
			e.metrics.fillErrors.Inc()
			return nil, p
		case err == nil:
			e.metrics.peerFallback("older").Inc()
		case errors.Is(err, errOwnerBusy):
			e.metrics.peerFallback("busy").Inc()
		default:
			e.metrics.peerFallback("unreachable").Inc()
			e.log.DebugContext(rc, "owner edge did not answer a fill; asking the core", "owner", owner.ID, "err", err)
		}
	}
	ent, p := e.fillFromCore(rc, key, collection, id, least)
	if p != nil {
		return nil, p
	}
	return ent, nil
}

// fillFromCore reads a document from the core and caches it, once per key: this edge's own
// misses of keys it owns and the fills other edges ask of it share one core read. An answer
// older than least (the floor of a write, a version the edge has heard of) is read again.
func (e *Edge) fillFromCore(rc context.Context, key, collection, id string, least int64) (*entry, *problem.Problem) {
	return e.fillFromCoreFresh(rc, key, collection, id, least, math.MaxInt64)
}

// coreFill is the result of a core fill that its singleflight shares: the entry, the
// highest version heard of while it read, which the entry may be older than (then it was not
// stored), and the number of its core read (Edge.coreFillReads), 0 when the entry was found
// in the cache.
type coreFill struct {
	ent   *entry
	least int64
	read  uint64
}

// fillFromCoreFresh is fillFromCore of an entry at most maxAge seconds old (docCache.age):
// a cached one that is older is read again (a negative maxAge takes none cached). A core
// read begun after the caller asked is taken whatever maxAge; one it joined that had begun
// before may be older than what the caller needs, and is held to maxAge as the cache is.
//
// A caller that turns a result down asks again; by then the read it turned down has left the
// singleflight, so the callers that turned it down share the next one. The fourth time, it
// fills alone rather than hand over what it turned down.
func (e *Edge) fillFromCoreFresh(rc context.Context, key, collection, id string, least, maxAge int64) (*entry, *problem.Problem) {
	asked := e.coreFillReads.Load()
	fill := func() (any, error) {
		if ent, ok := e.cached(key); ok && ent.version >= least && int64(e.cache.age(ent)) <= maxAge {
			return coreFill{ent: ent}, nil
		}
		pending := e.cache.beginFill(key)
		defer e.cache.endFill(key, pending)
		e.metrics.fills(fillCore).Inc()
		epoch := e.cache.epoch.Load()
		read := e.coreFillReads.Add(1)
		resp, perr := e.read(rc, &wire.ReadRequest{Kind: wire.ReadGet, Collection: collection, ID: id})
		var ent *entry
		switch {
		case perr != nil && perr.Code == problem.NotFound:
			ent = answerEntry(0, fasthttp.StatusNotFound, nil, "")
		case perr != nil:
			e.metrics.fillErrors.Inc()
			return nil, perr
		case resp.Doc == nil || resp.Doc.Collection != collection || resp.Doc.ID != id:
			return nil, problem.New(problem.Internal, "the core answered for another document")
		case !validDoc(resp.Doc):
			e.metrics.fillErrors.Inc()
			e.log.ErrorContext(rc, "the core answered a document the edge cannot render", "collection", collection, "id", id)
			return nil, problem.New(problem.Internal, "the core answered a document that cannot be rendered")
		default:
			ent = documentEntry(resp.Doc)
		}
		heard, _ := e.cache.fillDocument(key, ent, epoch, 0, pending)
		return coreFill{ent: ent, least: heard, read: read}, nil
	}
	for attempt := 0; ; attempt++ {
		var v any
		var err error
		if attempt < 3 {
			v, err, _ = e.coreFills.Do(key, fill)
		} else {
			v, err = fill()
		}
		if err != nil {
			return nil, asProblem(err)
		}
		f := v.(coreFill)
		least = max(least, f.least)
		if f.ent.version >= least && (f.read > asked || int64(e.cache.age(f.ent)) <= maxAge) || attempt >= 3 {
			return f.ent, nil
		}
	}
}

// read asks the core. Problems the core answers with come back as they are; a core that does
// not answer is a 503 the client may retry, and so is a read beyond the edge's bound of reads
// in flight to the core (Config.MaxCoreReads), which is not sent: 503 overloaded. rc is the
// requestContext of the request that reads: a traced one's read is a span of its own, whose
// trace context goes to the core in the message's headers.
func (e *Edge) read(rc context.Context, req *wire.ReadRequest) (*wire.ReadResponse, *problem.Problem) {
	if !e.enterRead() {
		return nil, problemReadsShed
	}
	defer e.shield.reads.leave()
	data, err := req.AppendJSON(make([]byte, 0, 128))
	if err != nil {
		return nil, problem.New(problem.Internal, "could not encode the read")
	}
	out := &nats.Msg{Subject: wire.ReadSubject, Data: data}
	if e.tracer != nil && trace.SpanFromContext(rc).IsRecording() {
		var span trace.Span
		rc, span = e.tracer.Start(rc, "perch.read "+string(req.Kind), trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", wire.ReadSubject)))
		defer span.End()
		out.Header = telemetry.Inject(rc, nil)
	}
	ctx, cancel := context.WithTimeout(rc, e.cfg.ReadTimeout)
	defer cancel()
	msg, err := e.nc.RequestMsgWithContext(ctx, out)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return nil, problem.New(problem.Unavailable, "no core is available to answer")
		}
		e.log.WarnContext(rc, "read from core failed", "kind", req.Kind, "err", err)
		return nil, problem.New(problem.Unavailable, "the core did not answer in time")
	}
	var resp wire.ReadResponse
	if err := wire.DecodeReadResponse(msg.Data, &resp); err != nil {
		e.log.ErrorContext(rc, "malformed read response from core", "kind", req.Kind, "err", err)
		return nil, problem.New(problem.Internal, "malformed answer from the core")
	}
	if resp.Problem != nil {
		return nil, resp.Problem
	}
	return &resp, nil
}

// listDocuments serves GET /v1/collections/{c}/docs. Query parameters:
//
//	limit      1..1000, default 50
//	order      id (default), -id, updated_at, -updated_at
//	id_prefix  only documents whose id starts with it
//	cursor     next_cursor of the previous page
//
// Pages are cached under the collection's list generation, which any change to the collection
// moves on, so a cached page never outlives a change the edge has heard of.
func (e *Edge) listDocuments(ctx *fasthttp.RequestCtx, p params) {
	if !wire.ValidCollection(p.collection) {
		e.writeProblem(ctx, problem.New(problem.BadName, "collection is not a valid name"))
		return
	}
	rule, ok := e.allowRead(ctx, p)
	if !ok {
		return
	}
	collection := string(p.collection)
	args := ctx.QueryArgs()
	q := wire.ListQuery{Collection: collection, Order: wire.OrderID, Limit: wire.DefaultListLimit}
	if rule.Read == AccessOwner {
		// Each user lists only their own documents: the page, and its cache key, are theirs.
		q.Owner = p.user
	}
	if v := args.Peek("order"); len(v) > 0 {
		q.Order = wire.Order(v)
		if !validOrder(q.Order) {
			e.writeProblem(ctx, problem.New(problem.BadRequest, "order must be one of id, -id, updated_at, -updated_at"))
			return
		}
	}
	if v := args.Peek("limit"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 || n > wire.MaxListLimit {
			e.writeProblem(ctx, problem.Newf(problem.BadRequest, "limit must be an integer from 1 to %d", wire.MaxListLimit))
			return
		}
		q.Limit = n
	}
	if v := args.Peek("id_prefix"); len(v) > 0 {
		if len(v) > wire.MaxNameLen {
			e.writeProblem(ctx, problem.New(problem.BadRequest, "id_prefix too long"))
			return
		}
		q.IDPrefix = string(v)
	}
	if v := args.Peek("cursor"); len(v) > 0 {
		pos, err := decodeListCursor(string(v), q.Order, q.IDPrefix)
		if err != nil {
			e.writeProblem(ctx, problem.New(problem.BadCursor, err.Error()))
			return
		}
		q.After = pos
	}

	key := listKey(collection, e.cache.generation(collection), ctx.URI().QueryString())
	if q.Owner != "" {
		key += "\x00" + q.Owner
	}
	prior, ok := e.cache.get([]byte(key))
	if ok && e.cache.valid(prior) {
		e.metrics.hit()
		e.serveHit(ctx, prior, rule, p.collection)
		return
	}
	if !ok {
		prior = nil
	}
	e.metrics.miss()
	rc := e.requestContext(ctx)
	v, err, _ := e.fills.Do(key, func() (any, error) {
		if ent, ok := e.cached(key); ok {
			return ent, nil
		}
		e.metrics.fills(fillCore).Inc()
		epoch := e.cache.epoch.Load()
		resp, perr := e.read(rc, &wire.ReadRequest{Kind: wire.ReadList, Collection: collection, List: &q})
		if perr != nil {
			return nil, perr
		}
		if resp.Page == nil {
			return nil, problem.New(problem.Internal, "the core answered without a page")
		}
		var cursor string
		if items := resp.Page.Items; resp.Page.More && len(items) > 0 {
			cursor = encodeListCursor(&q, &items[len(items)-1])
		}
		buf := renderBuffers.Get().(*[]byte)
		rendered, err := renderList((*buf)[:0], resp.Page.Items, cursor)
		if err != nil {
			return nil, problem.New(problem.Internal, "could not encode the page")
		}
		ent := listEntry(bytes.Clone(rendered)) // the entry keeps it: no spare capacity
		if cap(rendered) <= maxRenderBuffer {
			*buf = rendered[:0]
			renderBuffers.Put(buf)
		}
		e.cache.fill(key, ent, epoch)
		return ent, nil
	})
	if err != nil {
		e.serveStaleOr(ctx, prior, asProblem(err), rule)
		return
	}
	ent := v.(*entry)
	cs := csMissNotStored
	if e.cache.holds(key, ent) {
		cs = csMiss
	}
	e.serveEntry(ctx, ent, cs, e.cacheControlOf(rule, p.collection))
}

// serveHit answers a hit: with the collection's Cache-Control, or marked stale (no-cache)
// while the edge has lost NATS and may be missing changes.
func (e *Edge) serveHit(ctx *fasthttp.RequestCtx, ent *entry, r Rule, collection []byte) {
	if e.disconnected.Load() {
		e.metrics.staleServed.Inc()
		e.serveEntry(ctx, ent, csHitDisconnected, staleCacheControl(r))
		return
	}
	e.serveEntry(ctx, ent, csHit, e.cacheControlOf(r, collection))
}

// serveStaleOr answers a miss whose fill failed: with prior, the entry the cache holds but no
// longer trusts (the edge may have missed its change events), when the failure is the core's
// or NATS's absence, or the edge shedding core reads (stale-if-error, RFC 5861: a possibly
// stale answer beats none, and Cache-Status says so); else with the problem.
func (e *Edge) serveStaleOr(ctx *fasthttp.RequestCtx, prior *entry, p *problem.Problem, r Rule) {
	if prior == nil || !e.cache.staleUsable(prior) || p.Code != problem.Unavailable && p.Code != problem.Overloaded {
		e.writeProblem(ctx, p)
		return
	}
	e.metrics.staleServed.Inc()
	e.serveEntry(ctx, prior, csStaleIfError, staleCacheControl(r))
}

// staleCacheControl is the Cache-Control of an answer that may be stale: no-cache, and
// private as well when the answer depends on who asks (a collection not read by everyone),
// as its fresh answers are.
func staleCacheControl(r Rule) []byte {
	if r.Read == AccessPublic {
		return valNoCache
	}
	return valPrivateNoCache
}

type changeJSON struct {
	Collection string          `json:"collection"`
	ID         string          `json:"id"`
	Version    int64           `json:"version"`
	Deleted    bool            `json:"deleted"`
	UpdatedAt  time.Time       `json:"updated_at"`
	Data       json.RawMessage `json:"data"`
}

type syncJSON struct {
	Changes    []changeJSON `json:"changes"`
	NextCursor string       `json:"next_cursor"`
	HasMore    bool         `json:"has_more"`
}

// sync serves GET /v1/sync?collections=a,b&cursor=C&limit=N: every document of the
// collections changed since the cursor, tombstones included (data null), each once in its
// latest state. Resuming with next_cursor never skips a change.
func (e *Edge) sync(ctx *fasthttp.RequestCtx, p params) {
	ctx.Response.Header.SetCanonical(hdrCacheStatus, csBypass)
	args := ctx.QueryArgs()
	raw := string(args.Peek("collections"))
	if raw == "" {
		e.writeProblem(ctx, problem.New(problem.BadRequest, "collections is required: a comma-separated list"))
		return
	}
	collections := strings.Split(raw, ",")
	if len(collections) > wire.MaxSyncCollections {
		e.writeProblem(ctx, problem.Newf(problem.BadRequest, "at most %d collections", wire.MaxSyncCollections))
		return
	}
	for _, c := range collections {
		if !wire.ValidCollection(c) {
			e.writeProblem(ctx, problem.Newf(problem.BadName, "collection %q is not a valid name", c))
			return
		}
	}
	q := wire.SyncQuery{Collections: collections, Limit: wire.DefaultSyncLimit}
	for _, c := range collections {
		r := e.rule([]byte(c))
		if needsUser(r.Read) && p.user == "" {
			e.refuseAuth(ctx, problemNeedsToken)
			return
		}
		if r.Read == AccessOwner {
			// Each user syncs only their own documents of the collection.
			q.Owned, q.Owner = append(q.Owned, c), p.user
		}
	}
	if v := args.Peek("limit"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || n < 1 || n > wire.MaxSyncLimit {
			e.writeProblem(ctx, problem.Newf(problem.BadRequest, "limit must be an integer from 1 to %d", wire.MaxSyncLimit))
			return
		}
		q.Limit = n
	}
	if v := args.Peek("cursor"); len(v) > 0 {
		after, err := decodeSyncCursor(string(v), collections, e.cfg.Partitions)
		if err != nil {
			e.writeProblem(ctx, problem.New(problem.BadCursor, err.Error()))
			return
		}
		q.After = after
	}
	resp, perr := e.read(e.requestContext(ctx), &wire.ReadRequest{Kind: wire.ReadSync, Sync: &q})
	if perr != nil {
		e.writeProblem(ctx, perr)
		return
	}
	if resp.Sync == nil {
		e.writeProblem(ctx, problem.New(problem.Internal, "the core answered without changes"))
		return
	}
	out := syncJSON{Changes: make([]changeJSON, 0, len(resp.Sync.Changes)), HasMore: resp.Sync.More,
		NextCursor: encodeSyncCursor(collections, resp.Sync.Next)}
	for _, ch := range resp.Sync.Changes {
		d := ch.Doc
		c := changeJSON{Collection: d.Collection, ID: d.ID, Version: d.Version, Deleted: d.Deleted,
			UpdatedAt: d.UpdatedAt.UTC(), Data: d.Data}
		if d.Deleted || len(c.Data) == 0 {
			c.Data = json.RawMessage("null")
		}
		out.Changes = append(out.Changes, c)
	}
	ctx.Response.Header.SetCanonical(hdrCacheControl, valNoStore)
	writeJSON(ctx, fasthttp.StatusOK, out)
}

type writeStatusJSON struct {
	WriteID    string           `json:"write_id"`
	Status     wire.WriteStatus `json:"status"`
	HTTPStatus int              `json:"http_status,omitempty"`
	Document   *docJSON         `json:"document,omitempty"`
	Problem    *problem.Problem `json:"problem,omitempty"`
}

// writeStatus serves GET /v1/writes/{id}: queued, applied (with the document) or rejected
// (with the problem).
func (e *Edge) writeStatus(ctx *fasthttp.RequestCtx, p params) {
	ctx.Response.Header.SetCanonical(hdrCacheStatus, csBypass)
	if !wire.ValidName(p.id) {
		e.writeProblem(ctx, problem.New(problem.BadName, "write id is not a valid name"))
		return
	}
	id := string(p.id)
	resp, perr := e.read(e.requestContext(ctx), &wire.ReadRequest{Kind: wire.ReadWrite, WriteID: id})
	if perr != nil {
		e.writeProblem(ctx, perr)
		return
	}
	if resp.Write == nil {
		e.writeProblem(ctx, problem.New(problem.Internal, "the core answered without a write"))
		return
	}
	if d := resp.Write.Doc; d != nil {
		// The applied document is shown only to whoever may read it.
		r := e.rule([]byte(d.Collection))
		if needsUser(r.Read) && p.user == "" {
			e.refuseAuth(ctx, problemNeedsToken)
			return
		}
		if r.Read == AccessOwner && d.Owner != p.user {
			e.writeProblem(ctx, problem.New(problem.NotFound, "no such write"))
			return
		}
	}
	out := resp.Write
	if out.Problem != nil && out.Collection != "" {
		// Shown to whoever may read the collection, and told as the write itself was answered
		// (answerOutcome): a write refused by the owner rule where documents are read by
		// owner too is one to a document that does not exist, to this client.
		r := e.rule([]byte(out.Collection))
		if needsUser(r.Read) && p.user == "" {
			e.refuseAuth(ctx, problemNeedsToken)
			return
		}
		if p := forbiddenOutcome(r, out.Problem); p != out.Problem {
			shown := *out
			shown.Problem, shown.Status = p, p.Status
			out = &shown
		}
	}
	ctx.Response.Header.SetCanonical(hdrCacheControl, valNoStore)
	writeJSON(ctx, fasthttp.StatusOK, writeStatusView(id, out))
}

func writeStatusView(id string, w *wire.Outcome) writeStatusJSON {
	out := writeStatusJSON{WriteID: id, Status: wire.WriteQueued}
	switch {
	case w.Status == 0:
	case w.Problem != nil:
		out.Status, out.HTTPStatus, out.Problem = wire.WriteRejected, w.Status, w.Problem
	default:
		out.Status, out.HTTPStatus = wire.WriteApplied, w.Status
		if w.Doc != nil {
			d := apiDoc(w.Doc)
			out.Document = &d
		}
	}
	return out
}

func asProblem(err error) *problem.Problem {
	var p *problem.Problem
	if errors.As(err, &p) {
		return p
	}
	return problem.New(problem.Internal, "internal error")
}
