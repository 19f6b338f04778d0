package load

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	_ "modernc.org/sqlite"             // the "sqlite" database/sql driver
)

// DB is a Perch database opened for Verify: its own connections, read-only where the
// database allows it.
type DB struct {
	db       *sql.DB
	postgres bool
}

// OpenDB opens the database a DSN names, as perch migrate takes it: postgres:// or
// postgresql:// (PostgreSQL, CockroachDB), or sqlite:PATH (or a bare path).
func OpenDB(ctx context.Context, dsn string) (*DB, error) {
	d := &DB{postgres: isPostgres(dsn)}
	var err error
	if d.postgres {
		d.db, err = sql.Open("pgx", dsn)
	} else {
		path := strings.TrimPrefix(dsn, "sqlite:")
		if path == "" || strings.ContainsAny(path, "?#") || strings.HasPrefix(path, "file:") {
			return nil, fmt.Errorf("database %q: want postgres://... or sqlite:PATH", dsn)
		}
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("open database: %w", err)
		}
		d.db, err = sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)&_pragma=query_only(1)")
	}
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if err := d.db.PingContext(ctx); err != nil {
		d.db.Close()
		return nil, fmt.Errorf("open database: %w", err)
	}
	return d, nil
}

// Close closes the database's connections.
func (d *DB) Close() error { return d.db.Close() }

// Verification is what Verify found. Applied counts the entries whose write the database
// holds exactly once, applied; every other entry is in one of the lists.
type Verification struct {
	Checked int `json:"checked"`
	Applied int `json:"applied"`
	// Missing are acknowledged writes the database has no record of: lost.
	Missing []Finding `json:"missing,omitempty"`
	// Rejected are writes recorded with a problem, not applied, though acknowledged 2xx.
	Rejected []Finding `json:"rejected,omitempty"`
	// Duplicated are writes that share a write id with another acknowledged write, or whose
	// version another acknowledged write of the same document also got: one write applied
	// for two, or two applied as one.
	Duplicated []Finding `json:"duplicated,omitempty"`
	// Behind are writes whose document is at a lower version than the write was answered
	// with, or absent: a later loss.
	Behind []Finding `json:"behind,omitempty"`
}

// Finding is one ledger entry Verify found wrong, and why.
type Finding struct {
	Entry  LedgerEntry `json:"entry"`
	Reason string      `json:"reason"`
}

// OK reports whether every entry checked out.
func (v *Verification) OK() bool {
	return len(v.Missing)+len(v.Rejected)+len(v.Duplicated)+len(v.Behind) == 0 && v.Applied == v.Checked
}

// String summarizes the verification in a few lines, naming up to 10 findings of each kind.
func (v *Verification) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d acknowledged writes checked: %d applied exactly once", v.Checked, v.Applied)
	for _, l := range []struct {
		name string
		f    []Finding
	}{{"missing", v.Missing}, {"rejected", v.Rejected}, {"duplicated", v.Duplicated}, {"behind", v.Behind}} {
		if len(l.f) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n%d %s:", len(l.f), l.name)
		for i, f := range l.f {
			if i == 10 {
				fmt.Fprintf(&b, "\n  … and %d more", len(l.f)-10)
				break
			}
			fmt.Fprintf(&b, "\n  %s %s/%s (Idempotency-Key %s): %s", f.Entry.Method, f.Entry.Collection, f.Entry.ID, f.Entry.Key, f.Reason)
		}
	}
	return b.String()
}

// outcomeRecord is the part of a recorded outcome (wire.Outcome) Verify reads.
type outcomeRecord struct {
	WriteID string `json:"write_id"`
	Status  int    `json:"status"`
	Doc     *struct {
		ID      string `json:"id"`
		Version int64  `json:"version"`
	} `json:"doc"`
	Problem json.RawMessage `json:"problem"`
}

// verifyBatch is how many keys one query looks up.
const verifyBatch = 500

