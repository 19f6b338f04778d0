package load

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Summary is what one phase measured: the main run, a baseline, or a step of a capacity
// search. Latencies are in milliseconds, counted from each request's intended send time.
type Summary struct {
	// TargetRate is the mean rate the profile called for, per second (of a ramp, the mean of
	// its first and last rates). AchievedRate is the requests completed per second of wall
	// time: the run's duration, or longer when the last requests completed after it.
	// Throughput is the same for the requests that did not fail.
	TargetRate   float64 `json:"target_rate"`
	AchievedRate float64 `json:"achieved_rate"`
	Throughput   float64 `json:"throughput"`
	WallSeconds  float64 `json:"wall_s"`
	// Scheduled is the number of sends the profile called for; Late those that found no
	// worker free at their intended time (sent anyway, their wait counted in their
	// latency); Dropped those never sent: the backlog of waiting sends was full
	// (Config.MaxBacklog), or they still waited when the drain after the run ended
	// (DroppedAtEnd of them).
	Scheduled    int64 `json:"scheduled"`
	Late         int64 `json:"late"`
	Dropped      int64 `json:"dropped"`
	DroppedAtEnd int64 `json:"dropped_at_end"`
	// Requests is the number of sends completed: with an answer (Responses) or a transport
	// error. Errors are the requests that failed: a transport error or a status of 400 and
	// more, except the expected ones (Expected: 429 with Retry-After in a rate-limit
	// scenario). ErrorRate is Errors over Requests, in per cent.
	Requests  int64   `json:"requests"`
	Responses int64   `json:"responses"`
	Errors    int64   `json:"errors"`
	Expected  int64   `json:"expected"`
	ErrorRate float64 `json:"error_rate"`
	// Latency of every completed request (errors too), from its intended send time. The
	// flat fields repeat it for scripts.
	Latency Latency `json:"latency_ms"`
	P50     float64 `json:"p50_ms"`
	P90     float64 `json:"p90_ms"`
	P99     float64 `json:"p99_ms"`
	P999    float64 `json:"p999_ms"`
	Max     float64 `json:"max_ms"`
	// SendDelay is the time from each send's intended time to its start: the queueing of a
	// late send, and the load generator's own lag.
	SendDelay Latency `json:"send_delay_ms"`
	// Statuses counts the answers by status code; ErrorsByStatus the errors by status code
	// or transport error (timeout, connection_refused, connection_reset, connection_closed,
	// connect, transport); ErrorSamples holds the first message of each transport error.
	Statuses       map[string]int64  `json:"statuses"`
	ErrorsByStatus map[string]int64  `json:"errors_by_status"`
	ErrorSamples   map[string]string `json:"error_samples,omitempty"`
	// BytesIn and BytesOut are the body bytes received and sent; Connections the
	// connections opened.
	BytesIn     int64 `json:"bytes_in"`
	BytesOut    int64 `json:"bytes_out"`
	Connections int64 `json:"connections"`
	// Distribution is the latency at percentiles from 0 to 100 (the percentile plot).
	Distribution []Point `json:"distribution"`
	// Endpoints are the figures of each kind of request.
	Endpoints map[string]*Endpoint `json:"endpoints"`
	// Intervals are the figures of each interval, in order.
	Intervals []Interval `json:"intervals"`
	// Interrupted is set when the run was stopped before its end.
	Interrupted bool `json:"interrupted,omitempty"`

	m *measurement
}

// Endpoint is one kind of request's share of a phase.
type Endpoint struct {
	Requests     int64   `json:"requests"`
	Errors       int64   `json:"errors"`
	Expected     int64   `json:"expected"`
	Latency      Latency `json:"latency_ms"`
	Distribution []Point `json:"distribution"`
}

func (m *measurement) achieved() float64 {
	if m.wall <= 0 {
		return 0
	}
	return float64(m.requests) / m.wall.Seconds()
}

func (m *measurement) summary() *Summary {
	s := &Summary{
		TargetRate: round3(m.profile.mean()), AchievedRate: round3(m.achieved()), WallSeconds: round3(m.wall.Seconds()),
		Scheduled: m.scheduled, Late: m.late, Dropped: m.dropped, DroppedAtEnd: m.droppedEnd,
		Requests: m.requests, Responses: m.responses, Errors: m.errors, Expected: m.expected,
		Latency: m.all.summary(), SendDelay: m.sendDelay.summary(),
		Statuses: statusMap(m.statuses), ErrorsByStatus: m.errorsBy, ErrorSamples: m.samples,
		BytesIn: m.bytesIn, BytesOut: m.bytesOut, Connections: m.conns,
		Distribution: m.all.distribution(), Endpoints: map[string]*Endpoint{}, Intervals: m.intervals,
		Interrupted: m.interrupt, m: m,
	}
	if m.wall > 0 {
		s.Throughput = round3(float64(m.requests-m.errors) / m.wall.Seconds())
	}
	if m.requests > 0 {
		s.ErrorRate = round3(100 * float64(m.errors) / float64(m.requests))
	}
	s.P50, s.P90, s.P99, s.P999, s.Max = s.Latency.P50, s.Latency.P90, s.Latency.P99, s.Latency.P999, s.Latency.Max
	for i, k := range m.kinds {
		if k.requests == 0 {
			continue
		}
		s.Endpoints[string(kinds[i])] = &Endpoint{Requests: k.requests, Errors: k.errors, Expected: k.expected,
			Latency: k.h.summary(), Distribution: k.h.distribution()}
	}
	if s.Intervals == nil {
		s.Intervals = []Interval{}
	}
	return s
}

