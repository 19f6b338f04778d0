package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite" // also registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/internal/wire"
)

var _ core.Store = (*Store)(nil)

// busyTimeout is how long a connection waits for a lock another process holds before it fails
// with SQLITE_BUSY. Within one process the writer pool's single connection already serialises
// writers, so only a second process on the same file (an operator's sqlite3 shell, a migrate
// run) makes anyone wait.
const busyTimeout = 5 * time.Second

// Store is a core.Store in one SQLite database file. Its methods are safe for concurrent use.
type Store struct {
	w          *sql.DB // one connection: the single writer
	r          *sql.DB // read-only pool
	partitions int
	logger     *slog.Logger

	ws writeStmts   // prepared on w
	rs readStmts    // prepared on r
	as accountStmts // prepared on w and r

	closeOnce sync.Once
	closeErr  error
}

// writeStmts are the statements of ApplyBatches, prepared once on the writer's connection and
// bound to each transaction with Tx.StmtContext, which reuses them on that connection.
type writeStmts struct {
	document, priorWrite, priorIdem, upsert, recordWrite, recordIdem, outbox, seq, setSeq *sql.Stmt
	producer, setProducer                                                                 *sql.Stmt
}

type readStmts struct {
	document, write *sql.Stmt
}

// docColumns are the columns scanDocument reads and the upsert writes, in their order.
const docColumns = `collection, id, version, deleted, data, created_at, updated_at, owner`

// Open opens (creating it if needed) the store in the SQLite database file at path, applies
// the migrations it lacks, and checks that it was created with the given number of write
// partitions: a store created with another count gives an error wrapping
// core.ErrPartitionsMismatch. path is a file name; the database also uses path-wal and
// path-shm beside it. A nil logger discards.
func Open(ctx context.Context, path string, partitions int, logger *slog.Logger) (*Store, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if partitions < 1 {
		return nil, fmt.Errorf("open sqlite store: %d partitions, need at least 1", partitions)
	}
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") || strings.ContainsAny(path, "?#") {
		// The writer and the readers are separate connections to one file: an in-memory
		// database would give each its own, and a URI would lose the pragmas below.
		return nil, fmt.Errorf("open sqlite store: %q is not a plain file path", path)
	}
	migrations, err := migrationsFS()
	if err != nil {
		return nil, err
	}
	bt := "_pragma=busy_timeout(" + strconv.FormatInt(busyTimeout.Milliseconds(), 10) + ")"
	// The writer: WAL so that readers never wait for it, synchronous=FULL so that a committed
	// batch is on disk before ApplyBatch returns, BEGIN IMMEDIATE so that a transaction takes
	// the write lock at its start rather than failing to upgrade a read lock halfway.
	w, err := sql.Open("sqlite", path+"?"+bt+"&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)"+
		"&_pragma=synchronous(FULL)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open sqlite store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	s := &Store{w: w, partitions: partitions, logger: logger}
	fail := func(err error) (*Store, error) {
		return nil, errors.Join(fmt.Errorf("open sqlite store %s: %w", path, err), s.closeDBs())
	}
	if err := checkPragmas(ctx, w); err != nil {
		return fail(err)
	}
	if err := migrate(ctx, w, migrations, logger); err != nil {
		return fail(err)
	}
	if err := s.checkPartitions(ctx); err != nil {
		return fail(err)
	}
	s.r, err = sql.Open("sqlite", path+"?"+bt+"&_pragma=query_only(1)")
	if err != nil {
		return fail(err)
	}
	readers := max(4, runtime.GOMAXPROCS(0))
	s.r.SetMaxOpenConns(readers)
	s.r.SetMaxIdleConns(readers)
	if err := s.prepare(ctx); err != nil {
		return fail(err)
	}
	return s, nil
}

