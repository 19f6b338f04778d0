package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/perchhq/perch/bench/load"
)

const benchUsage = `perch bench: the bundled load benchmarks (see bench/README.md).

Usage:
  perch bench --target URL[,URL...] --scenario NAME --rate N/s --duration D --out DIR
              [--threshold EXPR]... [--baseline NAME]... [flags]
  perch bench verify --db DSN --ledger FILE

Scenarios: read-hot, feed, write-burst, sync, auth (needs accounts: not yet), ratelimit,
or --scenario-file FILE. Baselines: ceiling, nginx, postgres (needs --db).
Thresholds: p99<20ms, p99.9{get}<50ms, errors<0.1%, dropped<=0, rate>=95%.

Flags:
`

// rateFlag is a rate: N/s, N/m, or N (per second).
type rateFlag float64

func (r *rateFlag) String() string { return strconv.FormatFloat(float64(*r), 'g', -1, 64) + "/s" }

func (r *rateFlag) Set(v string) error {
	v = strings.TrimSpace(v)
	div := 1.0
	switch {
	case strings.HasSuffix(v, "/s"):
		v = strings.TrimSuffix(v, "/s")
	case strings.HasSuffix(v, "/m"):
		v, div = strings.TrimSuffix(v, "/m"), 60
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || n < 0 || n > 1e9 || math.IsNaN(n) {
		return fmt.Errorf("%q is not a rate such as 1000/s or 600/m", v)
	}
	*r = rateFlag(n / div)
	return nil
}

// optRateFlag is a rateFlag that remembers whether it was given (on the command line or in
// the environment).
type optRateFlag struct {
	rateFlag
	set bool
}

func (r *optRateFlag) Set(v string) error {
	r.set = true
	return r.rateFlag.Set(v)
}

// thresholdFlag collects --threshold expressions.
type thresholdFlag []load.Threshold

func (t *thresholdFlag) String() string {
	s := make([]string, len(*t))
	for i, th := range *t {
		s[i] = th.String()
	}
	return strings.Join(s, ",")
}

func (t *thresholdFlag) Set(v string) error {
	// Several in one value (from PERCH_THRESHOLD) are separated by ';'.
	for _, e := range strings.Split(v, ";") {
		if strings.TrimSpace(e) == "" {
			continue
		}
		th, err := load.ParseThreshold(e)
		if err != nil {
			return err
		}
		*t = append(*t, th)
	}
	return nil
}

func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "verify" {
		return runBenchVerify(ctx, args[1:], getenv, stdout, stderr)
	}
	fs := flag.NewFlagSet("perch bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, benchUsage)
		fs.PrintDefaults()
	}
	def := load.DefaultConfig()
	targets := listFlag{}
	fs.Var(&targets, "target", "base URLs of the edges to load, comma-separated or repeated (required)")
	scenario := fs.String("scenario", "read-hot", "built-in scenario: "+strings.Join(load.Builtins, ", "))
	scenarioFile := fs.String("scenario-file", "", "scenario file (YAML or JSON; see bench/README.md), instead of --scenario")
	var rate rateFlag
	var rampFrom optRateFlag
	fs.Var(&rate, "rate", "arrival rate, N/s or N/m: the mean of a bursty scenario, the end of a ramp, the first step of --search (required)")
	fs.Var(&rampFrom, "ramp-from", "ramp: the rate rises linearly from this to --rate over --duration")
	duration := fs.Duration("duration", def.Duration, "length of the run (of each step of --search)")
	out := fs.String("out", "", "directory of the reports: report.json, report.html, summary.txt, *.hgrm, ledger.jsonl (required)")
	var thresholds thresholdFlag
	fs.Var(&thresholds, "threshold", "condition the run must meet, e.g. 'p99<20ms' or 'errors<0.1%'; repeatable; a failed one makes the exit status 1")
	baselines := listFlag{}
	fs.Var(&baselines, "baseline", "run the same load against a baseline after the run: ceiling, nginx, postgres; comma-separated or repeated")
	warmup := fs.Duration("warmup", 0, "the same load before the run, not measured")
	workers := fs.Int("workers", def.Workers, "concurrent senders, and the most connections per target")
	backlog := fs.Int("max-backlog", 0, "most sends waiting for a free worker; beyond it they are dropped (default one second of the peak rate, at least 100)")
	newConns := fs.Bool("new-connections", false, "a new connection per request (Connection: close) instead of keep-alive")
	timeout := fs.Duration("timeout", def.Timeout, "bound of each request")
	drain := fs.Duration("drain", 0, "after the last scheduled send, how long waiting sends still go out; the rest are dropped (default --timeout)")
	interval := fs.Duration("interval", def.Interval, "length of the report's intervals and the progress line's period")
	docs := fs.Int("docs", 0, "documents the scenario seeds (default the scenario's)")
	docBytes := fs.Int("doc-bytes", 0, "size of each document's data and write body in bytes (default the scenario's)")
	collection := fs.String("collection", "", "collection of the scenario's documents (default the scenario's, bench)")
	apiKey := fs.String("api-key", "", "X-Api-Key of the requests (default the scenario's)")
	searchMode := fs.Bool("search", false, "capacity search: raise the rate from --rate until a threshold (default p99<100ms, errors<1%) breaks; report the highest rate that held")
	searchSteps := fs.Int("search-steps", 8, "most steps of --search")
	searchFactor := fs.Float64("search-factor", 2, "--search multiplies the rate by this after a step that held, until one breaks")
	db := fs.String("db", "", "PostgreSQL DSN of the postgres baseline, postgres://...")
	nginx := fs.String("nginx", "", "nginx binary of the nginx baseline (default nginx on PATH, or /usr/sbin/nginx)")
	seed := fs.Int64("seed", 0, "seed of the random choices; 0 picks one")
	quiet := fs.Bool("quiet", false, "no progress line")
	if err := parseFlags(fs, args, getenv); err != nil {
		return done(err)
	}

	var s *load.Scenario
	var err error
	if *scenarioFile != "" {
		data, rerr := os.ReadFile(*scenarioFile)
		if rerr != nil {
			return fmt.Errorf("%w: --scenario-file: %v", errUsage, rerr)
		}
		s, err = load.ParseScenario(data)
	} else {
		s, err = load.Builtin(*scenario)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if *docs != 0 {
		s.Docs = *docs
	}
	if *docBytes != 0 {
		s.DocBytes = *docBytes
	}
	if *collection != "" {
		s.Collection = *collection
	}
	if *apiKey != "" {
		s.APIKey = *apiKey
	}
	switch {
	case len(targets) == 0:
		return fmt.Errorf("%w: --target is required", errUsage)
	case rate == 0:
		return fmt.Errorf("%w: --rate is required, e.g. --rate 1000/s", errUsage)
	case *out == "":
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	cfg := load.Config{
		Targets: targets, Scenario: s, Rate: float64(rate), Duration: *duration, Warmup: *warmup,
		Workers: *workers, MaxBacklog: *backlog, NewConnections: *newConns, Timeout: *timeout, Drain: *drain,
		Interval: *interval, Seed: *seed, Thresholds: thresholds, Baselines: baselines, DB: *db, NginxBinary: *nginx,
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if rampFrom.set {
		cfg.Ramp, cfg.RampFrom = true, float64(rampFrom.rateFlag)
	}
	if *searchMode {
		cfg.Search = &load.Search{MaxSteps: *searchSteps, Factor: *searchFactor}
	}
	if !*quiet {
		cfg.Progress = func(p load.Progress) { fmt.Fprintln(stderr, p) }
	}
	if err := cfg.Check(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	ledgerPath := filepath.Join(*out, "ledger.jsonl")
	ledger, err := os.Create(ledgerPath)
	if err != nil {
		return err
	}
	defer ledger.Close()
	cfg.Ledger = ledger

	rep, err := load.Run(ctx, cfg)
	if err != nil {
		if errors.Is(err, load.ErrConfig) {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		return err
	}
	if err := ledger.Close(); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	if err := rep.WriteFiles(*out); err != nil {
		return err
	}
	fmt.Fprint(stdout, rep.Text())
	fmt.Fprintf(stdout, "  reports    %s (report.json, report.html, summary.txt, *.hgrm); ledger %s\n", *out, ledgerPath)
	if err := rep.Err(); err != nil {
		return err
	}
	if rep.Capacity != nil && rep.Capacity.Rate == 0 {
		return errors.New("capacity search: no rate held")
	}
	if rep.Interrupted {
		return errors.New("interrupted")
	}
	return nil
}

func runBenchVerify(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch bench verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	db := fs.String("db", "", "the database the edges wrote to: postgres://... or sqlite:PATH, as perch migrate takes it (required)")
	ledgerPath := fs.String("ledger", "", "ledger file of a perch bench run, DIR/ledger.jsonl (required)")
	if err := parseFlags(fs, args, getenv); err != nil {
		return done(err)
	}
	if *db == "" || *ledgerPath == "" {
		return fmt.Errorf("%w: --db and --ledger are required", errUsage)
	}
	f, err := os.Open(*ledgerPath)
	if err != nil {
		return fmt.Errorf("%w: --ledger: %v", errUsage, err)
	}
	entries, err := load.ReadLedger(f)
	f.Close()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	d, err := load.OpenDB(ctx, *db)
	if err != nil {
		return err
	}
	defer d.Close()
	v, err := load.Verify(ctx, d, entries)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, v)
	if !v.OK() {
		return fmt.Errorf("the database does not hold every acknowledged write exactly once: %d of %d", v.Applied, v.Checked)
	}
	return nil
}
