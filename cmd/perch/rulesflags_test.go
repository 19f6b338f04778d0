package main

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/perchhq/perch/edge"
)

// TestLoadRules: --rules reads the file; a bad one is a usage error; without one each role
// gets the default it passes.
func TestLoadRules(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	dir := t.TempDir()
	good := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(good, []byte("collections:\n  posts: {read: public, write: authenticated}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := loadRules(good, edge.OpenRules(), log)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.For([]byte("posts")); got != (edge.Rule{Read: edge.AccessPublic, Write: edge.AccessAuthenticated}) {
		t.Fatalf("posts: %+v", got)
	}
	if got := r.For([]byte("other")); got != edge.DefaultRules().Default {
		t.Fatalf("a collection the file does not name: %+v, want the default rules'", got)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("default: {read: everyone}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{bad, filepath.Join(dir, "missing.yaml")} {
		if _, err := loadRules(path, edge.OpenRules(), log); !errors.Is(err, errUsage) {
			t.Errorf("%s: %v, want a usage error", path, err)
		}
	}
	if r, err := loadRules("", edge.DefaultRules(), log); err != nil || r.Open() {
		t.Errorf("no file, edge default: %+v %v", r, err)
	}
}
