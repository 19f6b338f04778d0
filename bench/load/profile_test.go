package load

import (
	"math"
	"testing"
	"time"
)

func TestProfiles(t *testing.T) {
	const d = 10 * time.Second
	for _, tc := range []struct {
		name string
		p    profile
		// want is the number of sends due before each second of the run.
		want []int64
	}{
		{"constant", profile{kind: "constant", rate: 100, duration: d}, []int64{0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000}},
		// From 0 to 200/s over 10 s: N(t) = 10 t².
		{"ramp up", profile{kind: "ramp", rate: 200, from: 0, duration: d}, []int64{0, 10, 40, 90, 160, 250, 360, 490, 640, 810, 1000}},
		// From 200/s down to 0: N(t) = 200 t − 10 t².
		{"ramp down", profile{kind: "ramp", rate: 0, from: 200, duration: d}, []int64{0, 190, 360, 510, 640, 750, 840, 910, 960, 990, 1000}},
		{"flat ramp", profile{kind: "ramp", rate: 50, from: 50, duration: d}, []int64{0, 50, 100, 150, 200, 250, 300, 350, 400, 450, 500}},
		// 100/s mean in the first quarter of every second: all of a second's sends by 0.25 s.
		{"burst", profile{kind: "burst", rate: 100, duration: d, burst: Burst{Period: time.Second, Duty: 0.25}}, []int64{0, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000}},
	} {
		for s, want := range tc.want {
			if got := tc.p.countBefore(time.Duration(s) * time.Second); math.Abs(float64(got-want)) > 1 {
				t.Errorf("%s: %d sends before %ds, want %d", tc.name, got, s, want)
			}
		}
		// Intended times never go backwards.
		prev := time.Duration(-1)
		for i := int64(0); i < 1000; i++ {
			at := tc.p.at(i)
			if at < prev {
				t.Fatalf("%s: send %d at %s, before send %d at %s", tc.name, i, at, i-1, prev)
			}
			prev = at
		}
	}
	b := profile{kind: "burst", rate: 100, duration: d, burst: Burst{Period: time.Second, Duty: 0.25}}
	if got := b.countBefore(250 * time.Millisecond); got != 100 {
		t.Errorf("burst: %d sends in the first quarter second, want 100", got)
	}
	if got := b.countBefore(999 * time.Millisecond); got != 100 {
		t.Errorf("burst: %d sends before the next burst, want 100", got)
	}
	if b.peak() != 400 {
		t.Errorf("burst peak %g/s, want 400/s", b.peak())
	}
}
