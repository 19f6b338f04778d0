package pgtest

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestWithDatabase(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"postgres://u@h:5432/postgres?sslmode=disable", "postgres://u@h:5432/perch_x?sslmode=disable"},
		{"postgresql://u:p%40ss@h/db", "postgresql://u:p%40ss@h/perch_x"},
		{"postgres://h", "postgres://h/perch_x"},
		{"postgres://h/db?dbname=other", "postgres://h/perch_x"},
		{"postgres://h/db?sslmode=disable&options=-c%20x%3Dy&dbname=o", "postgres://h/perch_x?sslmode=disable&options=-c%20x%3Dy"},
		{"host=h user=u dbname=postgres", "host=h user=u dbname=postgres dbname=perch_x"},
	} {
		got, err := withDatabase(tt.in, "perch_x")
		if err != nil || got != tt.want {
			t.Errorf("withDatabase(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	if _, err := withDatabase("mysql://h/db", "perch_x"); err == nil {
		t.Error("withDatabase accepted a mysql:// URL")
	}
}

// recordingTB stands in for a test to see how DSN ends it without ending this one.
type recordingTB struct {
	testing.TB
	fatal, skip string
}

func (r *recordingTB) Helper() {}
func (r *recordingTB) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recordingTB) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func dsnWith(t *testing.T) *recordingTB {
	r := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		DSN(r)
	}()
	<-done
	return r
}

func TestDSNWithoutServer(t *testing.T) {
	t.Setenv(EnvDSN, "")
	t.Setenv("CI", "")
	if r := dsnWith(t); r.skip == "" || r.fatal != "" {
		t.Fatalf("without %s: skip %q, fatal %q; want a skip", EnvDSN, r.skip, r.fatal)
	}
	t.Setenv("CI", "true")
	if r := dsnWith(t); !strings.Contains(r.fatal, "CI must run the PostgreSQL suite") {
		t.Fatalf("without %s under CI=true: skip %q, fatal %q; want a failure", EnvDSN, r.skip, r.fatal)
	}
}

func TestDSN(t *testing.T) {
	if os.Getenv(EnvDSN) == "" {
		DSN(t) // skips, or fails under CI=true
	}
	var (
		name     string
		leftover *pgx.Conn
	)
	t.Run("fresh", func(t *testing.T) {
		dsn := DSN(t)
		conn, err := pgx.Connect(t.Context(), dsn)
		if err != nil {
			t.Fatalf("connect to the test database: %v", err)
		}
		// Left open past the test's end: the drop must not wait for it.
		leftover = conn
		if err := conn.QueryRow(t.Context(), `SELECT current_database()`).Scan(&name); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(name, Prefix) {
			t.Fatalf("database %q, want a %s... one", name, Prefix)
		}
		var tables int
		if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM information_schema.tables
			WHERE table_schema = current_schema()`).Scan(&tables); err != nil || tables != 0 {
			t.Fatalf("%d tables (%v), want an empty database", tables, err)
		}
		if other := DSN(t); other == dsn {
			t.Fatal("two calls gave the same database")
		}
	})
	if leftover != nil {
		_ = leftover.Close(context.Background()) // the drop closed it
	}
	conn, err := pgx.Connect(t.Context(), os.Getenv(EnvDSN))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_database WHERE datname = $1`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("database %s still exists after its test", name)
	}
}
