package system

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"go.opentelemetry.io/otel/trace"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/core/pgstore"
	"github.com/perchhq/perch/core/sqlitestore"
)

// StoreOptions are the choices `perch core` and `perch dev` pass on to the store.
type StoreOptions struct {
	// NoMigrate opens a PostgreSQL or CockroachDB store without migrating its schema, which
	// must then be current (perch migrate). SQLite always migrates.
	NoMigrate bool
	// Regions, when set, makes a CockroachDB database multi-region: the first is the primary
	// region. Survive is the survival goal, "zone" or "region". Ignored by PostgreSQL and
	// SQLite.
	Regions []string
	Survive string
	// TracerProvider, when set, makes the SQL statements of traced work spans (PostgreSQL
	// and CockroachDB; see pgstore.WithTracerProvider).
	TracerProvider trace.TracerProvider
}

func (o StoreOptions) pg() ([]pgstore.Option, error) {
	var opts []pgstore.Option
	if o.NoMigrate {
		opts = append(opts, pgstore.WithoutMigrate())
	}
	if o.TracerProvider != nil {
		opts = append(opts, pgstore.WithTracerProvider(o.TracerProvider))
	}
	if len(o.Regions) > 0 {
		opts = append(opts, pgstore.WithRegions(o.Regions[0], o.Regions[1:]...))
	}
	switch pgstore.Survival(o.Survive) {
	case "":
	case pgstore.SurviveZone, pgstore.SurviveRegion:
		opts = append(opts, pgstore.WithSurvival(pgstore.Survival(o.Survive)))
	default:
		return nil, fmt.Errorf("survival goal %q: zone or region", o.Survive)
	}
	return opts, nil
}

// IsPostgres reports whether dsn names a PostgreSQL or CockroachDB database.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// OpenStore opens the store a DSN names: postgres:// or postgresql:// (CockroachDB or
// PostgreSQL), or "sqlite:PATH" (or a bare path) for the embedded store. An empty DSN means
// SQLite at dataDir/perch.db.
func OpenStore(ctx context.Context, dsn, dataDir string, partitions int, log *slog.Logger, o StoreOptions) (core.Store, error) {
	switch {
	case IsPostgres(dsn):
		opts, err := o.pg()
		if err != nil {
			return nil, err
		}
		return pgstore.Open(ctx, dsn, partitions, log, opts...)
	case dsn == "":
		return sqlitestore.Open(ctx, filepath.Join(dataDir, "perch.db"), partitions, log)
	default:
		return sqlitestore.Open(ctx, strings.TrimPrefix(dsn, "sqlite:"), partitions, log)
	}
}

// Migrate brings the schema of the database a DSN names up to date.
func Migrate(ctx context.Context, dsn string, partitions int, log *slog.Logger, o StoreOptions) error {
	if IsPostgres(dsn) {
		opts, err := o.pg()
		if err != nil {
			return err
		}
		return pgstore.Migrate(ctx, dsn, log, opts...)
	}
	s, err := OpenStore(ctx, dsn, "", partitions, log, StoreOptions{})
	if err != nil {
		return err
	}
	return s.Close()
}
