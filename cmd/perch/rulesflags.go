package main

import (
	"flag"
	"fmt"
	"log/slog"

	"github.com/perchhq/perch/edge"
)

// rulesFlag declares --rules, the access rules file of the collections (edge/README.md,
// "Access rules").
func rulesFlag(fs *flag.FlagSet) *string {
	return fs.String("rules", "", "YAML file of access rules: who may read and write each collection (public, authenticated, owner)")
}

// loadRules reads the rules file at path, or, without one, returns def and says in the log
// what it means.
func loadRules(path string, def *edge.Rules, log *slog.Logger) (*edge.Rules, error) {
	if path == "" {
		if def.Open() {
			log.Warn("no --rules: every collection is open to everyone, for reads and writes")
		} else {
			log.Info("no --rules: any user may read a collection, only a document's owner may change it")
		}
		return def, nil
	}
	r, err := edge.LoadRules(path)
	if err != nil {
		return nil, fmt.Errorf("%w: --rules: %v", errUsage, err)
	}
	return r, nil
}
