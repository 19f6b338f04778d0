package archtest

import (
	"go/build"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/perchhq/perch"

// forbidden maps a package (and its sub-packages) to the Perch packages its production code
// must not import.
var forbidden = map[string][]string{
	"gossip": {"edge", "core", "internal"},
	"core":   {"edge", "gossip", "internal/system", "cmd"},
	"edge":   {"core", "internal/system", "cmd"},
	// The rate limiter is a library below the edge: it learns of its peers over its own
	// Transport, not from the edge or gossip.
	"edge/ratelimit": {"edge", "gossip"},
	"internal/wire":  {"edge", "core", "gossip", "internal/system"},
	// Accounts and tokens are a library that the core (issuing) and the edges (verifying)
	// both use, so it depends on neither.
	"internal/auth": {"edge", "core", "gossip", "internal/system"},
}

// testOnly are packages that production code must never import.
var testOnly = []string{"internal/natstest", "internal/clustertest", "internal/pgtest", "internal/oidctest", "core/storetest"}

func TestImports(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata") {
			return filepath.SkipDir
		}
		pkg, err := build.ImportDir(path, 0)
		if err != nil {
			if _, ok := err.(*build.NoGoError); ok {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		checked++
		for _, imp := range pkg.Imports {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			target := strings.TrimPrefix(imp, module+"/")
			if !isTestHelper(rel) {
				for _, h := range testOnly {
					if within(target, h) {
						t.Errorf("%s imports the test helper %s", rel, target)
					}
				}
			}
			for owner, banned := range forbidden {
				if !within(rel, owner) {
					continue
				}
				for _, b := range banned {
					if within(target, b) && !within(target, owner) {
						t.Errorf("%s must not import %s", rel, target)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 10 {
		t.Fatalf("checked only %d packages: is the test running from its own directory?", checked)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal(err)
	}
}

func isTestHelper(rel string) bool {
	for _, h := range testOnly {
		if within(rel, h) {
			return true
		}
	}
	return false
}

func within(pkg, parent string) bool {
	return pkg == parent || strings.HasPrefix(pkg, parent+"/")
}
