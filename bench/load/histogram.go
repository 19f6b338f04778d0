package load

import (
	"io"
	"math"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1 µs to 10 minutes, with 3 significant
// digits: a recorded value is within 0.1% of the true one. Longer values are recorded as
// the maximum (and a request never waits that long: Config.Timeout bounds it).
const (
	histMaxMicros = int64(10 * time.Minute / time.Microsecond)
	histDigits    = 3
)

// hist is an HDR histogram of durations. Not safe for concurrent use.
type hist struct{ h *hdrhistogram.Histogram }

func newHist() *hist { return &hist{h: hdrhistogram.New(1, histMaxMicros, histDigits)} }

func (h *hist) record(d time.Duration) {
	us := min(max(d.Microseconds(), 0), histMaxMicros)
	_ = h.h.RecordValue(us) // in range by construction
}

func (h *hist) merge(o *hist) { h.h.Merge(o.h) }

func (h *hist) count() int64 { return h.h.TotalCount() }

func (h *hist) reset() { h.h.Reset() }

func ms(us int64) float64 { return float64(us) / 1000 }

// Latency is a latency distribution's summary, in milliseconds.
type Latency struct {
	Min    float64 `json:"min"`
	Mean   float64 `json:"mean"`
	StdDev float64 `json:"stdev"`
	P50    float64 `json:"p50"`
	P90    float64 `json:"p90"`
	P95    float64 `json:"p95"`
	P99    float64 `json:"p99"`
	P999   float64 `json:"p999"`
	Max    float64 `json:"max"`
}

// at returns the latency at percentile p (0 to 100) in milliseconds.
func (h *hist) at(p float64) float64 { return ms(h.h.ValueAtPercentile(p)) }

func (h *hist) summary() Latency {
	if h.count() == 0 {
		return Latency{}
	}
	return Latency{
		Min:    ms(h.h.Min()),
		Mean:   round3(h.h.Mean() / 1000),
		StdDev: round3(h.h.StdDev() / 1000),
		P50:    h.at(50),
		P90:    h.at(90),
		P95:    h.at(95),
		P99:    h.at(99),
		P999:   h.at(99.9),
		Max:    ms(h.h.Max()),
	}
}

// Point is one point of a percentile distribution: the latency, in milliseconds, below which
// Percentile per cent of the requests completed.
type Point struct {
	Percentile float64 `json:"percentile"`
	Ms         float64 `json:"ms"`
}

// distributionPercentiles are the points of a distribution kept in the report, denser
// towards the tail (as an HDR percentile plot draws them).
var distributionPercentiles = []float64{0, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 92.5, 95, 96, 97,
	97.5, 98, 98.5, 99, 99.25, 99.5, 99.75, 99.9, 99.95, 99.99, 99.995, 99.999, 100}

func (h *hist) distribution() []Point {
	if h.count() == 0 {
		return nil
	}
	out := make([]Point, len(distributionPercentiles))
	for i, p := range distributionPercentiles {
		v := h.at(p)
		if p == 100 {
			v = ms(h.h.Max())
		}
		out[i] = Point{Percentile: p, Ms: v}
	}
	return out
}

// writeHgrm writes the histogram in HdrHistogram's percentile distribution text format
// (what HistogramLogProcessor and wrk2 print; plotFiles.html reads it), in milliseconds.
func (h *hist) writeHgrm(w io.Writer) error {
	_, err := h.h.PercentilesPrint(w, 5, 1000)
	return err
}

func round3(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return math.Round(v*1000) / 1000
}
