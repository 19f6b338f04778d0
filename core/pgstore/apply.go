package pgstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/internal/wire"
)

// ApplyBatch applies b in one SERIALIZABLE transaction of a constant number of round trips,
// whatever the number of commands:
//
//	BEGIN · SAVEPOINT cockroach_restart · load · write · RELEASE SAVEPOINT · COMMIT
//
// (on PostgreSQL without the savepoint statements, and BEGIN at the head of the load; see
// tx.go). "load" is one pgx.Batch that locks the partition's counter row (SELECT ... FOR
// UPDATE) and reads every write id, Idempotency-Key and document the batch's commands name;
// "write" is one pgx.Batch of at most five statements, each taking its rows as arrays
// (unnest), that stores the documents' new versions, the outbox events, the write records, the
// Idempotency-Keys and the counter. In between, core.ApplyCommand decides each command in order against the loaded
// state, which the store updates in memory as it goes, so that each command sees the ones
// before it.
//
// Conflicts (40001, also when COMMIT reports it on PostgreSQL) are retried in a new
// transaction, up to the store's attempt bound.
//
// Ambiguous commits (40003, crdb.AmbiguousCommitError, a connection lost during COMMIT) are
// not retried blindly: the batch might have committed, and applying it again would replay its
// commands (outcomes marked Replayed, no events) instead of returning what it did. Every
// attempt writes a random token into the write records it creates and into the producer rows
// it advances. After an ambiguous commit the next attempt reads back the batch's write ids
// (of a batch without producer) and producers, as its load does anyway: if one is recorded
// under the token of the ambiguous attempt, that attempt committed, and ApplyBatch rolls the
// new transaction back and returns the ambiguous attempt's outcomes and events, which are
// exactly what was committed. If not, the new attempt applies the batch. Reading back in the
// retry's own transaction, rather than in a separate read, makes the answer safe against a
// commit that lands late: the retry would then conflict with it on those rows instead of
// missing it. (If another core has advanced the producer since, the retry finds the batches
// duplicates and answers their recorded outcomes, replayed.)
//
// An attempt that writes no token (every command of unfenced batches a replay) writes
// nothing, so its commit needs no resolving.
func (s *Store) ApplyBatch(ctx context.Context, b *wire.Batch, now time.Time) ([]wire.Outcome, []wire.ChangeEvent, error) {
	res, evs, err := s.ApplyBatches(ctx, []*wire.Batch{b}, now)
	if err != nil {
		return nil, nil, err
	}
	return res[0].Outcomes, evs, nil
}

