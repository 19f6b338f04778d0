package load

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"
)

// Config is one perch bench run. The zero value of a field means its default
// (DefaultConfig), except Targets, Scenario and Rate, which are required.
type Config struct {
	// Targets are the base URLs of the edges to load, e.g. http://127.0.0.1:8081. Sends go
	// to each in turn; the seed writes through the first.
	Targets []string
	// Scenario is the traffic (Builtin, ParseScenario).
	Scenario *Scenario
	// Rate is the arrival rate, in sends per second: the mean rate of a bursty scenario,
	// the final rate of a ramp, the first step of a capacity search.
	Rate float64
	// Ramp makes the rate rise (or fall) linearly from RampFrom to Rate over Duration.
	Ramp     bool
	RampFrom float64
	// Duration is the length of the run (of each step of a search). Default 10s.
	Duration time.Duration
	// Warmup is a stretch of the same load before the run, not measured. Default 0.
	Warmup time.Duration
	// Workers is the number of concurrent senders, and the most connections per target.
	// Default 64.
	Workers int
	// MaxBacklog is the most sends waiting for a worker; a send beyond it is dropped.
	// Default one second of the peak rate, at least 100.
	MaxBacklog int
	// NewConnections opens a connection per request (Connection: close) instead of keeping
	// connections alive.
	NewConnections bool
	// Timeout bounds each request, from its send. Default 10s.
	Timeout time.Duration
	// Drain is how long, after the last scheduled send, the workers go on with the sends
	// still waiting; the rest are dropped. Default Timeout.
	Drain time.Duration
	// Interval is the length of the report's intervals and of the progress line's period.
	// Default 1s.
	Interval time.Duration
	// Seed seeds the random choices (documents, kinds of requests); 0 picks one.
	Seed int64
	// Thresholds decide whether the run passed (and a capacity search's steps).
	Thresholds []Threshold
	// Search, when set, makes the run a capacity search.
	Search *Search
	// Baselines to run under the same load after the run: BaselineCeiling, BaselineNginx,
	// BaselinePostgres.
	Baselines []string
	// DB is the PostgreSQL DSN of the postgres baseline.
	DB string
	// NginxBinary is the nginx of the nginx baseline; default nginx on PATH or
	// /usr/sbin/nginx.
	NginxBinary string
	// Ledger, when set, receives every acknowledged write (see LedgerEntry), one JSON line
	// each. The run flushes it before returning.
	Ledger io.Writer
	// Progress, when set, is called once an interval with the run's progress, from the
	// run's collector goroutine: it must not block.
	Progress func(Progress)
	// Logger receives what the run does (seeding, baselines). Default: discarded.
	Logger *slog.Logger
}

// DefaultConfig returns the defaults of the optional fields.
func DefaultConfig() Config {
	return Config{Duration: 10 * time.Second, Workers: 64, Timeout: 10 * time.Second, Interval: time.Second}
}

// ErrConfig is wrapped by the errors of a configuration that cannot run (with the same
// message as the error it wraps).
var ErrConfig = errors.New("bad configuration")

type configError struct{ err error }

func (e configError) Error() string   { return e.err.Error() }
func (e configError) Unwrap() []error { return []error{ErrConfig, e.err} }

func (c *Config) complete() error {
	if err := c.completeErr(); err != nil {
		return configError{err}
	}
	return nil
}

func (c *Config) completeErr() error {
	d := DefaultConfig()
	if c.Duration == 0 {
		c.Duration = d.Duration
	}
	if c.Workers == 0 {
		c.Workers = d.Workers
	}
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.Drain == 0 {
		c.Drain = c.Timeout
	}
	if c.Interval == 0 {
		c.Interval = d.Interval
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Seed == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:])
		c.Seed = int64(binary.LittleEndian.Uint64(b[:]) >> 1)
	}
	switch {
	case len(c.Targets) == 0:
		return errors.New("no target: give the base URL of at least one edge")
	case c.Scenario == nil:
		return errors.New("no scenario")
	case !(c.Rate > 0) || c.Rate > 10_000_000:
		return fmt.Errorf("rate %g/s: above 0, at most 10000000/s", c.Rate)
	case c.Ramp && (c.RampFrom < 0 || c.RampFrom > 10_000_000 || math.IsNaN(c.RampFrom)):
		return fmt.Errorf("ramp from %g/s: 0 to 10000000/s", c.RampFrom)
	case c.Ramp && c.Search != nil:
		return errors.New("a capacity search sets its own rates: no ramp")
	case c.Ramp && c.Scenario.Burst != nil:
		return errors.New("a bursty scenario cannot ramp")
	case c.Duration < 100*time.Millisecond || c.Duration > 24*time.Hour:
		return fmt.Errorf("duration %s: 100ms to 24h", c.Duration)
	case c.Warmup < 0 || c.Warmup > time.Hour:
		return fmt.Errorf("warmup %s: 0 to 1h", c.Warmup)
	case c.Workers < 1 || c.Workers > 100_000:
		return fmt.Errorf("workers %d: 1 to 100000", c.Workers)
	case c.MaxBacklog < 0 || c.MaxBacklog > 100_000_000:
		return fmt.Errorf("max backlog %d: 0 (default) to 100000000", c.MaxBacklog)
	case c.Timeout < time.Millisecond || c.Drain < 0:
		return fmt.Errorf("timeout %s: at least 1ms", c.Timeout)
	case c.Interval < 10*time.Millisecond:
		return fmt.Errorf("interval %s: at least 10ms", c.Interval)
	}
	if err := c.Scenario.Check(); err != nil {
		return err
	}
	for _, b := range c.Baselines {
		if !slices.Contains(Baselines, b) {
			return fmt.Errorf("unknown baseline %q: %s", b, strings.Join(Baselines, ", "))
		}
		if b == BaselinePostgres && !isPostgres(c.DB) {
			return ErrNeedsPostgres
		}
	}
	if c.Search != nil {
		c.Search.complete()
		if err := c.Search.check(); err != nil {
			return err
		}
	}
	return nil
}

