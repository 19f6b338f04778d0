package system

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/core/sqlitestore"
)

// OpenStore opens the store a DSN names: "sqlite:PATH" (or a bare path) for the embedded
// store. An empty DSN means SQLite at dataDir/perch.db.
func OpenStore(ctx context.Context, dsn, dataDir string, partitions int, log *slog.Logger) (core.Store, error) {
	switch {
	case dsn == "":
		return sqlitestore.Open(ctx, filepath.Join(dataDir, "perch.db"), partitions, log)
	case strings.HasPrefix(dsn, "sqlite:"):
		return sqlitestore.Open(ctx, strings.TrimPrefix(dsn, "sqlite:"), partitions, log)
	case strings.Contains(dsn, "://"):
		scheme, _, _ := strings.Cut(dsn, "://")
		return nil, fmt.Errorf("database %s://...: this build of Perch supports sqlite:PATH", scheme)
	default:
		return sqlitestore.Open(ctx, dsn, partitions, log)
	}
}