// checkPragmas makes sure the pragmas the guarantees rest on took effect: journal_mode=WAL
// silently stays "delete" on file systems without shared memory.
func checkPragmas(ctx context.Context, db *sql.DB) error {
	var mode string
	if err := db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return fmt.Errorf("read journal_mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal_mode is %q, not wal", mode)
	}
	var sync int
	if err := db.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil {
		return fmt.Errorf("read synchronous: %w", err)
	}
	if sync < 2 {
		return fmt.Errorf("synchronous is %d, not FULL (2)", sync)
	}
	return nil
}

// checkPartitions records the partition count of a new store and creates its counters, or
// compares it with the count the store was created with.
func (s *Store) checkPartitions(ctx context.Context) (err error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("check partitions: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, rollback(tx))
		}
	}()
	var recorded string
	err = tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'partitions'`).Scan(&recorded)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES ('partitions', ?)`,
			strconv.Itoa(s.partitions)); err != nil {
			return fmt.Errorf("record partitions: %w", err)
		}
		for p := range s.partitions {
			if _, err := tx.ExecContext(ctx, `INSERT INTO partitions (p, seq) VALUES (?, 0)`, p); err != nil {
				return fmt.Errorf("create partition %d: %w", p, err)
			}
		}
		s.logger.Info("created sqlite store", "partitions", s.partitions)
	case err != nil:
		return fmt.Errorf("read partitions: %w", err)
	default:
		n, err := strconv.Atoi(recorded)
		if err != nil {
			return fmt.Errorf("recorded partitions %q: %w", recorded, err)
		}
		if n != s.partitions {
			return fmt.Errorf("store has %d partitions, opened with %d: %w", n, s.partitions, core.ErrPartitionsMismatch)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("check partitions: commit: %w", err)
	}
	return nil
}

func (s *Store) prepare(ctx context.Context) error {
	const upsert = `INSERT INTO documents (` + docColumns + `, partition, seq)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (collection, id) DO UPDATE SET
			version = excluded.version, deleted = excluded.deleted, data = excluded.data,
			created_at = excluded.created_at, updated_at = excluded.updated_at, owner = excluded.owner,
			partition = excluded.partition, seq = excluded.seq`
	const document = `SELECT ` + docColumns + ` FROM documents WHERE collection = ? AND id = ?`
	const write = `SELECT outcome FROM writes WHERE write_id = ?`
	stmts := []struct {
		db  *sql.DB
		dst **sql.Stmt
		sql string
	}{
		{s.w, &s.ws.document, document},
		{s.w, &s.ws.priorWrite, write},
		{s.w, &s.ws.priorIdem, `SELECT fingerprint, outcome FROM idempotency WHERE key = ?`},
		{s.w, &s.ws.upsert, upsert},
		{s.w, &s.ws.recordWrite, `INSERT INTO writes (write_id, outcome, created_at) VALUES (?, ?, ?)`},
		{s.w, &s.ws.recordIdem, `INSERT INTO idempotency (key, fingerprint, outcome, created_at) VALUES (?, ?, ?, ?)`},
		{s.w, &s.ws.outbox, `INSERT INTO outbox (partition, seq, event, created_at) VALUES (?, ?, ?, ?)`},
		{s.w, &s.ws.seq, `SELECT seq FROM partitions WHERE p = ?`},
		{s.w, &s.ws.setSeq, `UPDATE partitions SET seq = ? WHERE p = ?`},
		{s.w, &s.ws.producer, `SELECT seq FROM producers WHERE producer = ?`},
		{s.w, &s.ws.setProducer, `INSERT INTO producers (producer, seq, updated_at) VALUES (?, ?, ?)
			ON CONFLICT (producer) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at`},
		{s.r, &s.rs.document, document},
		{s.r, &s.rs.write, write},
	}
	for _, st := range stmts {
		var err error
		if *st.dst, err = st.db.PrepareContext(ctx, st.sql); err != nil {
			return fmt.Errorf("prepare %q: %w", st.sql, err)
		}
	}
	return s.prepareAccounts(ctx)
}

// Close closes the store. Every call after the first returns nil; every other method fails
// after Close.
func (s *Store) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.closeDBs() })
	return s.closeErr
}