// Check reports what Run would refuse in the configuration, without running anything.
func (c Config) Check() error {
	if c.Search != nil {
		s := *c.Search
		c.Search = &s
	}
	return c.complete()
}

func isPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

func (c *Config) profile(rate float64) profile {
	p := profile{kind: "constant", rate: rate, duration: c.Duration}
	switch {
	case c.Ramp:
		p.kind, p.from = "ramp", c.RampFrom
	case c.Scenario.Burst != nil:
		p.kind, p.burst = "burst", *c.Scenario.Burst
	}
	return p
}

// backlogFor returns the backlog bound of a profile: set, or one second of its peak rate
// (at least 100).
func backlogFor(p profile, set int) int {
	if set > 0 {
		return set
	}
	return int(min(max(p.peak(), 100), 10_000_000))
}

// Run seeds the scenario's data through the first target, runs the warm-up, the run (or
// the capacity search), and then each baseline under the same load, and returns the report.
// Thresholds are checked; a failed one makes Report.Err non-nil, not an error of Run. An
// error is returned for a configuration that cannot run (wrapping ErrNeedsAccounts for the
// auth scenario) or a seed that failed. When ctx ends during the run, the report holds what
// was measured and says it was interrupted.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.complete(); err != nil {
		return nil, err
	}
	var rid [4]byte
	_, _ = rand.Read(rid[:])
	p := newPlan(cfg.Scenario, hex.EncodeToString(rid[:]))
	var ledger *Ledger
	if cfg.Ledger != nil {
		ledger = NewLedger(cfg.Ledger)
	}
	tgt, err := newHTTPTarget(cfg.Targets, cfg.Workers, cfg.Timeout, cfg.NewConnections, cfg.Scenario.APIKey)
	if err != nil {
		return nil, err
	}
	defer tgt.close()
	log := cfg.Logger
	ths := cfg.Thresholds

	rep := &Report{
		Scenario: cfg.Scenario.Name, Description: cfg.Scenario.Description, Targets: cfg.Targets,
		Mode: "keep-alive", Workers: cfg.Workers, StartedAt: time.Now().UTC(), DurationSeconds: cfg.Duration.Seconds(),
		Histograms: "HDR, microsecond resolution, 3 significant digits (values within 0.1%), 1 µs to 10 min",
		Thresholds: []ThresholdResult{}, Baselines: []Baseline{},
	}
	if cfg.NewConnections {
		rep.Mode = "new-connection"
	}
	log.Info("seeding", "scenario", cfg.Scenario.Name, "docs", cfg.Scenario.Docs, "target", cfg.Targets[0])
	rep.Seeded, err = p.seed(ctx, cfg.Targets, cfg.Timeout, ledger)
	if err != nil {
		if ledger != nil {
			_ = ledger.Flush()
		}
		return nil, err
	}
	base := phase{
		name: "run", tag: "run", profile: cfg.profile(cfg.Rate), duration: cfg.Duration, workers: cfg.Workers,
		timeout: cfg.Timeout, drain: cfg.Drain, interval: cfg.Interval, seed: cfg.Seed, plan: p, target: tgt,
		ledger: ledger, expect: cfg.Scenario.ExpectRateLimit, progress: cfg.Progress,
	}
	base.backlog = backlogFor(base.profile, cfg.MaxBacklog)
	rep.Profile, rep.MaxBacklog = base.profile.String(), base.backlog
	if cfg.Warmup > 0 {
		w := base
		w.name, w.tag, w.duration = "warmup", "warmup", cfg.Warmup
		w.profile.duration = cfg.Warmup
		log.Info("warming up", "for", cfg.Warmup)
		w.run(ctx)
	}
	var m *measurement
	if cfg.Search != nil {
		if len(ths) == 0 {
			for _, e := range DefaultSearchThresholds {
				t, _ := ParseThreshold(e)
				ths = append(ths, t)
			}
		}
		m, rep.Capacity = search(ctx, base, *cfg.Search, ths)
		rep.Profile = "capacity search from " + fmtRate(cfg.Rate)
	} else {
		m = base.run(ctx)
	}
	rep.Summary = m.summary()
	if ledger != nil {
		if err := ledger.Flush(); err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
		rep.LedgerWrites = ledger.Len()
	}
	rep.Passed = !m.interrupt
	for _, t := range ths {
		r := t.check(m)
		rep.Thresholds = append(rep.Thresholds, r)
		rep.Passed = rep.Passed && r.Passed
	}
	if rep.Capacity != nil && rep.Capacity.Rate == 0 {
		rep.Passed = false
	}
	if cfg.Scenario.ExpectRateLimit && m.expected == 0 {
		rep.Notes = append(rep.Notes, "no 429 with Retry-After was seen: is the target rate-limited (perch dev --rate-limit key:RATE)? The client sent "+
			fmtRate(m.achieved())+" with X-Api-Key "+cfg.Scenario.APIKey)
	}
	if m.interrupt {
		rep.Notes = append(rep.Notes, "interrupted before the end")
	}
	if m.dropped > 0 || float64(m.late) > 0.01*float64(m.scheduled) {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d sends found no worker free at their intended time (late) and %d were never sent (dropped): "+
			"the target (or the %d workers) could not keep up with %s; latencies count from the intended time", m.late, m.dropped, cfg.Workers, fmtRate(m.profile.mean())))
	}
	if ctx.Err() == nil {
		for _, name := range cfg.Baselines {
			log.Info("baseline", "name", name)
			rep.Baselines = append(rep.Baselines, runBaseline(ctx, name, &cfg, base, m, rep.Capacity, ths))
		}
	}
	return rep, nil
}

