package edge

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync/atomic"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/perchhq/perch/internal/telemetry"
)

// Request ids, the tracing of requests, and the request attributes of log lines.
//
// Every request gets an id: the client's X-Request-Id when it is well-formed, else one the
// edge makes (a random prefix per edge process and a counter, so that it costs no
// allocation and no lock). The answer carries it in X-Request-Id. It is kept in the
// response's header only, where log lines find it: a request that logs nothing pays a header
// copy for it and nothing else.
//
// A request is traced when the edge has a tracer and it carries a traceparent, or when
// TraceSampleRatio picks it; any other request, the hit path's in particular, never reaches
// the tracer. A traced request's span is kept as a user value of its RequestCtx, for what it
// starts: a read from the core, a write (requestContext).

var (
	hdrRequestID   = []byte("X-Request-Id")
	hdrTraceparent = []byte("Traceparent")
)

const (
	// maxRequestIDLen bounds an X-Request-Id the edge takes from a client.
	maxRequestIDLen = 128
	// requestIDPrefix is the length of the random prefix of the ids an edge makes.
	requestIDPrefix = 8
	// requestIDLen is the length of an id an edge makes: the prefix and 16 hex digits.
	requestIDLen = requestIDPrefix + 16
)

// requestIDs makes request ids.
type requestIDs struct {
	prefix [requestIDPrefix]byte
	seq    atomic.Uint64
}

func newRequestIDs() *requestIDs {
	var r [requestIDPrefix / 2]byte
	_, _ = crand.Read(r[:]) // crypto/rand.Read never fails
	ids := &requestIDs{}
	hex.Encode(ids.prefix[:], r[:])
	return ids
}

// next writes a new id into buf.
func (r *requestIDs) next(buf *[requestIDLen]byte) {
	copy(buf[:], r.prefix[:])
	n := r.seq.Add(1)
	const digits = "0123456789abcdef"
	for i := requestIDLen - 1; i >= requestIDPrefix; i-- {
		buf[i] = digits[n&0xf]
		n >>= 4
	}
}

// setRequestID gives the request its id, in the answer's X-Request-Id. It allocates nothing.
func (e *Edge) setRequestID(ctx *fasthttp.RequestCtx) {
	if id := ctx.Request.Header.PeekCanonical(hdrRequestID); validRequestID(id) {
		ctx.Response.Header.SetCanonical(hdrRequestID, id)
		return
	}
	var buf [requestIDLen]byte
	e.ids.next(&buf)
	ctx.Response.Header.SetCanonical(hdrRequestID, buf[:])
}

// validRequestID reports whether a client's X-Request-Id may be taken: 1 to
// maxRequestIDLen characters of letters, digits and - _ . : / + = @ ~ (UUIDs, ULIDs, the
// ids of proxies and load balancers), nothing that could forge a log line or a header.
func validRequestID(id []byte) bool {
	if len(id) == 0 || len(id) > maxRequestIDLen {
		return false
	}
	for _, c := range id {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-', c == '_', c == '.', c == ':', c == '/', c == '+', c == '=', c == '@', c == '~':
		default:
			return false
		}
	}
	return true
}

// requestID is the id setRequestID gave the request.
func requestID(ctx *fasthttp.RequestCtx) []byte {
	return ctx.Response.Header.PeekCanonical(hdrRequestID)
}

// spanKey is the user value of a traced request's span.
type spanKey struct{}

// requestSpan is the span of a traced request, or nil.
func requestSpan(ctx *fasthttp.RequestCtx) trace.Span {
	s, _ := ctx.UserValue(spanKey{}).(trace.Span)
	return s
}

// traced reports whether the request is to be traced. Without a traceparent and with a
// ratio of 0 it reads one header and allocates nothing.
func (e *Edge) traced(ctx *fasthttp.RequestCtx) bool {
	if e.tracer == nil {
		return false
	}
	if len(ctx.Request.Header.PeekCanonical(hdrTraceparent)) > 0 {
		return true
	}
	r := e.cfg.TraceSampleRatio
	return r > 0 && rand.Float64() < r
}

// requestCarrier reads a request's trace context headers for the propagator.
type requestCarrier struct{ h *fasthttp.RequestHeader }

func (c requestCarrier) Get(key string) string { return string(c.h.Peek(key)) }
func (c requestCarrier) Set(string, string)    {}
func (c requestCarrier) Keys() []string        { return nil }