// writes merges the latencies of the write endpoints (put, create, post), or returns nil.
func (m *measurement) writes() *hist {
	h, n := newHist(), int64(0)
	for i, k := range m.kinds {
		if kinds[i].write() {
			h.merge(k.h)
			n += k.requests
		}
	}
	if n == 0 {
		return nil
	}
	return h
}

// Report is the result of perch bench: the run, its thresholds, its baselines and, for a
// capacity search, every step. report.json is this struct.
type Report struct {
	Scenario    string    `json:"scenario"`
	Description string    `json:"description,omitempty"`
	Targets     []string  `json:"targets"`
	Mode        string    `json:"mode"` // keep-alive or new-connection
	Profile     string    `json:"profile"`
	Workers     int       `json:"workers"`
	MaxBacklog  int       `json:"max_backlog"`
	StartedAt   time.Time `json:"started_at"`
	// DurationSeconds is the configured duration of the run (of each step of a search).
	DurationSeconds float64 `json:"duration_s"`
	// Seeded is the number of documents the scenario seeded through the API.
	Seeded int `json:"seeded"`
	*Summary
	// Thresholds are checked against the run (the highest rate that held, in a search).
	Thresholds []ThresholdResult `json:"thresholds"`
	Passed     bool              `json:"passed"`
	Baselines  []Baseline        `json:"baselines"`
	Capacity   *Capacity         `json:"capacity,omitempty"`
	// LedgerWrites is the number of acknowledged writes recorded in the ledger.
	LedgerWrites int64 `json:"ledger_writes"`
	// Histograms describes the latency histograms.
	Histograms string `json:"histograms"`
	// Notes are warnings about the run, e.g. a rate-limit scenario that saw no 429.
	Notes []string `json:"notes,omitempty"`
}

// Baseline is a baseline's run under the same load, and the run's figures as ratios to it.
type Baseline struct {
	Name string `json:"name"`
	// Skipped says why the baseline did not run (e.g. no nginx binary).
	Skipped string `json:"skipped,omitempty"`
	// Compared says which of the run's requests the ratios compare with the baseline: all
	// of them, or only the writes (postgres).
	Compared string   `json:"compared,omitempty"`
	Summary  *Summary `json:"summary,omitempty"`
	// Ratios are the run's figure divided by the baseline's: latency ratios (p50, p90, p99,
	// p999, max, mean) above 1 mean the run was slower; achieved_rate (and capacity, for a
	// search) below 1 mean it did less.
	Ratios   map[string]float64 `json:"ratios,omitempty"`
	Capacity *Capacity          `json:"capacity,omitempty"`
}

// Failed returns the thresholds that did not hold.
func (r *Report) Failed() []ThresholdResult {
	var out []ThresholdResult
	for _, t := range r.Thresholds {
		if !t.Passed {
			out = append(out, t)
		}
	}
	return out
}

// ErrThresholds is returned (wrapped) by Report.Err when a threshold failed.
var ErrThresholds = errors.New("thresholds failed")

// Err returns an error wrapping ErrThresholds that names the failed thresholds, or nil.
func (r *Report) Err() error {
	failed := r.Failed()
	if len(failed) == 0 {
		return nil
	}
	parts := make([]string, len(failed))
	for i, t := range failed {
		parts[i] = fmt.Sprintf("%s (was %s)", t.Threshold, fmtValue(t.Value, t.Unit))
		if t.Note != "" {
			parts[i] = fmt.Sprintf("%s (%s)", t.Threshold, t.Note)
		}
	}
	return fmt.Errorf("%w: %s", ErrThresholds, strings.Join(parts, ", "))
}

func fmtValue(v float64, unit string) string {
	switch unit {
	case "ms":
		return fmt.Sprintf("%.3gms", v)
	case "%":
		return fmt.Sprintf("%.3g%%", v)
	case "/s":
		return fmt.Sprintf("%.4g/s", v)
	}
	return fmt.Sprintf("%g", v)
}