// ApplyBatches is ApplyBatch for several batches of one partition in one transaction of the
// same round trips; the load also reads the producers' sequences (core.Fence), and the write
// records the ones that moved.
func (s *Store) ApplyBatches(ctx context.Context, bs []*wire.Batch, now time.Time) ([]core.BatchResult, []wire.ChangeEvent, error) {
	if err := s.checkOpen(); err != nil {
		return nil, nil, err
	}
	if err := core.CheckGroup(bs, s.partitions); err != nil {
		return nil, nil, err
	}
	name := bs[0].ID
	if len(bs) > 1 {
		name = fmt.Sprintf("%s (and %d more)", bs[0].ID, len(bs)-1)
	}
	partition := bs[0].Partition
	keys := batchKeys(bs, false)
	var unresolved []*attempt // attempts whose commit was ambiguous, oldest first
	for n := 1; ; n++ {
		var last *attempt // the run of the closure whose commit was tried
		err := s.runTx(ctx, serializable, func(tx pgx.Tx) error {
			last = nil
			a, err := s.applyOnce(ctx, tx, bs, now, keys, unresolved)
			if err != nil {
				return err
			}
			last = a
			return nil
		})
		if err == nil {
			if len(unresolved) > 0 {
				s.logger.Warn("ambiguous commit of a write batch resolved: it had not committed, and is now applied",
					"batch", name, "partition", partition)
			}
			return last.results, last.evs, nil
		}
		var done *committedEarlier
		if errors.As(err, &done) {
			s.logger.Warn("ambiguous commit of a write batch resolved: it had committed",
				"batch", name, "partition", partition)
			return done.a.results, done.a.evs, nil
		}
		if writeRecorded(err) && len(keys.fenced) > 0 {
			// A fenced batch's write id was recorded although its producer had not reached
			// it: the batch was applied without its fence (by a core of an older release, or
			// by the core after a forced gap). The next attempt looks its write ids up too.
			s.logger.Warn("a fenced write batch has recorded writes; reading them back", "batch", name, "partition", partition)
			keys = batchKeys(bs, true)
			// Not a failure to count against maxAttempts: the attempt read too little. It
			// happens once, and with one attempt allowed the batch would never get through.
			n--
			continue
		}
		class := classify(err)
		if class == ambiguous && last != nil && last.wrote {
			s.logger.Warn("commit of a write batch is ambiguous; reading back its write ids",
				"batch", name, "partition", partition, "err", err)
			unresolved = append(unresolved, last)
		}
		if class == permanent || n >= s.maxAttempts {
			if len(unresolved) > 0 {
				return nil, nil, fmt.Errorf("apply batch %s: %w: %w", name, ErrCommitUnknown, err)
			}
			if class == permanent && refusedData(err) {
				return nil, nil, fmt.Errorf("apply batch %s: %w: %w", name, core.ErrRefused, err)
			}
			return nil, nil, fmt.Errorf("apply batch %s: %w", name, err)
		}
		s.retries.Add(1)
		s.logger.Debug("retrying write batch", "batch", name, "attempt", n, "class", class.String(), "err", err)
		if err := sleep(ctx, n); err != nil {
			if len(unresolved) > 0 {
				return nil, nil, fmt.Errorf("apply batch %s: %w: %w", name, ErrCommitUnknown, err)
			}
			return nil, nil, fmt.Errorf("apply batch %s: %w", name, err)
		}
	}
}

// attempt is what one run of the apply closure decided and wrote.
type attempt struct {
	token   string // written into the write records it created
	wrote   bool   // whether it wrote its token: into write records or producers
	results []core.BatchResult
	evs     []wire.ChangeEvent
}

// committedEarlier ends an attempt that found the write records of an earlier, ambiguous
// attempt: that one committed.
type committedEarlier struct{ a *attempt }

func (e *committedEarlier) Error() string {
	return "the batch was committed by an earlier attempt whose commit was ambiguous"
}

type docKey struct{ collection, id string }

// keys is what a group's commands name, each once, in the arrays the load statements take.
type keys struct {
	// writeIDs are the write ids to look up: those of batches without a producer. A fenced
	// batch that the fence admits has never been applied (a write id belongs to one batch),
	// so its write ids need no lookup, and one it finds a duplicate has its outcomes read
	// afterwards. Skipping the lookup matters beyond its cost: write ids are ULIDs, so the
	// lookup of new ones puts a SIREAD lock on the last leaf of writes_pkey, where every
	// transaction inserts, and PostgreSQL's SERIALIZABLE would fail transactions of other
	// partitions on it.
	writeIDs, idemKeys []string
	// fenced are the write ids of the fenced batches.
	fenced                []string
	collections, docIDs   []string
	producers             []string
	docs                  map[docKey]struct{}
	writeIndex, idemIndex map[string]struct{}
}

