package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://perch:s3cret@db:5432/perch?sslmode=disable": "postgres://perch:xxxxx@db:5432/perch?sslmode=disable",
		"postgres://db/perch?password=s3cret&sslmode=require":   "postgres://db/perch?password=xxxxx&sslmode=require",
		"nats://u:s3cret@nats-0:4222":                           "nats://u:xxxxx@nats-0:4222",
		"nats://nats-0:4222":                                    "nats://nats-0:4222",
		"host=db user=perch password=s3cret dbname=perch":       "host=db user=perch password=xxxxx dbname=perch",
		"sqlite:/var/lib/perch/perch.db":                        "sqlite:/var/lib/perch/perch.db",
		"":                                                      "",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
	if got := RedactList("nats://a:s3cret@n1:4222, nats://n2:4222"); strings.Contains(got, "s3cret") || !strings.Contains(got, "n2:4222") {
		t.Errorf("RedactList: %q", got)
	}
}

// TestPropagation: a sampled span's context goes through NATS headers and comes back the
// same; an unsampled one is not written.
func TestPropagation(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := NewSDKProvider(sdktrace.NewSimpleSpanProcessor(exp), TraceConfig{})
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("t").Start(context.Background(), "s")
	h := Inject(ctx, nil)
	if got := Extract(h); got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() || !got.IsSampled() || !got.IsRemote() {
		t.Fatalf("extracted %+v from %v", got, h)
	}
	span.End()
	unsampled := trace.ContextWithSpanContext(context.Background(), span.SpanContext().WithTraceFlags(0))
	if h := Inject(unsampled, nil); h != nil {
		t.Fatalf("an unsampled span wrote %v", h)
	}
	if Extract(nil).IsValid() || Extract(map[string][]string{"Traceparent": {"garbage"}}).IsValid() {
		t.Fatal("extracted a span context from nothing")
	}

	// StartLinked: the child of the first sampled parent, linked to the others.
	a, b := span.SpanContext(), trace.SpanContext{}
	_, other := tp.Tracer("t").Start(context.Background(), "o")
	other.End()
	_, s := StartLinked(context.Background(), tp.Tracer("t"), "batch", trace.SpanKindProducer, []trace.SpanContext{b, a, other.SpanContext()})
	s.End()
	got := exp.GetSpans()[2]
	if got.Parent.SpanID() != a.SpanID() || len(got.Links) != 1 || got.Links[0].SpanContext.SpanID() != other.SpanContext().SpanID() {
		t.Fatalf("parent %s, links %v", got.Parent.SpanID(), got.Links)
	}
	if _, s := StartLinked(context.Background(), tp.Tracer("t"), "none", trace.SpanKindProducer, []trace.SpanContext{b}); s != nil {
		t.Fatal("a span without a sampled parent")
	}
}

func TestLogHandler(t *testing.T) {
	var buf bytes.Buffer
	log := WithTraceIDs(slog.New(slog.NewJSONHandler(&buf, nil))).With("component", "x")
	tp := NewSDKProvider(sdktrace.NewSimpleSpanProcessor(tracetest.NewInMemoryExporter()), TraceConfig{})
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("t").Start(context.Background(), "s")
	defer span.End()
	log.InfoContext(ctx, "traced")
	var line map[string]string
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatal(err)
	}
	if line["trace_id"] != span.SpanContext().TraceID().String() || line["component"] != "x" {
		t.Fatalf("line %v", line)
	}
	buf.Reset()
	log.Info("untraced")
	if strings.Contains(buf.String(), "trace_id") {
		t.Fatalf("an untraced line has a trace_id: %s", buf.String())
	}
}
