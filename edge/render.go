package edge

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

// Header names and values, kept as bytes so that setting them costs no allocation.
var (
	hdrETag           = []byte("Etag") // fasthttp's canonical form of ETag
	hdrCacheStatus    = []byte("Cache-Status")
	hdrCacheControl   = []byte("Cache-Control")
	hdrLocation       = []byte("Location")
	hdrRetryAfter     = []byte("Retry-After")
	hdrAllow          = []byte("Allow")
	hdrReplayed       = []byte("Idempotent-Replayed")
	hdrVary           = []byte("Vary")
	valAcceptEncoding = []byte(fasthttp.HeaderAcceptEncoding)
	ctJSON            = []byte("application/json")
	ctProblem         = []byte(problem.ContentType)
	csHit             = []byte("perch; hit")
	csMiss            = []byte("perch; fwd=miss; stored")
	csMissNotStored   = []byte("perch; fwd=miss")
	csBypass          = []byte("perch; fwd=bypass")
	// csStaleIfError: the edge asked the core, which could not answer, and served what it
	// had (RFC 9211: forwarded because stale, the forward failed with 503).
	csStaleIfError = []byte("perch; fwd=stale; fwd-status=503")
	// csHitDisconnected: a hit while the edge has lost NATS, so cannot hear of changes.
	csHitDisconnected  = []byte("perch; hit; detail=disconnected")
	csHitStale         = []byte("perch; hit; detail=stale")
	valTrue            = []byte("true")
	valNoStore         = []byte("no-store")
	valPrivateNoCache  = []byte("private, no-cache")
	notFoundBody       = problem.New(problem.NotFound, "document not found").JSON()
	notFoundRouteBody  = problem.New(problem.RouteNotFound, "no such route").JSON()
	methodNotAllowBody = problem.New(problem.MethodNotAllowed, "method not allowed on this route").JSON()
)

