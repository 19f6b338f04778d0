package core

import (
	"context"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/perchhq/perch/internal/telemetry"
	"github.com/perchhq/perch/internal/wire"
)

// traceGroup starts the span of applying a group of batches in one transaction, when any of
// them was published by a traced request: the child of the first such batch's publish span,
// with links to the others (a transaction carries many batches as a batch carries many
// requests). The store's spans go below it through the returned context, and the outcomes go
// back to the edges with its trace context. It returns ctx and nil when nothing is traced.
func (c *Core) traceGroup(ctx context.Context, p int, group []delivered, bs []*wire.Batch) (context.Context, trace.Span) {
	if c.tracer == nil {
		return ctx, nil
	}
	var parents []trace.SpanContext
	commands := 0
	for i := range group {
		if group[i].trace.IsSampled() {
			parents = append(parents, group[i].trace)
		}
		commands += len(bs[i].Commands)
	}
	if len(parents) == 0 {
		return ctx, nil
	}
	return telemetry.StartLinked(ctx, c.tracer, "perch.core.apply", trace.SpanKindConsumer, parents,
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.destination.name", wire.WriteSubject(p)),
		attribute.Int("perch.partition", p),
		attribute.Int("perch.transaction.batches", len(bs)),
		attribute.Int("perch.transaction.commands", commands))
}

// traceRead starts the span of answering a read whose message carries a sampled trace
// context; else it returns ctx and nil.
func (c *Core) traceRead(ctx context.Context, m *nats.Msg, req *wire.ReadRequest) (context.Context, trace.Span) {
	if c.tracer == nil {
		return ctx, nil
	}
	sc := telemetry.Extract(m.Header)
	if !sc.IsSampled() {
		return ctx, nil
	}
	return c.tracer.Start(trace.ContextWithRemoteSpanContext(ctx, sc), "perch.core.read "+string(req.Kind),
		trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.destination.name", wire.ReadSubject),
			attribute.String("perch.collection", req.Collection)))
}

// recordLag sets the backlog gauges of partition p from its consumer's info.
func (c *Core) recordLag(p int, info *jetstream.ConsumerInfo) {
	part := strconv.Itoa(p)
	c.m.lag.WithLabelValues(part, "undelivered").Set(float64(info.NumPending))
	c.m.lag.WithLabelValues(part, "unacknowledged").Set(float64(info.NumAckPending))
}
