package edge_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/core/pgstore"
	"github.com/perchhq/perch/core/sqlitestore"
	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/internal/auth"
	"github.com/perchhq/perch/internal/clustertest"
	"github.com/perchhq/perch/internal/pgtest"
)

// apiKeysEvery is how often the test cores read the API keys: the bound within which the
// fleet learns of a key created or revoked, plus a message's flight.
const apiKeysEvery = 200 * time.Millisecond

// apiKeysCluster starts two edges in mode and a core reading the keys every apiKeysEvery, on
// SQLite or, with pg, PostgreSQL. It returns the cluster and a store of its database opened
// apart, as `perch keys` opens it.
func apiKeysCluster(t *testing.T, mode edge.APIKeyMode, pg bool) (*clustertest.Cluster, core.Store) {
	t.Helper()
	ccfg := core.LocalConfig()
	ccfg.Accounts.APIKeysEvery = apiKeysEvery
	o := clustertest.Options{Regions: []string{"a", "b"}, Core: &ccfg, Edge: &edge.Config{APIKeys: mode}, Dir: t.TempDir()}
	if pg {
		o.DB = pgtest.DSN(t)
	}
	c := clustertest.Start(t, o)
	var (
		s   core.Store
		err error
	)
	if pg {
		s, err = pgstore.Open(t.Context(), o.DB, ccfg.Partitions, nil, pgstore.WithoutMigrate())
	} else {
		s, err = sqlitestore.Open(t.Context(), filepath.Join(o.Dir, "perch.db"), ccfg.Partitions, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return c, s
}

func createAPIKey(t *testing.T, s core.Store, name string) (core.APIKey, string) {
	t.Helper()
	key, hash := auth.NewAPIKey()
	k := core.APIKey{ID: auth.NewAPIKeyID(), Name: name, Hash: hash, Created: time.Now()}
	if err := s.CreateAPIKey(t.Context(), k); err != nil {
		t.Fatal(err)
	}
	return k, key
}

func withKey(key string) map[string]string { return map[string]string{"X-Api-Key": key} }

// eventuallyStatus waits until GET url with headers answers status on every edge of c.
func eventuallyStatus(t *testing.T, c *clustertest.Cluster, path string, h map[string]string, status int) {
	t.Helper()
	for i := range c.EdgeURLs() {
		clustertest.Eventually(t, 10*apiKeysEvery+2*time.Second, func() error {
			if r := clustertest.Do(t, "GET", c.Edge(i)+path, h, nil); r.Status != status {
				return fmt.Errorf("edge %d: %d %s, want %d", i, r.Status, r.Body, status)
			}
			return nil
		})
	}
}

func TestAPIKeys(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			c, s := apiKeysCluster(t, edge.APIKeysCheck, db == "postgres")
			doc := "/v1/collections/notes/docs/n1"
			if r := clustertest.Do(t, "PUT", c.Edge(0)+doc, nil, []byte(`{"a":1}`)); r.Status != 201 {
				t.Fatalf("PUT without a key under check: %d %s", r.Status, r.Body)
			}
			// A key never made, and a key that could not be one, are refused on every route.
			unknown, _ := auth.NewAPIKey()
			for _, k := range []string{unknown, "ios-app", unknown[:len(unknown)-1]} {
				r := clustertest.Do(t, "GET", c.Edge(0)+doc, withKey(k), nil)
				expectProblem(t, r, 401, "invalid_api_key")
				if r.Header["Www-Authenticate"] == "" || r.Header["Cache-Control"] != "no-store" {
					t.Fatalf("401 headers %v", r.Header)
				}
				expectProblem(t, clustertest.Do(t, "POST", c.Edge(1)+"/v1/auth/login", withKey(k), credentials("a@example.com", "a password")), 401, "invalid_api_key")
			}
			// Health checks do not look at it.
			if r := clustertest.Do(t, "GET", c.Edge(0)+"/readyz", withKey("ios-app"), nil); r.Status != 200 {
				t.Fatalf("readyz with a bad key: %d", r.Status)
			}

			// A key created in the database is accepted by every edge within the bound.
			k, key := createAPIKey(t, s, "ios")
			eventuallyStatus(t, c, doc, withKey(key), 200)
			if r := clustertest.Do(t, "PUT", c.Edge(1)+doc, map[string]string{"X-Api-Key": key, "Idempotency-Key": "i1"}, []byte(`{"a":2}`)); r.Status != 200 {
				t.Fatalf("PUT with the key: %d %s", r.Status, r.Body)
			}
			// An edge started afterwards asks the core.
			c.KillEdge(1)
			if err := c.StartEdge(1); err != nil {
				t.Fatal(err)
			}
			clustertest.WaitReady(t, c.Edge(1))
			if r := clustertest.Do(t, "GET", c.Edge(1)+doc, withKey(key), nil); r.Status != 200 {
				t.Fatalf("a restarted edge: %d %s", r.Status, r.Body)
			}

			// Revoked, it is refused by every edge within the bound; another key lives on.
			_, other := createAPIKey(t, s, "android")
			if _, err := s.RevokeAPIKey(t.Context(), k.ID, time.Now()); err != nil {
				t.Fatal(err)
			}
			eventuallyStatus(t, c, doc, withKey(key), 401)
			eventuallyStatus(t, c, doc, withKey(other), 200)
			if n := c.Metric("perch_edge_api_keys_refused_total", "reason"); n["unknown"] < 2 || n["malformed"] < 2 {
				t.Fatalf("refusals counted %v", n)
			}
		})
	}
}

func TestAPIKeysRequired(t *testing.T) {
	c, s := apiKeysCluster(t, edge.APIKeysRequire, false)
	doc := "/v1/collections/notes/docs/n1"
	r := clustertest.Do(t, "GET", c.Edge(0)+doc, nil, nil)
	expectProblem(t, r, 401, "invalid_api_key")
	expectProblem(t, clustertest.Do(t, "POST", c.Edge(0)+"/v1/auth/signup", nil, credentials("a@example.com", "a password")), 401, "invalid_api_key")
	for _, path := range []string{"/healthz", "/readyz", "/.well-known/jwks.json", "/v1/openapi.json"} {
		if r := clustertest.Do(t, "GET", c.Edge(0)+path, nil, nil); r.Status != 200 {
			t.Fatalf("%s without a key: %d %s", path, r.Status, r.Body)
		}
	}
	_, key := createAPIKey(t, s, "web")
	eventuallyStatus(t, c, doc, withKey(key), 404)
	if n := c.Metric("perch_edge_api_keys_refused_total", "reason"); n["missing"] != 2 {
		t.Fatalf("refusals counted %v", n)
	}
}
