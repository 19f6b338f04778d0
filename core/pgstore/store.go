package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/core/migration"
	"github.com/perchhq/perch/internal/wire"
)

var _ core.Store = (*Store)(nil)

// ErrClosed is returned by every method of a Store after Close.
var ErrClosed = errors.New("postgres store is closed")

// ErrSchemaBehind is returned by Open with WithoutMigrate when the database lacks migrations
// that this build needs: run `perch migrate --db DSN` (Migrate) first.
var ErrSchemaBehind = errors.New("database schema is behind this build")

// ErrCommitUnknown is wrapped by the error of ApplyBatch in the one case where the error does
// not mean that nothing was committed: a commit was ambiguous and the store could not reach
// the database to find out how it ended before it ran out of attempts. Retrying the batch is
// still safe: its write ids are recorded if it committed, so the retry replays it, and its
// events are then in the outbox.
var ErrCommitUnknown = errors.New("outcome of an ambiguous commit unknown")

// Store is a core.Store in a PostgreSQL or CockroachDB database, through a pgx connection
// pool. Its methods are safe for concurrent use.
type Store struct {
	pool        *pgxpool.Pool
	partitions  int
	logger      *slog.Logger
	cockroach   bool // the server reported CockroachDB
	maxAttempts int

	faults  *faults      // nil except in tests (export_test.go)
	retries atomic.Int64 // transaction attempts that failed and were retried

	closed    atomic.Bool
	closeOnce sync.Once
}

// Option configures Open and Migrate.
type Option func(*options)

type options struct {
	migrate     bool
	poolSize    int
	maxAttempts int
	region      multiRegion
	tracer      pgx.QueryTracer // nil except in tests (export_test.go)
	tp          trace.TracerProvider
}

// DefaultMaxAttempts bounds the attempts of one transaction (see WithMaxAttempts).
const DefaultMaxAttempts = 100

// maxDefaultPool caps the default pool size of a store with many partitions.
const maxDefaultPool = 64

// DefaultPoolSize is the pool size Open uses without WithPoolSize or a pool_max_conns in the
// DSN: one connection for each partition whose batch the core may be applying at once (a core
// runs one worker per partition, each with at most one transaction in flight), plus four for reads,
// the outbox sweeper and Expire, capped at 64 in all. For the default 16 partitions: 20.
func DefaultPoolSize(partitions int) int { return min(partitions+4, maxDefaultPool) }

// WithoutMigrate makes Open leave the schema alone (`perch core --no-migrate`): it fails with
// ErrSchemaBehind when the database lacks a migration this build needs, instead of applying
// it. Use it when migrations are run by `perch migrate` before a rollout.
func WithoutMigrate() Option { return func(o *options) { o.migrate = false } }

// WithPoolSize sets the maximum number of connections of the pool (default DefaultPoolSize).
// A pool_max_conns parameter in the DSN takes precedence.
func WithPoolSize(n int) Option { return func(o *options) { o.poolSize = n } }

// WithMaxAttempts bounds how many times one transaction is attempted before its last error
// is returned (default DefaultMaxAttempts). Attempts are separated by a jittered backoff of at
// most 100 ms, so the default gives up after several seconds of constant conflict.
func WithMaxAttempts(n int) Option { return func(o *options) { o.maxAttempts = n } }

func buildOptions(partitions int, opts []Option) (options, error) {
	o := options{migrate: true, poolSize: DefaultPoolSize(partitions), maxAttempts: DefaultMaxAttempts}
	for _, opt := range opts {
		opt(&o)
	}
	if o.poolSize < 2 {
		return o, fmt.Errorf("pool size %d, need at least 2", o.poolSize)
	}
	if o.maxAttempts < 1 {
		return o, fmt.Errorf("max attempts %d, need at least 1", o.maxAttempts)
	}
	if err := o.region.validate(); err != nil {
		return o, err
	}
	return o, nil
}

