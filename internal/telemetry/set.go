package telemetry

import "github.com/prometheus/client_golang/prometheus"

// Set is the collectors of one component.
type Set []prometheus.Collector

// Register adds every collector to reg; on an error the ones already added are removed.
func (s Set) Register(reg prometheus.Registerer) error {
	for i, c := range s {
		if err := reg.Register(c); err != nil {
			s[:i].Unregister(reg)
			return err
		}
	}
	return nil
}

// Unregister removes every collector from reg.
func (s Set) Unregister(reg prometheus.Registerer) {
	for _, c := range s {
		reg.Unregister(c)
	}
}
