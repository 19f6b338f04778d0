package main

import (
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/perchhq/perch/bench/load"
	"github.com/perchhq/perch/internal/clustertest"
)

// TestBench runs perch bench as the CLI contract says, against an in-process cluster:
// report.json and report.html in --out; a threshold that holds exits 0, one that fails
// exits 1; the auth scenario is a usage error (no accounts yet). Then perch bench verify
// finds every acknowledged write of the ledger in the database, and, once one write record
// is deleted, fails naming it.
func TestBench(t *testing.T) {
	dir := t.TempDir()
	c := clustertest.Start(t, clustertest.Options{Regions: []string{"test"}, Dir: dir})
	out := filepath.Join(t.TempDir(), "feed")
	env := func(k string) string {
		if k == "PERCH_DURATION" {
			return "1s" // flags come from the environment too
		}
		return ""
	}
	bench := func(extra ...string) (string, error) {
		var stdout, stderr syncBuffer
		args := append([]string{"bench", "--target", c.Edge(0), "--scenario", "feed", "--rate", "100/s", "--out", out,
			"--docs", "40", "--workers", "8"}, extra...)
		err := run(t.Context(), args, env, &stdout, &stderr)
		return stdout.String() + stderr.String(), err
	}

	text, err := bench("--threshold", "p99<10s", "--threshold", "errors<1%")
	if err != nil {
		t.Fatalf("perch bench: %v\n%s", err, text)
	}
	for _, want := range []string{"PASS  p99<10000ms", "PASS  errors<1%", "result     PASSED", "1s/1s"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	raw, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"target_rate", "achieved_rate", "requests", "errors", "latency_ms", "p99_ms"} {
		if _, ok := rep[k]; !ok {
			t.Errorf("report.json has no %s", k)
		}
	}
	if rep["target_rate"] != 100.0 || rep["requests"] != 100.0 || rep["errors"] != 0.0 {
		t.Errorf("target_rate %v, requests %v, errors %v", rep["target_rate"], rep["requests"], rep["errors"])
	}
	if _, err := os.Stat(filepath.Join(out, "report.html")); err != nil {
		t.Error(err)
	}

	text, err = bench("--threshold", "p99<10s", "--threshold", "p50<1us")
	if err == nil || exitCode(err) != 1 || !errors.Is(err, load.ErrThresholds) || !strings.Contains(err.Error(), "p50<0.001ms") {
		t.Fatalf("a failed threshold: %v (exit %d), want exit 1 naming it\n%s", err, exitCode(err), text)
	}
	if !strings.Contains(text, "FAIL  p50<0.001ms") {
		t.Errorf("output lacks the failed threshold:\n%s", text)
	}

	for _, args := range [][]string{
		{"--scenario", "auth"}, {"--threshold", "p99<soon"}, {"--baseline", "postgres"}, {"--baseline", "apache"},
		{"--rate", "fast"}, {"--scenario-file", filepath.Join(dir, "missing.yaml")},
	} {
		text, err := bench(args...)
		if !errors.Is(err, errUsage) || exitCode(err) != 2 {
			t.Errorf("perch bench %v: %v, want a usage error\n%s", args, err, text)
		}
		if args[1] == "auth" && !strings.Contains(err.Error(), "does not have yet") {
			t.Errorf("auth: %v", err)
		}
	}

	// The ledger holds the acknowledged writes of the last run (its seed's too), each applied
	// once; the usage errors left it alone.
	if err := c.System.Close(); err != nil {
		t.Fatal(err)
	}
	c.System = nil
	dbPath := filepath.Join(dir, "perch.db")
	ledger := filepath.Join(out, "ledger.jsonl")
	verify := func() (string, error) {
		var stdout, stderr syncBuffer
		err := run(t.Context(), []string{"bench", "verify", "--db", "sqlite:" + dbPath, "--ledger", ledger}, noEnv, &stdout, &stderr)
		return stdout.String() + stderr.String(), err
	}
	text, err = verify()
	if err != nil || !strings.Contains(text, "applied exactly once") {
		t.Fatalf("verify: %v\n%s", err, text)
	}
	f, err := os.Open(ledger)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := load.ReadLedger(f)
	f.Close()
	if err != nil || len(entries) < 40 {
		t.Fatalf("%d entries, %v", len(entries), err)
	}
	victim := entries[len(entries)-1]
	db, err := sql.Open("sqlite", dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var outcome string
	key := strconv.Itoa(len(victim.APIKey)) + ":" + victim.APIKey + ":" + victim.Key
	if err := db.QueryRow(`SELECT outcome FROM idempotency WHERE key = ?`, key).Scan(&outcome); err != nil {
		t.Fatal(err)
	}
	var o struct {
		WriteID string `json:"write_id"`
	}
	if err := json.Unmarshal([]byte(outcome), &o); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`DELETE FROM writes WHERE write_id = ?`, o.WriteID); err != nil {
		t.Fatal(err)
	}
	text, err = verify()
	if err == nil || exitCode(err) != 1 || !strings.Contains(text, "1 missing") || !strings.Contains(text, victim.Key) {
		t.Fatalf("verify after deleting write %s: %v\n%s", o.WriteID, err, text)
	}
	if _, err := verifyUsage(t); err == nil {
		t.Error("verify without --db: no error")
	}
}

func verifyUsage(t *testing.T) (string, error) {
	var out syncBuffer
	err := run(t.Context(), []string{"bench", "verify", "--ledger", "x"}, noEnv, &out, &out)
	if !errors.Is(err, errUsage) {
		t.Errorf("verify without --db: %v, want a usage error", err)
	}
	return out.String(), err
}
