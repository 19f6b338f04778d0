package edge

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/perchhq/perch/internal/wire"
)

// Config tunes an edge. The zero value of a field means its default.
type Config struct {
	// ID names the edge in the fleet and in the subject of its write outcomes. It must be
	// unique among running edges; the default is "<region>-<random>".
	ID string
	// Region is where the edge runs, e.g. "eu-west". Required.
	Region string
	// PublicURL is the URL clients use to reach this edge, listed by GET /v1/edges.
	PublicURL string
	// Partitions is the number of write partitions; it must match the core's. Default
	// wire.DefaultPartitions.
	Partitions int
	// Stream configures the write stream, which the edge creates if it is missing.
	Stream wire.StreamOptions
	// WriteTimeout is how long a write waits for its outcome before it is answered 202 with a
	// receipt. Default 2s.
	WriteTimeout time.Duration
	// ReadTimeout bounds a cache fill from the core. Default 2s.
	ReadTimeout time.Duration
	// MaxBodyBytes is the largest request body accepted; larger ones get 413. Default 1 MiB.
	MaxBodyBytes int
	// WriteLanes is how many write partitions this edge publishes to (see
	// wire.WritePartition). Writes to one document always take the same lane, so they are
	// applied in the order the edge took them; fewer lanes make larger batches (fewer
	// stream messages and transactions per write), more lanes apply in parallel. Default 1.
	WriteLanes int
	// BatchMax is the most commands one write batch carries. Default 128.
	BatchMax int
	// BatchBytes is the most data bytes one write batch carries. Default 4 MiB.
	BatchBytes int
	// BatchWindow is how long a batch's first command may wait for others to join it,
	// counted from when it was submitted. The edge publishes one batch per partition at a
	// time and takes every command that queued meanwhile, so under load batches fill without
	// waiting. Default 1ms.
	BatchWindow time.Duration
	// CacheBytes bounds the memory of cached responses. Default 256 MiB.
	CacheBytes int64
	// CompressMinBytes is the least body size, in bytes, of a cached JSON answer (a document
	// or a list page) that is sent compressed to a client that accepts it (gzip or br, by
	// Accept-Encoding). Smaller bodies gain too little for the CPU and the header bytes.
	// Default 1024; negative disables compression.
	CompressMinBytes int
	// CacheTTL is the longest an entry is served without an event confirming it: the safety
	// net when change events are lost. Default 5 minutes.
	CacheTTL time.Duration
	// CacheControl is the Cache-Control header of the cacheable answers (200 and 304) to
	// reads of a collection's documents and pages, by collection; AnyCollection for every
	// collection not named. Values are checked by ParseCacheControl. Default for a collection
	// without one: "no-cache" (clients and shared caches revalidate every time, with the
	// ETag). Tombstones and stale answers always say "no-cache", problems "no-store".
	CacheControl map[string]string
	// PeerFills is how many fills of the keys it owns this edge answers for the other edges
	// of its region at once; beyond it they read the core themselves. Default 256.
	PeerFills int
	// ReadHeaderTimeout, IdleTimeout: the HTTP server's timeouts against slow or idle
	// clients. Defaults 10s and 60s.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// DrainDelay is how long the edge keeps serving after it is asked to stop, with /readyz
	// answering 503, so that load balancers take it out before it closes its listener.
	// Default 0 (perch edge sets it from --drain-delay).
	DrainDelay time.Duration
	// Metrics is where the edge registers its Prometheus metrics, labelled with its edge id
	// and region; they are removed when the edge stops. Default: a registry of its own, not
	// exposed.
	Metrics prometheus.Registerer
	// Logger receives the edge's structured logs. Default slog.Default().
	Logger *slog.Logger
}

// DefaultConfig is the configuration of a production edge, less its Region.
func DefaultConfig() Config {
	return Config{
		Partitions:        wire.DefaultPartitions,
		WriteTimeout:      2 * time.Second,
		ReadTimeout:       2 * time.Second,
		MaxBodyBytes:      1 << 20,
		WriteLanes:        1,
		BatchMax:          128,
		BatchBytes:        4 << 20,
		BatchWindow:       time.Millisecond,
		CacheBytes:        256 << 20,
		CacheTTL:          5 * time.Minute,
		CompressMinBytes:  1024,
		PeerFills:         256,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
}

func (c *Config) complete() error {
	d := DefaultConfig()
	if c.Region == "" {
		return errors.New("region is required")
	}
	if !wire.ValidCollection(c.Region) {
		return fmt.Errorf("region %q: use letters, digits, - and _", c.Region)
	}
	if c.ID == "" {
		c.ID = c.Region + "-" + strings.ToLower(ulid.Make().String()[20:])
	}
	if !wire.ValidCollection(c.ID) {
		return fmt.Errorf("edge id %q: use letters, digits, - and _", c.ID)
	}
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&c.WriteTimeout, d.WriteTimeout)
	set(&c.ReadTimeout, d.ReadTimeout)
	set(&c.BatchWindow, d.BatchWindow)
	set(&c.CacheTTL, d.CacheTTL)
	set(&c.ReadHeaderTimeout, d.ReadHeaderTimeout)
	set(&c.IdleTimeout, d.IdleTimeout)
	if c.Partitions == 0 {
		c.Partitions = d.Partitions
	}
	if c.PeerFills <= 0 {
		c.PeerFills = d.PeerFills
	}
	if c.Partitions < 1 || c.Partitions > 4096 {
		return fmt.Errorf("partitions %d out of range [1,4096]", c.Partitions)
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.WriteLanes <= 0 {
		c.WriteLanes = d.WriteLanes
	}
	if c.BatchMax <= 0 {
		c.BatchMax = d.BatchMax
	}
	c.BatchMax = min(c.BatchMax, wire.MaxBatchCommands)
	if c.BatchBytes <= 0 {
		c.BatchBytes = d.BatchBytes
	}
	if c.CacheBytes <= 0 {
		c.CacheBytes = d.CacheBytes
	}
	if c.CompressMinBytes == 0 {
		c.CompressMinBytes = d.CompressMinBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}