func (s *Store) closeDBs() error {
	var errs []error
	for _, st := range append([]*sql.Stmt{
		s.ws.document, s.ws.priorWrite, s.ws.priorIdem, s.ws.upsert, s.ws.recordWrite,
		s.ws.recordIdem, s.ws.outbox, s.ws.seq, s.ws.setSeq, s.ws.producer, s.ws.setProducer,
		s.rs.document, s.rs.write,
	}, s.as.all()...) {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	if s.r != nil {
		errs = append(errs, s.r.Close())
	}
	// The writer last: closing its connection checkpoints the WAL into the database file.
	errs = append(errs, s.w.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sqlite store: %w", err)
	}
	return nil
}

// ApplyBatch applies b alone: it is ApplyBatches of b, returning its result's outcomes. A
// batch without a Producer is applied whole, one outcome per command. A fenced batch its
// producer had passed gets the recorded outcomes of those of its write ids the store keeps and
// no event; one that came early gets nil outcomes, no event and no error: nothing was done.
func (s *Store) ApplyBatch(ctx context.Context, b *wire.Batch, now time.Time) ([]wire.Outcome, []wire.ChangeEvent, error) {
	results, evs, err := s.ApplyBatches(ctx, []*wire.Batch{b}, now)
	if err != nil {
		return nil, nil, err
	}
	return results[0].Outcomes, evs, nil
}

// ApplyBatches applies bs in one immediate transaction on the single writer connection:
// the producers' sequences are read, each batch the fence admits is applied in core.Order,
// and the partition counter and the advanced producers are written once at the end.
// Conflicts cannot happen (there is one writer), so nothing is retried; a lock held by another
// process is waited for up to busyTimeout.
func (s *Store) ApplyBatches(ctx context.Context, bs []*wire.Batch, now time.Time) (results []core.BatchResult, evs []wire.ChangeEvent, err error) {
	if err := core.CheckGroup(bs, s.partitions); err != nil {
		return nil, nil, err
	}
	what := "apply batch " + bs[0].ID
	if len(bs) > 1 {
		what = fmt.Sprintf("apply %d batches %s…%s", len(bs), bs[0].ID, bs[len(bs)-1].ID)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: begin: %w", what, err)
	}
	defer func() {
		if err != nil {
			if refusedData(err) {
				err = fmt.Errorf("%w: %w", core.ErrRefused, err)
			}
			err = errors.Join(err, rollback(tx))
			results, evs = nil, nil
		}
	}()
	st := &txState{ctx: ctx, tx: tx, s: &s.ws}
	partition := bs[0].Partition
	var seq int64
	if err := st.stmt(s.ws.seq).QueryRowContext(ctx, partition).Scan(&seq); err != nil {
		return nil, nil, fmt.Errorf("%s: read partition %d: %w", what, partition, err)
	}
	first := seq
	fence, err := st.fence(core.Producers(bs))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	results = make([]core.BatchResult, len(bs))
	for _, i := range core.Order(bs) {
		b := bs[i]
		switch status := fence.Admit(b); status {
		case core.BatchApplied:
			var outs []wire.Outcome
			if outs, evs, err = st.apply(b, &seq, evs, now); err != nil {
				return nil, nil, fmt.Errorf("apply batch %s: %w", b.ID, err)
			}
			results[i] = core.BatchResult{Status: status, Outcomes: outs}
		case core.BatchDuplicate:
			outs, err := core.DuplicateOutcomes(b, st.PriorWrite)
			if err != nil {
				return nil, nil, fmt.Errorf("apply batch %s: %w", b.ID, err)
			}
			results[i] = core.BatchResult{Status: status, Outcomes: outs}
		default:
			results[i] = core.BatchResult{Status: status}
		}
	}
	if seq != first {
		if _, err := st.stmt(s.ws.setSeq).ExecContext(ctx, seq, partition); err != nil {
			return nil, nil, fmt.Errorf("%s: advance partition %d: %w", what, partition, err)
		}
	}
	advanced := fence.Advanced()
	for _, p := range slices.Sorted(maps.Keys(advanced)) {
		if _, err := st.stmt(s.ws.setProducer).ExecContext(ctx, p, advanced[p], now.UnixMicro()); err != nil {
			return nil, nil, fmt.Errorf("%s: advance producer %s: %w", what, p, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, nil, fmt.Errorf("%s: commit: %w", what, err)
	}
	return results, evs, nil
}

// refusedData reports whether err is SQLite refusing the data of a write (core.ErrRefused):
// a CHECK it fails or a trigger's RAISE (rules on the data an operator may add), or a string
// or blob beyond its length limit. Not a NOT NULL, unique or type constraint: the store's
// own statements meet those whatever the data, so failing one is the store's fault or a
// schema out of step, to retry and not to answer.
func refusedData(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() { // extended result codes are on
	case sqlite3.SQLITE_CONSTRAINT_CHECK, sqlite3.SQLITE_CONSTRAINT_TRIGGER, sqlite3.SQLITE_TOOBIG:
		return true
	}
	return false
}

// apply applies b's commands in order, numbering their changes after *seq (which it
// advances), and returns b's outcomes and evs with b's events appended.
func (t *txState) apply(b *wire.Batch, seq *int64, evs []wire.ChangeEvent, now time.Time) ([]wire.Outcome, []wire.ChangeEvent, error) {
	at := now.UnixMicro()
	outs := make([]wire.Outcome, 0, len(b.Commands))
	for i := range b.Commands {
		cmd := &b.Commands[i]
		d, err := core.ApplyCommand(t, cmd, now)
		if err != nil {
			return nil, nil, fmt.Errorf("write %s: %w", cmd.WriteID, err)
		}
		if d.Next != nil {
			*seq++
			ev := core.EventFor(b.Partition, *seq, d.Next)
			if err := t.store(d.Next, b.Partition, *seq); err != nil {
				return nil, nil, fmt.Errorf("write %s: %w", cmd.WriteID, err)
			}
			if err := t.appendEvent(&ev, at); err != nil {
				return nil, nil, fmt.Errorf("write %s: %w", cmd.WriteID, err)
			}
			evs = append(evs, ev)
		}
		if d.Record || d.RecordIdempotency {
			if err := t.record(cmd, &d, at); err != nil {
				return nil, nil, fmt.Errorf("write %s: %w", cmd.WriteID, err)
			}
		}
		outs = append(outs, d.Outcome)
	}
	return outs, evs, nil
}

// fence reads the recorded sequences of producers into a core.Fence.
func (t *txState) fence(producers []string) (*core.Fence, error) {
	last := make(map[string]int64, len(producers))
	for _, p := range producers {
		var seq int64
		err := t.stmt(t.s.producer).QueryRowContext(t.ctx, p).Scan(&seq)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			continue // never seen, or forgotten: at 0
		case err != nil:
			return nil, fmt.Errorf("read producer %s: %w", p, err)
		}
		last[p] = seq
	}
	return core.NewFence(last), nil
}

// txState is the core.TxState of one ApplyBatches transaction. Its reads go through the
// transaction, so they see the earlier commands of the batch and of the group.
type txState struct {
	ctx   context.Context
	tx    *sql.Tx
	s     *writeStmts
	bound map[*sql.Stmt]*sql.Stmt
}

// stmt returns st bound to the transaction, binding it on first use.
func (t *txState) stmt(st *sql.Stmt) *sql.Stmt {
	if b, ok := t.bound[st]; ok {
		return b
	}
	if t.bound == nil {
		t.bound = make(map[*sql.Stmt]*sql.Stmt)
	}
	b := t.tx.StmtContext(t.ctx, st)
	t.bound[st] = b
	return b
}

func (t *txState) PriorWrite(writeID string) (*wire.Outcome, error) {
	var raw []byte
	err := t.stmt(t.s.priorWrite).QueryRowContext(t.ctx, writeID).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read write %s: %w", writeID, err)
	}
	return decodeOutcome(raw)
}

func (t *txState) PriorIdempotency(key string) (string, *wire.Outcome, error) {
	var (
		fp  string
		raw []byte
	)
	err := t.stmt(t.s.priorIdem).QueryRowContext(t.ctx, key).Scan(&fp, &raw)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil, nil
	}
	if err != nil {
		return "", nil, fmt.Errorf("read idempotency key: %w", err)
	}
	out, err := decodeOutcome(raw)
	if err != nil {
		return "", nil, err
	}
	return fp, out, nil
}

