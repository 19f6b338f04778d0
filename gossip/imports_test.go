package gossip

import (
	"go/build"
	"slices"
	"strings"
	"testing"
)

// TestNoForbiddenImports keeps gossip below edge and core: it must reach
// neither, directly or through another Perch package.
func TestNoForbiddenImports(t *testing.T) {
	const module = "github.com/perchhq/perch/"
	forbidden := []string{module + "edge", module + "core"}

	seen := map[string]bool{}
	var check func(dir, path string)
	check = func(dir, path string) {
		pkg, err := build.ImportDir(dir, 0)
		if err != nil {
			t.Fatalf("read package %s: %v", path, err)
		}
		imports := pkg.Imports
		if path == "gossip" {
			imports = slices.Concat(pkg.Imports, pkg.TestImports, pkg.XTestImports)
		}
		for _, imp := range imports {
			for _, bad := range forbidden {
				if imp == bad || strings.HasPrefix(imp, bad+"/") {
					t.Errorf("%s imports %s", path, imp)
				}
			}
			if strings.HasPrefix(imp, module) && !seen[imp] {
				seen[imp] = true
				check("../"+strings.TrimPrefix(imp, module), imp)
			}
		}
	}
	check(".", "gossip")
}