// Open connects to the database that dsn names (postgres://... or postgresql://...),
// applies the migrations it lacks (unless WithoutMigrate), applies the multi-region
// configuration on CockroachDB when WithRegions asks for it, and checks that the store was
// created with the given number of write partitions: a store created with another count gives
// an error wrapping core.ErrPartitionsMismatch. A nil logger discards.
func Open(ctx context.Context, dsn string, partitions int, logger *slog.Logger, opts ...Option) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if partitions < 1 {
		return nil, fmt.Errorf("open postgres store: %d partitions, need at least 1", partitions)
	}
	o, err := buildOptions(partitions, opts)
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	ms, err := migration.Load(migrationFiles)
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	pool, err := connect(ctx, dsn, o.poolSize, o.queryTracer())
	if err != nil {
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	s := &Store{pool: pool, partitions: partitions, logger: logger, maxAttempts: o.maxAttempts}
	fail := func(err error) (*Store, error) {
		pool.Close()
		return nil, fmt.Errorf("open postgres store: %w", err)
	}
	if s.cockroach, err = isCockroach(ctx, pool); err != nil {
		return fail(err)
	}
	if o.migrate {
		if err := s.migrator(ms, o).run(ctx); err != nil {
			return fail(err)
		}
	} else if err := checkSchema(ctx, pool, ms); err != nil {
		return fail(err)
	}
	if err := s.checkPartitions(ctx); err != nil {
		return fail(err)
	}
	logger.Debug("opened postgres store", "cockroachdb", s.cockroach, "partitions", partitions,
		"pool", pool.Config().MaxConns)
	return s, nil
}

// connect opens a pool on dsn and checks that the server answers. tracer may be nil.
func connect(ctx context.Context, dsn string, size int, tracer pgx.QueryTracer) (*pgxpool.Pool, error) {
	cfg, err := poolConfig(dsn, size)
	if err != nil {
		return nil, err
	}
	if tracer != nil {
		cfg.ConnConfig.Tracer = tracer
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	return pool, nil
}

// poolConfig parses dsn, which must be a postgres:// or postgresql:// URL. Errors never
// include the DSN, which may hold a password.
func poolConfig(dsn string, size int) (*pgxpool.Config, error) {
	scheme, _, ok := strings.Cut(dsn, "://")
	if !ok || (scheme != "postgres" && scheme != "postgresql") {
		return nil, errors.New("the DSN must be a postgres:// or postgresql:// URL")
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse DSN: %w", err) // pgconn redacts the password
	}
	if !strings.Contains(dsn, "pool_max_conns=") {
		cfg.MaxConns = int32(size)
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "perch"
	}
	// pgx's default query mode caches a prepared statement per SQL text on each connection.
	// The store's statements have fixed texts (batches pass arrays, not lists of
	// placeholders), so each is parsed and planned once per connection.
	cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeCacheStatement
	return cfg, nil
}

// checkPartitions records the partition count of a new store and creates its counters, or
// compares it with the count the store was created with.
func (s *Store) checkPartitions(ctx context.Context) error {
	var created bool
	err := s.retry(ctx, "check partitions", func() error {
		created = false
		return s.runTx(ctx, serializable, func(tx pgx.Tx) error {
			var recorded string
			err := tx.QueryRow(ctx, `SELECT value FROM meta WHERE name = 'partitions'`).Scan(&recorded)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				if _, err := tx.Exec(ctx, `INSERT INTO meta (name, value) VALUES ('partitions', $1::TEXT)`,
					strconv.Itoa(s.partitions)); err != nil {
					return fmt.Errorf("record partitions: %w", err)
				}
				if _, err := tx.Exec(ctx, `INSERT INTO partitions (part, seq)
					SELECT g, 0 FROM generate_series(0, $1::INT - 1) AS g`, s.partitions); err != nil {
					return fmt.Errorf("create partitions: %w", err)
				}
				created = true
				return nil
			case err != nil:
				return fmt.Errorf("read partitions: %w", err)
			}
			n, err := strconv.Atoi(recorded)
			if err != nil {
				return permanentf(fmt.Errorf("recorded partitions %q: %w", recorded, err))
			}
			if n != s.partitions {
				return permanentf(fmt.Errorf("store has %d partitions, opened with %d: %w", n, s.partitions, core.ErrPartitionsMismatch))
			}
			return nil
		})
	})
	if err == nil && created {
		s.logger.Info("created postgres store", "partitions", s.partitions)
	}
	return err
}

// Close closes the pool, waiting for the connections in use to be released. Every call after
// the first returns nil; every other method returns ErrClosed after Close.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.pool.Close()
	})
	return nil
}

func (s *Store) checkOpen() error {
	if s.closed.Load() {
		return ErrClosed
	}
	return nil
}

// docColumns are the columns scanDocument reads, in its order. Every statement names its
// columns (never *), so that a core of the previous release keeps working on a schema with
// columns it does not know (see the migrations section of README.md).
const docColumns = `collection, id, version, deleted, data, created_at, updated_at, owner`