// batchKeys returns the keys of bs; all includes the write ids of fenced batches in the
// lookup, as does a batch marked Recorded.
func batchKeys(bs []*wire.Batch, all bool) *keys {
	k := &keys{docs: map[docKey]struct{}{}, writeIndex: map[string]struct{}{}, idemIndex: map[string]struct{}{},
		producers: core.Producers(bs)}
	for _, b := range bs {
		for i := range b.Commands {
			c := &b.Commands[i]
			if _, ok := k.writeIndex[c.WriteID]; !ok {
				k.writeIndex[c.WriteID] = struct{}{}
				if b.Producer == "" || all || b.Recorded {
					k.writeIDs = append(k.writeIDs, c.WriteID)
				} else {
					k.fenced = append(k.fenced, c.WriteID)
				}
			}
			if _, ok := k.idemIndex[c.IdemKey]; c.IdemKey != "" && !ok {
				k.idemIndex[c.IdemKey] = struct{}{}
				k.idemKeys = append(k.idemKeys, c.IdemKey)
			}
			dk := docKey{c.Collection, c.ID}
			if _, ok := k.docs[dk]; !ok {
				k.docs[dk] = struct{}{}
				k.collections = append(k.collections, c.Collection)
				k.docIDs = append(k.docIDs, c.ID)
			}
		}
	}
	return k
}

// The statements of ApplyBatch. Their texts do not depend on the batch's size, so pgx
// prepares each once per connection.
const (
	loadCounter = `SELECT seq FROM partitions WHERE part = $1 FOR UPDATE`
	loadWrites  = `SELECT write_id, outcome, txn FROM writes WHERE write_id = ANY($1::TEXT[])`
	loadIdem    = `SELECT idem_key, fingerprint, outcome FROM idempotency WHERE idem_key = ANY($1::TEXT[])`
	// A lookup per key, whatever the plan: the statement is prepared once, and PostgreSQL's
	// generic plan for a plain join with unnest (of unknown length) hashes the whole table.
	// LIMIT 1 (the key is the primary key) keeps the subquery from being flattened into that
	// join.
	loadDocuments = `SELECT d.* FROM unnest($1::TEXT[], $2::TEXT[]) AS k(c, i),
		LATERAL (SELECT ` + docColumns + ` FROM documents WHERE collection = k.c AND id = k.i LIMIT 1) AS d`
	loadProducers = `SELECT producer, seq, txn FROM producers WHERE producer = ANY($1::TEXT[])`

	// The owner of every version is the one core.ApplyCommand decided (kept by updates, set
	// again by a create after a delete), so the upsert writes it, NULL for none. (The upsert
	// of the previous release does not list owner: an update by it keeps the owner it finds.)
	storeDocuments = `INSERT INTO documents (collection, id, version, deleted, data, created_at, updated_at, owner, part, seq)
		SELECT u.collection, u.id, u.version, u.deleted, u.data::JSONB, u.created_at, u.updated_at,
			NULLIF(u.owner, ''), $10::INT, u.seq
		FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[], $4::BOOLEAN[], $5::TEXT[], $6::TIMESTAMPTZ[],
			$7::TIMESTAMPTZ[], $8::TEXT[], $9::BIGINT[])
			AS u(collection, id, version, deleted, data, created_at, updated_at, owner, seq)
		ON CONFLICT (collection, id) DO UPDATE SET
			version = excluded.version, deleted = excluded.deleted, data = excluded.data,
			created_at = excluded.created_at, updated_at = excluded.updated_at, owner = excluded.owner,
			part = excluded.part, seq = excluded.seq`
	storeEvents = `INSERT INTO outbox (part, seq, event, created_at)
		SELECT $1::INT, u.seq, u.event::JSONB, $4::TIMESTAMPTZ
		FROM unnest($2::BIGINT[], $3::TEXT[]) AS u(seq, event)`
	storeWrites = `INSERT INTO writes (write_id, outcome, created_at, txn)
		SELECT u.write_id, u.outcome::JSONB, $3::TIMESTAMPTZ, $4::TEXT
		FROM unnest($1::TEXT[], $2::TEXT[]) AS u(write_id, outcome)`
	storeIdem = `INSERT INTO idempotency (idem_key, fingerprint, outcome, created_at)
		SELECT u.idem_key, u.fingerprint, u.outcome::JSONB, $4::TIMESTAMPTZ
		FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[]) AS u(idem_key, fingerprint, outcome)`
	storeProducers = `INSERT INTO producers (producer, seq, updated_at, txn)
		SELECT u.producer, u.seq, $3::TIMESTAMPTZ, $4::TEXT FROM unnest($1::TEXT[], $2::BIGINT[]) AS u(producer, seq)
		ON CONFLICT (producer) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at, txn = excluded.txn`
	storeCounter = `UPDATE partitions SET seq = $1 WHERE part = $2 AND seq = $3`

	// genericPlans makes PostgreSQL plan the statements of the transaction once per
	// connection. Under the default plan_cache_mode (auto) it plans each execution of a
	// prepared statement anew until the generic plan looks no more costly, which for these
	// statements (arrays of unknown length) it never does: at every batch, planning cost more
	// than running the load. Their generic plans are the per-key index lookups they are
	// written for. PostgreSQL only; in the load's pipeline, so it costs no round trip.
	genericPlans = `SET LOCAL plan_cache_mode = force_generic_plan`
)