var _ propagation.TextMapCarrier = requestCarrier{}

// serveTraced serves a request in a server span, the child of the client's traceparent if
// any. A traceparent whose sampled flag is off makes a span that records nothing, and the
// request is served as an untraced one.
func (e *Edge) serveTraced(ctx *fasthttp.RequestCtx) {
	pctx := telemetry.Propagator.Extract(context.Background(), requestCarrier{&ctx.Request.Header})
	method := methods[methodIndex(ctx.Method())]
	_, span := e.tracer.Start(pctx, method, trace.WithSpanKind(trace.SpanKindServer))
	if !span.IsRecording() {
		e.serve(ctx)
		span.End()
		return
	}
	ctx.SetUserValue(spanKey{}, span)
	r := e.serve(ctx)
	status := ctx.Response.StatusCode()
	span.SetName(method + " " + r.pattern)
	span.SetAttributes(
		attribute.String("http.request.method", method),
		attribute.String("http.route", r.pattern),
		attribute.String("url.path", string(ctx.Path())),
		attribute.Int("http.response.status_code", status),
		attribute.String("perch.cache_status", string(ctx.Response.Header.PeekCanonical(hdrCacheStatus))),
		attribute.String("perch.request_id", string(requestID(ctx))),
		attribute.String("perch.edge", e.cfg.ID),
		attribute.String("perch.region", e.cfg.Region),
	)
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	span.End()
}

// requestInfo is what a request leaves in the context of the work it starts beyond its
// handler, for the log lines of that work.
type requestInfo struct {
	id, traceID string
}

type requestKey struct{}

// requestContext is the context of what a request starts beyond its handler (a read from
// the core, a write): it carries the request's span when it is traced, and its request and
// trace ids for log lines. It allocates, so the hit path never calls it.
func (e *Edge) requestContext(ctx *fasthttp.RequestCtx) context.Context {
	info := &requestInfo{id: string(requestID(ctx)), traceID: requestTraceID(ctx)}
	c := context.WithValue(context.Background(), requestKey{}, info)
	if s := requestSpan(ctx); s != nil {
		c = trace.ContextWithSpan(c, s)
	}
	return c
}

// requestTraceID is the trace id of a request: its span's when it is traced, else that of the
// traceparent it carries, if well-formed; or "".
func requestTraceID(ctx *fasthttp.RequestCtx) string {
	if s := requestSpan(ctx); s != nil {
		return s.SpanContext().TraceID().String()
	}
	tp := ctx.Request.Header.PeekCanonical(hdrTraceparent)
	// version "-" trace-id "-" parent-id "-" flags: 00-<32 hex>-<16 hex>-<2 hex>
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' {
		return ""
	}
	id, err := trace.TraceIDFromHex(string(tp[3:35]))
	if err != nil {
		return ""
	}
	return id.String()
}

// requestLogHandler adds a request's request_id and trace_id to the lines logged with its
// context: the *fasthttp.RequestCtx itself in a handler (e.log.DebugContext(ctx, ...)), or
// a requestContext beyond it. Under it, telemetry.LogHandler adds the trace of a context
// holding a span.
type requestLogHandler struct{ slog.Handler }

func newRequestLogHandler(h slog.Handler) requestLogHandler {
	if rh, ok := h.(requestLogHandler); ok {
		return rh
	}
	if _, ok := h.(telemetry.LogHandler); !ok {
		h = telemetry.LogHandler{Handler: h}
	}
	return requestLogHandler{h}
}

func (h requestLogHandler) Handle(ctx context.Context, r slog.Record) error {
	switch c := ctx.(type) {
	case *fasthttp.RequestCtx:
		if id := requestID(c); len(id) > 0 {
			r.AddAttrs(slog.String("request_id", string(id)))
		}
		if tid := requestTraceID(c); tid != "" {
			r.AddAttrs(slog.String("trace_id", tid))
		}
	default:
		if info, ok := ctx.Value(requestKey{}).(*requestInfo); ok {
			r.AddAttrs(slog.String("request_id", info.id))
			if info.traceID != "" && !trace.SpanContextFromContext(ctx).IsValid() {
				r.AddAttrs(slog.String("trace_id", info.traceID))
			}
		}
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return requestLogHandler{h.Handler.WithAttrs(as)}
}

func (h requestLogHandler) WithGroup(name string) slog.Handler {
	return requestLogHandler{h.Handler.WithGroup(name)}
}