func (t *txState) Document(collection, id string) (*wire.Document, error) {
	d, err := scanDocument(t.stmt(t.s.document).QueryRowContext(t.ctx, collection, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read document %s/%s: %w", collection, id, err)
	}
	return &d, nil
}

func (t *txState) store(d *wire.Document, partition int, seq int64) error {
	var data any // NULL for a tombstone
	if !d.Deleted {
		data = string(d.Data)
	}
	var owner any // NULL for a document written anonymously
	if d.Owner != "" {
		owner = d.Owner
	}
	if _, err := t.stmt(t.s.upsert).ExecContext(t.ctx, d.Collection, d.ID, d.Version, boolInt(d.Deleted), data,
		d.CreatedAt.UnixMicro(), d.UpdatedAt.UnixMicro(), owner, partition, seq); err != nil {
		return fmt.Errorf("store document %s/%s: %w", d.Collection, d.ID, err)
	}
	return nil
}

func (t *txState) appendEvent(ev *wire.ChangeEvent, at int64) error {
	raw, err := ev.AppendJSON(nil)
	if err != nil {
		return fmt.Errorf("encode event: %w", err)
	}
	if _, err := t.stmt(t.s.outbox).ExecContext(t.ctx, ev.Partition, ev.Seq, string(raw), at); err != nil {
		return fmt.Errorf("append event %d/%d: %w", ev.Partition, ev.Seq, err)
	}
	ev.Encoded = raw
	return nil
}

func (t *txState) record(cmd *wire.Command, d *core.Decision, at int64) error {
	raw, err := d.Outcome.AppendJSON(nil)
	if err != nil {
		return fmt.Errorf("encode outcome: %w", err)
	}
	d.Outcome.Encoded = raw
	if d.Record {
		if _, err := t.stmt(t.s.recordWrite).ExecContext(t.ctx, cmd.WriteID, string(raw), at); err != nil {
			return fmt.Errorf("record write: %w", err)
		}
	}
	if d.RecordIdempotency {
		if _, err := t.stmt(t.s.recordIdem).ExecContext(t.ctx, cmd.IdemKey, cmd.Fingerprint, string(raw), at); err != nil {
			return fmt.Errorf("record idempotency key: %w", err)
		}
	}
	return nil
}

// Get returns the document or tombstone, or an error wrapping core.ErrNotFound.
func (s *Store) Get(ctx context.Context, collection, id string) (wire.Document, error) {
	d, err := scanDocument(s.rs.document.QueryRowContext(ctx, collection, id))
	if errors.Is(err, sql.ErrNoRows) {
		return wire.Document{}, fmt.Errorf("document %s/%s: %w", collection, id, core.ErrNotFound)
	}
	if err != nil {
		return wire.Document{}, fmt.Errorf("get document %s/%s: %w", collection, id, err)
	}
	return d, nil
}

// WriteOutcome returns the recorded outcome of writeID, or an error wrapping core.ErrNotFound.
func (s *Store) WriteOutcome(ctx context.Context, writeID string) (wire.Outcome, error) {
	var raw []byte
	err := s.rs.write.QueryRowContext(ctx, writeID).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
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

// List returns a page of live documents. The id orders compare ids byte by byte; the
// updated_at orders break ties by id, in the same direction. An unknown order is an error.
// With q.Owner, only that owner's documents, read through documents_owner in every order:
// without statistics SQLite would rather walk documents_list_updated for the updated_at
// orders, to spare the sort, and so read the whole collection to find one user's few.
func (s *Store) List(ctx context.Context, q wire.ListQuery) (wire.ListPage, error) {
	limit := core.ListLimit(q.Limit)
	var b strings.Builder
	args := []any{q.Collection}
	if q.Owner == "" {
		b.WriteString(`SELECT ` + docColumns + ` FROM documents WHERE collection = ? AND deleted = 0`)
	} else {
		b.WriteString(`SELECT ` + docColumns + ` FROM documents INDEXED BY documents_owner
			WHERE collection = ? AND deleted = 0 AND owner = ?`)
		args = append(args, q.Owner)
	}
	if q.IDPrefix != "" {
		b.WriteString(` AND id >= ?`)
		args = append(args, q.IDPrefix)
		if end, ok := core.PrefixEnd(q.IDPrefix); ok {
			b.WriteString(` AND id < ?`)
			args = append(args, end)
		}
	}
	var order string
	switch q.Order {
	case wire.OrderID, "":
		if q.After != nil {
			b.WriteString(` AND id > ?`)
			args = append(args, q.After.ID)
		}
		order = `id`
	case wire.OrderIDDesc:
		if q.After != nil {
			b.WriteString(` AND id < ?`)
			args = append(args, q.After.ID)
		}
		order = `id DESC`
	case wire.OrderUpdatedAt:
		if q.After != nil {
			// (updated_at, id) > (t, id), spelt so that the index range starts at t.
			b.WriteString(` AND updated_at >= ? AND (updated_at > ? OR id > ?)`)
			args = append(args, q.After.UpdatedAt.UnixMicro(), q.After.UpdatedAt.UnixMicro(), q.After.ID)
		}
		order = `updated_at, id`
	case wire.OrderUpdatedAtDesc:
		if q.After != nil {
			b.WriteString(` AND updated_at <= ? AND (updated_at < ? OR id < ?)`)
			args = append(args, q.After.UpdatedAt.UnixMicro(), q.After.UpdatedAt.UnixMicro(), q.After.ID)
		}
		order = `updated_at DESC, id DESC`
	default:
		return wire.ListPage{}, fmt.Errorf("list %s: unknown order %q", q.Collection, q.Order)
	}
	query := b.String() + ` ORDER BY ` + order + ` LIMIT ?`
	args = append(args, limit+1)
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return wire.ListPage{}, fmt.Errorf("list %s: %w", q.Collection, err)
	}
	page := wire.ListPage{Items: make([]wire.Document, 0, min(limit+1, 64))}
	for rows.Next() {
		d, err := scanDocument(rows)
		if err != nil {
			return wire.ListPage{}, errors.Join(fmt.Errorf("list %s: %w", q.Collection, err), rows.Close())
		}
		page.Items = append(page.Items, d)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return wire.ListPage{}, fmt.Errorf("list %s: %w", q.Collection, err)
	}
	if len(page.Items) > limit {
		page.Items, page.More = page.Items[:limit], true
	}
	return page, nil
}

// Sync returns a page of changes read in one read transaction, so that the page and its Next
// are one snapshot. Partitions are read in order 0..P-1; an After with more entries than the
// store has partitions is an error (the cursor comes from another fleet). In the collections
// of core.SyncOwned, only the changes of q.Owner's documents are read; the others are passed
// over like those of collections not asked for.
func (s *Store) Sync(ctx context.Context, q wire.SyncQuery) (page wire.SyncPage, err error) {
	if len(q.After) > s.partitions {
		return wire.SyncPage{}, fmt.Errorf("sync: position has %d partitions, the store %d", len(q.After), s.partitions)
	}
	limit := core.SyncLimit(q.Limit)
	collections := core.SyncCollections(q.Collections)
	owned := core.SyncOwned(collections, q)
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return wire.SyncPage{}, fmt.Errorf("sync: begin: %w", err)
	}
	defer func() { err = errors.Join(err, rollback(tx)) }()

	// The first read fixes the snapshot: the counters and every page read after them agree.
	counters, err := s.counters(ctx, tx)
	if err != nil {
		return wire.SyncPage{}, err
	}
	page = wire.SyncPage{Changes: []wire.Change{}, Next: make([]int64, s.partitions)}
	copy(page.Next, q.After)
	var stmt *sql.Stmt
	if len(collections) > 0 {
		query := `SELECT ` + docColumns + `, seq FROM documents
			WHERE partition = ? AND seq > ? AND collection IN (` + placeholders(len(collections)) + `)`
		if len(owned) > 0 {
			// A document without an owner fails owner = ? (NULL): it shows only in the
			// collections not owned.
			query += ` AND (owner = ? OR collection NOT IN (` + placeholders(len(owned)) + `))`
		}
		query += ` ORDER BY seq LIMIT ?`
		if stmt, err = tx.PrepareContext(ctx, query); err != nil {
			return wire.SyncPage{}, fmt.Errorf("sync: %w", err)
		}
		defer func() { err = errors.Join(err, stmt.Close()) }()
	}
	remaining := limit
	args := make([]any, 0, len(collections)+len(owned)+4)
	for p := range s.partitions {
		after := page.Next[p]
		if stmt == nil || counters[p] <= after {
			page.Next[p] = counters[p] // nothing in this partition after the position
			continue
		}
		args = append(args[:0], p, after)
		for _, c := range collections {
			args = append(args, c)
		}
		if len(owned) > 0 {
			args = append(args, q.Owner)
			for _, c := range owned {
				args = append(args, c)
			}
		}
		// One row more than fits tells whether the limit cuts this partition.
		args = append(args, remaining+1)
		changes, err := scanChanges(ctx, stmt, p, args)
		if err != nil {
			return wire.SyncPage{}, fmt.Errorf("sync: partition %d: %w", p, err)
		}
		if len(changes) > remaining {
			changes = changes[:remaining]
			page.More = true
			if len(changes) > 0 {
				page.Next[p] = changes[len(changes)-1].Seq
			}
		} else {
			page.Next[p] = counters[p]
		}
		remaining -= len(changes)
		page.Changes = append(page.Changes, changes...)
	}
	return page, nil
}