// applyOnce runs one attempt of bs in tx: load, decide, write.
func (s *Store) applyOnce(ctx context.Context, tx pgx.Tx, bs []*wire.Batch, now time.Time, k *keys, unresolved []*attempt) (*attempt, error) {
	partition := bs[0].Partition
	st, tokens, err := load(ctx, tx, partition, k, !s.cockroach)
	if err != nil {
		return nil, err
	}
	for _, u := range unresolved {
		if _, ok := tokens[u.token]; ok {
			return nil, &committedEarlier{a: u}
		}
	}
	token, err := newToken()
	if err != nil {
		return nil, err
	}
	a := &attempt{token: token, results: make([]core.BatchResult, len(bs))}
	w := newWriteSet(partition, micro(now), token)
	first := st.seq
	fence := core.NewFence(st.producers)
	order := core.Order(bs)
	var duplicates []string // write ids of the duplicates, which the load did not read
	for _, i := range order {
		if a.results[i].Status = fence.Admit(bs[i]); a.results[i].Status == core.BatchDuplicate {
			for j := range bs[i].Commands {
				duplicates = append(duplicates, bs[i].Commands[j].WriteID)
			}
		}
	}
	if len(duplicates) > 0 {
		if err := loadDuplicates(ctx, tx, st, duplicates); err != nil {
			return nil, err
		}
	}
	for _, i := range order {
		b := bs[i]
		res := &a.results[i]
		switch res.Status {
		case core.BatchEarly:
			continue
		case core.BatchDuplicate:
			if res.Outcomes, err = core.DuplicateOutcomes(b, st.PriorWrite); err != nil {
				return nil, err
			}
			continue
		}
		res.Outcomes = make([]wire.Outcome, 0, len(b.Commands))
		for j := range b.Commands {
			cmd := &b.Commands[j]
			d, err := core.ApplyCommand(st, cmd, now)
			if err != nil {
				return nil, fmt.Errorf("write %s: %w", cmd.WriteID, err)
			}
			if d.Next != nil {
				st.seq++
				ev := core.EventFor(partition, st.seq, d.Next)
				st.docs[docKey{d.Next.Collection, d.Next.ID}] = d.Next
				if err := w.addChange(d.Next, &ev); err != nil {
					return nil, err
				}
				a.evs = append(a.evs, ev)
			}
			if d.Record || d.RecordIdempotency {
				out := d.Outcome
				raw, err := out.AppendJSON(make([]byte, 0, 192+docSize(out.Doc)))
				if err != nil {
					return nil, permanentf(fmt.Errorf("encode outcome of %s: %w", cmd.WriteID, err))
				}
				d.Outcome.Encoded = raw
				if d.Record {
					st.writes[cmd.WriteID] = &out
					w.writeIDs = append(w.writeIDs, cmd.WriteID)
					w.writeOuts = append(w.writeOuts, string(raw))
				}
				if d.RecordIdempotency {
					st.idem[cmd.IdemKey] = idemRecord{fingerprint: cmd.Fingerprint, out: &out}
					w.idemKeys = append(w.idemKeys, cmd.IdemKey)
					w.idemFPs = append(w.idemFPs, cmd.Fingerprint)
					w.idemOuts = append(w.idemOuts, string(raw))
				}
			}
			res.Outcomes = append(res.Outcomes, d.Outcome)
		}
	}
	for p, seq := range fence.Advanced() {
		w.producers = append(w.producers, p)
		w.producerSeqs = append(w.producerSeqs, seq)
	}
	if err := w.store(ctx, tx, first, st.seq); err != nil {
		return nil, err
	}
	a.wrote = len(w.writeIDs) > 0 || len(w.producers) > 0
	return a, nil
}

