package load

import (
	"fmt"
	"math"
	"time"
)

// Burst makes arrivals bursty: each Period, the sends of the whole period are made in its
// first Duty fraction, at Rate/Duty. The mean rate stays Rate.
type Burst struct {
	// Period is the length of one cycle of a burst and its quiet. Default 1s.
	Period time.Duration `yaml:"period" json:"period"`
	// Duty is the share of each period that sends, in (0, 1]. Default 0.25.
	Duty float64 `yaml:"duty" json:"duty"`
}

// profile gives the intended send time of every send of a run: send i is due at(i) after
// the start. Times are computed from the index, not from the previous send, so that rounding
// never drifts.
type profile struct {
	kind     string // "constant", "ramp", "burst"
	rate     float64
	from     float64 // ramp: the rate at the start; rate is the rate at the end
	duration time.Duration
	burst    Burst
}

func (p profile) String() string {
	switch p.kind {
	case "ramp":
		return fmt.Sprintf("ramp %s → %s over %s", fmtRate(p.from), fmtRate(p.rate), p.duration)
	case "burst":
		return fmt.Sprintf("burst %s mean, %.0f%% of every %s", fmtRate(p.rate), p.burst.Duty*100, p.burst.Period)
	default:
		return "constant " + fmtRate(p.rate)
	}
}

// at returns the offset from the start at which send i (from 0) is due.
func (p profile) at(i int64) time.Duration {
	n := float64(i)
	var sec float64
	switch p.kind {
	case "ramp":
		// The sends made by t are N(t) = from·t + (rate−from)·t²/(2D); send i is due when
		// N(t) = i.
		d := p.duration.Seconds()
		a, b := (p.rate-p.from)/(2*d), p.from
		if math.Abs(a) < 1e-12 {
			sec = n / b
		} else {
			sec = (-b + math.Sqrt(b*b+4*a*n)) / (2 * a)
		}
	case "burst":
		// Send i is due at i/rate on a constant clock; each period of that clock is squeezed
		// into its first Duty share.
		u := n / p.rate
		per := p.burst.Period.Seconds()
		k := math.Floor(u / per)
		sec = k*per + (u-k*per)*p.burst.Duty
	default:
		sec = n / p.rate
	}
	if math.IsNaN(sec) || sec > float64(math.MaxInt64/int64(time.Second)) {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(sec * float64(time.Second))
}

// countBefore returns how many sends are due before offset t.
func (p profile) countBefore(t time.Duration) int64 {
	if t <= 0 {
		return 0
	}
	hi := int64(1)
	for p.at(hi) < t {
		if hi > math.MaxInt64/4 {
			return hi
		}
		hi *= 2
	}
	lo := int64(0) // at(lo) < t unless lo == 0
	for lo < hi {
		mid := lo + (hi-lo)/2
		if p.at(mid) < t {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// mean returns the mean rate of the profile over its duration.
func (p profile) mean() float64 {
	if p.kind == "ramp" {
		return (p.from + p.rate) / 2
	}
	return p.rate
}

// peak returns the highest instantaneous rate of the profile.
func (p profile) peak() float64 {
	switch p.kind {
	case "ramp":
		return max(p.rate, p.from)
	case "burst":
		return p.rate / p.burst.Duty
	default:
		return p.rate
	}
}

func fmtRate(r float64) string {
	if r == math.Trunc(r) {
		return fmt.Sprintf("%.0f/s", r)
	}
	return fmt.Sprintf("%.3g/s", r)
}
