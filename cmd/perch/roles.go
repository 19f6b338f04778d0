package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/gossip"
	"github.com/perchhq/perch/internal/admin"
	"github.com/perchhq/perch/internal/system"
	"github.com/perchhq/perch/internal/telemetry"
	"github.com/perchhq/perch/internal/wire"
)

func connectNATS(url, name string) (*nats.Conn, error) {
	if url == "" {
		return nil, fmt.Errorf("%w: --nats is required", errUsage)
	}
	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(500*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("connect to NATS %s: %w", telemetry.RedactList(url), err)
	}
	return nc, nil
}

func runCore(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch core", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", "", "NATS URL(s), comma-separated (required)")
	db := fs.String("db", "", "database DSN: postgres://... (CockroachDB, PostgreSQL) or sqlite:PATH (required)")
	noMigrate := fs.Bool("no-migrate", false, "do not migrate the schema at start; it must be current (perch migrate)")
	dbRegions := listFlag{}
	fs.Var(&dbRegions, "db-regions", "CockroachDB: make the database multi-region over these regions, the primary first")
	survive := fs.String("survive", "", "CockroachDB multi-region survival goal: zone or region")
	partitions := fs.Int("partitions", wire.DefaultPartitions, "write partitions; the same on every edge and core")
	replicas := fs.Int("stream-replicas", 3, "JetStream replicas of the write stream when it is created (1 for a lone NATS server)")
	adminAddr := fs.String("admin", "", "admin listener address (/metrics, /debug/pprof), e.g. :9090; empty: none")
	secretKey := secretKeyFlag(fs)
	oidc := oidcFlags(fs)
	traces := traceFlags(fs, false)
	newLogger := logFlags(fs, "json")
	log, err := setup(fs, args, getenv, newLogger, stderr)
	if err != nil {
		return done(err)
	}
	if *db == "" {
		return fmt.Errorf("%w: --db is required", errUsage)
	}
	cfg := core.DefaultConfig()
	if err := secretKey.apply(&cfg.Accounts); err != nil {
		return err
	}
	oidc.apply(&cfg.Accounts)
	tp, stopTracing, err := traces.start(ctx, "perch-core", log)
	if err != nil {
		return err
	}
	defer stopTracing()
	store, err := system.OpenStore(ctx, *db, "", *partitions, log,
		system.StoreOptions{NoMigrate: *noMigrate, Regions: dbRegions, Survive: *survive, TracerProvider: tp})
	if err != nil {
		return err
	}
	defer store.Close()
	nc, err := connectNATS(*natsURL, "perch-core")
	if err != nil {
		return err
	}
	defer nc.Close()
	cfg.Partitions = *partitions
	cfg.Stream.Replicas = *replicas
	cfg.Logger = log
	cfg.TracerProvider = tp
	cfg.Metrics, err = serveAdmin(ctx, *adminAddr, log)
	if err != nil {
		return err
	}
	c, err := core.New(cfg, nc, store)
	if err != nil {
		return err
	}
	return c.Run(ctx)
}

