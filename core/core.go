package core

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/telemetry"
	"github.com/perchhq/perch/internal/wire"
)

// Config tunes a core. The zero value of a field means its default.
type Config struct {
	// Partitions is the number of write partitions; it must match the edges' and the store's.
	// Default wire.DefaultPartitions.
	Partitions int
	// Stream configures the write stream, which the core creates if it is missing.
	Stream wire.StreamOptions
	// AckWait is how long JetStream waits for the core to acknowledge a batch before it
	// redelivers it to another core. A core applying a slow batch extends it. Default 30s.
	AckWait time.Duration
	// GroupBatches bounds how many of a partition's batches (stream messages) the core
	// applies in one transaction: group commit across messages, so that writes queued behind
	// a slow transaction cost one more transaction, not one each. Default 128.
	GroupBatches int
	// GroupCommands bounds the commands of one transaction. Default 2048.
	GroupCommands int
	// EarlyLimit is how long a batch may wait for its producer's batch before it (delivered
	// first, the predecessor is held by a core that died, or is being redelivered) before the
	// core applies it anyway: by then the predecessor can only be lost (a batch no core could
	// decode, a producer the store forgot), and a lane stalled for good would be worse than a
	// gap in its order. Every such batch is logged as an error. Default 10 × AckWait.
	EarlyLimit time.Duration
	// EventDocLimit is the largest document (data bytes) carried whole in a change event;
	// larger ones are announced by version only. Default 64 KiB.
	EventDocLimit int
	// OutboxSweep is how often the core republishes change events left in the outbox by a
	// core that died between commit and publish. Default 1s.
	OutboxSweep time.Duration
	// Retention is how long write outcomes and Idempotency-Keys are kept. Default and minimum
	// 24h (the contract's promise for Idempotency-Key).
	Retention time.Duration
	// ReadConcurrency bounds the reads served at once. Default 64.
	ReadConcurrency int
	// Metrics is where the core registers its Prometheus metrics; they are removed when Run
	// returns. Default: a registry of its own, not exposed.
	Metrics prometheus.Registerer
	// TracerProvider makes the spans of the work done for traced requests (OpenTelemetry): a
	// write batch whose NATS message carries a sampled traceparent is applied in a span that
	// is the child of the edge's, with the store's spans (SQL statements, on PostgreSQL)
	// below it, and its outcomes go back with that span's trace context; a read likewise.
	// The core starts no trace of its own. Default nil: no spans.
	TracerProvider trace.TracerProvider
	// Logger receives the core's structured logs; a line about traced work carries its
	// trace_id. Default slog.Default().
	Logger *slog.Logger
	// Accounts configures the account service (accounts.go). Default DefaultAccountsConfig.
	Accounts AccountsConfig
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// DefaultConfig is the configuration of a production core.
func DefaultConfig() Config {
	return Config{
		Partitions:      wire.DefaultPartitions,
		AckWait:         30 * time.Second,
		GroupBatches:    128,
		GroupCommands:   2048,
		EventDocLimit:   64 << 10,
		OutboxSweep:     time.Second,
		Retention:       24 * time.Hour,
		ReadConcurrency: 64,
	}
}

// LocalConfig is DefaultConfig with short timers, for tests and `perch dev`: a batch held by
// a core that was killed is redelivered within seconds.
func LocalConfig() Config {
	c := DefaultConfig()
	c.AckWait = 3 * time.Second
	c.OutboxSweep = 500 * time.Millisecond
	c.Accounts.APIKeysEvery = time.Second
	return c
}

func (c *Config) complete() error {
	d := DefaultConfig()
	if c.Partitions == 0 {
		c.Partitions = d.Partitions
	}
	if c.Partitions < 1 || c.Partitions > 4096 {
		return fmt.Errorf("partitions %d out of range [1,4096]", c.Partitions)
	}
	if c.AckWait <= 0 {
		c.AckWait = d.AckWait
	}
	if c.GroupBatches <= 0 {
		c.GroupBatches = d.GroupBatches
	}
	if c.GroupCommands <= 0 {
		c.GroupCommands = d.GroupCommands
	}
	if c.EarlyLimit <= 0 {
		c.EarlyLimit = 10 * c.AckWait
	}
	if c.EventDocLimit <= 0 {
		c.EventDocLimit = d.EventDocLimit
	}
	if c.OutboxSweep <= 0 {
		c.OutboxSweep = d.OutboxSweep
	}
	if c.Retention < d.Retention {
		c.Retention = d.Retention
	}
	if c.ReadConcurrency <= 0 {
		c.ReadConcurrency = d.ReadConcurrency
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if err := c.Accounts.complete(); err != nil {
		return fmt.Errorf("accounts: %w", err)
	}
	return nil
}

// Core is one core process: a worker per partition, the read service, the outbox sweeper and
// the janitor. Any number of cores may run against one NATS and one database.
type Core struct {
	cfg   Config
	nc    *nats.Conn
	js    jetstream.JetStream
	store Store
	log   *slog.Logger
	ready chan struct{}
	m     *metrics
	// tracer is nil without Config.TracerProvider.
	tracer trace.Tracer
	// commits carries the change events of committed batches to the announcer.
	commits chan []wire.ChangeEvent
	// lost[p] tells partition p's consume that JetStream has no consumer (or no stream) for
	// it: purgeApplied, which reads every consumer once a second, found it gone.
	lost []chan struct{}
}

// New validates cfg and returns a core that uses nc and store. The caller owns both and closes
// them after Run returns.
func New(cfg Config, nc *nats.Conn, store Store) (*Core, error) {
	if err := cfg.complete(); err != nil {
		return nil, fmt.Errorf("core config: %w", err)
	}
	if nc == nil || store == nil {
		return nil, errors.New("core: a NATS connection and a store are required")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("core: jetstream: %w", err)
	}
	c := &Core{cfg: cfg, nc: nc, js: js, store: store, log: telemetry.WithTraceIDs(cfg.Logger).With("component", "core"),
		ready: make(chan struct{}), m: newMetrics(), commits: make(chan []wire.ChangeEvent, 256),
		lost: make([]chan struct{}, cfg.Partitions)}
	for p := range c.lost {
		c.lost[p] = make(chan struct{}, 1)
	}
	if cfg.TracerProvider != nil {
		c.tracer = cfg.TracerProvider.Tracer("github.com/perchhq/perch/core")
	}
	if sm, ok := store.(MetricsCollector); ok {
		c.m.collectors = append(c.m.collectors, sm.Collectors()...)
	}
	return c, nil
}

// Ready is closed once the core consumes writes and answers reads.
func (c *Core) Ready() <-chan struct{} { return c.ready }

// Run serves until ctx is cancelled, then finishes the batches and reads in flight and returns
// nil. It returns an error when it cannot start (stream or consumers cannot be created).
func (c *Core) Run(ctx context.Context) error {
	reg := c.cfg.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if err := c.m.collectors.Register(reg); err != nil {
		return fmt.Errorf("core: metrics: %w", err)
	}
	defer c.m.collectors.Unregister(reg)
	if _, mismatch, err := wire.EnsureWriteStream(ctx, c.js, c.cfg.Stream); err != nil {
		return err
	} else if mismatch != "" {
		c.log.Warn("the write stream differs from this core's configuration; leaving it as it is", "mismatch", mismatch)
	}
	consumers := make([]jetstream.Consumer, c.cfg.Partitions)
	for p := range consumers {
		cons, err := c.ensureConsumer(ctx, p)
		if err != nil {
			return err
		}
		consumers[p] = cons
	}

	accounts := newAccounts(c.cfg.Accounts, c.store, c.nc, telemetry.WithTraceIDs(c.cfg.Logger), c.cfg.Now, c.m)
	if err := accounts.rotate(ctx); err != nil {
		return fmt.Errorf("core: %w", err)
	}
	if _, _, err := accounts.refreshAPIKeys(ctx); err != nil {
		return fmt.Errorf("core: %w", err)
	}
	reads, err := c.serveReads()
	if err != nil {
		return err
	}
	auths, err := c.serveAuth(accounts)
	if err != nil {
		reads.stop()
		return err
	}
	// Ready promises answers: the server the core is connected to must have the
	// subscriptions before it is closed (servers clustered with it learn of them a moment
	// later).
	if err := c.confirmSubscriptions(ctx); err != nil {
		auths.stop()
		reads.stop()
		return err
	}
	c.log.Info("core started", "partitions", c.cfg.Partitions)
	close(c.ready)

	announced := make(chan struct{})
	go func() { c.announce(); close(announced) }()
	g, gctx := errgroup.WithContext(ctx)
	for p, cons := range consumers {
		g.Go(func() error { return c.consumePartition(gctx, p, cons) })
	}
	g.Go(func() error { c.purgeApplied(gctx, consumers); return nil })
	g.Go(func() error { c.sweepOutbox(gctx); return nil })
	g.Go(func() error { c.expire(gctx); return nil })
	g.Go(func() error { accounts.runRotation(gctx); return nil })
	g.Go(func() error { accounts.runAPIKeys(gctx); return nil })
	err = g.Wait()
	close(c.commits)
	<-announced
	auths.stop()
	reads.stop()
	c.log.Info("core stopped")
	return err
}

// confirmSubscriptions waits until the NATS server has the subscriptions made so far: a
// flush, tried again while the connection is down (nats.go makes them again on reconnection)
// until ctx ends or the connection is closed for good.
func (c *Core) confirmSubscriptions(ctx context.Context) error {
	for {
		fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := c.nc.FlushWithContext(fctx)
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil || c.nc.IsClosed():
			return fmt.Errorf("core: confirm the subscriptions of reads and account requests: %w", err)
		}
		c.log.Warn("NATS has not confirmed the core's subscriptions yet; trying again", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// consumerConfig is the durable consumer of partition p, shared by every core. Many batches
// may be delivered at once (group commit); their order of application is kept by the store's
// fence (wire.Batch), not by delivering one at a time. The consumer pins the partition to one
// core at a time, so that batches are not spread over cores only to wait for each other; when
// the pinned core stops pulling for PinnedTTL, another takes over.
func (c *Core) consumerConfig(p int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        fmt.Sprintf("perch-core-%d", p),
		Description:    fmt.Sprintf("Perch core workers of write partition %d", p),
		FilterSubject:  wire.WriteSubject(p),
		AckPolicy:      jetstream.AckExplicitPolicy,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		MaxAckPending:  2 * c.cfg.GroupBatches,
		AckWait:        c.cfg.AckWait,
		MaxDeliver:     -1,
		PriorityGroups: []string{wire.CoreGroup},
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PinnedTTL:      c.cfg.AckWait,
	}
}

// ensureConsumer creates the consumer of partition p, or updates one left by an older core
// in place (JetStream keeps its delivery state).
func (c *Core) ensureConsumer(ctx context.Context, p int) (jetstream.Consumer, error) {
	cons, err := c.js.CreateOrUpdateConsumer(ctx, wire.WriteStream, c.consumerConfig(p))
	if err != nil {
		return nil, fmt.Errorf("core: consumer for partition %d: %w", p, err)
	}
	return cons, nil
}

// earlyDelay is how long a batch delivered before its predecessor waits to be delivered again.
const earlyDelay = 250 * time.Millisecond

// waiting tracks a partition's batches that came early (by batch id), for EarlyLimit. Only
// the partition's consume goroutine uses it.
type waiting struct {
	since map[string]earlyBatch
	gauge prometheus.Gauge
}

type earlyBatch struct {
	since, seen time.Time
	warned      bool
}

// note records that batch id came early at now, and returns what is known of it: new when
// it was not waiting yet.
func (w *waiting) note(id string, now time.Time) (e earlyBatch, isNew bool) {
	e, ok := w.since[id]
	if !ok {
		e = earlyBatch{since: now}
		w.gauge.Inc()
	}
	e.seen = now
	w.since[id] = e
	return e, !ok
}

func (w *waiting) forget(id string) {
	if _, ok := w.since[id]; ok {
		delete(w.since, id)
		w.gauge.Dec()
	}
}

// close forgets them all: the partition is no longer this core's.
func (w *waiting) close() {
	w.gauge.Sub(float64(len(w.since)))
	clear(w.since)
}

// errConsumerGone ends consume when its consumer's messages stop without the core stopping:
// the consumer was deleted (by an operator, or with JetStream's state), or JetStream refused
// the pull.
var errConsumerGone = errors.New("the partition's consumer is gone")

// consumePartition consumes partition p until ctx is cancelled. When its consumer goes away
// under it, it is made again (ensureConsumer) and consuming goes on, the way a core starting
// would: the batches the new consumer delivers again that were applied are duplicates to the
// store's fence. Without it the core would run on, healthy to look at, with the partition's
// writes stored and never applied.
func (c *Core) consumePartition(ctx context.Context, p int, cons jetstream.Consumer) error {
	const minBackoff = 100 * time.Millisecond
	backoff := minBackoff
	for {
		started := time.Now()
		err := c.consume(ctx, p, cons)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > time.Minute {
			// It had been consuming a while: this is a new loss, not the last one again.
			backoff = minBackoff
		}
		if !errors.Is(err, errConsumerGone) {
			return err
		}
		c.m.consumerErrors.Inc()
		c.log.Error("the consumer of a write partition is gone; making it again", "partition", p)
		// If it was there after all (the purger read it as it was being made again), the
		// stopped pull still holds its pin, and the new one would get nothing until
		// PinnedTTL; a consumer that is gone has no pin to release.
		c.unpin(p)
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			octx, cancel := context.WithTimeout(ctx, 10*time.Second)
			cons, err = c.ensureConsumer(octx, p)
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				// JetStream lost the stream with it: make that again too, as a start would.
				if _, _, serr := wire.EnsureWriteStream(octx, c.js, c.cfg.Stream); serr == nil {
					cons, err = c.ensureConsumer(octx, p)
				}
			}
			cancel()
			if err == nil {
				// What was found lost before this one was made is of the old one.
				select {
				case <-c.lost[p]:
				default:
				}
				break
			}
			c.log.Warn("making the consumer of a write partition", "partition", p, "err", err)
		}
	}
}

// consume applies the batches of one partition until ctx is cancelled: whatever JetStream has
// delivered when the core is ready for more, up to GroupBatches and GroupCommands, in one
// transaction. It returns errConsumerGone when the consumer's messages end before ctx does.
func (c *Core) consume(ctx context.Context, p int, cons jetstream.Consumer) error {
	it, err := cons.Messages(jetstream.PullMaxMessages(c.cfg.GroupBatches), jetstream.PullPriorityGroup(wire.CoreGroup))
	if err != nil {
		return fmt.Errorf("core: consume partition %d: %w", p, err)
	}
	ended := make(chan struct{})
	defer close(ended)
	go func() {
		select {
		case <-ctx.Done():
			// Stop pulling, but apply what was delivered already: a batch dropped here would
			// wait out the ack timeout before another core got it.
			it.Drain()
		case <-ended:
			it.Stop()
		case <-c.lost[p]:
			// JetStream lost the consumer: its deletion is told to the pulls waiting on it,
			// but not reliably, and not at all by a server that restarted without its state.
			// Ending the pull here has consumePartition make it again.
			it.Stop()
		}
	}()
	early := &waiting{since: map[string]earlyBatch{}, gauge: c.m.waiting}
	defer early.close()
	var (
		group []delivered
		carry *delivered
	)
	for {
		group = group[:0]
		commands := 0
		if carry != nil {
			group = append(group, *carry)
			commands += len(carry.b.Commands)
			carry = nil
		} else {
			msg, err := it.Next()
			if err != nil {
				if ctx.Err() != nil {
					c.unpin(p)
					return nil
				}
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) || errors.Is(err, jetstream.ErrConsumerDeleted) {
					return errConsumerGone
				}
				c.m.consumerErrors.Inc()
				c.log.Warn("fetching write batches", "partition", p, "err", err)
				continue
			}
			if d, ok := c.decode(p, msg); ok {
				group = append(group, d)
				commands += len(d.b.Commands)
			}
		}
		// Take what has been delivered meanwhile, without waiting for more.
		for len(group) < c.cfg.GroupBatches && commands < c.cfg.GroupCommands {
			msg, err := it.Next(jetstream.NextMaxWait(50 * time.Microsecond))
			if err != nil {
				break
			}
			d, ok := c.decode(p, msg)
			if !ok {
				continue
			}
			if commands+len(d.b.Commands) > c.cfg.GroupCommands && len(group) > 0 {
				carry = &d
				break
			}
			group = append(group, d)
			commands += len(d.b.Commands)
		}
		if len(group) > 0 {
			now := time.Now()
			for i := range group {
				if e, ok := early.since[group[i].b.ID]; ok && now.Sub(e.since) > c.cfg.EarlyLimit {
					group[i].b.Force = true
				}
			}
			c.handleGroup(ctx, p, group, early)
		}
	}
}

