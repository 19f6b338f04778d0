package core

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/perchhq/perch/internal/telemetry"
)

// metrics are the core's Prometheus metrics.
type metrics struct {
	batches        *prometheus.CounterVec
	commands       *prometheus.CounterVec
	batchSize      prometheus.Histogram
	groupBatches   prometheus.Histogram
	waiting        prometheus.Gauge
	applySeconds   prometheus.Histogram
	applyRetries   prometheus.Counter
	eventsOut      *prometheus.CounterVec
	reads          *prometheus.CounterVec
	readSeconds    *prometheus.HistogramVec
	consumerErrors prometheus.Counter
	auth           *prometheus.CounterVec
	// lag is the write stream's backlog of each partition, by state (consumerLagStates).
	lag          *prometheus.GaugeVec
	redeliveries prometheus.Counter

	collectors telemetry.Set
}

func newMetrics() *metrics {
	m := &metrics{
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "perch_core_batches_total", Help: "Write batches handled, by result: applied, replayed (every command had been applied before), duplicate (redelivered after it was applied), early (delivered before its predecessor; delivered again later), forced (applied after waiting EarlyLimit for a predecessor that never came), late (such a predecessor after all: applied by write id), refused (the database refused its data: applied write by write, a write it refuses alone answered not_storable), dropped (malformed).",
		}, []string{"result"}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "perch_core_commands_total", Help: "Write commands by outcome: applied, replayed, rejected.",
		}, []string{"outcome"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "perch_core_batch_commands", Help: "Commands per applied batch (one stream message).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "perch_core_batches_waiting", Help: "Write batches delivered before their producer's previous batch, waiting for it. One that stays means a stalled lane.",
		}),
		groupBatches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "perch_core_transaction_batches", Help: "Batches (stream messages) applied per transaction: group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9),
		}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "perch_core_apply_seconds", Help: "Time to apply a transaction's batches in the store, retries included.",
			Buckets: prometheus.ExponentialBuckets(.00025, 2, 14),
		}),
		applyRetries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "perch_core_apply_retries_total", Help: "Batches the store failed to apply and the core retried.",
		}),
		eventsOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "perch_core_change_events_total", Help: "Change events published, by source: commit, outbox (republished after a failure).",
		}, []string{"source"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "perch_core_reads_total", Help: "Reads answered for edges, by kind and result (ok, not_found, error).",
		}, []string{"kind", "result"}),
		readSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "perch_core_read_seconds", Help: "Time to answer a read, by kind.",
			Buckets: prometheus.ExponentialBuckets(.0001, 2, 14),
		}, []string{"kind"}),
		consumerErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "perch_core_consumer_errors_total", Help: "Errors fetching write batches from JetStream.",
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "perch_core_consumer_lag_batches", Help: "Write batches (stream messages) of a partition not yet applied, as its JetStream consumer reports them every second, by state: undelivered (waiting for a core to pull them), unacknowledged (delivered, being applied or waiting to be redelivered). Every core reports every partition: take the max.",
		}, []string{"partition", "state"}),
		redeliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "perch_core_redeliveries_total", Help: "Write batches JetStream delivered to this core again (a core died or was slow to acknowledge, or the batch came early and was delivered again later).",
		}),
		auth: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "perch_core_auth_requests_total", Help: "Account requests answered for edges, by op (signup, login, refresh, logout, keys, revocations, apikeys) and result (ok or the problem code, e.g. invalid_credentials).",
		}, []string{"op", "result"}),
	}
	m.collectors = telemetry.Set{m.batches, m.commands, m.batchSize, m.groupBatches, m.waiting, m.applySeconds, m.applyRetries,
		m.eventsOut, m.reads, m.readSeconds, m.consumerErrors, m.lag, m.redeliveries, m.auth}
	return m
}

// MetricsCollector is what a Store may also be: one with metrics of its own (its connection
// pool, its transactions' retries), which the core registers with its own while it runs.
type MetricsCollector interface {
	Collectors() []prometheus.Collector
}
