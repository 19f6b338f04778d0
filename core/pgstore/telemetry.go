package pgstore

import (
	"context"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/perchhq/perch/core"
)

// WithTracerProvider makes each SQL statement and batch of statements a span (OpenTelemetry)
// of the work that runs it, when that work is traced: a context holding a recording span, as
// the core's transaction of a traced write batch is. Work that is not traced costs a context
// lookup per statement. Spans name the statement's SQL (db.query.text), never its arguments,
// which hold the documents' data.
func WithTracerProvider(tp trace.TracerProvider) Option { return func(o *options) { o.tp = tp } }

// queryTracer is the tracer of the pool's connections: the test's, else the SQL spans', else
// none.
func (o *options) queryTracer() pgx.QueryTracer {
	switch {
	case o.tracer != nil:
		return o.tracer
	case o.tp != nil:
		return &sqlTracer{t: o.tp.Tracer("github.com/perchhq/perch/core/pgstore")}
	}
	return nil
}

// sqlTracer is a pgx.QueryTracer and pgx.BatchTracer that makes spans of statements run for
// traced work.
type sqlTracer struct{ t trace.Tracer }

var (
	_ pgx.QueryTracer = (*sqlTracer)(nil)
	_ pgx.BatchTracer = (*sqlTracer)(nil)
)

// sqlSpanKey marks the context of a statement the tracer made a span for, so that the end
// of one it did not trace ends nothing.
type sqlSpanKey struct{}

var dbSystem = attribute.String("db.system.name", "postgresql")

func (t *sqlTracer) start(ctx context.Context, name string, attrs ...attribute.KeyValue) context.Context {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx
	}
	ctx, span := t.t.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(append(attrs, dbSystem)...))
	return context.WithValue(ctx, sqlSpanKey{}, span)
}

func end(ctx context.Context, err error) {
	span, ok := ctx.Value(sqlSpanKey{}).(trace.Span)
	if !ok {
		return
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, "")
	}
	span.End()
}

func (t *sqlTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	return t.start(ctx, operation(data.SQL), attribute.String("db.query.text", data.SQL))
}

func (t *sqlTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	end(ctx, data.Err)
}

func (t *sqlTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchStartData) context.Context {
	n := 0
	if data.Batch != nil {
		n = data.Batch.Len()
	}
	return t.start(ctx, "BATCH", attribute.Int("db.operation.batch.size", n))
}

// TraceBatchQuery records each statement of a batch as an event of the batch's span: they
// travel in one round trip.
func (t *sqlTracer) TraceBatchQuery(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchQueryData) {
	span, ok := ctx.Value(sqlSpanKey{}).(trace.Span)
	if !ok {
		return
	}
	attrs := []attribute.KeyValue{attribute.String("db.query.text", data.SQL)}
	if data.Err != nil {
		attrs = append(attrs, attribute.String("error.message", data.Err.Error()))
	}
	span.AddEvent(operation(data.SQL), trace.WithAttributes(attrs...))
}

func (t *sqlTracer) TraceBatchEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceBatchEndData) {
	end(ctx, data.Err)
}

// operation is the first word of a statement, upper case (SELECT, INSERT, BEGIN...), for the
// span's name.
func operation(sql string) string {
	sql = strings.TrimSpace(sql)
	if i := strings.IndexAny(sql, " \t\r\n("); i > 0 {
		sql = sql[:i]
	}
	if len(sql) > 32 {
		sql = sql[:32]
	}
	return strings.ToUpper(sql)
}

// Collectors implements core.MetricsCollector: the connection pool's use and the store's
// transaction retries, read from the pool and the store when scraped.
func (s *Store) Collectors() []prometheus.Collector { return []prometheus.Collector{storeCollector{s}} }

var _ core.MetricsCollector = (*Store)(nil)

var (
	descPoolConns = prometheus.NewDesc("perch_db_pool_connections",
		"Connections of the store's pool, by state: in_use (acquired by a transaction or statement), idle, constructing.", []string{"pool", "state"}, nil)
	descPoolMax = prometheus.NewDesc("perch_db_pool_max_connections",
		"The most connections the store's pool opens.", []string{"pool"}, nil)
	descPoolAcquires = prometheus.NewDesc("perch_db_pool_acquires_total",
		"Connections acquired from the store's pool.", []string{"pool"}, nil)
	descPoolWaits = prometheus.NewDesc("perch_db_pool_waits_total",
		"Acquisitions that found no idle connection and waited for one: a pool too small for the load.", []string{"pool"}, nil)
	descPoolWaitSeconds = prometheus.NewDesc("perch_db_pool_wait_seconds_total",
		"Time spent waiting for a connection of the store's pool.", []string{"pool"}, nil)
	descTxRetries = prometheus.NewDesc("perch_db_transaction_retries_total",
		"Transaction attempts that failed with a retryable error (serialization conflict, ambiguous commit, lost connection) and were tried again.", nil, nil)
)

type storeCollector struct{ s *Store }

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPoolConns, descPoolMax, descPoolAcquires, descPoolWaits, descPoolWaitSeconds, descTxRetries} {
		ch <- d
	}
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.pool.Stat()
	const pool = "primary"
	ch <- prometheus.MustNewConstMetric(descPoolConns, prometheus.GaugeValue, float64(st.AcquiredConns()), pool, "in_use")
	ch <- prometheus.MustNewConstMetric(descPoolConns, prometheus.GaugeValue, float64(st.IdleConns()), pool, "idle")
	ch <- prometheus.MustNewConstMetric(descPoolConns, prometheus.GaugeValue, float64(st.ConstructingConns()), pool, "constructing")
	ch <- prometheus.MustNewConstMetric(descPoolMax, prometheus.GaugeValue, float64(st.MaxConns()), pool)
	ch <- prometheus.MustNewConstMetric(descPoolAcquires, prometheus.CounterValue, float64(st.AcquireCount()), pool)
	ch <- prometheus.MustNewConstMetric(descPoolWaits, prometheus.CounterValue, float64(st.EmptyAcquireCount()), pool)
	ch <- prometheus.MustNewConstMetric(descPoolWaitSeconds, prometheus.CounterValue, st.EmptyAcquireWaitTime().Seconds(), pool)
	ch <- prometheus.MustNewConstMetric(descTxRetries, prometheus.CounterValue, float64(c.s.retries.Load()))
}