// docJSON is a document as the API shows it (DESIGN §3).
type docJSON struct {
	ID         string          `json:"id"`
	Collection string          `json:"collection"`
	Version    int64           `json:"version"`
	CreatedAt  time.Time       `json:"created_at"`
	UpdatedAt  time.Time       `json:"updated_at"`
	Deleted    bool            `json:"deleted,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
}

func apiDoc(d *wire.Document) docJSON {
	data := d.Data
	if !d.Deleted && len(data) == 0 {
		data = json.RawMessage("{}")
	}
	return docJSON{ID: d.ID, Collection: d.Collection, Version: d.Version,
		CreatedAt: d.CreatedAt.UTC(), UpdatedAt: d.UpdatedAt.UTC(), Deleted: d.Deleted, Data: data}
}

// renderDocument appends the API form of d to dst: the bytes json.Marshal(apiDoc(d)) makes
// (FuzzRenderDocument holds it to them), without reflection, since every write and every
// cache fill renders one.
func renderDocument(dst []byte, d *wire.Document) []byte {
	b, err := appendAPIDoc(dst, d)
	if err != nil {
		// Data was validated as JSON on the way in; a store returning garbage is a bug
		// worth an error body rather than a broken one.
		return append(dst, problem.New(problem.Internal, "stored document is not valid JSON").JSON()...)
	}
	return b
}

// renderList appends the API form of a page of a list to dst, with cursor as its
// next_cursor (none when empty): the bytes json.Marshal makes of the page as a listJSON
// (FuzzRenderDocument holds it to them).
func renderList(dst []byte, items []wire.Document, cursor string) ([]byte, error) {
	if items == nil {
		items = []wire.Document{} // an empty page is [], never null
	}
	dst, err := wire.AppendArray(append(dst, `{"items":`...), items, appendAPIDoc)
	if err != nil {
		return nil, err
	}
	if cursor != "" {
		dst = append(dst, `,"next_cursor":`...)
		dst = wire.AppendString(dst, cursor)
	}
	return append(dst, '}'), nil
}

func appendAPIDoc(dst []byte, d *wire.Document) ([]byte, error) {
	dst = append(dst, `{"id":`...)
	dst = wire.AppendString(dst, d.ID)
	dst = append(dst, `,"collection":`...)
	dst = wire.AppendString(dst, d.Collection)
	dst = append(dst, `,"version":`...)
	dst = strconv.AppendInt(dst, d.Version, 10)
	dst = append(dst, `,"created_at":`...)
	dst, err := wire.AppendTime(dst, d.CreatedAt.UTC())
	if err != nil {
		return nil, err
	}
	dst = append(dst, `,"updated_at":`...)
	if dst, err = wire.AppendTime(dst, d.UpdatedAt.UTC()); err != nil {
		return nil, err
	}
	if d.Deleted {
		dst = append(dst, `,"deleted":true`...)
	}
	switch {
	case len(d.Data) > 0:
		dst = append(dst, `,"data":`...)
		if dst, err = wire.AppendRaw(dst, d.Data); err != nil {
			return nil, err
		}
	case !d.Deleted:
		dst = append(dst, `,"data":{}`...)
	}
	return append(dst, '}'), nil
}

// writeJSON answers status with v as JSON.
func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeProblem(ctx, problem.New(problem.Internal, "could not encode the response"))
		return
	}
	writeBody(ctx, status, b)
}

// responseBuffer takes the response's own body buffer, emptied, to render a body into and
// hand to writeBody: fasthttp keeps that buffer from request to request, so a body rendered
// there allocates nothing once it has grown.
func responseBuffer(ctx *fasthttp.RequestCtx) []byte {
	return ctx.Response.SwapBody(nil)[:0]
}

// writeBody answers status with the JSON body, which becomes the response's: fasthttp owns
// it from here (it may be what responseBuffer gave).
func writeBody(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.SetContentTypeBytes(ctJSON)
	ctx.Response.SwapBody(body)
}

// writeProblem answers with p as an RFC 9457 problem. Every error response of the edge goes
// through here, so that every one is logged exactly once: client mistakes at debug level,
// failures of the edge or what is behind it at warn. Load shed (overloaded) is logged at
// debug too: the shield warns of it at most every few seconds (Edge.shed).
func (e *Edge) writeProblem(ctx *fasthttp.RequestCtx, p *problem.Problem) {
	level := slog.LevelDebug
	if p.Status >= 500 && p.Code != problem.Overloaded {
		level = slog.LevelWarn
	}
	e.log.Log(ctx, level, "request failed",
		"method", string(ctx.Method()), "path", string(ctx.Path()),
		"status", p.Status, "code", p.Code, "detail", p.Detail)
	writeProblem(ctx, p)
}

func writeProblem(ctx *fasthttp.RequestCtx, p *problem.Problem) {
	ctx.Response.Header.Del("Etag")
	ctx.SetStatusCode(p.Status)
	ctx.SetContentTypeBytes(ctProblem)
	ctx.Response.Header.SetCanonical(hdrCacheControl, valNoStore)
	if p.Status == fasthttp.StatusServiceUnavailable || p.Status == fasthttp.StatusTooManyRequests {
		ctx.Response.Header.SetCanonical(hdrRetryAfter, []byte("1"))
	}
	ctx.SetBody(p.JSON())
}

// parseETag returns the version of a strong ETag of this API: `"N"`, or the ETag of a
// compressed form, `"N-gz"` or `"N-br"` (a client may send back whichever it was given).
func parseETag(b []byte) (int64, bool) {
	if len(b) < 3 || b[0] != '"' || b[len(b)-1] != '"' {
		return 0, false
	}
	num := b[1 : len(b)-1]
	for c := codingGzip; c < numCodings; c++ {
		if n, ok := bytes.CutSuffix(num, []byte(codingSuffixes[c])); ok {
			num = n
			break
		}
	}
	v, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil || v <= 0 {
		return 0, false
	}
	return v, true
}

// matchETag reports whether an If-None-Match value matches e: "*", or a list of entity
// tags one of which is the ETag of one of its forms (weak comparison, RFC 9110 §13.1.2): a
// client that holds the document in any coding holds the current version. It returns the
// coding whose ETag to answer the 304 with, so that the client knows which stored response it
// refreshes: c, the form this request would get, when its ETag is listed (or for "*"), else
// that of the first one listed. It allocates nothing.
func (e *entry) matchETag(header []byte, c coding) (coding, bool) {
	var bufs [numCodings][maxTagLen]byte
	var tags [numCodings][]byte
	for d := range numCodings {
		tags[d] = e.appendTag(bufs[d][:0], d)
	}
	other, found := codingIdentity, false
	for tag, rest := nextETag(header); len(tag) > 0; tag, rest = nextETag(rest) {
		if tag[0] == '*' || string(tag) == string(tags[c]) {
			return c, true
		}
		for d := codingIdentity; d < numCodings && !found; d++ {
			if len(tags[d]) > 0 && string(tag) == string(tags[d]) {
				other, found = d, true
			}
		}
	}
	return other, found
}

// nextETag returns the first entity tag of a list (without its weakness prefix W/), or "*",
// and the rest of the list; an empty tag at the end of the list.
func nextETag(h []byte) (tag, rest []byte) {
	for len(h) > 0 && (h[0] == ' ' || h[0] == ',' || h[0] == '\t') {
		h = h[1:]
	}
	switch {
	case len(h) == 0:
		return nil, nil
	case h[0] == '*':
		return h[:1], h[1:]
	case len(h) > 2 && h[0] == 'W' && h[1] == '/' && h[2] == '"':
		h = h[2:]
	}
	end := 0
	if h[0] == '"' {
		end = 1
		for end < len(h) && h[end] != '"' {
			end++
		}
		if end < len(h) {
			end++
		}
	} else {
		for end < len(h) && h[end] != ',' {
			end++
		}
	}
	return h[:end], h[end:]
}