// delivered is a batch and the message that brought it.
type delivered struct {
	msg jetstream.Msg
	b   *wire.Batch
	// trace is the span context of the edge's publish of the batch, when it was traced.
	trace trace.SpanContext
}

// decode reads a delivered batch. One that no core can apply is terminated: edges validate
// before publishing, so it is corruption or a foreign publisher, and retrying would block the
// partition forever.
func (c *Core) decode(p int, msg jetstream.Msg) (delivered, bool) {
	b := new(wire.Batch)
	err := wire.DecodeBatch(msg.Data(), b)
	if err == nil && b.Partition != p {
		err = fmt.Errorf("batch of partition %d on the subject of partition %d", b.Partition, p)
	}
	if err != nil {
		c.drop(p, msg, b.ID, err)
		return delivered{}, false
	}
	if meta, err := msg.Metadata(); err == nil && meta.NumDelivered > 1 {
		c.m.redeliveries.Inc()
	}
	d := delivered{msg: msg, b: b}
	if c.tracer != nil {
		d.trace = telemetry.Extract(msg.Headers())
	}
	// The rest of its checks are the store's (CheckGroup), made once for the group.
	return d, true
}

// drop terminates a batch no core can apply.
func (c *Core) drop(p int, msg jetstream.Msg, id string, err error) {
	c.m.batches.WithLabelValues("dropped").Inc()
	c.log.Error("dropping a write batch no core can apply", "partition", p, "subject", msg.Subject(), "batch", id, "bytes", len(msg.Data()), "err", err)
	_ = msg.Term()
}

