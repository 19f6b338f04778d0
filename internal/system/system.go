package system

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/edge/ratelimit"
	"github.com/perchhq/perch/gossip"
	"github.com/perchhq/perch/internal/admin"
	"github.com/perchhq/perch/internal/natsembed"
	"github.com/perchhq/perch/internal/wire"
)

// Options describe a system. The zero value of a field means its default.
type Options struct {
	// Dir holds the data: JetStream under Dir/nats, SQLite at Dir/perch.db. Required.
	Dir string
	// DB is the store's DSN (see OpenStore). Default SQLite under Dir.
	DB string
	// Regions get one edge each. Default us-east, eu-west, ap-south.
	Regions []string
	// Host is the address every part listens on. Default 127.0.0.1.
	Host string
	// PortBase is the HTTP port of the first edge; the others follow. 0 picks free ports.
	PortBase int
	// NATSURL, when set, is used instead of starting an embedded server.
	NATSURL string
	// Partitions is the number of write partitions. Default wire.DefaultPartitions.
	Partitions int
	// Core and Edge are the base configurations of the parts; their zero values mean
	// core.LocalConfig() and edge.DefaultConfig(). Region, ID and PublicURL of each edge are
	// set by the system.
	Core *core.Config
	Edge *edge.Config
	// Admin, when set, is the address of the admin listener (/metrics, /debug/pprof) that
	// serves the metrics of every part; port 0 picks a free one.
	Admin string
	// TracerProvider, when set, traces every part (core.Config and edge.Config
	// TracerProvider, and the store's SQL); the edges' TraceSampleRatio comes from Edge.
	TracerProvider trace.TracerProvider
	// Logger receives every part's logs. Default slog.Default().
	Logger *slog.Logger
}

// System is a running system.
type System struct {
	opts  Options
	log   *slog.Logger
	nats  *natsembed.Server
	url   string
	store core.Store

	metrics     *prometheus.Registry
	admin       *admin.Server
	adminCancel context.CancelFunc

	mu    sync.Mutex
	core  *runningCore
	edges []*runningEdge
}

type runningCore struct {
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
}

type runningEdge struct {
	region string
	port   int
	url    string
	edge   *edge.Edge
	gossip *gossip.Gossip
	nc     *nats.Conn
	cancel context.CancelFunc
	done   chan error
}

