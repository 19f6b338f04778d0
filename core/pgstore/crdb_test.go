package pgstore

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/perchhq/perch/core/migration"
)

// There is no CockroachDB server in this repository's CI: these tests check the SQL the store
// generates for it, not its behaviour on a live cluster.

// statements splits SQL into its statements, without comments and with spaces collapsed.
func statements(sql string) []string {
	sql = regexp.MustCompile(`(?m)--.*$`).ReplaceAllString(sql, "")
	sql = regexp.MustCompile(`(?s)/\*.*?\*/`).ReplaceAllString(sql, "")
	var out []string
	for _, st := range strings.Split(sql, ";") {
		// A removed mark before a comma leaves a space behind it.
		if st = strings.ReplaceAll(strings.Join(strings.Fields(st), " "), " ,", ","); st != "" {
			out = append(out, st)
		}
	}
	return out
}

func TestCockroachMigrations(t *testing.T) {
	ms, err := migration.Load(migrationFiles)
	if err != nil {
		t.Fatal(err)
	}
	// The ordered keys that would be a hot spot on CockroachDB are hash-sharded there, and only
	// those, per migration (a migration not named here has none).
	wantHash := map[int][]string{
		1: {
			"CONSTRAINT writes_pkey PRIMARY KEY (write_id) USING HASH )",
			"CREATE INDEX writes_created ON writes (created_at) USING HASH",
			"CREATE INDEX idempotency_created ON idempotency (created_at) USING HASH",
		},
		3: {
			"CONSTRAINT users_pkey PRIMARY KEY (id) USING HASH,",
			"CREATE INDEX refresh_families_expires ON refresh_families (expires_at) USING HASH",
			"CREATE INDEX refresh_tokens_expires ON refresh_tokens (family_expires_at) USING HASH",
			"CREATE INDEX login_failures_window ON login_failures (window_start) USING HASH",
		},
	}
	for _, m := range ms {
		t.Run(m.Name, func(t *testing.T) {
			pg := statements(m.SQL)
			crdb := statements(forCockroach(m.SQL))
			if len(pg) != len(crdb) {
				t.Fatalf("%d statements for PostgreSQL, %d for CockroachDB", len(pg), len(crdb))
			}
			for _, st := range crdb {
				if strings.Contains(st, "COLLATE") {
					t.Errorf("CockroachDB statement with a collation (it cannot create C-collated columns): %s", st)
				}
			}
			for _, st := range pg {
				if strings.Contains(st, "USING HASH") {
					t.Errorf("PostgreSQL statement with a hash-sharded key: %s", st)
				}
			}
			hashed := 0
			for _, st := range crdb {
				hashed += strings.Count(st, "USING HASH")
			}
			if want := wantHash[m.Version]; hashed != len(want) {
				t.Errorf("%d hash-sharded keys, want %d", hashed, len(want))
			}
			all := strings.Join(crdb, ";\n")
			for _, want := range wantHash[m.Version] {
				if !strings.Contains(all, want) {
					t.Errorf("CockroachDB schema lacks %q:\n%s", want, all)
				}
			}
			// Apart from those marks the two are the same statements.
			for i := range pg {
				plain := strings.ReplaceAll(pg[i], ` COLLATE "C"`, "")
				if got := strings.ReplaceAll(crdb[i], " USING HASH", ""); got != plain {
					t.Errorf("statement %d differs beyond the marks:\n pg   %s\n crdb %s", i, plain, got)
				}
			}
			if strings.Contains(forCockroach(m.SQL), "/*crdb:") {
				t.Error("a /*crdb: */ mark was left in the CockroachDB schema")
			}
			for _, bad := range partialOnNewColumn(crdb) {
				t.Errorf("CockroachDB refuses a partial index whose predicate names a column added in the same transaction (cockroach#83593): %s", bad)
			}
		})
	}
}

var (
	addColumn    = regexp.MustCompile(`(?i)^ALTER TABLE (\w+) ADD COLUMN (?:IF NOT EXISTS )?(\w+)`)
	partialIndex = regexp.MustCompile(`(?i)^CREATE (?:UNIQUE )?INDEX .* ON (\w+) ?\(.*\) WHERE (.*)$`)
)

// partialOnNewColumn returns the statements among stmts (one migration, one transaction) that
// create a partial index whose predicate names a column an earlier statement added.
func partialOnNewColumn(stmts []string) []string {
	added := map[string][]string{} // table → columns added
	var bad []string
	for _, st := range stmts {
		if m := addColumn.FindStringSubmatch(st); m != nil {
			added[m[1]] = append(added[m[1]], m[2])
			continue
		}
		if m := partialIndex.FindStringSubmatch(st); m != nil {
			for _, c := range added[m[1]] {
				if regexp.MustCompile(`\b` + regexp.QuoteMeta(c) + `\b`).MatchString(m[2]) {
					bad = append(bad, st)
				}
			}
		}
	}
	return bad
}