// txState is the core.TxState of one attempt: what the load read, updated in memory with
// what the attempt's commands decided, so that each command sees the ones before it.
type txState struct {
	seq       int64                     // the partition's counter
	producers map[string]int64          // the recorded sequence of every producer of the group
	writes    map[string]*wire.Outcome  // every write id of the batch: its outcome, or nil
	idem      map[string]idemRecord     // every Idempotency-Key of the batch
	docs      map[docKey]*wire.Document // every document of the batch: latest version, or nil
}

type idemRecord struct {
	fingerprint string
	out         *wire.Outcome
}

var _ core.TxState = (*txState)(nil)

func (t *txState) PriorWrite(writeID string) (*wire.Outcome, error) {
	out, ok := t.writes[writeID]
	if !ok {
		return nil, permanentf(fmt.Errorf("write id %s was not loaded", writeID))
	}
	return out, nil
}

func (t *txState) PriorIdempotency(key string) (string, *wire.Outcome, error) {
	r, ok := t.idem[key]
	if !ok {
		return "", nil, permanentf(errors.New("idempotency key was not loaded"))
	}
	return r.fingerprint, r.out, nil
}

func (t *txState) Document(collection, id string) (*wire.Document, error) {
	d, ok := t.docs[docKey{collection, id}]
	if !ok {
		return nil, permanentf(fmt.Errorf("document %s/%s was not loaded", collection, id))
	}
	return d, nil
}