// handleGroup applies delivered batches of one partition in one transaction. Each batch is
// acknowledged only after the transaction committed; until then JetStream keeps it and
// redelivers it if this core dies.
func (c *Core) handleGroup(ctx context.Context, p int, group []delivered, early *waiting) {
	bs := make([]*wire.Batch, len(group))
	for i := range group {
		bs[i] = group[i].b
	}
	ctx, span := c.traceGroup(ctx, p, group, bs)
	if span != nil {
		defer span.End()
	}
	start := time.Now()
	group, bs, results, events, ok := c.apply(ctx, p, group, bs)
	if !ok {
		return
	}
	c.m.applySeconds.Observe(time.Since(start).Seconds())
	c.m.groupBatches.Observe(float64(len(bs)))
	var late []int
	for i, res := range results {
		if res.Status == BatchDuplicate && len(res.Outcomes) < len(bs[i].Commands) && c.young(group[i].msg) {
			// Its producer had passed it, yet it has writes that were never applied: it
			// came after a batch that EarlyLimit forced past it. Applied below, once the
			// others are answered, out of its lane's order but not lost, by write id.
			late = append(late, i)
			continue
		}
		c.finish(ctx, p, group[i], res, early)
	}
	for _, i := range late {
		res, evs, ok := c.applyLate(ctx, p, group[i], results[i])
		if !ok {
			continue // stopping: left to another core
		}
		events = append(events, evs...)
		c.finish(ctx, p, group[i], res, early)
	}
	if len(events) > 0 {
		c.commits <- events
	}
}

