package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/internal/system"
	"github.com/perchhq/perch/internal/telemetry"
)

func runDev(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", "./data", "directory for the data (JetStream and SQLite); kept across restarts")
	regions := listFlag{}
	fs.Var(&regions, "regions", "comma-separated regions, one edge each (default us-east,eu-west,ap-south)")
	portBase := fs.Int("port-base", 8081, "HTTP port of the first edge; the others follow")
	db := fs.String("db", "", "database DSN, e.g. postgres://... (default: SQLite under --data)")
	adminAddr := fs.String("admin", "127.0.0.1:0", "admin listener (/metrics, /debug/pprof) of the whole system; port 0 picks a free one, empty turns it off")
	secretKey := secretKeyFlag(fs)
	oidc := oidcFlags(fs)
	cacheControl := cacheControlFlag(fs)
	cache := newCacheFlags(fs)
	shields := shieldFlags(fs)
	limits := rateLimitFlags(fs)
	rulesFile := rulesFlag(fs)
	traces := traceFlags(fs, true)
	apiKeys := apiKeysFlag(fs)
	newLogger := logFlags(fs, "text")
	log, err := setup(fs, args, getenv, newLogger, stderr)
	if err != nil {
		return done(err)
	}
	rules, err := loadRules(*rulesFile, edge.OpenRules(), log)
	if err != nil {
		return err
	}
	if len(regions) == 0 {
		regions = listFlag{"us-east", "eu-west", "ap-south"}
	}
	if *portBase < 1 || *portBase+len(regions) > 65535 {
		return fmt.Errorf("%w: --port-base %d out of range", errUsage, *portBase)
	}
	dir, err := filepath.Abs(*data)
	if err != nil {
		return err
	}
	tp, stopTracing, err := traces.start(ctx, "perch-dev", log)
	if err != nil {
		return err
	}
	defer stopTracing()
	ecfg := edge.DefaultConfig()
	ecfg.TraceSampleRatio = traces.ratio()
	ecfg.CacheControl = cacheControl.m
	cache.apply(&ecfg)
	ecfg.Rules = rules
	ecfg.APIKeys = *apiKeys
	shields.apply(&ecfg)
	if err := limits.apply(&ecfg); err != nil {
		return err
	}
	ccfg := core.LocalConfig()
	if err := secretKey.apply(&ccfg.Accounts); err != nil {
		return err
	}
	oidc.apply(&ccfg.Accounts)
	if ccfg.Accounts.SecretKey == nil {
		// The key of TOTP secrets lives beside the data it opens.
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return err
		}
		if ccfg.Accounts.SecretKey, err = devSecretKey(filepath.Join(dir, "secret.key")); err != nil {
			return fmt.Errorf("secret key: %w", err)
		}
	}
	sys, err := system.Start(ctx, system.Options{
		Dir: dir, DB: *db, Regions: regions, PortBase: *portBase, Admin: *adminAddr, Logger: log, Edge: &ecfg,
		Core: &ccfg, TracerProvider: tp,
	})
	if err != nil {
		return err
	}
	limits.watch(ctx, log, sys.SetRateLimits)
	fmt.Fprintln(stdout, "Perch dev is running.")
	for i, url := range sys.EdgeURLs() {
		fmt.Fprintf(stdout, "  edge %-10s %s\n", sys.Regions()[i], url)
	}
	fmt.Fprintf(stdout, "  nats            %s\n", sys.NATSURL())
	if u := sys.MetricsURL(); u != "" {
		fmt.Fprintf(stdout, "  metrics         %s (every edge and the core)\n", u)
	}
	store := telemetry.Redact(*db)
	if store == "" {
		store = "sqlite:" + filepath.Join(dir, "perch.db")
	}
	fmt.Fprintf(stdout, "  data            %s (%s)\n", dir, store)
	fmt.Fprintln(stdout, "Press Ctrl-C to stop.")
	<-ctx.Done()
	log.Info("stopping: draining edges, then the core")
	if err := sys.Close(); err != nil {
		return fmt.Errorf("stopping: %w", err)
	}
	fmt.Fprintln(stdout, "Perch dev stopped.")
	return nil
}
