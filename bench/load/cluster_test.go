package load_test

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/perchhq/perch/bench/load"
	"github.com/perchhq/perch/internal/clustertest"
	"github.com/perchhq/perch/internal/pgtest"
)

// TestScenarios runs every built-in scenario briefly against an in-process cluster: each
// seeds its documents, sends its mix without errors, and reads what it seeded.
func TestScenarios(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Regions: []string{"test"}})
	for _, name := range []string{"read-hot", "feed", "write-burst", "sync", "ratelimit"} {
		t.Run(name, func(t *testing.T) {
			s, err := load.Builtin(name)
			if err != nil {
				t.Fatal(err)
			}
			s.Docs = 50
			s.Devices = 20
			var ledger bytes.Buffer
			cfg := load.Config{Targets: []string{c.Edge(0)}, Scenario: s, Rate: 200, Duration: 700 * time.Millisecond,
				Workers: 8, Ledger: &ledger}
			rep, err := load.Run(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Seeded != 50 || rep.Requests == 0 || rep.Errors != overloaded(rep) || rep.Requests+rep.Dropped != rep.Scheduled {
				t.Fatalf("seeded %d, %d requests of %d scheduled, %d dropped, errors %v (%v)", rep.Seeded, rep.Requests, rep.Scheduled, rep.Dropped, rep.ErrorsByStatus, rep.ErrorSamples)
			}
			total := 0
			for _, st := range s.Mix {
				total += st.Weight
			}
			for _, st := range s.Mix {
				if 140*st.Weight/total < 10 {
					continue // too few expected to be sure of one
				}
				if e := rep.Endpoints[string(st.Kind)]; e == nil || e.Requests == 0 {
					t.Errorf("no %s request measured: %v", st.Kind, rep.Endpoints)
				}
			}
			entries, err := load.ReadLedger(&ledger)
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(entries)) != rep.LedgerWrites || len(entries) < 50 {
				t.Fatalf("%d ledger entries, report says %d, seeded 50", len(entries), rep.LedgerWrites)
			}
			if name == "ratelimit" && (len(rep.Notes) == 0 || !strings.Contains(rep.Notes[0], "no 429")) {
				t.Errorf("a rate-limit run without a limit should say so: %q", rep.Notes)
			}
			if name == "sync" && rep.Endpoints["sync"].Requests > 0 && rep.Endpoints["sync"].Errors > 0 {
				t.Errorf("sync errors")
			}
		})
	}
	t.Run("auth", func(t *testing.T) {
		s, _ := load.Builtin("auth")
		_, err := load.Run(t.Context(), load.Config{Targets: []string{c.Edge(0)}, Scenario: s, Rate: 10})
		if !errors.Is(err, load.ErrNeedsAccounts) || !strings.Contains(err.Error(), "does not have yet") {
			t.Fatalf("auth: %v, want ErrNeedsAccounts", err)
		}
	})
}

// TestLedgerVerify writes through a cluster on SQLite with a ledger, checks that the
// database holds every acknowledged write exactly once, then deletes one write's record and
// checks that the verification finds it missing.
func TestLedgerVerify(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "perch.db")
	testLedgerVerify(t, clustertest.Options{Regions: []string{"test"}, Dir: dir}, "sqlite:"+path, func() *sql.DB {
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		return db
	}, "key")
}

// TestLedgerVerifyPostgres is TestLedgerVerify on PostgreSQL (PERCH_TEST_POSTGRES).
func TestLedgerVerifyPostgres(t *testing.T) {
	dsn := pgtest.DSN(t)
	testLedgerVerify(t, clustertest.Options{Regions: []string{"test"}, DB: dsn}, dsn, func() *sql.DB {
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			t.Fatal(err)
		}
		return db
	}, "idem_key")
}

func testLedgerVerify(t *testing.T, opts clustertest.Options, dsn string, open func() *sql.DB, keyColumn string) {
	c := clustertest.Start(t, opts)
	s, _ := load.Builtin("write-burst")
	s.Docs = 20
	var ledger bytes.Buffer
	rep, err := load.Run(t.Context(), load.Config{Targets: []string{c.Edge(0)}, Scenario: s, Rate: 200,
		Duration: time.Second, Workers: 16, Ledger: &ledger})
	if err != nil {
		t.Fatal(err)
	}
	entries, err := load.ReadLedger(&ledger)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) <= s.Docs || rep.Errors != overloaded(rep) {
		t.Fatalf("%d acknowledged writes (%d seeded), errors %v", len(entries), s.Docs, rep.ErrorsByStatus)
	}
	if err := c.System.Close(); err != nil {
		t.Fatal(err)
	}
	c.System = nil
	verify := func() *load.Verification {
		t.Helper()
		db, err := load.OpenDB(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		v, err := load.Verify(t.Context(), db, entries)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := verify(); !v.OK() || v.Applied != len(entries) {
		t.Fatalf("before: %s", v)
	}

	// Delete the write record of one acknowledged write of the run.
	victim := entries[len(entries)/2]
	db := open()
	defer db.Close()
	ph := "?"
	if keyColumn == "idem_key" {
		ph = "$1"
	}
	var outcome string
	scoped := strings.Join([]string{itoa(len(victim.APIKey)), victim.APIKey, victim.Key}, ":")
	if err := db.QueryRow(`SELECT CAST(outcome AS TEXT) FROM idempotency WHERE `+keyColumn+` = `+ph, scoped).Scan(&outcome); err != nil {
		t.Fatal(err)
	}
	var o struct {
		WriteID string `json:"write_id"`
	}
	if err := json.Unmarshal([]byte(outcome), &o); err != nil || o.WriteID == "" {
		t.Fatalf("outcome %s: %v", outcome, err)
	}
	if res, err := db.Exec(`DELETE FROM writes WHERE write_id = `+ph, o.WriteID); err != nil {
		t.Fatal(err)
	} else if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("deleted %d rows", n)
	}
	v := verify()
	if v.OK() || len(v.Missing) != 1 || v.Missing[0].Entry != victim || v.Applied != len(entries)-1 {
		t.Fatalf("after deleting write %s of %s: %s", o.WriteID, victim.Key, v)
	}
	if !strings.Contains(v.String(), "1 missing") {
		t.Errorf("summary: %s", v)
	}
}

// overloaded returns the errors of a report that are 503 overloaded: what an edge sheds when
// the machine running the test is too busy for it (which other tests may make it be).
func overloaded(rep *load.Report) int64 { return rep.ErrorsByStatus["503"] }

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