// finish answers and acknowledges one batch of a committed group, or leaves an early one to
// be delivered again. ctx holds the group's span, if it is traced.
func (c *Core) finish(ctx context.Context, p int, d delivered, res BatchResult, early *waiting) {
	b, msg := d.b, d.msg
	switch res.Status {
	case BatchEarly:
		// Its predecessor is in the stream, delivered to another core or again later.
		c.m.batches.WithLabelValues("early").Inc()
		c.noteEarly(p, b, early)
		_ = msg.NakWithDelay(earlyDelay)
		return
	case BatchDuplicate:
		c.m.batches.WithLabelValues("duplicate").Inc()
	default:
		if b.Force {
			c.m.batches.WithLabelValues("forced").Inc()
			c.log.Error("applied a write batch whose predecessor never came: the order of its lane's writes across the gap is lost",
				"partition", p, "batch", b.ID, "producer", b.Producer, "seq", b.Seq, "waited", c.cfg.EarlyLimit)
		}
		c.m.batchSize.Observe(float64(len(b.Commands)))
		c.countBatch(res.Outcomes)
	}
	early.forget(b.ID)
	c.publishOutcomes(ctx, b, res.Outcomes)
	if err := msg.Ack(); err != nil {
		// The batch will be redelivered and answered as a duplicate: nothing is applied twice.
		c.log.Warn("acknowledging write batch", "partition", p, "batch", b.ID, "err", err)
	}
}

// purgeInterval is how often a core removes the applied batches from the write stream.
const purgeInterval = time.Second

// noteLost tells partition p's consume that its consumer is gone (lost), unless it has been
// told already.
func (c *Core) noteLost(p int) {
	select {
	case c.lost[p] <- struct{}{}:
	default:
	}
}

// purgeApplied removes from the write stream the batches that every core is done with: those
// at or below each partition consumer's ack floor, which cores acknowledge only after commit.
// The stream keeps batches by limits rather than as a work queue because a work queue's
// removal of each acknowledged message costs JetStream a write and an fsync of its own; one
// purge per partition and interval costs one. A consumer JetStream says is gone (or whose
// stream is) is reported to its partition's consume (lost), which has it made again.
func (c *Core) purgeApplied(ctx context.Context, consumers []jetstream.Consumer) {
	var stream jetstream.Stream
	purged := make([]uint64, len(consumers))
	t := time.NewTicker(purgeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if stream == nil {
			var err error
			if stream, err = c.js.Stream(ctx, wire.WriteStream); err != nil {
				if errors.Is(err, jetstream.ErrStreamNotFound) {
					for p := range consumers {
						c.noteLost(p)
					}
				}
				if ctx.Err() == nil {
					c.log.Warn("the write stream is unavailable; applied batches are not purged", "err", err)
				}
				continue
			}
		}
		for p, cons := range consumers {
			info, err := cons.Info(ctx)
			if err != nil {
				if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
					c.noteLost(p)
				}
				if ctx.Err() == nil {
					c.log.Debug("reading a write consumer", "partition", p, "err", err)
				}
				continue
			}
			c.recordLag(p, info)
			floor := info.AckFloor.Stream
			if floor < purged[p] {
				// The stream numbers from the start again: it was lost and made again
				// (consumePartition). What was purged of the old one says nothing of it.
				purged[p] = 0
			}
			if floor <= purged[p] {
				continue
			}
			if err := stream.Purge(ctx, jetstream.WithPurgeSubject(wire.WriteSubject(p)), jetstream.WithPurgeSequence(floor+1)); err != nil {
				if ctx.Err() == nil {
					c.log.Warn("purging applied write batches", "partition", p, "err", err)
				}
				continue
			}
			purged[p] = floor
		}
	}
}

// apply applies bs, the batches of group index for index, in one transaction, retrying until
// it succeeds. A batch the store finds invalid is terminated, and the others are applied
// without it: group and bs come back without it. It reports false when the core is stopping
// and left the batches to another core, or when no valid batch is left.
//
// A group the store refuses (ErrRefused) is applied batch by batch, and a batch it refuses
// command by command (applyRefused), so that a write the database will not store is answered
// alone instead of holding back its partition.
func (c *Core) apply(ctx context.Context, p int, group []delivered, bs []*wire.Batch) ([]delivered, []*wire.Batch, []BatchResult, []wire.ChangeEvent, bool) {
	for {
		results, events, err := c.applyRetrying(ctx, p, group, bs, true)
		if errors.Is(err, ErrRefused) {
			if len(bs) > 1 {
				return c.applyEach(ctx, p, group, bs)
			}
			return c.applyRefused(ctx, p, group[0], bs[0], err)
		}
		var bad *InvalidBatchError
		if !errors.As(err, &bad) {
			return group, bs, results, events, err == nil
		}
		c.drop(p, group[bad.Index].msg, bad.ID, bad.Err)
		group = slices.Delete(slices.Clone(group), bad.Index, bad.Index+1)
		bs = slices.Delete(slices.Clone(bs), bad.Index, bad.Index+1)
		if len(bs) == 0 {
			return nil, nil, nil, nil, false
		}
	}
}

