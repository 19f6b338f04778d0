package edge

import (
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
	hdrETag            = []byte("Etag") // fasthttp's canonical form of ETag
	hdrCacheStatus     = []byte("Cache-Status")
	hdrCacheControl    = []byte("Cache-Control")
	hdrLocation        = []byte("Location")
	hdrRetryAfter      = []byte("Retry-After")
	hdrAllow           = []byte("Allow")
	hdrReplayed        = []byte("Idempotent-Replayed")
	ctJSON             = []byte("application/json")
	ctProblem          = []byte(problem.ContentType)
	csHit              = []byte("perch; hit")
	csMiss             = []byte("perch; fwd=miss; stored")
	csMissNotStored    = []byte("perch; fwd=miss")
	csBypass           = []byte("perch; fwd=bypass")
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

// renderDocument appends the API form of d to dst.
func renderDocument(dst []byte, d *wire.Document) []byte {
	b, err := json.Marshal(apiDoc(d))
	if err != nil {
		// Data was validated as JSON on the way in; a store returning garbage is a bug
		// worth an error body rather than a broken one.
		return append(dst, problem.New(problem.Internal, "stored document is not valid JSON").JSON()...)
	}
	return append(dst, b...)
}

// writeJSON answers status with v as JSON.
func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeProblem(ctx, problem.New(problem.Internal, "could not encode the response"))
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentTypeBytes(ctJSON)
	ctx.SetBody(b)
}

// writeProblem answers with p as an RFC 9457 problem. Every error response of the edge goes
// through here, so that every one is logged exactly once: client mistakes at debug level,
// failures of the edge or what is behind it at warn.
func (e *Edge) writeProblem(ctx *fasthttp.RequestCtx, p *problem.Problem) {
	level := slog.LevelDebug
	if p.Status >= 500 {
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

// parseETag returns the version of a strong ETag `"N"`, or false.
func parseETag(b []byte) (int64, bool) {
	if len(b) < 3 || b[0] != '"' || b[len(b)-1] != '"' {
		return 0, false
	}
	v, err := strconv.ParseInt(string(b[1:len(b)-1]), 10, 64)
	if err != nil || v <= 0 {
		return 0, false
	}
	return v, true
}

// etagMatches reports whether an If-None-Match header value matches etag: "*", or a list of
// entity tags one of which equals it (weak comparison, RFC 9110 §13.1.2).
func etagMatches(header, etag []byte) bool {
	for len(header) > 0 {
		for len(header) > 0 && (header[0] == ' ' || header[0] == ',' || header[0] == '\t') {
			header = header[1:]
		}
		if len(header) == 0 {
			return false
		}
		if header[0] == '*' {
			return true
		}
		if len(header) > 2 && header[0] == 'W' && header[1] == '/' {
			header = header[2:]
		}
		end := 0
		if header[0] == '"' {
			end = 1
			for end < len(header) && header[end] != '"' {
				end++
			}
			if end < len(header) {
				end++
			}
		} else {
			for end < len(header) && header[end] != ',' {
				end++
			}
		}
		if string(header[:end]) == string(etag) {
			return true
		}
		header = header[end:]
	}
	return false
}