// Start starts NATS, the core and the edges, and returns once every edge accepts requests.
func Start(ctx context.Context, opts Options) (*System, error) {
	if opts.Dir == "" {
		return nil, errors.New("system: Dir is required")
	}
	if len(opts.Regions) == 0 {
		opts.Regions = []string{"us-east", "eu-west", "ap-south"}
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Partitions == 0 {
		opts.Partitions = wire.DefaultPartitions
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := os.MkdirAll(opts.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("system: data dir: %w", err)
	}
	s := &System{opts: opts, log: opts.Logger, url: opts.NATSURL, metrics: admin.NewRegistry()}
	if opts.Admin != "" {
		srv, err := admin.Listen(opts.Admin, s.metrics, opts.Logger)
		if err != nil {
			return nil, fmt.Errorf("system: admin listener: %w", err)
		}
		actx, cancel := context.WithCancel(context.Background())
		s.admin, s.adminCancel = srv, cancel
		go func() {
			if err := srv.Serve(actx); err != nil {
				s.log.Warn("admin listener stopped", "err", err)
			}
		}()
	}
	if s.url == "" {
		ns, err := natsembed.Start(natsembed.Config{Dir: filepath.Join(opts.Dir, "nats"), Host: opts.Host, Logger: opts.Logger})
		if err != nil {
			return nil, err
		}
		s.nats = ns
		s.url = ns.URL()
	}
	store, err := OpenStore(ctx, opts.DB, opts.Dir, opts.Partitions, opts.Logger, StoreOptions{TracerProvider: opts.TracerProvider})
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("system: open store: %w", err)
	}
	s.store = store
	if err := s.StartCore(); err != nil {
		s.Close()
		return nil, err
	}
	for i, region := range opts.Regions {
		port := 0
		if opts.PortBase != 0 {
			port = opts.PortBase + i
		}
		s.edges = append(s.edges, &runningEdge{region: region, port: port})
		if err := s.StartEdge(i); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// MetricsURL is where the metrics of every part are served, or "" without an admin listener.
func (s *System) MetricsURL() string {
	if s.admin == nil {
		return ""
	}
	return s.admin.URL() + "/metrics"
}

// Metrics is the registry every part records its metrics in.
func (s *System) Metrics() prometheus.Gatherer { return s.metrics }

// NATSURL is the client URL of the system's NATS server.
func (s *System) NATSURL() string { return s.url }

// Store is the store the core writes to. Tests read it to check what was committed.
func (s *System) Store() core.Store { return s.store }

// EdgeURLs are the base URLs of the edges, in region order.
func (s *System) EdgeURLs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	urls := make([]string, len(s.edges))
	for i, e := range s.edges {
		urls[i] = e.url
	}
	return urls
}

// Regions are the regions of the edges, in order.
func (s *System) Regions() []string { return s.opts.Regions }

func (s *System) connect(name string) (*nats.Conn, error) {
	nc, err := nats.Connect(s.url, nats.Name(name), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
	if err != nil {
		return nil, fmt.Errorf("system: connect %s to NATS: %w", name, err)
	}
	return nc, nil
}

// StartCore starts the core (after StopCore or KillCore).
func (s *System) StartCore() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.core != nil {
		return errors.New("system: core already running")
	}
	cfg := core.LocalConfig()
	if s.opts.Core != nil {
		cfg = *s.opts.Core
	}
	cfg.Partitions = s.opts.Partitions
	cfg.Logger = s.log
	cfg.Metrics = s.metrics
	if s.opts.TracerProvider != nil {
		cfg.TracerProvider = s.opts.TracerProvider
	}
	nc, err := s.connect("perch-core")
	if err != nil {
		return err
	}
	c, err := core.New(cfg, nc, s.store)
	if err != nil {
		nc.Close()
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	rc := &runningCore{nc: nc, cancel: cancel, done: done}
	go func() { done <- c.Run(ctx) }()
	select {
	case <-c.Ready():
	case err := <-done:
		cancel()
		nc.Close()
		return fmt.Errorf("system: core: %w", err)
	}
	s.core = rc
	return nil
}

// StopCore stops the core gracefully: it finishes the batch in flight and returns.
func (s *System) StopCore() error {
	s.mu.Lock()
	rc := s.core
	s.core = nil
	s.mu.Unlock()
	if rc == nil {
		return nil
	}
	rc.cancel()
	err := <-rc.done
	rc.nc.Close()
	return err
}

// KillCore stops the core as a crash would: its NATS connection drops at once, so a batch in
// flight is neither acknowledged nor answered, and JetStream redelivers it to the next core.
func (s *System) KillCore() {
	s.mu.Lock()
	rc := s.core
	s.core = nil
	s.mu.Unlock()
	if rc == nil {
		return
	}
	rc.nc.Close()
	rc.cancel()
	<-rc.done
}

// StartEdge starts edge i (after StopEdge or KillEdge), on the port it had.
func (s *System) StartEdge(i int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	re := s.edges[i]
	if re.edge != nil {
		return fmt.Errorf("system: edge %d already running", i)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(s.opts.Host, strconv.Itoa(re.port)))
	if err != nil {
		return fmt.Errorf("system: edge %s: %w", re.region, err)
	}
	re.port = ln.Addr().(*net.TCPAddr).Port
	re.url = "http://" + ln.Addr().String()

	cfg := edge.DefaultConfig()
	if s.opts.Edge != nil {
		cfg = *s.opts.Edge
	}
	cfg.ID = ""
	cfg.Region = re.region
	cfg.PublicURL = re.url
	cfg.Partitions = s.opts.Partitions
	cfg.Logger = s.log
	cfg.Metrics = s.metrics
	if s.opts.TracerProvider != nil {
		cfg.TracerProvider = s.opts.TracerProvider
	}
	nc, err := s.connect("perch-edge-" + re.region)
	if err != nil {
		ln.Close()
		return err
	}
	// The edge needs its gossip membership and gossip needs the edge's id: the id is made
	// here so that both agree.
	e, err := edge.New(cfg, nc, nil)
	if err != nil {
		ln.Close()
		nc.Close()
		return err
	}
	gcfg := gossip.LocalConfig()
	gcfg.Meta = gossip.Meta{ID: e.ID(), Region: re.region, URL: re.url}
	gcfg.Watcher = e
	gcfg.BindAddr = s.opts.Host
	gcfg.Logger = s.log
	for j, other := range s.edges {
		if j != i && other.gossip != nil {
			gcfg.Join = append(gcfg.Join, other.gossip.LocalAddr())
		}
	}
	g, err := gossip.New(gcfg)
	if err != nil {
		e.Close()
		ln.Close()
		nc.Close()
		return fmt.Errorf("system: gossip for edge %s: %w", re.region, err)
	}
	e.SetMembership(g)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx, ln) }()
	select {
	case <-e.Serving():
	case err := <-done:
		cancel()
		_ = g.Shutdown()
		nc.Close()
		return fmt.Errorf("system: edge %s: %w", re.region, err)
	}
	re.edge, re.gossip, re.nc, re.cancel, re.done = e, g, nc, cancel, done
	return nil
}

// StopEdge drains edge i and leaves the gossip cluster gracefully.
// SetRateLimits replaces the rate limits of every edge, those started later included.
func (s *System) SetRateLimits(ps []ratelimit.Policy) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, re := range s.edges {
		if re.edge == nil {
			continue
		}
		if err := re.edge.SetRateLimits(ps); err != nil {
			return err
		}
	}
	base := edge.DefaultConfig()
	if s.opts.Edge != nil {
		base = *s.opts.Edge
	}
	base.RateLimits = slices.Clone(ps)
	s.opts.Edge = &base
	return nil
}

func (s *System) StopEdge(i int) error {
	re := s.takeEdge(i)
	if re == nil {
		return nil
	}
	re.cancel()
	err := <-re.done
	_ = re.gossip.Leave(time.Second)
	re.nc.Close()
	return err
}

// KillEdge stops edge i as a crash would: gossip stops without a goodbye and the server
// closes its connections.
func (s *System) KillEdge(i int) {
	re := s.takeEdge(i)
	if re == nil {
		return
	}
	_ = re.gossip.Shutdown()
	re.nc.Close()
	re.cancel()
	<-re.done
}

func (s *System) takeEdge(i int) *runningEdge {
	s.mu.Lock()
	defer s.mu.Unlock()
	re := s.edges[i]
	if re.edge == nil {
		return nil
	}
	cp := *re
	re.edge, re.gossip, re.nc, re.cancel, re.done = nil, nil, nil, nil, nil
	return &cp
}

// Close stops everything gracefully: edges drain first (their writes get outcomes), then the
// core, then NATS.
func (s *System) Close() error {
	var errs []error
	for i := range s.edges {
		errs = append(errs, s.StopEdge(i))
	}
	errs = append(errs, s.StopCore())
	if s.store != nil {
		errs = append(errs, s.store.Close())
	}
	if s.nats != nil {
		s.nats.Shutdown()
	}
	if s.adminCancel != nil {
		s.adminCancel()
	}
	return errors.Join(errs...)
}
