package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/telemetry"
)

// tracedTestEdge is newTestEdge with a tracer that keeps its spans in memory.
func tracedTestEdge(t *testing.T, ratio float64, log io.Writer) (*Edge, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := telemetry.NewSDKProvider(sdktrace.NewSimpleSpanProcessor(exp), telemetry.TraceConfig{Service: "perch-edge"})
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	e := newTestEdgeOn(t, natstest.Connect(t, natstest.Start(t).URL()), func(c *Config) {
		c.TracerProvider, c.TraceSampleRatio = tp, ratio
		if log != nil {
			c.Logger = slog.New(slog.NewJSONHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	})
	return e, exp
}

// TestGetHitTracingOff: with a tracer but sampling off, a hit that carries no traceparent
// never reaches the tracer, and allocates nothing.
func TestGetHitTracingOff(t *testing.T) {
	e, exp := tracedTestEdge(t, 0, nil)
	cacheDocument(t, e, "doc", 1024)
	ctx := getRequest("/v1/collections/bench/docs/doc")
	e.serveHTTP(ctx)
	if ctx.Response.StatusCode() != 200 || string(ctx.Response.Header.Peek("Cache-Status")) != "perch; hit" {
		t.Fatalf("hit: %d %q", ctx.Response.StatusCode(), ctx.Response.Header.Peek("Cache-Status"))
	}
	if !raceEnabled {
		if allocs := testing.AllocsPerRun(200, func() {
			ctx.Response.Reset()
			e.serveHTTP(ctx)
		}); allocs != 0 {
			t.Fatalf("a cache hit allocates %.1f times with tracing on and sampling off", allocs)
		}
	}
	if n := len(exp.GetSpans()); n != 0 {
		t.Fatalf("%d spans of untraced requests", n)
	}
}

// TestGetHitTraced: a hit that carries a sampled traceparent is a server span, the child of
// the client's, named by its route; an unsampled one records nothing.
func TestGetHitTraced(t *testing.T) {
	e, exp := tracedTestEdge(t, 0, nil)
	cacheDocument(t, e, "doc", 1024)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx := getRequest("/v1/collections/bench/docs/doc")
	ctx.Request.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	e.serveHTTP(ctx)
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want 1", len(spans))
	}
	s := spans[0]
	if s.Name != "GET /v1/collections/{collection}/docs/{id}" || s.SpanContext.TraceID().String() != traceID || s.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Fatalf("span %q trace %s parent %s", s.Name, s.SpanContext.TraceID(), s.Parent.SpanID())
	}
	attrs := map[string]string{}
	for _, a := range s.Attributes {
		attrs[string(a.Key)] = a.Value.String()
	}
	if attrs["http.response.status_code"] != "200" || attrs["perch.cache_status"] != "perch; hit" || attrs["perch.request_id"] != string(ctx.Response.Header.Peek("X-Request-Id")) {
		t.Fatalf("attributes %v", attrs)
	}

	exp.Reset()
	ctx = getRequest("/v1/collections/bench/docs/doc")
	ctx.Request.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-00")
	e.serveHTTP(ctx)
	if ctx.Response.StatusCode() != 200 || len(exp.GetSpans()) != 0 {
		t.Fatalf("unsampled traceparent: %d, %d spans", ctx.Response.StatusCode(), len(exp.GetSpans()))
	}
}

// TestTraceSampleRatio: at ratio 1 every request is traced without a traceparent.
func TestTraceSampleRatio(t *testing.T) {
	e, exp := tracedTestEdge(t, 1, nil)
	cacheDocument(t, e, "doc", 100)
	for range 3 {
		e.serveHTTP(getRequest("/v1/collections/bench/docs/doc"))
	}
	if n := len(exp.GetSpans()); n != 3 {
		t.Fatalf("%d spans, want 3", n)
	}
}

// TestRequestID: a well-formed X-Request-Id is echoed, another is replaced, and the problem
// log line of a request carries its request and trace ids.
func TestRequestID(t *testing.T) {
	var log bytes.Buffer
	e, _ := tracedTestEdge(t, 0, &log)
	for _, tc := range []struct {
		sent string
		echo bool
	}{
		{"3f2c9a4e-1b7d-4c1a-9a0e-6f1d2b3c4d5e", true},
		{"01HZY3K7Q8VX2M4N6P8R0T2W4Y", true},
		{"bad id with spaces", false},
		{"x\"y", false},
		{strings.Repeat("a", maxRequestIDLen+1), false},
		{"", false},
	} {
		ctx := getRequest("/v1/collections/bad$name/docs/x")
		if tc.sent != "" {
			ctx.Request.Header.Set("X-Request-Id", tc.sent)
		}
		ctx.Request.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
		log.Reset()
		e.serveHTTP(ctx)
		got := string(ctx.Response.Header.Peek("X-Request-Id"))
		if tc.echo && got != tc.sent || !tc.echo && (got == tc.sent || len(got) != requestIDLen) {
			t.Errorf("sent %q, answered %q", tc.sent, got)
		}
		var line struct {
			Msg       string `json:"msg"`
			RequestID string `json:"request_id"`
			TraceID   string `json:"trace_id"`
		}
		if err := json.Unmarshal(bytes.TrimSpace(log.Bytes()), &line); err != nil {
			t.Fatalf("log %q: %v", log.String(), err)
		}
		if line.Msg != "request failed" || line.RequestID != got || line.TraceID != "4bf92f3577b34da6a3ce929d0e0e4736" {
			t.Errorf("log line %+v, want request_id %q", line, got)
		}
	}
}

func FuzzValidRequestID(f *testing.F) {
	f.Add([]byte("3f2c9a4e-1b7d-4c1a-9a0e-6f1d2b3c4d5e"))
	f.Add([]byte("a\r\nb"))
	f.Fuzz(func(t *testing.T, id []byte) {
		if !validRequestID(id) {
			return
		}
		if len(id) > maxRequestIDLen || bytes.ContainsAny(id, " \t\r\n\"\\,;") {
			t.Fatalf("took %q", id)
		}
	})
}

// BenchmarkGetHitObservability is the handler of a cache hit of a 1 KiB document (no
// network, as BenchmarkGetHit) with its request metrics off and no tracer, and with the
// metrics and a tracer whose sampling is off (no traceparent sent), in alternating rounds.
// Report metrics+tracing ns/op ÷ off ns/op.
func BenchmarkGetHitObservability(b *testing.B) {
	exp := tracetest.NewNoopExporter()
	tp := telemetry.NewSDKProvider(sdktrace.NewSimpleSpanProcessor(exp), telemetry.TraceConfig{})
	b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	nc := natstest.Connect(b, natstest.Start(b).URL())
	off := newTestEdgeOn(b, nc, func(c *Config) { c.DisableRequestMetrics = true })
	on := newTestEdgeOn(b, nc, func(c *Config) { c.TracerProvider = tp })
	for _, e := range []*Edge{off, on} {
		cacheDocument(b, e, "doc", 1024)
	}
	for round := range 3 {
		for _, v := range []struct {
			name string
			e    *Edge
		}{{"off", off}, {"metrics+tracing", on}} {
			b.Run(fmt.Sprintf("%s/round=%d", v.name, round), func(b *testing.B) {
				// A request as the server makes it: its start time has a monotonic reading.
				ctx := limitedRequest("/v1/collections/bench/docs/doc")
				b.ReportAllocs()
				for b.Loop() {
					ctx.Response.Reset()
					v.e.serveHTTP(ctx)
				}
			})
		}
	}
}