func TestPartialOnNewColumn(t *testing.T) {
	// The check above, on the statement it guards against and on those CockroachDB accepts.
	got := partialOnNewColumn(statements(`ALTER TABLE documents ADD COLUMN owner TEXT;
		CREATE INDEX a ON documents (collection, owner, id) WHERE NOT deleted;
		CREATE INDEX b ON documents (collection, owner) WHERE owner IS NOT NULL AND NOT deleted;
		CREATE INDEX c ON other (owner) WHERE owner IS NOT NULL`))
	if len(got) != 1 || !strings.HasPrefix(got[0], "CREATE INDEX b ") {
		t.Fatalf("partialOnNewColumn = %q, want only index b", got)
	}
}

func TestCockroachDDL(t *testing.T) {
	for _, tt := range []struct {
		name string
		m    multiRegion
		want []string
	}{
		{"none", multiRegion{}, nil},
		{"one region", multiRegion{primary: "us-east1"}, []string{
			`ALTER DATABASE "perch" SET PRIMARY REGION "us-east1"`,
			`ALTER TABLE documents SET LOCALITY REGIONAL BY ROW`,
			`ALTER TABLE meta SET LOCALITY GLOBAL`,
			`ALTER TABLE schema_migrations SET LOCALITY GLOBAL`,
			`ALTER TABLE signing_keys SET LOCALITY GLOBAL`,
			`ALTER TABLE api_keys SET LOCALITY GLOBAL`,
		}},
		{"regions and zone survival", multiRegion{primary: "us-east1", others: []string{"europe-west1"}, survival: SurviveZone}, []string{
			`ALTER DATABASE "perch" SET PRIMARY REGION "us-east1"`,
			`ALTER DATABASE "perch" ADD REGION IF NOT EXISTS "europe-west1"`,
			`ALTER DATABASE "perch" SURVIVE ZONE FAILURE`,
			`ALTER TABLE documents SET LOCALITY REGIONAL BY ROW`,
			`ALTER TABLE meta SET LOCALITY GLOBAL`,
			`ALTER TABLE schema_migrations SET LOCALITY GLOBAL`,
			`ALTER TABLE signing_keys SET LOCALITY GLOBAL`,
			`ALTER TABLE api_keys SET LOCALITY GLOBAL`,
		}},
		{"region survival", multiRegion{primary: "us-east1", others: []string{"europe-west1", "asia-south1"}, survival: SurviveRegion}, []string{
			`ALTER DATABASE "perch" SET PRIMARY REGION "us-east1"`,
			`ALTER DATABASE "perch" ADD REGION IF NOT EXISTS "europe-west1"`,
			`ALTER DATABASE "perch" ADD REGION IF NOT EXISTS "asia-south1"`,
			`ALTER DATABASE "perch" SURVIVE REGION FAILURE`,
			`ALTER TABLE documents SET LOCALITY REGIONAL BY ROW`,
			`ALTER TABLE meta SET LOCALITY GLOBAL`,
			`ALTER TABLE schema_migrations SET LOCALITY GLOBAL`,
			`ALTER TABLE signing_keys SET LOCALITY GLOBAL`,
			`ALTER TABLE api_keys SET LOCALITY GLOBAL`,
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.m.validate(); err != nil {
				t.Fatalf("validate: %v", err)
			}
			if got := crdbDDL("perch", tt.m); !slices.Equal(got, tt.want) {
				t.Fatalf("statements\n %q\nwant\n %q", got, tt.want)
			}
		})
	}
	// Names are quoted as identifiers, whatever they hold.
	got := crdbDDL(`we"ird`, multiRegion{primary: `a"b`})
	if got[0] != `ALTER DATABASE "we""ird" SET PRIMARY REGION "a""b"` {
		t.Fatalf("quoting: %s", got[0])
	}
}

func TestRegionOptions(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts []Option
		ok   bool
	}{
		{"none", nil, true},
		{"primary", []Option{WithRegions("us-east1")}, true},
		{"region survival with three", []Option{WithRegions("a", "b", "c"), WithSurvival(SurviveRegion)}, true},
		{"region survival with two", []Option{WithRegions("a", "b"), WithSurvival(SurviveRegion)}, false},
		{"survival without regions", []Option{WithSurvival(SurviveZone)}, false},
		{"unknown survival", []Option{WithRegions("a"), WithSurvival("galaxy")}, false},
		{"duplicate region", []Option{WithRegions("a", "b", "a")}, false},
		{"empty region", []Option{WithRegions("a", " ")}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := buildOptions(4, tt.opts)
			if (err == nil) != tt.ok {
				t.Fatalf("buildOptions: %v, want ok %t", err, tt.ok)
			}
		})
	}
}
