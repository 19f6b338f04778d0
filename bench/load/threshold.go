package load

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Threshold is a condition on a run's results, such as "p99<20ms" or "errors<0.1%"; a run
// passes when all of its thresholds hold. The grammar (spaces allowed between the parts):
//
//	threshold = metric [ "{" endpoint "}" ] op value
//	metric    = "p" percentile | "min" | "mean" | "max"      latency; value has a unit:
//	                                                        ns, us, µs, ms or s
//	          | "errors" | "late" | "dropped"               a count, or with "%" a share
//	                                                        (errors of requests; late and
//	                                                        dropped of scheduled sends)
//	          | "rate"                                      achieved rate: N/s, N/m, or N%
//	                                                        of the target rate
//	endpoint  = get | list | put | create | post | sync     (default: every request)
//	op        = "<" | "<=" | ">" | ">="
//
// A percentile is a number from 0 to 100: p50, p99, p99.9.
type Threshold struct {
	// Metric is "p", "min", "mean", "max", "errors", "late", "dropped" or "rate".
	Metric string
	// Percentile is the percentile of metric "p".
	Percentile float64
	// Endpoint restricts the metric to one kind of request; "" is every request.
	Endpoint Kind
	Op       string
	// Value is in milliseconds for latencies, per second for rates; with Percent set it is a
	// percentage.
	Value   float64
	Percent bool
}

