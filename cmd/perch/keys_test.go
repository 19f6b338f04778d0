package main

import (
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/perchhq/perch/internal/auth"
)

// TestKeys runs perch keys create, list and revoke against SQLite, the DSN from the
// environment as every flag may take it.
func TestKeys(t *testing.T) {
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "perch.db")
	env := func(k string) string {
		if k == "PERCH_DB" {
			return dsn
		}
		return ""
	}
	keys := func(args ...string) (string, string, error) {
		t.Helper()
		var out, errOut syncBuffer
		err := run(t.Context(), append([]string{"keys"}, args...), env, &out, &errOut)
		return out.String(), errOut.String(), err
	}

	out, errOut, err := keys("create", "--name", "ios prod")
	if err != nil {
		t.Fatalf("create: %v\n%s", err, errOut)
	}
	m := regexp.MustCompile(`(?m)^id:\s+(ak_\S+)\nname:\s+ios prod\nkey:\s+(pk_\S+)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("create printed:\n%s", out)
	}
	id, key := m[1], m[2]
	if _, ok := auth.HashAPIKey([]byte(key)); !ok || !auth.ValidAPIKeyID(id) {
		t.Fatalf("id %q, key %q", id, key)
	}
	if !strings.Contains(errOut, "never again") {
		t.Fatalf("create warned:\n%s", errOut)
	}
	if _, _, err := keys("create", "--name", "android", "--db", dsn); err != nil {
		t.Fatal(err)
	}

	out, _, err = keys("list")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.HasPrefix(lines[1], id) ||
		!strings.Contains(lines[1], "ios prod") || !strings.HasSuffix(lines[1], " -") || !strings.Contains(lines[2], "android") {
		t.Fatalf("list:\n%s", out)
	}
	if strings.Contains(out, key) || strings.Contains(out, key[len(auth.APIKeyPrefix):]) {
		t.Fatalf("list shows the key:\n%s", out)
	}

	if out, _, err = keys("revoke", id); err != nil || !strings.Contains(out, "revoked "+id) {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	// Again, with the flag first: it stays revoked at its first time.
	first, _, _ := keys("list")
	if _, _, err = keys("revoke", "--db", dsn, id); err != nil {
		t.Fatal(err)
	}
	out, _, _ = keys("list")
	if out != first || !regexp.MustCompile(id+`\s+ios prod\s+\S+\s+\d{4}-\d\d-\d\dT`).MatchString(out) {
		t.Fatalf("list after revoking twice:\n%s\nbefore:\n%s", out, first)
	}

	if _, _, err := keys("revoke", auth.NewAPIKeyID()); err == nil || errors.Is(err, errUsage) {
		t.Fatalf("revoke of an unknown key: %v, want an error other than usage", err)
	}
	for _, args := range [][]string{nil, {"bogus"}, {"create"}, {"create", "--name", "two\nlines"}, {"revoke"},
		{"revoke", "not-an-id"}, {"revoke", id, id}, {"list", "extra"}} {
		if _, _, err := keys(args...); !errors.Is(err, errUsage) || exitCode(err) != 2 {
			t.Errorf("perch keys %q: %v, want a usage error", args, err)
		}
	}
	var out2, errOut2 syncBuffer
	if err := run(t.Context(), []string{"keys", "list"}, noEnv, &out2, &errOut2); !errors.Is(err, errUsage) {
		t.Errorf("list without --db: %v", err)
	}
}
