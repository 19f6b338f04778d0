package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/perchhq/perch/internal/telemetry"
)

// tracing are the flags of OpenTelemetry tracing, off by default: perch edge and perch dev
// take all three, perch core the exporter and its endpoint (it follows the sampling of the
// edges, whose decision each message carries).
type tracing struct {
	exporter *string
	endpoint *string
	sample   *ratioFlag
}

func traceFlags(fs *flag.FlagSet, sampling bool) *tracing {
	t := &tracing{
		exporter: fs.String("trace-exporter", telemetry.ExporterNone, "where spans go: otlp (OpenTelemetry collector, OTLP over HTTP) or none"),
		endpoint: fs.String("trace-endpoint", "", "OTLP/HTTP endpoint of --trace-exporter otlp, e.g. http://otel-collector:4318 (default: OTEL_EXPORTER_OTLP_ENDPOINT, else https://localhost:4318)"),
	}
	if sampling {
		t.sample = new(ratioFlag)
		fs.Var(t.sample, "trace-sample", "share of requests without a W3C traceparent to trace, 0 to 1 (requests with one follow its sampled flag)")
	}
	return t
}

// ratio is --trace-sample, 0 without it.
func (t *tracing) ratio() float64 {
	if t.sample == nil {
		return 0
	}
	return float64(*t.sample)
}

// start makes the tracer provider the flags ask for, nil for none, and returns the function
// that flushes its spans when the process ends.
func (t *tracing) start(ctx context.Context, service string, log *slog.Logger, attrs ...attribute.KeyValue) (trace.TracerProvider, func(), error) {
	tp, stop, err := telemetry.NewTracerProvider(ctx, telemetry.TraceConfig{
		Exporter: *t.exporter, Endpoint: *t.endpoint, Service: service, Attributes: attrs,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errUsage, err)
	}
	if tp == nil {
		return nil, func() {}, nil
	}
	log.Info("tracing", "exporter", *t.exporter, "endpoint", telemetry.Redact(*t.endpoint), "sample", t.ratio())
	return tp, func() {
		if err := telemetry.Shutdown(stop, 5*time.Second); err != nil {
			log.Warn("flushing spans", "err", err)
		}
	}, nil
}

// ratioFlag is a number from 0 to 1.
type ratioFlag float64

func (r *ratioFlag) String() string { return strconv.FormatFloat(float64(*r), 'g', -1, 64) }

func (r *ratioFlag) Set(v string) error {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f >= 0 && f <= 1) {
		return fmt.Errorf("%q is not a ratio from 0 to 1", v)
	}
	*r = ratioFlag(f)
	return nil
}