// placeholders returns n comma-separated SQL placeholders, n ≥ 1.
func placeholders(n int) string { return "?" + strings.Repeat(", ?", n-1) }

func (s *Store) counters(ctx context.Context, tx *sql.Tx) ([]int64, error) {
	rows, err := tx.QueryContext(ctx, `SELECT p, seq FROM partitions ORDER BY p`)
	if err != nil {
		return nil, fmt.Errorf("sync: read partitions: %w", err)
	}
	counters := make([]int64, s.partitions)
	n := 0
	for rows.Next() {
		var (
			p   int
			seq int64
		)
		if err := rows.Scan(&p, &seq); err != nil {
			return nil, errors.Join(fmt.Errorf("sync: read partitions: %w", err), rows.Close())
		}
		if p < 0 || p >= s.partitions {
			return nil, errors.Join(fmt.Errorf("sync: unexpected partition %d", p), rows.Close())
		}
		counters[p] = seq
		n++
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("sync: read partitions: %w", err)
	}
	if n != s.partitions {
		return nil, fmt.Errorf("sync: store has %d partition counters, want %d", n, s.partitions)
	}
	return counters, nil
}

func scanChanges(ctx context.Context, stmt *sql.Stmt, partition int, args []any) ([]wire.Change, error) {
	rows, err := stmt.QueryContext(ctx, args...)
	if err != nil {
		return nil, err
	}
	var changes []wire.Change
	for rows.Next() {
		c := wire.Change{Partition: partition}
		if c.Doc, err = scanDocument(rows, &c.Seq); err != nil {
			return nil, errors.Join(err, rows.Close())
		}
		changes = append(changes, c)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, err
	}
	return changes, nil
}