// ParseThreshold decodes a threshold expression.
func ParseThreshold(expr string) (Threshold, error) {
	var t Threshold
	bad := func(format string, args ...any) (Threshold, error) {
		return Threshold{}, fmt.Errorf("threshold %q: %s", expr, fmt.Sprintf(format, args...))
	}
	s := strings.TrimSpace(expr)
	i := strings.IndexAny(s, "<>{")
	if i < 0 {
		return bad("no comparison: write e.g. p99<20ms, errors<0.1%%, rate>=95%%")
	}
	name := strings.TrimSpace(s[:i])
	s = s[i:]
	switch {
	case name == "min" || name == "mean" || name == "max" || name == "errors" || name == "late" || name == "dropped" || name == "rate":
		t.Metric = name
	case strings.HasPrefix(name, "p"):
		p, err := parseNumber(name[1:])
		if err != nil || p > 100 {
			return bad("percentile %q: a number from 0 to 100 (p50, p99, p99.9)", name[1:])
		}
		t.Metric, t.Percentile = "p", p
	default:
		return bad("unknown metric %q: p<percentile>, min, mean, max, errors, late, dropped or rate", name)
	}
	if s[0] == '{' {
		end := strings.IndexByte(s, '}')
		if end < 0 {
			return bad("no closing brace")
		}
		ep := Kind(strings.TrimSpace(s[1:end]))
		if ep.index() < 0 {
			return bad("unknown endpoint %q: get, list, put, create, post or sync", ep)
		}
		if t.Metric == "late" || t.Metric == "dropped" || t.Metric == "rate" {
			return bad("%s is not measured per endpoint", t.Metric)
		}
		t.Endpoint = ep
		s = strings.TrimSpace(s[end+1:])
	}
	switch {
	case strings.HasPrefix(s, "<="), strings.HasPrefix(s, ">="):
		t.Op, s = s[:2], s[2:]
	case strings.HasPrefix(s, "<"), strings.HasPrefix(s, ">"):
		t.Op, s = s[:1], s[1:]
	default:
		return bad("want <, <=, > or >= after the metric")
	}
	s = strings.TrimSpace(s)
	num := strings.TrimRightFunc(s, func(r rune) bool { return !('0' <= r && r <= '9') && r != '.' })
	unit := strings.TrimSpace(s[len(num):])
	v, err := parseNumber(num)
	if err != nil {
		return bad("value %q is not a number", num)
	}
	switch t.Metric {
	case "p", "min", "mean", "max":
		scale, ok := map[string]float64{"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1, "s": 1000}[unit]
		if !ok {
			return bad("a latency needs a unit: ns, us, ms or s")
		}
		t.Value = v * scale
	case "rate":
		switch unit {
		case "/s":
			t.Value = v
		case "/m":
			t.Value = v / 60
		case "%":
			t.Value, t.Percent = v, true
		default:
			return bad("a rate is N/s, N/m or N%% of the target rate")
		}
	default:
		switch unit {
		case "":
			t.Value = v
		case "%":
			t.Value, t.Percent = v, true
		default:
			return bad("%s is a count or a percentage", t.Metric)
		}
	}
	if t.Percent && t.Value > 100 && t.Metric != "rate" {
		return bad("a share above 100%%")
	}
	if math.IsInf(t.Value, 0) || math.IsNaN(t.Value) {
		return bad("value out of range")
	}
	return t, nil
}

// parseNumber parses a non-negative decimal number without exponent.
func parseNumber(s string) (float64, error) {
	if s == "" || strings.Trim(s, "0123456789.") != "" || strings.Count(s, ".") > 1 || s == "." {
		return 0, errors.New("not a number")
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(v, 0) {
		return 0, errors.New("not a number")
	}
	return v, nil
}

// String is the threshold in its canonical form, which ParseThreshold reads back.
func (t Threshold) String() string {
	var b strings.Builder
	if t.Metric == "p" {
		b.WriteString("p" + strconv.FormatFloat(t.Percentile, 'f', -1, 64))
	} else {
		b.WriteString(t.Metric)
	}
	if t.Endpoint != "" {
		b.WriteString("{" + string(t.Endpoint) + "}")
	}
	b.WriteString(t.Op)
	b.WriteString(strconv.FormatFloat(t.Value, 'f', -1, 64))
	switch {
	case t.Percent:
		b.WriteString("%")
	case t.latency():
		b.WriteString("ms")
	case t.Metric == "rate":
		b.WriteString("/s")
	}
	return b.String()
}

func (t Threshold) latency() bool {
	return t.Metric == "p" || t.Metric == "min" || t.Metric == "mean" || t.Metric == "max"
}

// ThresholdResult is a threshold checked against a run.
type ThresholdResult struct {
	Threshold string `json:"threshold"`
	// Value is what the run measured, in the threshold's unit (ms, per second, a count or a
	// percentage).
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Passed bool    `json:"passed"`
	// Note says why a threshold could not be checked (no request of its endpoint).
	Note string `json:"note,omitempty"`
}

// check measures the threshold's metric on m and compares it.
func (t Threshold) check(m *measurement) ThresholdResult {
	r := ThresholdResult{Threshold: t.String()}
	var v float64
	switch {
	case t.latency():
		r.Unit = "ms"
		h := m.all
		if t.Endpoint != "" {
			h = m.kinds[t.Endpoint.index()].h
		}
		if h.count() == 0 {
			r.Note = "no request measured"
			return r
		}
		switch t.Metric {
		case "min":
			v = ms(h.h.Min())
		case "mean":
			v = round3(h.h.Mean() / 1000)
		case "max":
			v = ms(h.h.Max())
		default:
			v = h.at(t.Percentile)
			if t.Percentile == 100 {
				v = ms(h.h.Max())
			}
		}
	case t.Metric == "rate":
		v, r.Unit = m.achieved(), "/s"
		if t.Percent {
			v, r.Unit = 0, "%"
			if tr := m.profile.mean(); tr > 0 {
				v = 100 * m.achieved() / tr
			}
		}
	default:
		count, of := m.errors, m.requests
		switch t.Metric {
		case "late":
			count, of = m.late, m.scheduled
		case "dropped":
			count, of = m.dropped, m.scheduled
		}
		if t.Endpoint != "" {
			k := m.kinds[t.Endpoint.index()]
			count, of = k.errors, k.requests
		}
		v, r.Unit = float64(count), ""
		if t.Percent {
			r.Unit = "%"
			v = 100 // nothing measured: as bad as can be
			if of > 0 {
				v = 100 * float64(count) / float64(of)
			} else if count == 0 && m.scheduled == 0 {
				v = 0
			}
		}
	}
	r.Value = round3(v)
	switch t.Op {
	case "<":
		r.Passed = v < t.Value
	case "<=":
		r.Passed = v <= t.Value
	case ">":
		r.Passed = v > t.Value
	case ">=":
		r.Passed = v >= t.Value
	}
	return r
}
