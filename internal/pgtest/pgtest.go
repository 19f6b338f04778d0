package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN is the environment variable that holds the DSN of the test server: a database on it
// that the test user may connect to, as a user that may create databases.
const EnvDSN = "PERCH_TEST_POSTGRES"

// Prefix starts the name of every database DSN creates, so that leftovers of a killed test run
// are easy to find and drop.
const Prefix = "perch_"

// DSN returns the DSN of a new, empty database on the PERCH_TEST_POSTGRES server, dropped
// (WITH (FORCE), so even with connections left open) when tb and its subtests end. It skips
// the test when PERCH_TEST_POSTGRES is unset, or fails it when CI=true.
func DSN(tb testing.TB) string {
	tb.Helper()
	admin := os.Getenv(EnvDSN)
	if admin == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("CI must run the PostgreSQL suite: set %s (see .ci/postgres)", EnvDSN)
		}
		tb.Skipf("%s is not set: skipping a test that needs PostgreSQL", EnvDSN)
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatalf("pgtest: database name: %v", err)
	}
	name := Prefix + hex.EncodeToString(b[:])
	dsn, err := withDatabase(admin, name)
	if err != nil {
		tb.Fatalf("pgtest: %s: %v", EnvDSN, err)
	}
	ctx, cancel := context.WithTimeout(tb.Context(), time.Minute)
	defer cancel()
	cockroach, err := exec(ctx, admin, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	if err != nil {
		tb.Fatalf("pgtest: create database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		// tb's context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		drop := "DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize() + " WITH (FORCE)"
		if cockroach {
			drop = "DROP DATABASE IF EXISTS " + pgx.Identifier{name}.Sanitize() + " CASCADE"
		}
		if _, err := exec(ctx, admin, drop); err != nil {
			tb.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return dsn
}

// exec runs one statement on a connection of its own to dsn and reports whether the server
// is CockroachDB.
func exec(ctx context.Context, dsn, stmt string) (cockroach bool, err error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return false, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var version string
	if err := conn.QueryRow(ctx, `SELECT version()`).Scan(&version); err != nil {
		return false, err
	}
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return false, err
	}
	return strings.Contains(version, "CockroachDB"), nil
}

// withDatabase returns dsn with its database replaced by name. dsn is a postgres:// or
// postgresql:// URL, or a keyword/value string ("host=... dbname=...").
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("not a URL: %w", err)
		}
		u.Path = "/" + name
		u.RawPath = ""
		// Drop a dbname parameter, leaving the others exactly as written: re-encoding would
		// turn %20 into +, which pgx does not read as a space.
		var params []string
		for _, p := range strings.Split(u.RawQuery, "&") {
			if p != "" && !strings.HasPrefix(p, "dbname=") {
				params = append(params, p)
			}
		}
		u.RawQuery = strings.Join(params, "&")
		return u.String(), nil
	}
	if strings.Contains(dsn, "://") {
		return "", fmt.Errorf("want a postgres:// or postgresql:// URL")
	}
	return dsn + " dbname=" + name, nil // the last of repeated keywords wins
}