// WriteFiles writes the report into dir (created if missing): report.json, report.html,
// summary.txt, and the .hgrm percentile distributions: latency.hgrm (every request),
// latency-<endpoint>.hgrm, and baseline-<name>.hgrm.
func (r *Report) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	files := map[string]func(io.Writer) error{
		"report.json": func(w io.Writer) error { _, err := w.Write(append(js, '\n')); return err },
		"report.html": r.WriteHTML,
		"summary.txt": func(w io.Writer) error { _, err := io.WriteString(w, r.Text()); return err },
	}
	if r.Summary != nil && r.m != nil {
		files["latency.hgrm"] = r.m.all.writeHgrm
		for i, k := range r.m.kinds {
			if k.requests > 0 {
				files["latency-"+string(kinds[i])+".hgrm"] = k.h.writeHgrm
			}
		}
	}
	for _, b := range r.Baselines {
		if b.Summary != nil && b.Summary.m != nil {
			files["baseline-"+b.Name+".hgrm"] = b.Summary.m.all.writeHgrm
		}
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range files {
			if !yield(k) {
				return
			}
		}
	})
	for _, name := range names {
		if err := writeFile(filepath.Join(dir, name), files[name]); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// Text is the report's text summary, as perch bench prints it at the end.
func (r *Report) Text() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("perch bench: %s → %s (%s, %d workers, %s)\n", r.Scenario, strings.Join(r.Targets, ", "), r.Mode, r.Workers, r.Profile)
	if r.Seeded > 0 {
		p("  seeded     %d documents through the API\n", r.Seeded)
	}
	if r.Capacity != nil {
		writeCapacity(&b, r.Capacity)
	}
	if r.Summary != nil {
		writeSummary(&b, r.Summary, "  ")
	}
	if r.LedgerWrites > 0 {
		p("  ledger     %d acknowledged writes\n", r.LedgerWrites)
	}
	if len(r.Thresholds) > 0 {
		p("  thresholds\n")
		for _, t := range r.Thresholds {
			verdict := "PASS"
			if !t.Passed {
				verdict = "FAIL"
			}
			detail := fmtValue(t.Value, t.Unit)
			if t.Note != "" {
				detail = t.Note
			}
			p("    %s  %-24s %s\n", verdict, t.Threshold, detail)
		}
	}
	if len(r.Baselines) > 0 {
		p("  baselines (the same load, in the same process; ratios are run ÷ baseline)\n")
		for _, bl := range r.Baselines {
			if bl.Skipped != "" {
				p("    %-9s skipped: %s\n", bl.Name, bl.Skipped)
				continue
			}
			s := bl.Summary
			p("    %-9s achieved %.0f/s, p50 %.3g ms, p99 %.3g ms, max %.3g ms, errors %d", bl.Name, s.AchievedRate, s.P50, s.P99, s.Max, s.Errors)
			if bl.Capacity != nil {
				p(", capacity %.0f/s", bl.Capacity.Rate)
			}
			p("\n              ratio (%s):", bl.Compared)
			for _, k := range []string{"capacity", "achieved_rate", "p50", "p99", "p999", "max"} {
				if v, ok := bl.Ratios[k]; ok {
					p(" %s ×%.2f", k, v)
				}
			}
			p("\n")
		}
	}
	for _, n := range r.Notes {
		p("  note: %s\n", n)
	}
	verdict := "PASSED"
	if !r.Passed {
		verdict = "FAILED"
	}
	p("  result     %s\n", verdict)
	return b.String()
}

func writeSummary(b *strings.Builder, s *Summary, indent string) {
	p := func(format string, args ...any) { fmt.Fprintf(b, indent+format, args...) }
	p("rate       target %.0f/s, achieved %.1f/s (%d requests in %.2f s), throughput %.1f/s\n",
		s.TargetRate, s.AchievedRate, s.Requests, s.WallSeconds, s.Throughput)
	p("sends      %d scheduled, %d late, %d dropped (%d at the end); send delay p99 %.3g ms, max %.3g ms\n",
		s.Scheduled, s.Late, s.Dropped, s.DroppedAtEnd, s.SendDelay.P99, s.SendDelay.Max)
	p("latency    p50 %.3g  p90 %.3g  p99 %.3g  p99.9 %.3g  max %.3g ms (from the intended send time)\n",
		s.P50, s.P90, s.P99, s.P999, s.Max)
	p("errors     %d (%.3g%%)%s", s.Errors, s.ErrorRate, mapText(s.ErrorsByStatus))
	if s.Expected > 0 {
		fmt.Fprintf(b, "; expected (429 with Retry-After) %d", s.Expected)
	}
	fmt.Fprintf(b, "\n")
	p("statuses  %s\n", mapText(s.Statuses))
	p("bytes      %s in, %s out (bodies); %d connections opened\n", fmtBytes(s.BytesIn), fmtBytes(s.BytesOut), s.Connections)
	if len(s.Endpoints) > 0 {
		p("endpoint     requests   errors      p50      p90      p99      max (ms)\n")
		for _, k := range kinds {
			e := s.Endpoints[string(k)]
			if e == nil {
				continue
			}
			p("  %-8s %10d %8d %8.3g %8.3g %8.3g %8.3g\n", k, e.Requests, e.Errors, e.Latency.P50, e.Latency.P90, e.Latency.P99, e.Latency.Max)
		}
	}
}

func mapText[V any](m map[string]V) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, " %s: %v", k, m[k])
	}
	return b.String()
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
