package main

import (
	"math"
	"runtime/debug"
	"testing"
)

// TestEdgeGC: an edge lowers GOGC and sets a soft memory limit from its cache bound, unless the
// environment sets them; the environment always wins.
func TestEdgeGC(t *testing.T) {
	const mib = 1 << 20
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	for _, tc := range []struct {
		name       string
		env        map[string]string
		cacheBytes int64
		want       gcSettings
	}{
		{"defaults", nil, 256 * mib, gcSettings{gcPercent: 10, memoryLimit: 768 * mib}},
		{"GOGC set", map[string]string{"GOGC": "100"}, 256 * mib, gcSettings{gcPercent: -1, memoryLimit: 768 * mib}},
		{"GOGC off", map[string]string{"GOGC": "off"}, 256 * mib, gcSettings{gcPercent: -1, memoryLimit: 768 * mib}},
		{"GOMEMLIMIT set", map[string]string{"GOMEMLIMIT": "1GiB"}, 256 * mib, gcSettings{gcPercent: 10, memoryLimit: -1}},
		{"both set", map[string]string{"GOGC": "50", "GOMEMLIMIT": "off"}, 256 * mib, gcSettings{gcPercent: -1, memoryLimit: -1}},
		{"large cache", nil, 4 << 30, gcSettings{gcPercent: 10, memoryLimit: 8<<30 + 256*mib}},
		{"cache beyond any limit", nil, math.MaxInt64 / 2, gcSettings{gcPercent: 10, memoryLimit: math.MaxInt64}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := edgeGC(env(tc.env), tc.cacheBytes); got != tc.want {
				t.Fatalf("%+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestGCSettingsApply: apply sets what it is asked, leaves the rest, and its result undoes it.
func TestGCSettingsApply(t *testing.T) {
	gogc := debug.SetGCPercent(100)
	debug.SetGCPercent(gogc)
	limit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(gogc)
		debug.SetMemoryLimit(limit)
	})

	old := gcSettings{gcPercent: 25, memoryLimit: 1 << 30}.apply()
	if old != (gcSettings{gcPercent: gogc, memoryLimit: limit}) {
		t.Fatalf("replaced %+v, want GOGC %d and limit %d", old, gogc, limit)
	}
	if p := debug.SetGCPercent(25); p != 25 {
		t.Fatalf("GOGC %d after apply, want 25", p)
	}
	if l := debug.SetMemoryLimit(-1); l != 1<<30 {
		t.Fatalf("memory limit %d after apply, want 1 GiB", l)
	}
	if kept := (gcSettings{gcPercent: -1, memoryLimit: -1}).apply(); kept != (gcSettings{gcPercent: -1, memoryLimit: -1}) {
		t.Fatalf("apply of nothing replaced %+v", kept)
	}
	if p, l := debug.SetGCPercent(25), debug.SetMemoryLimit(-1); p != 25 || l != 1<<30 {
		t.Fatalf("apply of nothing changed GOGC to %d and the limit to %d", p, l)
	}
	old.apply()
	if p, l := debug.SetGCPercent(gogc), debug.SetMemoryLimit(-1); p != gogc || l != limit {
		t.Fatalf("undone: GOGC %d limit %d, want %d and %d", p, l, gogc, limit)
	}
}