// errStopping ends applyRetrying when the core stops before the group was applied.
var errStopping = errors.New("core stopping")

// applyEach applies the batches of a group the store refused one after the other, in the
// order the store would have applied them together (Order), each as apply does (the refused
// one write by write), and returns those applied.
func (c *Core) applyEach(ctx context.Context, p int, group []delivered, bs []*wire.Batch) ([]delivered, []*wire.Batch, []BatchResult, []wire.ChangeEvent, bool) {
	var (
		kept    []delivered
		keptBs  []*wire.Batch
		results []BatchResult
		events  []wire.ChangeEvent
	)
	order := Order(bs)
	for n, i := range order {
		g, b, res, evs, ok := c.apply(ctx, p, group[i:i+1], bs[i:i+1])
		if !ok {
			if ctx.Err() != nil {
				// Stopping: the rest is left to the next core, at once (applyRetrying has
				// done so with this one).
				for _, j := range order[n+1:] {
					_ = group[j].msg.Nak()
				}
				break
			}
			continue // dropped as invalid
		}
		kept, keptBs = append(kept, g...), append(keptBs, b...)
		results, events = append(results, res...), append(events, evs...)
	}
	return kept, keptBs, results, events, len(keptBs) > 0
}

// applyRefused applies batch b, which the store refused, write by write: each alone, by its
// write id (unfenced, as applyLate does), in the batch's order, so that each later one sees
// the earlier ones. A write refused alone is recorded at once with the problem NotStorable
// instead, writing nothing else. Then b itself is applied, fenced and marked Recorded, so
// that the store replays every write by its record and only moves the producer on; the
// outcomes of the writes applied alone are b's outcomes. A crash anywhere in between is safe:
// b is delivered again, and what was applied or refused is replayed by write id, in order.
//
// Only the data of a write is refused this way (what the store reports as ErrRefused: a
// value out of range, a check of the database's), never a failure of the database as a
// whole or of the store's own statements: those are retried until they succeed.
func (c *Core) applyRefused(ctx context.Context, p int, d delivered, b *wire.Batch, cause error) ([]delivered, []*wire.Batch, []BatchResult, []wire.ChangeEvent, bool) {
	c.m.batches.WithLabelValues("refused").Inc()
	c.log.WarnContext(ctx, "the database refused a write batch; applying its writes one by one",
		"partition", p, "batch", b.ID, "commands", len(b.Commands), "err", cause)
	group := []delivered{d}
	alone := func(cmd wire.Command, isolate bool) (wire.Outcome, []wire.ChangeEvent, error) {
		one := &wire.Batch{ID: b.ID, Partition: b.Partition, Edge: b.Edge, Commands: []wire.Command{cmd}}
		res, evs, err := c.applyRetrying(ctx, p, group, []*wire.Batch{one}, isolate)
		if err == nil && (len(res) != 1 || len(res[0].Outcomes) != 1) {
			err = fmt.Errorf("apply write %s alone: %d results", cmd.WriteID, len(res))
		}
		if err != nil {
			return wire.Outcome{}, nil, err
		}
		return res[0].Outcomes[0], evs, nil
	}
	outs := make([]wire.Outcome, len(b.Commands))
	var events []wire.ChangeEvent
	for i := range b.Commands {
		out, evs, err := alone(b.Commands[i], true)
		if errors.Is(err, ErrRefused) {
			cmd := b.Commands[i]
			c.log.ErrorContext(ctx, "the database refused a write: answering it not_storable",
				"partition", p, "batch", b.ID, "write", cmd.WriteID, "collection", cmd.Collection, "id", cmd.ID, "err", err)
			cmd.Refused = problem.New(problem.NotStorable, "the database refused to store this write")
			out, evs, err = alone(cmd, false)
		}
		if err != nil {
			return nil, nil, nil, nil, false // stopping: applyRetrying left it to the next core
		}
		outs[i] = out
		events = append(events, evs...)
	}
	fenced := *b
	fenced.Recorded = true
	results, evs, err := c.applyRetrying(ctx, p, group, []*wire.Batch{&fenced}, false)
	if err != nil {
		return nil, nil, nil, nil, false
	}
	if results[0].Status == BatchApplied {
		results[0].Outcomes = outs
	}
	return group, []*wire.Batch{b}, results, append(events, evs...), true
}