// load reads, in one round trip, the state the batch's commands need, and returns it with
// the set of attempt tokens found on the batch's write records. generic sets genericPlans
// first (PostgreSQL).
func load(ctx context.Context, tx pgx.Tx, partition int, k *keys, generic bool) (st *txState, tokens map[string]struct{}, err error) {
	st = &txState{
		producers: make(map[string]int64, len(k.producers)),
		writes:    make(map[string]*wire.Outcome, len(k.writeIDs)),
		idem:      make(map[string]idemRecord, len(k.idemKeys)),
		docs:      make(map[docKey]*wire.Document, len(k.docIDs)),
	}
	for _, id := range k.writeIDs {
		st.writes[id] = nil
	}
	for _, key := range k.idemKeys {
		st.idem[key] = idemRecord{}
	}
	for i := range k.docIDs {
		st.docs[docKey{k.collections[i], k.docIDs[i]}] = nil
	}
	for _, id := range k.fenced {
		st.writes[id] = nil
	}
	b := &pgx.Batch{}
	if generic {
		b.Queue(genericPlans)
	}
	b.Queue(loadCounter, partition)
	if len(k.writeIDs) > 0 {
		b.Queue(loadWrites, k.writeIDs)
	}
	if len(k.idemKeys) > 0 {
		b.Queue(loadIdem, k.idemKeys)
	}
	b.Queue(loadDocuments, k.collections, k.docIDs)
	if len(k.producers) > 0 {
		b.Queue(loadProducers, k.producers)
	}
	br := tx.SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("load: %w", cerr)
		}
	}()

	if generic {
		if _, err := br.Exec(); err != nil {
			return nil, nil, fmt.Errorf("load: %w", err)
		}
	}
	if err := br.QueryRow().Scan(&st.seq); err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, nil, permanentf(fmt.Errorf("partition %d has no counter", partition))
		}
		return nil, nil, fmt.Errorf("read partition %d: %w", partition, err)
	}

	tokens = map[string]struct{}{}
	if len(k.writeIDs) > 0 {
		if err := readWrites(br, st, tokens); err != nil {
			return nil, nil, err
		}
	}

	if len(k.idemKeys) > 0 {
		rows, err := br.Query()
		if err != nil {
			return nil, nil, fmt.Errorf("read idempotency keys: %w", err)
		}
		for rows.Next() {
			var (
				key, fp string
				raw     []byte
			)
			if err := rows.Scan(&key, &fp, &raw); err != nil {
				rows.Close()
				return nil, nil, fmt.Errorf("read idempotency keys: %w", err)
			}
			out, err := decodeOutcome(raw)
			if err != nil {
				rows.Close()
				return nil, nil, err
			}
			st.idem[key] = idemRecord{fingerprint: fp, out: out}
		}
		if err := rows.Err(); err != nil {
			return nil, nil, fmt.Errorf("read idempotency keys: %w", err)
		}
	}

	rows, err := br.Query()
	if err != nil {
		return nil, nil, fmt.Errorf("read documents: %w", err)
	}
	for rows.Next() {
		d, err := scanDocument(rows)
		if err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("read documents: %w", err)
		}
		st.docs[docKey{d.Collection, d.ID}] = &d
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read documents: %w", err)
	}

	if len(k.producers) > 0 {
		rows, err := br.Query()
		if err != nil {
			return nil, nil, fmt.Errorf("read producers: %w", err)
		}
		for rows.Next() {
			var (
				p, token string
				seq      int64
			)
			if err := rows.Scan(&p, &seq, &token); err != nil {
				rows.Close()
				return nil, nil, fmt.Errorf("read producers: %w", err)
			}
			st.producers[p] = seq
			tokens[token] = struct{}{}
		}
		if err := rows.Err(); err != nil {
			return nil, nil, fmt.Errorf("read producers: %w", err)
		}
	}
	return st, tokens, nil
}

// writeSet is what an attempt stores, as the arrays the store statements take. A document
// changed twice by the batch is stored once, at its last version (the outbox has an event per
// change).
type writeSet struct {
	partition int
	at        time.Time
	token     string

	docIndex                    map[docKey]int
	collections, ids            []string
	versions, seqs              []int64
	deleted                     []bool
	data                        []*string
	created, updated            []time.Time
	owners                      []string
	eventSeqs                   []int64
	events                      []string
	writeIDs, writeOuts         []string
	idemKeys, idemFPs, idemOuts []string
	producers                   []string
	producerSeqs                []int64
}

func newWriteSet(partition int, at time.Time, token string) *writeSet {
	return &writeSet{partition: partition, at: at, token: token, docIndex: map[docKey]int{}}
}

func (w *writeSet) addChange(d *wire.Document, ev *wire.ChangeEvent) error {
	raw, err := ev.AppendJSON(make([]byte, 0, 192+docSize(ev.Doc)))
	if err != nil {
		return permanentf(fmt.Errorf("encode event: %w", err))
	}
	ev.Encoded = raw
	w.eventSeqs = append(w.eventSeqs, ev.Seq)
	w.events = append(w.events, string(raw))
	var data *string // NULL for a tombstone
	if !d.Deleted {
		s := string(d.Data)
		data = &s
	}
	k := docKey{d.Collection, d.ID}
	i, ok := w.docIndex[k]
	if !ok {
		i = len(w.ids)
		w.docIndex[k] = i
		w.collections = append(w.collections, d.Collection)
		w.ids = append(w.ids, d.ID)
		w.versions = append(w.versions, 0)
		w.deleted = append(w.deleted, false)
		w.data = append(w.data, nil)
		w.created = append(w.created, time.Time{})
		w.updated = append(w.updated, time.Time{})
		w.owners = append(w.owners, "")
		w.seqs = append(w.seqs, 0)
	}
	w.versions[i], w.deleted[i], w.data[i] = d.Version, d.Deleted, data
	w.created[i], w.updated[i], w.owners[i], w.seqs[i] = d.CreatedAt, d.UpdatedAt, d.Owner, ev.Seq
	return nil
}

