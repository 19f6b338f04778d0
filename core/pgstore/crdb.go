package pgstore

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The store runs on PostgreSQL and CockroachDB from one set of migrations written in the
// common subset of the two. Two things differ, and this file is where:
//
//   - forCockroach renders a migration for CockroachDB: it drops the COLLATE "C" of key
//     columns (CockroachDB compares strings byte by byte already, and refuses to create a
//     column with the C collation) and turns the /*crdb: ...*/ comments into SQL (the
//     hash-sharded keys, which PostgreSQL does not have).
//   - crdbDDL is the multi-region configuration that WithRegions and WithSurvival ask for,
//     applied after the migrations, on CockroachDB only.
//
// Nothing here runs against CockroachDB in this repository's tests (there is no CockroachDB
// server in CI); crdb_test.go checks the statements it generates.

// Survival is the failure a multi-region CockroachDB database is configured to survive.
type Survival string

// The survival goals of CockroachDB.
const (
	// SurviveZone keeps the database available when one availability zone fails (the
	// CockroachDB default): writes commit within the primary region.
	SurviveZone Survival = "zone"
	// SurviveRegion keeps it available when a whole region fails; it needs at least three
	// regions, and writes wait for a quorum across regions.
	SurviveRegion Survival = "region"
)

type multiRegion struct {
	primary  string
	others   []string
	survival Survival
}

// WithRegions makes the database multi-region on CockroachDB: primary is its primary region
// (where tables without a locality of their own live, and where the core should run), others
// the further regions it spans. Region names are CockroachDB's (as in SHOW REGIONS). On
// PostgreSQL the option is ignored with a warning. Applied by Migrate, and by Open unless
// WithoutMigrate.
func WithRegions(primary string, others ...string) Option {
	return func(o *options) {
		o.region.primary = primary
		o.region.others = append([]string(nil), others...)
	}
}

// WithSurvival sets the survival goal of a multi-region CockroachDB database (with
// WithRegions). Without it the database keeps its goal (CockroachDB's default: zone).
func WithSurvival(goal Survival) Option { return func(o *options) { o.region.survival = goal } }

func (m multiRegion) enabled() bool { return m.primary != "" }

func (m multiRegion) validate() error {
	if !m.enabled() {
		if len(m.others) > 0 || m.survival != "" {
			return errors.New("multi-region options need a primary region (WithRegions)")
		}
		return nil
	}
	all := append([]string{m.primary}, m.others...)
	for i, r := range all {
		if strings.TrimSpace(r) == "" {
			return errors.New("empty region name")
		}
		if slices.Contains(all[:i], r) {
			return fmt.Errorf("region %q named twice", r)
		}
	}
	switch m.survival {
	case "", SurviveZone:
	case SurviveRegion:
		if len(all) < 3 {
			return fmt.Errorf("surviving a region failure needs at least 3 regions, got %d", len(all))
		}
	default:
		return fmt.Errorf("unknown survival goal %q (want %q or %q)", m.survival, SurviveZone, SurviveRegion)
	}
	return nil
}

// isCockroach reports whether the server is CockroachDB, from SELECT version().
func isCockroach(ctx context.Context, pool *pgxpool.Pool) (bool, error) {
	var v string
	if err := pool.QueryRow(ctx, `SELECT version()`).Scan(&v); err != nil {
		return false, fmt.Errorf("read server version: %w", err)
	}
	return strings.Contains(v, "CockroachDB"), nil
}

var crdbComment = regexp.MustCompile(`/\*crdb:\s*(.*?)\s*\*/`)

// forCockroach renders the SQL of a migration for CockroachDB. See the file comment.
func forCockroach(sql string) string {
	sql = strings.ReplaceAll(sql, ` COLLATE "C"`, "")
	return crdbComment.ReplaceAllString(sql, "$1")
}

// crdbDDL returns the multi-region statements for database db, or none when m does not ask
// for regions. Each is idempotent, so that every Migrate may run them all again:
//   - the database's primary region, further regions and survival goal;
//   - documents REGIONAL BY ROW: each row lives in the region of the gateway that wrote it
//     (CockroachDB's default for the hidden crdb_region column), so the documents of a region's
//     users are read and written there;
//   - meta and schema_migrations GLOBAL: tiny, read by every core at start (the partition count,
//     the schema version) and almost never written, so fast reads everywhere are worth slow
//     writes;
//   - signing_keys GLOBAL for the same reason: a handful of rows, read by every core to sign
//     and publish access tokens, written once a rotation; api_keys likewise, read by every
//     core every few seconds and written when an operator runs `perch keys`.
//
// The other tables stay REGIONAL BY TABLE in the primary region, where the core that applies
// writes should run: the partition counters, write records, Idempotency-Keys and outbox are
// written by every batch, and the account tables (users, refresh tokens, revocations, login
// failures) by every signup, login and refresh.
func crdbDDL(db string, m multiRegion) []string {
	if !m.enabled() {
		return nil
	}
	database := pgx.Identifier{db}.Sanitize()
	region := func(r string) string { return pgx.Identifier{r}.Sanitize() }
	stmts := []string{fmt.Sprintf(`ALTER DATABASE %s SET PRIMARY REGION %s`, database, region(m.primary))}
	for _, r := range m.others {
		stmts = append(stmts, fmt.Sprintf(`ALTER DATABASE %s ADD REGION IF NOT EXISTS %s`, database, region(r)))
	}
	switch m.survival {
	case SurviveZone:
		stmts = append(stmts, fmt.Sprintf(`ALTER DATABASE %s SURVIVE ZONE FAILURE`, database))
	case SurviveRegion:
		stmts = append(stmts, fmt.Sprintf(`ALTER DATABASE %s SURVIVE REGION FAILURE`, database))
	}
	return append(stmts,
		`ALTER TABLE documents SET LOCALITY REGIONAL BY ROW`,
		`ALTER TABLE meta SET LOCALITY GLOBAL`,
		`ALTER TABLE schema_migrations SET LOCALITY GLOBAL`,
		`ALTER TABLE signing_keys SET LOCALITY GLOBAL`,
		`ALTER TABLE api_keys SET LOCALITY GLOBAL`,
	)
}