// Verify checks that the database holds every ledger entry's write exactly once: the core
// recorded the outcome of its Idempotency-Key (scoped by its X-Api-Key, as the edge does),
// that outcome names one write id, the writes table holds that write id once with an
// applied outcome, no two entries share a write id or a document version, and the
// document is at least at the version the write was answered with. It reads the tables
// idempotency, writes and documents of a Perch schema (core/sqlitestore, core/pgstore).
func Verify(ctx context.Context, d *DB, entries []LedgerEntry) (*Verification, error) {
	v := &Verification{Checked: len(entries)}
	keyCol, outcome := "key", "outcome"
	if d.postgres {
		keyCol, outcome = "idem_key", "outcome::text"
	}
	// The idempotency records of the entries' keys.
	scoped := make([]string, len(entries))
	for i, e := range entries {
		scoped[i] = strconv.Itoa(len(e.APIKey)) + ":" + e.APIKey + ":" + e.Key
	}
	idem, err := d.lookup(ctx, "SELECT "+keyCol+", "+outcome+" FROM idempotency WHERE "+keyCol+" IN (%s)", scoped)
	if err != nil {
		return nil, fmt.Errorf("read idempotency records: %w", err)
	}
	writeIDs := make([]string, len(entries))
	for i, e := range entries {
		writeIDs[i] = e.WriteID
		if raws := idem[scoped[i]]; len(raws) == 1 {
			var o outcomeRecord
			if json.Unmarshal([]byte(raws[0]), &o) == nil && o.WriteID != "" {
				if e.WriteID == "" {
					writeIDs[i] = o.WriteID
				} else if e.WriteID != o.WriteID {
					v.Duplicated = append(v.Duplicated, Finding{e, fmt.Sprintf("the receipt named write %s, the Idempotency-Key's record write %s", e.WriteID, o.WriteID)})
					writeIDs[i] = ""
				}
			}
		}
	}
	var ids []string
	for _, id := range writeIDs {
		if id != "" {
			ids = append(ids, id)
		}
	}
	writes, err := d.lookup(ctx, "SELECT write_id, "+outcome+" FROM writes WHERE write_id IN (%s)", ids)
	if err != nil {
		return nil, fmt.Errorf("read write records: %w", err)
	}
	// The current versions of the entries' documents.
	byCollection := map[string][]string{}
	for _, e := range entries {
		if e.ID != "" {
			byCollection[e.Collection] = append(byCollection[e.Collection], e.ID)
		}
	}
	versions := map[[2]string]int64{}
	for c, docIDs := range byCollection {
		rows, err := d.lookup(ctx, "SELECT id, CAST(version AS TEXT) FROM documents WHERE collection = "+d.placeholder(1)+" AND deleted = "+d.falseLit()+" AND id IN (%s)", docIDs, c)
		if err != nil {
			return nil, fmt.Errorf("read documents: %w", err)
		}
		for id, vs := range rows {
			if n, err := strconv.ParseInt(vs[0], 10, 64); err == nil {
				versions[[2]string{c, id}] = n
			}
		}
	}
	seenWrite := map[string]int{}
	seenVersion := map[string]int{}
	for i, e := range entries {
		id := writeIDs[i]
		if id == "" {
			if !dupOf(v.Duplicated, e) {
				v.Missing = append(v.Missing, Finding{e, "no record of its Idempotency-Key or write id"})
			}
			continue
		}
		recs := writes[id]
		switch {
		case len(recs) == 0:
			v.Missing = append(v.Missing, Finding{e, "write " + id + " is not in the writes table"})
			continue
		case len(recs) > 1:
			v.Duplicated = append(v.Duplicated, Finding{e, fmt.Sprintf("write %s is recorded %d times", id, len(recs))})
			continue
		}
		var o outcomeRecord
		if err := json.Unmarshal([]byte(recs[0]), &o); err != nil {
			v.Rejected = append(v.Rejected, Finding{e, "write " + id + ": unreadable outcome: " + err.Error()})
			continue
		}
		if len(o.Problem) > 0 && string(o.Problem) != "null" || o.Status >= 300 {
			v.Rejected = append(v.Rejected, Finding{e, fmt.Sprintf("write %s was rejected (%d): %s", id, o.Status, o.Problem)})
			continue
		}
		if j, ok := seenWrite[id]; ok {
			v.Duplicated = append(v.Duplicated, Finding{e, "write " + id + " is also the write of " + entries[j].Key})
			continue
		}
		seenWrite[id] = i
		version := e.Version
		if version == 0 && o.Doc != nil {
			version = o.Doc.Version
		}
		docID := e.ID
		if docID == "" && o.Doc != nil {
			docID = o.Doc.ID
		}
		if version > 0 {
			vk := e.Collection + "/" + docID + "@" + strconv.FormatInt(version, 10)
			if j, ok := seenVersion[vk]; ok {
				v.Duplicated = append(v.Duplicated, Finding{e, fmt.Sprintf("version %d of the document is also the version of %s", version, entries[j].Key)})
				continue
			}
			seenVersion[vk] = i
			if cur, ok := versions[[2]string{e.Collection, docID}]; e.ID != "" && (!ok || cur < version) {
				v.Behind = append(v.Behind, Finding{e, fmt.Sprintf("answered with version %d, the document is at %d", version, cur)})
				continue
			}
		}
		v.Applied++
	}
	return v, nil
}

func dupOf(fs []Finding, e LedgerEntry) bool {
	for _, f := range fs {
		if f.Entry == e {
			return true
		}
	}
	return false
}

func (d *DB) placeholder(i int) string {
	if d.postgres {
		return "$" + strconv.Itoa(i)
	}
	return "?"
}

func (d *DB) falseLit() string {
	if d.postgres {
		return "false"
	}
	return "0"
}

// lookup runs query (whose %s takes the placeholders of a batch of keys, after the fixed
// arguments) over keys in batches, and returns the second column by the first.
func (d *DB) lookup(ctx context.Context, query string, keys []string, fixed ...any) (map[string][]string, error) {
	out := map[string][]string{}
	keys = slices.Compact(slices.Sorted(slices.Values(keys)))
	for start := 0; start < len(keys); start += verifyBatch {
		batch := keys[start:min(start+verifyBatch, len(keys))]
		args := append([]any(nil), fixed...)
		ph := make([]string, len(batch))
		for i, k := range batch {
			args = append(args, k)
			ph[i] = d.placeholder(len(args))
		}
		rows, err := d.db.QueryContext(ctx, fmt.Sprintf(query, strings.Join(ph, ",")), args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var k, val string
			if err := rows.Scan(&k, &val); err != nil {
				rows.Close()
				return nil, err
			}
			out[k] = append(out[k], val)
		}
		if err := rows.Close(); err != nil {
			return nil, err
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