// applyRetrying is apply without the handling of invalid and refused batches: it returns the
// store's *InvalidBatchError, the store's error wrapping ErrRefused when isolate is set (else
// it retries those as any other), or errStopping once it left the batches to another core.
func (c *Core) applyRetrying(ctx context.Context, p int, group []delivered, bs []*wire.Batch, isolate bool) ([]BatchResult, []wire.ChangeEvent, error) {
	commands := 0
	for _, b := range bs {
		commands += len(b.Commands)
	}
	// A group that started is finished even when the core is asked to stop.
	actx := context.WithoutCancel(ctx)
	backoff := 50 * time.Millisecond
	// A slow transaction must not look like a dead core: tell JetStream the batches are
	// being worked on, well within the ack timeout.
	// The ticker goroutine has its own copy of the messages and is waited for: the caller
	// reuses group's array for the next group once this returns.
	msgs := make([]jetstream.Msg, len(group))
	for i := range group {
		msgs[i] = group[i].msg
	}
	working, stopped := make(chan struct{}), make(chan struct{})
	defer func() {
		close(working)
		<-stopped
	}()
	go func() {
		defer close(stopped)
		t := time.NewTicker(c.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-working:
				return
			case <-t.C:
				for _, m := range msgs {
					_ = m.InProgress()
				}
			}
		}
	}()
	for {
		results, events, err := c.store.ApplyBatches(actx, bs, c.cfg.Now())
		var bad *InvalidBatchError
		if err == nil || errors.As(err, &bad) || (isolate && errors.Is(err, ErrRefused)) {
			return results, events, err
		}
		c.m.applyRetries.Inc()
		c.log.WarnContext(ctx, "applying write batches failed; retrying", "partition", p, "batches", len(bs), "first", bs[0].ID, "commands", commands, "err", err)
		if ctx.Err() != nil {
			// Leave them to the next core, at once.
			for i := range group {
				_ = group[i].msg.Nak()
			}
			return nil, nil, errStopping
		}
		for i := range group {
			_ = group[i].msg.InProgress()
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// young reports whether msg was stored recently enough that the write records of anything
// applied from it are still kept (Retention): then a write id without a record was never
// applied.
func (c *Core) young(msg jetstream.Msg) bool {
	meta, err := msg.Metadata()
	return err == nil && c.cfg.Now().Sub(meta.Timestamp) < c.cfg.Retention
}

// applyLate applies the writes of a late batch, without its fence, and returns its result and
// events.
func (c *Core) applyLate(ctx context.Context, p int, d delivered, res BatchResult) (BatchResult, []wire.ChangeEvent, bool) {
	b := *d.b
	c.log.Error("a write batch came after its producer had been forced past it; applying its writes by write id, out of its lane's order",
		"partition", p, "batch", b.ID, "producer", b.Producer, "seq", b.Seq, "recorded", len(res.Outcomes), "commands", len(b.Commands))
	b.Producer, b.Seq, b.After, b.Force = "", 0, nil, false
	_, _, results, evs, ok := c.apply(ctx, p, []delivered{d}, []*wire.Batch{&b})
	if !ok {
		return res, nil, false
	}
	c.m.batches.WithLabelValues("late").Inc()
	results[0].Status = BatchApplied
	return results[0], evs, true
}

// noteEarly records that b came before its predecessor, and warns once it has waited longer
// than a redelivery takes.
func (c *Core) noteEarly(p int, b *wire.Batch, early *waiting) {
	now := time.Now()
	for id, e := range early.since {
		// Not delivered here again for longer than a redelivery takes: another core has it.
		if now.Sub(e.seen) > c.cfg.AckWait+4*earlyDelay {
			early.forget(id)
		}
	}
	e, isNew := early.note(b.ID, now)
	if isNew {
		c.log.Debug("write batch delivered before its predecessor; waiting", "partition", p, "batch", b.ID, "producer", b.Producer, "seq", b.Seq)
	}
	if !e.warned && now.Sub(e.since) > c.cfg.AckWait {
		e.warned = true
		early.since[b.ID] = e
		c.log.Warn("write batch still waiting for its predecessor", "partition", p, "batch", b.ID,
			"producer", b.Producer, "seq", b.Seq, "after", b.After, "waited", now.Sub(e.since).Round(time.Second), "limit", c.cfg.EarlyLimit)
	}
}

// unpin hands partition p to another core at once when this one stops, instead of after the
// pin's timeout. The pin stays with a core that keeps pulling whether or not anything comes,
// so a stopping core cannot tell the partitions pinned to it: it unpins each, and one pinned
// to another core is pinned again to whichever core pulls next (the fence keeps the order
// either way).
func (c *Core) unpin(p int) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	stream, err := c.js.Stream(ctx, wire.WriteStream)
	if err == nil {
		err = stream.UnpinConsumer(ctx, c.consumerConfig(p).Durable, wire.CoreGroup)
	}
	if err != nil {
		c.log.Debug("unpinning a write consumer", "partition", p, "err", err)
	}
}

// announce publishes the change events of committed batches, off the path of the next
// batch: it sends what is ready, confirms it with one flush, and removes the events from the
// outbox in bulk (one delete for all that were published in a short while, not one
// transaction per batch). It returns once commits is closed and drained. Events it could
// not confirm stay in the outbox for the sweeper.
func (c *Core) announce() {
	ctx := context.Background()
	var sent, published []wire.ChangeEvent
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	armed := false
	remove := func() {
		if len(published) == 0 {
			return
		}
		if err := c.store.DeleteEvents(ctx, published); err != nil {
			c.log.Warn("removing published events from the outbox; the sweeper will publish them again", "events", len(published), "err", err)
		}
		published = published[:0]
	}
	for {
		var events []wire.ChangeEvent
		open := true
		select {
		case events, open = <-c.commits:
		case <-timer.C:
			armed = false
			remove()
			continue
		}
		sent = sent[:0]
		for more := open; more; {
			if c.send(events) {
				sent = append(sent, events...)
			}
			select {
			case events, more = <-c.commits:
				open = more
			default:
				more = false
			}
		}
		if len(sent) > 0 && c.confirm(len(sent), "commit") {
			published = append(published, sent...)
		}
		switch {
		case !open:
			remove()
			return
		case len(published) >= 1024:
			remove()
		case len(published) > 0 && !armed:
			timer.Reset(50 * time.Millisecond)
			armed = true
		}
	}
}

func (c *Core) countBatch(outcomes []wire.Outcome) {
	redelivered := len(outcomes) > 0
	for i := range outcomes {
		switch o := &outcomes[i]; {
		case o.Replayed:
			c.m.commands.WithLabelValues("replayed").Inc()
		case o.Problem != nil:
			c.m.commands.WithLabelValues("rejected").Inc()
			redelivered = false
		default:
			c.m.commands.WithLabelValues("applied").Inc()
			redelivered = false
		}
	}
	if redelivered {
		c.m.batches.WithLabelValues("replayed").Inc()
	} else {
		c.m.batches.WithLabelValues("applied").Inc()
	}
}

func (c *Core) publishOutcomes(ctx context.Context, b *wire.Batch, outcomes []wire.Outcome) {
	if b.Edge == "" || len(outcomes) == 0 {
		return
	}
	msgs, err := encodeOutcomes(b.ID, outcomes, int(c.nc.MaxPayload()))
	if err != nil {
		c.log.Error("encoding outcomes", "batch", b.ID, "err", err)
		return
	}
	header := telemetry.Inject(ctx, nil)
	for _, data := range msgs {
		msg := &nats.Msg{Subject: wire.OutcomeSubject(b.Edge), Data: data, Header: header}
		if err := c.nc.PublishMsg(msg); err != nil {
			// The edge answered or will answer 202; the client can ask GET /v1/writes/{id}.
			c.log.Warn("publishing outcomes", "batch", b.ID, "err", err)
		}
	}
}

// encodeOutcomes encodes the wire.Outcomes of a batch, reusing the encoding the store made of
// each outcome it recorded, in as many messages as it takes for each to stay within half of
// maxPayload (a NATS server's max_payload; 0 for no bound): every outcome carries its
// document, and a batch of many writes to large documents can add up to more than one
// message holds. An outcome too large for a message of its own goes without its document
// (the edge then answers 204, the write applied).
func encodeOutcomes(batch string, outcomes []wire.Outcome, maxPayload int) ([][]byte, error) {
	id, err := json.Marshal(batch)
	if err != nil {
		return nil, err
	}
	limit := maxPayload / 2
	if maxPayload <= 0 {
		limit = math.MaxInt
	}
	var msgs [][]byte
	var buf []byte
	n := 0
	for i := range outcomes {
		raw := outcomes[i].Encoded
		if len(raw) == 0 {
			if raw, err = outcomes[i].AppendJSON(nil); err != nil {
				return nil, err
			}
		}
		if maxPayload > 0 && len(raw)+len(id)+64 > maxPayload {
			slim := outcomes[i]
			slim.Doc, slim.Encoded = nil, nil
			if raw, err = slim.AppendJSON(nil); err != nil {
				return nil, err
			}
		}
		if n > 0 && len(buf)+len(raw)+3 > limit {
			msgs = append(msgs, append(buf, "]}"...))
			buf, n = nil, 0
		}
		if n == 0 {
			buf = make([]byte, 0, min(limit, 256*(len(outcomes)-i)+len(raw)))
			buf = append(append(append(buf, `{"batch":`...), id...), `,"outcomes":[`...)
		} else {
			buf = append(buf, ',')
		}
		buf = append(buf, raw...)
		n++
	}
	if n > 0 {
		msgs = append(msgs, append(buf, "]}"...))
	}
	return msgs, nil
}

// publish announces events and reports whether NATS confirmed them all.
func (c *Core) publish(events []wire.ChangeEvent, source string) bool {
	return c.send(events) && c.confirm(len(events), source)
}

// send publishes events without waiting for NATS to take them: one message per run of
// consecutive events of one collection, a JSON array of them, so that a transaction's
// changes cost a message, not one each, and edges still receive each partition's events in
// sequence order (NATS keeps the order of one connection's messages to a subscriber).
func (c *Core) send(events []wire.ChangeEvent) bool {
	limit := max(int(c.nc.MaxPayload())/2, 1)
	buf := make([]byte, 0, 4096)
	n := 0 // events in buf
	flush := func(collection string) error {
		if n == 0 {
			return nil
		}
		buf = append(buf, ']')
		err := c.nc.Publish(wire.ChangeSubject(collection), buf)
		buf, n = buf[:0], 0
		return err
	}
	for i := range events {
		ev := &events[i]
		raw, err := c.encodeEvent(ev)
		if err != nil {
			c.log.Error("encoding change event; the outbox keeps it", "collection", ev.Collection, "id", ev.ID, "err", err)
			return false
		}
		if n > 0 && (ev.Collection != events[i-1].Collection || len(buf)+len(raw)+2 > limit) {
			if err := flush(events[i-1].Collection); err != nil {
				c.log.Warn("publishing change events; the outbox keeps them", "collection", events[i-1].Collection, "err", err)
				return false
			}
		}
		if n == 0 {
			buf = append(buf, '[')
		} else {
			buf = append(buf, ',')
		}
		buf = append(buf, raw...)
		n++
	}
	if len(events) > 0 {
		if err := flush(events[len(events)-1].Collection); err != nil {
			c.log.Warn("publishing change events; the outbox keeps them", "collection", events[len(events)-1].Collection, "err", err)
			return false
		}
	}
	return true
}

// encodeEvent returns the JSON of ev as published: the store's encoding when it made one,
// without the document when that is larger than EventDocLimit (edges then fetch it).
func (c *Core) encodeEvent(ev *wire.ChangeEvent) ([]byte, error) {
	large := ev.Doc != nil && len(ev.Doc.Data) > c.cfg.EventDocLimit
	if len(ev.Encoded) > 0 && !large {
		return ev.Encoded, nil
	}
	out := *ev
	if large {
		out.Doc = nil
	}
	return out.AppendJSON(nil)
}

// confirm waits until NATS has taken everything sent so far: n events from source.
func (c *Core) confirm(n int, source string) bool {
	if err := c.nc.FlushTimeout(5 * time.Second); err != nil {
		c.log.Warn("flushing change events; the outbox keeps them", "err", err)
		return false
	}
	c.m.eventsOut.WithLabelValues(source).Add(float64(n))
	return true
}

// sweepOutbox republishes events that stayed in the outbox longer than a sweep interval: their
// core died, or lost NATS, between commit and publish.
func (c *Core) sweepOutbox(ctx context.Context) {
	t := time.NewTicker(c.cfg.OutboxSweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			events, err := c.store.PendingEvents(ctx, c.cfg.Now().Add(-c.cfg.OutboxSweep), 512)
			if err != nil {
				c.log.Warn("reading the outbox", "err", err)
				break
			}
			if len(events) == 0 {
				break
			}
			c.log.Info("republishing change events from the outbox", "events", len(events))
			if !c.publish(events, "outbox") {
				break
			}
			if err := c.store.DeleteEvents(ctx, events); err != nil {
				c.log.Warn("removing republished events from the outbox", "err", err)
				break
			}
			if len(events) < 512 {
				break
			}
		}
	}
}