// runBaseline runs one baseline under the load of the run (or its search) and compares.
func runBaseline(ctx context.Context, name string, cfg *Config, base phase, m *measurement, capacity *Capacity, ths []Threshold) Baseline {
	b := Baseline{Name: name, Compared: "all requests"}
	ph := base
	ph.name, ph.tag, ph.ledger, ph.progress = name, "", nil, cfg.Progress
	ph.expect = false
	size := 2
	if m.responses > 0 {
		size = int(m.bytesIn / m.responses)
	}
	var tgt target
	switch name {
	case BaselineCeiling, BaselineNginx:
		origin, err := startCeiling(size, name == BaselineNginx)
		if err != nil {
			b.Skipped = err.Error()
			return b
		}
		defer origin.close()
		url := origin.url
		if name == BaselineNginx {
			bin := NginxBinary(cfg.NginxBinary)
			if bin == "" {
				b.Skipped = "no nginx binary (apt-get install nginx-light, or --nginx PATH)"
				return b
			}
			n, err := startNginx(ctx, bin, origin.url)
			if err != nil {
				b.Skipped = err.Error()
				return b
			}
			defer n.stop()
			url = n.url
			warm(ctx, url, base.plan, cfg.Timeout)
		}
		t, err := newHTTPTarget([]string{url}, cfg.Workers, cfg.Timeout, cfg.NewConnections, cfg.Scenario.APIKey)
		if err != nil {
			b.Skipped = err.Error()
			return b
		}
		tgt = t
	case BaselinePostgres:
		wp := base.plan.writesOnly()
		if wp == nil {
			b.Skipped = "the scenario sends no writes"
			return b
		}
		t, err := newPGTarget(ctx, cfg.DB, cfg.Workers)
		if err != nil {
			b.Skipped = err.Error()
			return b
		}
		ph.plan = wp
		share := base.plan.s.WriteShare()
		ph.profile.rate *= share
		ph.profile.from *= share
		ph.backlog = backlogFor(ph.profile, cfg.MaxBacklog)
		b.Compared = "writes"
		tgt = t
	}
	defer tgt.close()
	ph.target = tgt
	var bm *measurement
	if capacity != nil {
		bm, b.Capacity = search(ctx, ph, *cfg.Search, ths)
	} else {
		bm = ph.run(ctx)
	}
	b.Summary = bm.summary()
	switch {
	case capacity == nil:
		b.Ratios = ratios(m, bm, b.Compared == "writes")
	case b.Capacity.Rate > 0:
		// The steps compared ran at different rates: only the capacities compare.
		b.Ratios = map[string]float64{"capacity": round3(capacity.Rate / b.Capacity.Rate)}
	}
	return b
}

// ratios divides the run's figures by the baseline's (of the run's writes alone when
// writes is set).
func ratios(m, bm *measurement, writes bool) map[string]float64 {
	h := m.all
	rate := m.achieved()
	if writes {
		if h = m.writes(); h == nil {
			return nil
		}
		var n int64
		for i, k := range m.kinds {
			if kinds[i].write() {
				n += k.requests
			}
		}
		rate = float64(n) / m.wall.Seconds()
	}
	out := map[string]float64{}
	div := func(name string, a, b float64) {
		if b > 0 {
			out[name] = round3(a / b)
		}
	}
	div("achieved_rate", rate, bm.achieved())
	div("p50", h.at(50), bm.all.at(50))
	div("p90", h.at(90), bm.all.at(90))
	div("p99", h.at(99), bm.all.at(99))
	div("p999", h.at(99.9), bm.all.at(99.9))
	div("max", ms(h.h.Max()), ms(bm.all.h.Max()))
	div("mean", h.h.Mean(), bm.all.h.Mean())
	return out
}
