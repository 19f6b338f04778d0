package sqlitestore

import (
	"database/sql"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/perchhq/perch/core"
)

// Collectors implements core.MetricsCollector: the use of the store's two connection pools,
// pool="writer" (its one connection, which every write transaction takes in turn) and
// pool="reader", read from database/sql when scraped. The metric names are those of
// core/pgstore's pool.
func (s *Store) Collectors() []prometheus.Collector { return []prometheus.Collector{poolCollector{s}} }

var _ core.MetricsCollector = (*Store)(nil)

var (
	descPoolConns = prometheus.NewDesc("perch_db_pool_connections",
		"Connections of the store's pool, by state: in_use (acquired by a transaction or statement), idle, constructing.", []string{"pool", "state"}, nil)
	descPoolMax = prometheus.NewDesc("perch_db_pool_max_connections",
		"The most connections the store's pool opens.", []string{"pool"}, nil)
	descPoolWaits = prometheus.NewDesc("perch_db_pool_waits_total",
		"Acquisitions that found no idle connection and waited for one: a pool too small for the load.", []string{"pool"}, nil)
	descPoolWaitSeconds = prometheus.NewDesc("perch_db_pool_wait_seconds_total",
		"Time spent waiting for a connection of the store's pool.", []string{"pool"}, nil)
)

type poolCollector struct{ s *Store }

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPoolConns, descPoolMax, descPoolWaits, descPoolWaitSeconds} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range []struct {
		name string
		db   *sql.DB
	}{{"writer", c.s.w}, {"reader", c.s.r}} {
		st := p.db.Stats()
		ch <- prometheus.MustNewConstMetric(descPoolConns, prometheus.GaugeValue, float64(st.InUse), p.name, "in_use")
		ch <- prometheus.MustNewConstMetric(descPoolConns, prometheus.GaugeValue, float64(st.Idle), p.name, "idle")
		ch <- prometheus.MustNewConstMetric(descPoolMax, prometheus.GaugeValue, float64(st.MaxOpenConnections), p.name)
		ch <- prometheus.MustNewConstMetric(descPoolWaits, prometheus.CounterValue, float64(st.WaitCount), p.name)
		ch <- prometheus.MustNewConstMetric(descPoolWaitSeconds, prometheus.CounterValue, st.WaitDuration.Seconds(), p.name)
	}
}