// store writes the set in one round trip (the counter last, whose update it checks). first is the counter the load read, last the one
// the batch ends at.
func (w *writeSet) store(ctx context.Context, tx pgx.Tx, first, last int64) (err error) {
	b := &pgx.Batch{}
	if len(w.ids) > 0 {
		b.Queue(storeDocuments, w.collections, w.ids, w.versions, w.deleted, w.data, w.created, w.updated,
			w.owners, w.seqs, w.partition)
		b.Queue(storeEvents, w.partition, w.eventSeqs, w.events, w.at)
	}
	if len(w.writeIDs) > 0 {
		b.Queue(storeWrites, w.writeIDs, w.writeOuts, w.at, w.token)
	}
	if len(w.idemKeys) > 0 {
		b.Queue(storeIdem, w.idemKeys, w.idemFPs, w.idemOuts, w.at)
	}
	if len(w.producers) > 0 {
		b.Queue(storeProducers, w.producers, w.producerSeqs, w.at, w.token)
	}
	if last != first {
		b.Queue(storeCounter, last, w.partition, first)
	}
	if b.Len() == 0 {
		return nil // every command replayed an earlier batch
	}
	br := tx.SendBatch(ctx, b)
	defer func() {
		if cerr := br.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("store: %w", cerr)
		}
	}()
	for i := range b.Len() {
		tag, err := br.Exec()
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		if last != first && i == b.Len()-1 && tag.RowsAffected() != 1 {
			return errCounterMoved
		}
	}
	return nil
}

// errCounterMoved means the partition counter was not where the load found it, which the
// row lock and SERIALIZABLE rule out; the attempt is retried (sqlerrors.go).
var errCounterMoved = errors.New("partition counter moved during the transaction")

// newToken returns a random token that names one attempt.
func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", permanentf(fmt.Errorf("attempt token: %w", err))
	}
	return hex.EncodeToString(b[:]), nil
}

// readWrites reads the result of loadWrites into st, and the tokens of the attempts that
// recorded them into tokens.
func readWrites(br pgx.BatchResults, st *txState, tokens map[string]struct{}) error {
	rows, err := br.Query()
	if err != nil {
		return fmt.Errorf("read writes: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			id, token string
			raw       []byte
		)
		if err := rows.Scan(&id, &raw, &token); err != nil {
			return fmt.Errorf("read writes: %w", err)
		}
		out, err := decodeOutcome(raw)
		if err != nil {
			return err
		}
		st.writes[id] = out
		tokens[token] = struct{}{}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read writes: %w", err)
	}
	return nil
}

// loadDuplicates reads the write records of batches the fence found applied before, which
// the load did not (see keys), for their replayed outcomes.
func loadDuplicates(ctx context.Context, tx pgx.Tx, st *txState, writeIDs []string) error {
	b := &pgx.Batch{}
	b.Queue(loadWrites, writeIDs)
	br := tx.SendBatch(ctx, b)
	err := readWrites(br, st, map[string]struct{}{})
	if cerr := br.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("read writes: %w", cerr)
	}
	return err
}

// docSize is about the size of the encoding of d (nil: none), so that the buffer of an
// outcome or event that carries it is allocated once.
func docSize(d *wire.Document) int {
	if d == nil {
		return 0
	}
	return 160 + len(d.Collection) + len(d.ID) + len(d.Data)
}