func (c *Core) expire(ctx context.Context) {
	t := time.NewTicker(10 * time.Minute)
	defer t.Stop()
	for {
		n, err := c.store.Expire(ctx, c.cfg.Now().Add(-c.cfg.Retention))
		switch {
		case err != nil && ctx.Err() == nil:
			c.log.Warn("expiring write records", "err", err)
		case n > 0:
			c.log.Info("expired write records", "count", n)
		}
		// Refresh tokens of families past their life, and revocations and login throttles
		// no token or window can need any more.
		keep := max(c.cfg.Accounts.Token.TTL+c.cfg.Accounts.Token.Skew, c.cfg.Accounts.LoginWindow)
		if n, err := c.store.ExpireAccounts(ctx, c.cfg.Now().Add(-keep)); err != nil && ctx.Err() == nil {
			c.log.Warn("expiring account records", "err", err)
		} else if n > 0 {
			c.log.Info("expired account records", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

type readService struct {
	sub *nats.Subscription
	wg  sync.WaitGroup
}

// stop ends the read service once every read it took was answered: Drain lets the handler
// run for the messages already received, so the wait is for the subscription to close
// first, and only then for the reads it started.
func (r *readService) stop() {
	_ = r.sub.Drain()
	for deadline := time.Now().Add(10 * time.Second); r.sub.IsValid() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	r.wg.Wait()
}

// serveReads answers the edges' reads. NATS calls a subscription's handler one message at a
// time, so each read runs in its own goroutine, at most ReadConcurrency at once.
func (c *Core) serveReads() (*readService, error) {
	r := &readService{}
	sem := make(chan struct{}, c.cfg.ReadConcurrency)
	sub, err := c.nc.QueueSubscribe(wire.ReadSubject, wire.CoreQueue, func(m *nats.Msg) {
		sem <- struct{}{}
		r.wg.Add(1)
		go func() {
			defer func() { <-sem; r.wg.Done() }()
			c.serveRead(m)
		}()
	})
	if err != nil {
		return nil, fmt.Errorf("core: subscribe %s: %w", wire.ReadSubject, err)
	}
	r.sub = sub
	return r, nil
}

func (c *Core) serveRead(m *nats.Msg) {
	var req wire.ReadRequest
	var resp wire.ReadResponse
	if err := wire.DecodeReadRequest(m.Data, &req); err != nil {
		resp.Problem = problem.New(problem.BadRequest, "malformed read request")
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ctx, span := c.traceRead(ctx, m, &req)
		start := time.Now()
		resp = c.Read(ctx, &req)
		if span != nil {
			if resp.Problem != nil && resp.Problem.Status >= 500 {
				span.SetStatus(codes.Error, string(resp.Problem.Code))
			}
			span.End()
		}
		cancel()
		result := "ok"
		switch {
		case resp.Problem != nil && resp.Problem.Code == problem.NotFound:
			result = "not_found"
		case resp.Problem != nil:
			result = "error"
		}
		kind := string(req.Kind)
		switch req.Kind {
		case wire.ReadGet, wire.ReadList, wire.ReadSync, wire.ReadWrite, wire.ReadOwned:
		default:
			kind = "other"
		}
		c.m.reads.WithLabelValues(kind, result).Inc()
		c.m.readSeconds.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	}
	data, err := resp.AppendJSON(make([]byte, 0, answerSize(&resp)))
	if err != nil {
		c.log.Error("encoding read response", "kind", req.Kind, "err", err)
		return
	}
	if err := m.Respond(data); err != nil {
		c.log.Debug("answering read", "kind", req.Kind, "err", err)
	}
}

// answerSize is about the length of resp's encoding, to size its buffer once: each
// document's data and an allowance for its other fields.
func answerSize(resp *wire.ReadResponse) int {
	const fields = 256
	size := fields
	if resp.Doc != nil {
		size += fields + len(resp.Doc.Data)
	}
	if resp.Page != nil {
		for i := range resp.Page.Items {
			size += fields + len(resp.Page.Items[i].Data)
		}
	}
	if resp.Sync != nil {
		for i := range resp.Sync.Changes {
			size += fields + len(resp.Sync.Changes[i].Doc.Data)
		}
	}
	return size
}

// Read answers one read request from the store.
func (c *Core) Read(ctx context.Context, req *wire.ReadRequest) wire.ReadResponse {
	var resp wire.ReadResponse
	var err error
	switch req.Kind {
	case wire.ReadGet:
		var d wire.Document
		d, err = c.store.Get(ctx, req.Collection, req.ID)
		if err == nil {
			resp.Doc = &d
		}
	case wire.ReadList:
		if req.List == nil {
			return wire.ReadResponse{Problem: problem.New(problem.BadRequest, "list without query")}
		}
		var page wire.ListPage
		page, err = c.store.List(ctx, *req.List)
		resp.Page = &page
	case wire.ReadSync:
		if req.Sync == nil {
			return wire.ReadResponse{Problem: problem.New(problem.BadRequest, "sync without query")}
		}
		var page wire.SyncPage
		page, err = c.store.Sync(ctx, *req.Sync)
		resp.Sync = &page
	case wire.ReadWrite:
		return c.writeStatus(ctx, req.WriteID)
	case wire.ReadOwned:
		if req.Owned == nil || req.Owned.Owner == "" {
			return wire.ReadResponse{Problem: problem.New(problem.BadRequest, "owned read without an owner")}
		}
		var page wire.ListPage
		page, err = c.store.Owned(ctx, *req.Owned)
		resp.Page = &page
	default:
		return wire.ReadResponse{Problem: problem.Newf(problem.BadRequest, "unknown read %q", req.Kind)}
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return wire.ReadResponse{Problem: problem.New(problem.NotFound, "not found")}
	case err != nil:
		c.log.Warn("read failed", "kind", req.Kind, "collection", req.Collection, "err", err)
		return wire.ReadResponse{Problem: problem.New(problem.Unavailable, "the store is unavailable")}
	}
	return resp
}

// writeStatus answers GET /v1/writes/{id}. A write id the store does not know is queued when it
// was issued recently enough to still be in the stream, and unknown otherwise.
func (c *Core) writeStatus(ctx context.Context, writeID string) wire.ReadResponse {
	out, err := c.store.WriteOutcome(ctx, writeID)
	switch {
	case err == nil:
		return wire.ReadResponse{Write: &out}
	case !errors.Is(err, ErrNotFound):
		c.log.Warn("write status failed", "write_id", writeID, "err", err)
		return wire.ReadResponse{Problem: problem.New(problem.Unavailable, "the store is unavailable")}
	}
	id, perr := ulid.ParseStrict(writeID)
	if perr != nil {
		return wire.ReadResponse{Problem: problem.New(problem.NotFound, "no such write")}
	}
	issued := ulid.Time(id.Time())
	now := c.cfg.Now()
	if issued.After(now.Add(time.Minute)) || now.Sub(issued) > c.cfg.Retention {
		return wire.ReadResponse{Problem: problem.New(problem.NotFound, "no such write")}
	}
	return wire.ReadResponse{Write: &wire.Outcome{WriteID: writeID}}
}
