package ratelimit

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/perchhq/perch/internal/telemetry"
)

// metrics are a limiter's Prometheus metrics. The counters of the hot path are resolved
// once per policy, so counting a decision costs no allocation.
type metrics struct {
	decisions  *prometheus.CounterVec
	evictions  prometheus.Counter
	syncErrors struct{ publish, decode prometheus.Counter }
	sent       struct{ messages, bytes prometheus.Counter }
	received   struct{ messages, bytes prometheus.Counter }
	collectors telemetry.Set
}

func newMetrics(l *Limiter) *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "perch_ratelimit_decisions_total",
			Help: "Requests counted by each rate limit policy, by result: allowed (the policy had a token for the request) or limited (it had none, and the request was refused).",
		}, []string{"policy", "result"}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "perch_ratelimit_evictions_total",
			Help: "Keys forgotten before they were idle because the limiter tracked MaxKeys keys.",
		}),
	}
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "perch_ratelimit_sync_errors_total",
		Help: "Usage messages not exchanged with the other edges, by kind: publish (could not be sent) or decode (received malformed, dropped).",
	}, []string{"kind"})
	m.syncErrors.publish = errs.WithLabelValues("publish")
	m.syncErrors.decode = errs.WithLabelValues("decode")
	msgs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "perch_ratelimit_sync_messages_total",
		Help: "Usage messages exchanged with the other edges, by direction: sent or received.",
	}, []string{"direction"})
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "perch_ratelimit_sync_bytes_total",
		Help: "Bytes of usage messages exchanged with the other edges, by direction: sent or received.",
	}, []string{"direction"})
	m.sent.messages, m.sent.bytes = msgs.WithLabelValues("sent"), bytes.WithLabelValues("sent")
	m.received.messages, m.received.bytes = msgs.WithLabelValues("received"), bytes.WithLabelValues("received")
	keys := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "perch_ratelimit_keys",
		Help: "Keys tracked, summed over the rate limit policies: those seen here and those the other edges reported.",
	}, func() float64 {
		n := int64(0)
		for _, st := range l.set.Load().list {
			n += st.keys.Load()
		}
		return float64(n)
	})
	peers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "perch_ratelimit_peers",
		Help: "Other edges' limiters heard from within their timeout.",
	}, func() float64 { return float64(l.live.Load()) })
	m.collectors = telemetry.Set{m.decisions, m.evictions, errs, msgs, bytes, keys, peers}
	return m
}

func (m *metrics) decisionCounters(policy string) (allowed, limited counter) {
	return m.decisions.WithLabelValues(policy, "allowed"), m.decisions.WithLabelValues(policy, "limited")
}

// retire removes the series of the policies in old whose names are not in next.
func (m *metrics) retire(old, next *policySet) {
	names := make(map[string]bool, len(next.list))
	for _, st := range next.list {
		names[st.name] = true
	}
	for _, st := range old.list {
		if !names[st.name] {
			m.decisions.DeleteLabelValues(st.name, "allowed")
			m.decisions.DeleteLabelValues(st.name, "limited")
		}
	}
}

// Collectors returns the limiter's metrics, for the caller to register (and unregister
// when the limiter stops): perch_ratelimit_decisions_total{policy,result},
// perch_ratelimit_keys, perch_ratelimit_peers, perch_ratelimit_evictions_total,
// perch_ratelimit_sync_errors_total{kind}, perch_ratelimit_sync_messages_total{direction}
// and perch_ratelimit_sync_bytes_total{direction}.
func (l *Limiter) Collectors() telemetry.Set { return l.metrics.collectors }