// Get returns the document or tombstone, or an error wrapping core.ErrNotFound.
func (s *Store) Get(ctx context.Context, collection, id string) (wire.Document, error) {
	if err := s.checkOpen(); err != nil {
		return wire.Document{}, err
	}
	if !wire.ValidCollection(collection) || !wire.ValidName(id) {
		// No write can have created it; and PostgreSQL text cannot hold every byte a caller
		// might pass (NUL).
		return wire.Document{}, fmt.Errorf("document %s/%s: %w", collection, id, core.ErrNotFound)
	}
	d, err := scanDocument(s.pool.QueryRow(ctx, `SELECT `+docColumns+` FROM documents
		WHERE collection = $1 AND id = $2`, collection, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return wire.Document{}, fmt.Errorf("document %s/%s: %w", collection, id, core.ErrNotFound)
	}
	if err != nil {
		return wire.Document{}, fmt.Errorf("get document %s/%s: %w", collection, id, err)
	}
	return d, nil
}

// WriteOutcome returns the recorded outcome of writeID, or an error wrapping core.ErrNotFound.
func (s *Store) WriteOutcome(ctx context.Context, writeID string) (wire.Outcome, error) {
	if err := s.checkOpen(); err != nil {
		return wire.Outcome{}, err
	}
	if !storableText(writeID) {
		return wire.Outcome{}, fmt.Errorf("write %s: %w", writeID, core.ErrNotFound)
	}
	var raw []byte
	err := s.pool.QueryRow(ctx, `SELECT outcome FROM writes WHERE write_id = $1`, writeID).Scan(&raw)
	if errors.Is(err, pgx.ErrNoRows) {
		return wire.Outcome{}, fmt.Errorf("write %s: %w", writeID, core.ErrNotFound)
	}
	if err != nil {
		return wire.Outcome{}, fmt.Errorf("read write %s: %w", writeID, err)
	}
	out, err := decodeOutcome(raw)
	if err != nil {
		return wire.Outcome{}, err
	}
	return *out, nil
}

// List returns a page of live documents in one statement. The id orders compare ids byte by
// byte (COLLATE "C" on PostgreSQL, CockroachDB's only string order); the updated_at orders
// break ties by id in the same direction. An unknown order is an error. With q.Owner, only
// that owner's documents (index documents_owner).
func (s *Store) List(ctx context.Context, q wire.ListQuery) (wire.ListPage, error) {
	if err := s.checkOpen(); err != nil {
		return wire.ListPage{}, err
	}
	limit := core.ListLimit(q.Limit)
	empty := wire.ListPage{Items: []wire.Document{}}
	if !wire.ValidCollection(q.Collection) || !nameChars(q.IDPrefix) || !storableText(q.Owner) {
		if !isOrder(q.Order) {
			return wire.ListPage{}, fmt.Errorf("list %s: unknown order %q", q.Collection, q.Order)
		}
		return empty, nil // nothing is stored under such a name
	}
	var b strings.Builder
	args := []any{q.Collection}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	b.WriteString(`SELECT ` + docColumns + ` FROM documents WHERE collection = $1 AND NOT deleted`)
	if q.Owner != "" {
		b.WriteString(` AND owner = ` + arg(q.Owner))
	}
	if q.IDPrefix != "" {
		b.WriteString(` AND id >= ` + arg(q.IDPrefix))
		if end, ok := core.PrefixEnd(q.IDPrefix); ok {
			b.WriteString(` AND id < ` + arg(end))
		}
	}
	var order string
	switch q.Order {
	case wire.OrderID, "":
		if q.After != nil {
			b.WriteString(` AND id > ` + arg(q.After.ID))
		}
		order = `id`
	case wire.OrderIDDesc:
		if q.After != nil {
			b.WriteString(` AND id < ` + arg(q.After.ID))
		}
		order = `id DESC`
	case wire.OrderUpdatedAt:
		if q.After != nil {
			// (updated_at, id) > (t, id), spelt so that the index range starts at t.
			t, id := arg(micro(q.After.UpdatedAt)), arg(q.After.ID)
			b.WriteString(` AND updated_at >= ` + t + ` AND (updated_at > ` + t + ` OR id > ` + id + `)`)
		}
		order = `updated_at, id`
	case wire.OrderUpdatedAtDesc:
		if q.After != nil {
			t, id := arg(micro(q.After.UpdatedAt)), arg(q.After.ID)
			b.WriteString(` AND updated_at <= ` + t + ` AND (updated_at < ` + t + ` OR id < ` + id + `)`)
		}
		order = `updated_at DESC, id DESC`
	default:
		return wire.ListPage{}, fmt.Errorf("list %s: unknown order %q", q.Collection, q.Order)
	}
	// One row more than fits tells whether another page has items.
	b.WriteString(` ORDER BY ` + order + ` LIMIT ` + arg(limit+1))
	rows, err := s.pool.Query(ctx, b.String(), args...)
	if err != nil {
		return wire.ListPage{}, fmt.Errorf("list %s: %w", q.Collection, err)
	}
	page := wire.ListPage{Items: make([]wire.Document, 0, min(limit+1, 64))}
	for rows.Next() {
		d, err := scanDocument(rows)
		if err != nil {
			rows.Close()
			return wire.ListPage{}, fmt.Errorf("list %s: %w", q.Collection, err)
		}
		page.Items = append(page.Items, d)
	}
	if err := rows.Err(); err != nil {
		return wire.ListPage{}, fmt.Errorf("list %s: %w", q.Collection, err)
	}
	if len(page.Items) > limit {
		page.Items, page.More = page.Items[:limit], true
	}
	return page, nil
}

func isOrder(o wire.Order) bool {
	switch o {
	case "", wire.OrderID, wire.OrderIDDesc, wire.OrderUpdatedAt, wire.OrderUpdatedAtDesc:
		return true
	}
	return false
}

// syncWanted is the condition on a documents row that a sync wants: a change in one of the
// collections $3, and, in those of them also in $4 (core.SyncOwned), a document of owner $5.
// A row without an owner fails owner = $5 (NULL), so it shows only in the collections not in
// $4. Filtered rows are skipped like those of other collections: the page's Next passes them.
const syncWanted = `collection = ANY($3::TEXT[]) AND (owner = $5 OR NOT (collection = ANY($4::TEXT[])))`

// syncPending is the changes after each partition's position, in partition then sequence
// order: the first $6 wanted rows of the partitions' ranges on documents_sync, each range cut
// at $6 too so that no partition is read further than the page can reach.
const syncPending = `SELECT d.collection, d.id, d.version, d.deleted, d.data, d.created_at, d.updated_at, d.owner, d.seq, a.part
	FROM unnest($1::INT[], $2::BIGINT[]) AS a(part, after_seq)
	JOIN LATERAL (
		SELECT ` + docColumns + `, seq FROM documents
		WHERE part = a.part AND seq > a.after_seq AND ` + syncWanted + `
		ORDER BY seq LIMIT $6
	) AS d ON true
	ORDER BY a.part, d.seq
	LIMIT $6`

// syncWaiting is the partitions with at least one wanted change after their position.
const syncWaiting = `SELECT a.part FROM unnest($1::INT[], $2::BIGINT[]) AS a(part, after_seq)
	WHERE EXISTS (SELECT 1 FROM documents
		WHERE part = a.part AND seq > a.after_seq AND ` + syncWanted + `)`

// Sync returns a page of changes. The partition counters, the page and the partitions that
// still have changes are read in one read-only SERIALIZABLE transaction, in one round trip
// (a pgx.Batch), so that the page and its Next are one snapshot. Partitions are read in order
// 0..P-1; an After with more entries than the store has partitions is an error (the cursor
// comes from another fleet). In the collections of core.SyncOwned, only q.Owner's documents
// are read (syncWanted).
func (s *Store) Sync(ctx context.Context, q wire.SyncQuery) (wire.SyncPage, error) {
	if err := s.checkOpen(); err != nil {
		return wire.SyncPage{}, err
	}
	if len(q.After) > s.partitions {
		return wire.SyncPage{}, fmt.Errorf("sync: position has %d partitions, the store %d", len(q.After), s.partitions)
	}
	limit := core.SyncLimit(q.Limit)
	collections := core.SyncCollections(q.Collections)
	owned, owner := core.SyncOwned(collections, q), q.Owner
	if owned == nil {
		owned = []string{} // an empty array, not NULL: no collection is filtered
	}
	if !storableText(owner) {
		owner = "" // no document has it; and PostgreSQL text cannot hold it
	}
	after := make([]int64, s.partitions)
	copy(after, q.After)
	parts := make([]int32, s.partitions)
	for p := range parts {
		parts[p] = int32(p)
	}
	var page wire.SyncPage
	err := s.retry(ctx, "sync", func() error {
		return s.runTx(ctx, serializableRO, func(tx pgx.Tx) error {
			var err error
			page, err = s.syncPage(ctx, tx, parts, after, collections, owned, owner, limit)
			return err
		})
	})
	if err != nil {
		return wire.SyncPage{}, err
	}
	return page, nil
}

func (s *Store) syncPage(ctx context.Context, tx pgx.Tx, parts []int32, after []int64, collections, owned []string,
	owner string, limit int) (page wire.SyncPage, err error) {
	b := &pgx.Batch{}
	b.Queue(`SELECT part, seq FROM partitions ORDER BY part`)
	if len(collections) > 0 {
		b.Queue(syncPending, parts, after, collections, owned, owner, limit+1)
		b.Queue(syncWaiting, parts, after, collections, owned, owner)
	}
	br := tx.SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	counters, err := readCounters(br, s.partitions)
	if err != nil {
		return wire.SyncPage{}, err
	}
	page = wire.SyncPage{Changes: []wire.Change{}, Next: counters}
	if len(collections) == 0 {
		return page, nil
	}
	rows, err := br.Query()
	if err != nil {
		return wire.SyncPage{}, fmt.Errorf("read changes: %w", err)
	}
	for rows.Next() {
		var (
			c    wire.Change
			part int32
		)
		if c.Doc, err = scanDocument(rows, &c.Seq, &part); err != nil {
			rows.Close()
			return wire.SyncPage{}, fmt.Errorf("read changes: %w", err)
		}
		c.Partition = int(part)
		page.Changes = append(page.Changes, c)
	}
	if err := rows.Err(); err != nil {
		return wire.SyncPage{}, fmt.Errorf("read changes: %w", err)
	}
	waiting := make([]bool, s.partitions)
	rows, err = br.Query()
	if err != nil {
		return wire.SyncPage{}, fmt.Errorf("read waiting partitions: %w", err)
	}
	for rows.Next() {
		var p int32
		if err := rows.Scan(&p); err != nil {
			rows.Close()
			return wire.SyncPage{}, fmt.Errorf("read waiting partitions: %w", err)
		}
		if p >= 0 && int(p) < s.partitions {
			waiting[p] = true
		}
	}
	if err := rows.Err(); err != nil {
		return wire.SyncPage{}, fmt.Errorf("read waiting partitions: %w", err)
	}
	if len(page.Changes) <= limit {
		return page, nil // every partition is read to its counter
	}
	// The limit cut the page in partition cut. The partitions before it are read to their
	// counters; cut resumes after its last change on the page; the partitions after it keep
	// their position if they have changes waiting, and move to their counters if not.
	cut := page.Changes[limit].Partition
	page.Changes, page.More = page.Changes[:limit], true
	page.Next[cut] = after[cut]
	if n := len(page.Changes); n > 0 && page.Changes[n-1].Partition == cut {
		page.Next[cut] = page.Changes[n-1].Seq
	}
	for p := cut + 1; p < s.partitions; p++ {
		if waiting[p] {
			page.Next[p] = after[p]
		}
	}
	return page, nil
}

func readCounters(br pgx.BatchResults, partitions int) ([]int64, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, fmt.Errorf("read partitions: %w", err)
	}
	defer rows.Close()
	counters := make([]int64, partitions)
	n := 0
	for rows.Next() {
		var (
			p   int32
			seq int64
		)
		if err := rows.Scan(&p, &seq); err != nil {
			return nil, fmt.Errorf("read partitions: %w", err)
		}
		if p < 0 || int(p) >= partitions {
			return nil, permanentf(fmt.Errorf("unexpected partition %d", p))
		}
		counters[p] = seq
		n++
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read partitions: %w", err)
	}
	if n != partitions {
		return nil, permanentf(fmt.Errorf("store has %d partition counters, want %d", n, partitions))
	}
	return counters, nil
}

