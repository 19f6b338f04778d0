package load

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Search configures a capacity search: steps of Config.Duration at rising rates, from
// Config.Rate, until one breaks a criterion; then bisection between the highest rate that
// held and the lowest that broke. A step holds when every threshold holds (Config.Thresholds,
// or DefaultSearchThresholds when there are none), the achieved rate is at least MinAchieved
// of the step's rate, and at most MaxDropped of its sends were dropped.
type Search struct {
	// MaxSteps bounds the number of steps. Default 8.
	MaxSteps int
	// Factor multiplies the rate after a step that held, until a step breaks. Default 2.
	Factor float64
	// Precision ends the search once the rate that broke is within this share above the
	// rate that held. Default 0.1.
	Precision float64
	// MinAchieved is the least achieved rate of a step that holds, as a share of its rate.
	// Default 0.95.
	MinAchieved float64
	// MaxDropped is the largest share of dropped sends of a step that holds. Default 0.001.
	MaxDropped float64
	// Pause separates steps, so that one step's backlog does not weigh on the next. Default 1s.
	Pause time.Duration
}

// DefaultSearchThresholds are the criteria of a capacity search without thresholds.
var DefaultSearchThresholds = []string{"p99<100ms", "errors<1%"}

func (s *Search) complete() {
	if s.MaxSteps == 0 {
		s.MaxSteps = 8
	}
	if s.Factor == 0 {
		s.Factor = 2
	}
	if s.Precision == 0 {
		s.Precision = 0.1
	}
	if s.MinAchieved == 0 {
		s.MinAchieved = 0.95
	}
	if s.MaxDropped == 0 {
		s.MaxDropped = 0.001
	}
	if s.Pause == 0 {
		s.Pause = time.Second
	}
}

func (s *Search) check() error {
	switch {
	case s.MaxSteps < 1 || s.MaxSteps > 100:
		return fmt.Errorf("search: max steps %d: 1 to 100", s.MaxSteps)
	case s.Factor <= 1 || s.Factor > 100:
		return fmt.Errorf("search: factor %g: above 1, at most 100", s.Factor)
	case s.Precision <= 0 || s.Precision >= 1:
		return fmt.Errorf("search: precision %g: between 0 and 1", s.Precision)
	case s.MinAchieved <= 0 || s.MinAchieved > 1:
		return fmt.Errorf("search: min achieved %g: above 0, at most 1", s.MinAchieved)
	case s.MaxDropped < 0 || s.MaxDropped >= 1:
		return fmt.Errorf("search: max dropped %g: from 0, below 1", s.MaxDropped)
	case s.Pause < 0:
		return fmt.Errorf("search: negative pause")
	}
	return nil
}

// Capacity is the result of a capacity search.
type Capacity struct {
	// Rate is the highest rate that held, per second; 0 when none did.
	Rate float64 `json:"rate"`
	// Criteria are what a step had to meet to hold.
	Criteria []string       `json:"criteria"`
	Steps    []CapacityStep `json:"steps"`
}

// CapacityStep is one step of a capacity search.
type CapacityStep struct {
	Rate         float64  `json:"rate"`
	AchievedRate float64  `json:"achieved_rate"`
	P50          float64  `json:"p50_ms"`
	P99          float64  `json:"p99_ms"`
	Max          float64  `json:"max_ms"`
	ErrorRate    float64  `json:"error_rate"`
	Late         int64    `json:"late"`
	Dropped      int64    `json:"dropped"`
	Held         bool     `json:"held"`
	Broken       []string `json:"broken,omitempty"`
}

// search runs a capacity search with base's settings (its profile's rate is the first
// step's), and returns the measurement of the highest rate that held (else of the first
// step) with the search's result.
func search(ctx context.Context, base phase, s Search, ths []Threshold) (*measurement, *Capacity) {
	c := &Capacity{}
	for _, t := range ths {
		c.Criteria = append(c.Criteria, t.String())
	}
	c.Criteria = append(c.Criteria, fmt.Sprintf("achieved ≥ %g%% of the rate", 100*s.MinAchieved),
		fmt.Sprintf("dropped ≤ %g%%", 100*s.MaxDropped))
	var best, first *measurement
	good, bad := 0.0, 0.0
	rate := base.profile.rate
	for step := 0; step < s.MaxSteps && ctx.Err() == nil; step++ {
		if step > 0 && s.Pause > 0 {
			select {
			case <-time.After(s.Pause):
			case <-ctx.Done():
			}
		}
		ph := base
		ph.profile.rate = rate
		if ph.profile.kind == "ramp" {
			ph.profile.kind = "constant"
		}
		ph.backlog = backlogFor(ph.profile, base.backlog)
		ph.name = fmt.Sprintf("%s@%.0f", base.name, rate)
		m := ph.run(ctx)
		if first == nil {
			first = m
		}
		st := CapacityStep{Rate: round3(rate), AchievedRate: round3(m.achieved()), Late: m.late, Dropped: m.dropped,
			P50: m.all.at(50), P99: m.all.at(99), Max: ms(m.all.h.Max())}
		if m.requests > 0 {
			st.ErrorRate = round3(100 * float64(m.errors) / float64(m.requests))
		}
		for _, t := range ths {
			if r := t.check(m); !r.Passed {
				st.Broken = append(st.Broken, fmt.Sprintf("%s (was %s)", r.Threshold, fmtValue(r.Value, r.Unit)))
			}
		}
		if m.achieved() < s.MinAchieved*rate {
			st.Broken = append(st.Broken, fmt.Sprintf("achieved %.0f/s of %.0f/s", m.achieved(), rate))
		}
		if m.scheduled > 0 && float64(m.dropped) > s.MaxDropped*float64(m.scheduled) {
			st.Broken = append(st.Broken, fmt.Sprintf("dropped %d of %d sends", m.dropped, m.scheduled))
		}
		st.Held = len(st.Broken) == 0 && !m.interrupt
		c.Steps = append(c.Steps, st)
		if st.Held {
			good, best = rate, m
		} else {
			bad = rate
		}
		switch {
		case bad == 0:
			rate *= s.Factor
		case good == 0:
			rate = bad / s.Factor
		default:
			rate = (good + bad) / 2
		}
		if good > 0 && bad > 0 && bad-good <= s.Precision*good {
			break
		}
	}
	c.Rate = round3(good)
	if best == nil {
		best = first
	}
	return best, c
}

func writeCapacity(b *strings.Builder, c *Capacity) {
	fmt.Fprintf(b, "  capacity   %.0f/s: the highest rate that held (%s)\n", c.Rate, strings.Join(c.Criteria, ", "))
	fmt.Fprintf(b, "     rate/s   achieved      p50      p99      max   errors%%     late  dropped  held\n")
	for _, s := range c.Steps {
		held := "yes"
		if !s.Held {
			held = "no: " + strings.Join(s.Broken, "; ")
		}
		fmt.Fprintf(b, "  %9.0f %10.1f %8.3g %8.3g %8.3g %8.3g %8d %8d  %s\n", s.Rate, s.AchievedRate, s.P50, s.P99, s.Max, s.ErrorRate, s.Late, s.Dropped, held)
	}
	fmt.Fprintf(b, "  the run below is the step at %.0f/s\n", c.Rate)
}
