package telemetry

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestSet(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := prometheus.NewCounter(prometheus.CounterOpts{Name: "perch_test_a_total", Help: "a"})
	b := prometheus.NewCounter(prometheus.CounterOpts{Name: "perch_test_b_total", Help: "b"})
	if err := (Set{a, b}).Register(reg); err != nil {
		t.Fatal(err)
	}
	// A second registration of the same names fails and leaves the first one alone.
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "perch_test_c_total", Help: "c"})
	if err := (Set{c, prometheus.NewCounter(prometheus.CounterOpts{Name: "perch_test_a_total", Help: "a"})}).Register(reg); err == nil {
		t.Fatal("duplicate registration accepted")
	}
	if mfs, _ := reg.Gather(); len(mfs) != 2 {
		t.Fatalf("%d families after a failed registration, want 2", len(mfs))
	}
	(Set{a, b}).Unregister(reg)
	if mfs, _ := reg.Gather(); len(mfs) != 0 {
		t.Fatalf("%d families after Unregister", len(mfs))
	}
}