// PendingEvents returns up to limit outbox events recorded (at the now of their ApplyBatch)
// before the given time, in partition then sequence order. A limit below 1 returns none.
func (s *Store) PendingEvents(ctx context.Context, before time.Time, limit int) ([]wire.ChangeEvent, error) {
	if err := s.checkOpen(); err != nil {
		return nil, err
	}
	if limit < 1 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT event FROM outbox WHERE created_at < $1
		ORDER BY part, seq LIMIT $2`, micro(before), limit)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	defer rows.Close()
	var evs []wire.ChangeEvent
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			return nil, fmt.Errorf("read outbox: %w", err)
		}
		var ev wire.ChangeEvent
		if err := json.Unmarshal(raw, &ev); err != nil {
			return nil, fmt.Errorf("decode outbox event: %w", err)
		}
		evs = append(evs, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return evs, nil
}

// DeleteEvents removes events from the outbox in one statement.
func (s *Store) DeleteEvents(ctx context.Context, events []wire.ChangeEvent) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	parts := make([]int32, len(events))
	seqs := make([]int64, len(events))
	for i, ev := range events {
		parts[i], seqs[i] = int32(ev.Partition), ev.Seq
	}
	return s.retry(ctx, "delete events", func() error {
		return s.runTx(ctx, serializable, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `DELETE FROM outbox WHERE (part, seq) IN
				(SELECT * FROM unnest($1::INT[], $2::BIGINT[]))`, parts, seqs)
			return err
		})
	})
}

// expireChunk is how many rows one Expire transaction deletes at most: CockroachDB wants
// transactions well below its size limits, and PostgreSQL keeps its locks short.
const expireChunk = 5000

// Expire deletes the write records and Idempotency-Keys recorded (at the now of their
// ApplyBatch) before the given time, in transactions of at most expireChunk rows each. An
// ambiguous commit of a chunk is retried, so the count may miss the rows of such a chunk.
func (s *Store) Expire(ctx context.Context, before time.Time) (int64, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	at := micro(before)
	var total int64
	for _, del := range []struct {
		sql    string
		before time.Time
		count  bool
	}{
		{`DELETE FROM writes WHERE write_id IN (SELECT write_id FROM writes WHERE created_at < $1 LIMIT $2)`, at, true},
		{`DELETE FROM idempotency WHERE idem_key IN (SELECT idem_key FROM idempotency WHERE created_at < $1 LIMIT $2)`, at, true},
		{`DELETE FROM producers WHERE producer IN (SELECT producer FROM producers WHERE updated_at < $1 LIMIT $2)`,
			at.Add(-core.ProducerRetention), false},
	} {
		for {
			var n int64
			err := s.retry(ctx, "expire", func() error {
				return s.runTx(ctx, serializable, func(tx pgx.Tx) error {
					tag, err := tx.Exec(ctx, del.sql, del.before, expireChunk)
					n = tag.RowsAffected()
					return err
				})
			})
			if err != nil {
				return total, err
			}
			if del.count {
				total += n
			}
			if n < expireChunk {
				break
			}
		}
	}
	return total, nil
}

type scanner interface{ Scan(dest ...any) error }

// scanDocument scans the docColumns of a row, then extra.
func scanDocument(row scanner, extra ...any) (wire.Document, error) {
	var (
		d     wire.Document
		data  []byte
		owner *string // NULL for a document written anonymously
		dest  = make([]any, 0, 8+len(extra))
	)
	dest = append(dest, &d.Collection, &d.ID, &d.Version, &d.Deleted, &data, &d.CreatedAt, &d.UpdatedAt, &owner)
	if err := row.Scan(append(dest, extra...)...); err != nil {
		return wire.Document{}, err
	}
	if len(data) > 0 {
		d.Data = json.RawMessage(data)
	}
	if owner != nil {
		d.Owner = *owner
	}
	d.CreatedAt = d.CreatedAt.UTC()
	d.UpdatedAt = d.UpdatedAt.UTC()
	return d, nil
}

func decodeOutcome(raw []byte) (*wire.Outcome, error) {
	var out wire.Outcome
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, permanentf(fmt.Errorf("decode recorded outcome: %w", err))
	}
	return &out, nil
}

// micro is t as the store keeps times: UTC, to the microsecond (PostgreSQL's and
// CockroachDB's timestamptz precision, and what core.ApplyCommand truncates to).
func micro(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// nameChars reports whether s holds only characters that names may have (see
// wire.ValidName), so that a prefix with any other cannot match a stored id. It also keeps
// core.PrefixEnd's result valid text: the greatest name character, '~', becomes DEL.
func nameChars(s string) bool {
	return s == "" || wire.ValidName(strings.ReplaceAll(s, ".", "a"))
}

// storableText reports whether s can be a PostgreSQL text value: valid UTF-8 without NUL.
// Anything else cannot have been stored, so a read for it finds nothing.
func storableText(s string) bool {
	return !strings.ContainsRune(s, 0) && strings.ToValidUTF8(s, "\uFFFD") == s
}