func runEdge(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch edge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", "", "NATS URL(s), comma-separated (required)")
	region := fs.String("region", "", "the region this edge serves, e.g. eu-west (required)")
	listen := fs.String("listen", ":8080", "HTTP listen address")
	gossipAddr := fs.String("gossip", ":7946", "gossip bind address (host:port)")
	join := listFlag{}
	fs.Var(&join, "join", "gossip addresses of running edges, comma-separated")
	publicURL := fs.String("public-url", "", "URL clients reach this edge at (default http://<listen>)")
	partitions := fs.Int("partitions", wire.DefaultPartitions, "write partitions; the same on every edge and core")
	replicas := fs.Int("stream-replicas", 3, "JetStream replicas of the write stream when it is created (1 for a lone NATS server)")
	id := fs.String("id", "", "this edge's id, unique in the fleet and stable across restarts (e.g. the pod name); default <region>-<random>")
	drain := fs.Duration("drain-delay", 5*time.Second, "on SIGTERM, serve on this long with /readyz failing before closing")
	adminAddr := fs.String("admin", "", "admin listener address (/metrics, /debug/pprof), e.g. :9090; empty: none")
	cacheControl := cacheControlFlag(fs)
	cache := newCacheFlags(fs)
	shields := shieldFlags(fs)
	limits := rateLimitFlags(fs)
	rulesFile := rulesFlag(fs)
	traces := traceFlags(fs, true)
	apiKeys := apiKeysFlag(fs)
	newLogger := logFlags(fs, "json")
	log, err := setup(fs, args, getenv, newLogger, stderr)
	if err != nil {
		return done(err)
	}
	rules, err := loadRules(*rulesFile, edge.DefaultRules(), log)
	if err != nil {
		return err
	}
	if *region == "" {
		return fmt.Errorf("%w: --region is required", errUsage)
	}
	tp, stopTracing, err := traces.start(ctx, "perch-edge", log, attribute.String("perch.region", *region))
	if err != nil {
		return err
	}
	defer stopTracing()
	ghost, gport, err := splitHostPort(*gossipAddr)
	if err != nil {
		return fmt.Errorf("%w: --gossip: %v", errUsage, err)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	if *publicURL == "" {
		*publicURL = "http://" + ln.Addr().String()
	}
	nc, err := connectNATS(*natsURL, "perch-edge-"+*region)
	if err != nil {
		ln.Close()
		return err
	}
	defer nc.Close()
	cfg := edge.DefaultConfig()
	cfg.ID = *id
	cfg.Region = *region
	cfg.PublicURL = *publicURL
	cfg.Partitions = *partitions
	cfg.Stream.Replicas = *replicas
	cfg.DrainDelay = *drain
	cfg.CacheControl = cacheControl.m
	cache.apply(&cfg)
	cfg.Rules = rules
	cfg.APIKeys = *apiKeys
	shields.apply(&cfg)
	if err := limits.apply(&cfg); err != nil {
		ln.Close()
		return err
	}
	cfg.Logger = log
	cfg.TracerProvider, cfg.TraceSampleRatio = tp, traces.ratio()
	cfg.Metrics, err = serveAdmin(ctx, *adminAddr, log)
	if err != nil {
		ln.Close()
		return err
	}
	gc := edgeGC(getenv, cfg.CacheBytes)
	gc.apply()
	gc.log(log)
	e, err := edge.New(cfg, nc, nil)
	if err != nil {
		ln.Close()
		return err
	}
	gcfg := gossip.DefaultConfig()
	gcfg.Meta = gossip.Meta{ID: e.ID(), Region: *region, URL: *publicURL}
	gcfg.Watcher = e
	gcfg.BindAddr, gcfg.BindPort = ghost, gport
	gcfg.Join = join
	gcfg.Logger = log
	g, err := gossip.New(gcfg)
	if err != nil {
		ln.Close()
		return fmt.Errorf("gossip: %w", err)
	}
	e.SetMembership(g)
	limits.watch(ctx, log, e.SetRateLimits)
	err = e.Serve(ctx, ln)
	_ = g.Leave(2 * time.Second)
	return err
}

// serveAdmin starts the admin listener at addr, when given, until ctx ends, and returns the
// registry the process records its metrics in.
func serveAdmin(ctx context.Context, addr string, log *slog.Logger) (prometheus.Registerer, error) {
	reg := admin.NewRegistry()
	if addr == "" {
		return reg, nil
	}
	srv, err := admin.Listen(addr, reg, log)
	if err != nil {
		return nil, fmt.Errorf("--admin %s: %w", addr, err)
	}
	log.Info("admin listener", "metrics", srv.URL()+"/metrics")
	go func() {
		if err := srv.Serve(ctx); err != nil {
			log.Warn("admin listener stopped", "err", err)
		}
	}()
	return reg, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	if host == "" {
		host = "0.0.0.0"
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("bad port %q", port)
	}
	return host, p, nil
}

func runMigrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	db := fs.String("db", "", "database DSN: postgres://... (CockroachDB, PostgreSQL) or sqlite:PATH (required)")
	partitions := fs.Int("partitions", wire.DefaultPartitions, "write partitions, recorded on first use (SQLite)")
	dbRegions := listFlag{}
	fs.Var(&dbRegions, "db-regions", "CockroachDB: make the database multi-region over these regions, the primary first")
	survive := fs.String("survive", "", "CockroachDB multi-region survival goal: zone or region")
	newLogger := logFlags(fs, "text")
	log, err := setup(fs, args, getenv, newLogger, stderr)
	if err != nil {
		return done(err)
	}
	if *db == "" {
		return fmt.Errorf("%w: --db is required", errUsage)
	}
	if err := system.Migrate(ctx, *db, *partitions, log, system.StoreOptions{Regions: dbRegions, Survive: *survive}); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "schema is up to date")
	return nil
}
