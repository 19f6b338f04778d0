package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Tracing exporters: TraceConfig.Exporter.
const (
	// ExporterNone makes no tracer: the default.
	ExporterNone = "none"
	// ExporterOTLP sends spans to an OpenTelemetry collector over OTLP/HTTP (protobuf).
	ExporterOTLP = "otlp"
)

// TraceConfig is how a process traces.
type TraceConfig struct {
	// Exporter is ExporterNone (or "") or ExporterOTLP.
	Exporter string
	// Endpoint is the OTLP/HTTP endpoint: a URL such as http://collector:4318 (spans go to
	// its /v1/traces unless the URL has another path). Default: the exporter's own, from
	// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else
	// https://localhost:4318.
	Endpoint string
	// Service is the service.name of the spans: perch-edge, perch-core, perch-dev.
	Service string
	// Attributes are added to every span's resource, e.g. the edge's region.
	Attributes []attribute.KeyValue
}

// NewTracerProvider returns the tracer provider cfg asks for, and the function that flushes
// and stops it (call it when the process ends); nil and a no-op for ExporterNone.
//
// The provider samples as each span's parent says (W3C traceparent's sampled flag) and
// every span without one: the components start a trace of their own only when they decided
// to sample it (the edge's Config.TraceSampleRatio), so that a request nobody traces costs
// nothing. Spans are exported in batches off the request path; a collector that is down
// loses spans, never requests.
func NewTracerProvider(ctx context.Context, cfg TraceConfig) (trace.TracerProvider, func(context.Context) error, error) {
	switch cfg.Exporter {
	case "", ExporterNone:
		return nil, func(context.Context) error { return nil }, nil
	case ExporterOTLP:
	default:
		return nil, nil, fmt.Errorf("trace exporter %q: want %s or %s", cfg.Exporter, ExporterOTLP, ExporterNone)
	}
	var opts []otlptracehttp.Option
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, nil, fmt.Errorf("trace endpoint %q: want a URL such as http://collector:4318", Redact(cfg.Endpoint))
		}
		opts = append(opts, otlptracehttp.WithEndpointURL(endpointURL(u)))
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("trace exporter: %w", err)
	}
	tp := NewSDKProvider(sdktrace.NewBatchSpanProcessor(exp), cfg)
	return tp, tp.Shutdown, nil
}

// endpointURL is u with the OTLP traces path when it names none.
func endpointURL(u *url.URL) string {
	v := *u
	if v.Path == "" || v.Path == "/" {
		v.Path = "/v1/traces"
	}
	return v.String()
}

// NewSDKProvider is the provider of NewTracerProvider on a span processor of the caller's:
// tests pass sdktrace.NewSimpleSpanProcessor of a tracetest.InMemoryExporter.
func NewSDKProvider(sp sdktrace.SpanProcessor, cfg TraceConfig) *sdktrace.TracerProvider {
	service := cfg.Service
	if service == "" {
		service = "perch"
	}
	attrs := append([]attribute.KeyValue{attribute.String("service.name", service)}, cfg.Attributes...)
	return sdktrace.NewTracerProvider(
		sdktrace.WithSpanProcessor(sp),
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())),
	)
}

// Propagator is how Perch carries trace context between processes: W3C Trace Context
// (traceparent, tracestate), from clients and in NATS message headers.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Inject writes the trace context of ctx's span into h (a NATS message's headers, whose type
// is a map of the same shape as http.Header), when that span is sampled. It returns h, made
// when it was nil and there is something to write.
func Inject(ctx context.Context, h map[string][]string) map[string][]string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() || !sc.IsSampled() {
		return h
	}
	if h == nil {
		h = map[string][]string{}
	}
	Propagator.Inject(ctx, propagation.HeaderCarrier(http.Header(h)))
	return h
}

// Extract returns the remote span context carried in h (see Inject), invalid when h carries
// none.
func Extract(h map[string][]string) trace.SpanContext {
	if len(h) == 0 {
		return trace.SpanContext{}
	}
	ctx := Propagator.Extract(context.Background(), propagation.HeaderCarrier(http.Header(h)))
	return trace.SpanContextFromContext(ctx)
}

// StartLinked starts a span for work done on behalf of several traced items at once (a
// write batch carries many requests, a transaction many batches): it is the child of the
// first sampled one of parents and links to the other sampled ones. It returns ctx and a
// nil span when none is sampled: the work is then not traced.
func StartLinked(ctx context.Context, tracer trace.Tracer, name string, kind trace.SpanKind, parents []trace.SpanContext, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	first := -1
	var links []trace.Link
	for i, sc := range parents {
		if !sc.IsValid() || !sc.IsSampled() {
			continue
		}
		if first < 0 {
			first = i
			continue
		}
		if sc.TraceID() == parents[first].TraceID() && sc.SpanID() == parents[first].SpanID() {
			continue
		}
		links = append(links, trace.Link{SpanContext: sc})
	}
	if first < 0 {
		return ctx, nil
	}
	pctx := trace.ContextWithRemoteSpanContext(ctx, parents[first])
	return tracer.Start(pctx, name, trace.WithSpanKind(kind), trace.WithLinks(links...), trace.WithAttributes(attrs...))
}

// LogHandler wraps a slog.Handler so that a line logged with a context that holds a valid
// span (log.InfoContext(ctx, ...)) carries its trace_id and span_id, which tie the line to
// its trace.
type LogHandler struct{ slog.Handler }

// Handle adds the trace attributes of ctx to r.
func (h LogHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h LogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return LogHandler{h.Handler.WithAttrs(as)}
}

// WithGroup implements slog.Handler.
func (h LogHandler) WithGroup(name string) slog.Handler { return LogHandler{h.Handler.WithGroup(name)} }

// WithTraceIDs returns a logger whose lines carry the trace of their context (LogHandler).
func WithTraceIDs(l *slog.Logger) *slog.Logger {
	if _, ok := l.Handler().(LogHandler); ok {
		return l
	}
	return slog.New(LogHandler{l.Handler()})
}

// Redact returns a URL or DSN with its password replaced by "xxxxx", so that it can be logged
// or printed: postgres://user:secret@host/db becomes postgres://user:xxxxx@host/db, and so
// do nats://, tls:// and the like, and a password= parameter of a query or of a
// key=value DSN. A string that is not a URL is returned with its password= values redacted.
func Redact(s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" && u.Host != "" {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		if q := u.Query(); q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	// key=value DSN (host=... password=...): redact the value after password=.
	fields := strings.Fields(s)
	changed := false
	for i, f := range fields {
		if k, _, ok := strings.Cut(f, "="); ok && strings.EqualFold(k, "password") {
			fields[i], changed = k+"=xxxxx", true
		}
	}
	if !changed {
		return s
	}
	return strings.Join(fields, " ")
}

// RedactList is Redact of each of a comma-separated list of URLs (NATS servers).
func RedactList(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = Redact(strings.TrimSpace(p))
	}
	return strings.Join(parts, ",")
}

// Shutdown calls stop with a bounded time, for the end of a process.
func Shutdown(stop func(context.Context) error, within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	return stop(ctx)
}