// PendingEvents returns up to limit outbox events recorded (at the now of their ApplyBatch)
// before the given time, in partition then sequence order. A limit below 1 returns none.
func (s *Store) PendingEvents(ctx context.Context, before time.Time, limit int) ([]wire.ChangeEvent, error) {
	if limit < 1 {
		return nil, nil
	}
	rows, err := s.r.QueryContext(ctx, `SELECT event FROM outbox WHERE created_at < ?
		ORDER BY partition, seq LIMIT ?`, before.UnixMicro(), limit)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	var evs []wire.ChangeEvent
	for rows.Next() {
		var raw []byte
		if err := rows.Scan(&raw); err != nil {
			return nil, errors.Join(fmt.Errorf("read outbox: %w", err), rows.Close())
		}
		var ev wire.ChangeEvent
		if err := json.Unmarshal(raw, &ev); err != nil {
			return nil, errors.Join(fmt.Errorf("decode outbox event: %w", err), rows.Close())
		}
		evs = append(evs, ev)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return evs, nil
}

// DeleteEvents removes events from the outbox in one transaction.
func (s *Store) DeleteEvents(ctx context.Context, events []wire.ChangeEvent) (err error) {
	if len(events) == 0 {
		return nil
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("delete events: begin: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, rollback(tx))
		}
	}()
	stmt, err := tx.PrepareContext(ctx, `DELETE FROM outbox WHERE partition = ? AND seq = ?`)
	if err != nil {
		return fmt.Errorf("delete events: %w", err)
	}
	defer func() { err = errors.Join(err, stmt.Close()) }()
	for _, ev := range events {
		if _, err := stmt.ExecContext(ctx, ev.Partition, ev.Seq); err != nil {
			return fmt.Errorf("delete event %d/%d: %w", ev.Partition, ev.Seq, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("delete events: commit: %w", err)
	}
	return nil
}

// Expire deletes the write records and Idempotency-Keys recorded (at the now of their
// ApplyBatch) before the given time, and the producers last advanced before
// core.ProducerRetention earlier than it, in one transaction. Only the records and keys are
// counted.
func (s *Store) Expire(ctx context.Context, before time.Time) (n int64, err error) {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("expire: begin: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, rollback(tx))
		}
	}()
	at := before.UnixMicro()
	for _, table := range []string{"writes", "idempotency"} {
		res, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE created_at < ?`, at)
		if err != nil {
			return 0, fmt.Errorf("expire %s: %w", table, err)
		}
		k, err := res.RowsAffected()
		if err != nil {
			return 0, fmt.Errorf("expire %s: %w", table, err)
		}
		n += k
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM producers WHERE updated_at < ?`,
		before.Add(-core.ProducerRetention).UnixMicro()); err != nil {
		return 0, fmt.Errorf("expire producers: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("expire: commit: %w", err)
	}
	return n, nil
}

type scanner interface{ Scan(dest ...any) error }

// scanDocument scans the docColumns of a row, then extra.
func scanDocument(row scanner, extra ...any) (wire.Document, error) {
	var (
		d                wire.Document
		data             []byte
		created, updated int64
		owner            sql.NullString // NULL for a document written anonymously
		dest             = make([]any, 0, 8+len(extra))
	)
	dest = append(dest, &d.Collection, &d.ID, &d.Version, &d.Deleted, &data, &created, &updated, &owner)
	if err := row.Scan(append(dest, extra...)...); err != nil {
		return wire.Document{}, err
	}
	if len(data) > 0 {
		d.Data = json.RawMessage(data)
	}
	d.Owner = owner.String
	d.CreatedAt = time.UnixMicro(created).UTC()
	d.UpdatedAt = time.UnixMicro(updated).UTC()
	return d, nil
}

func decodeOutcome(raw []byte) (*wire.Outcome, error) {
	var out wire.Outcome
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("decode recorded outcome: %w", err)
	}
	return &out, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
