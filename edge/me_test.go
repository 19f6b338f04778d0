package edge_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/internal/clustertest"
)

// TestExportAndDeleteAccount: a user's export holds their account and all their documents and
// nothing of anyone else's; deleting the account deletes every document they own (tombstones
// for sync), ends their tokens on every edge, and frees the email, leaving others' data alone.
func TestExportAndDeleteAccount(t *testing.T) {
	c := accountsCluster(t, []string{"a", "b"}, &edge.Config{Rules: rulesOf(t, testRules)})
	a, b := c.Edge(0), c.Edge(1)
	alice, bob := user(t, a, "alice-me@example.com"), user(t, a, "bob-me@example.com")
	for i := range 3 {
		for _, coll := range []string{"notes", "posts"} {
			url := fmt.Sprintf("%s/v1/collections/%s/docs/alice%d", a, coll, i)
			if r := clustertest.Do(t, "PUT", url, alice, []byte(`{"by":"alice"}`)); r.Status != 201 {
				t.Fatalf("PUT %s: %d %s", url, r.Status, r.Body)
			}
		}
	}
	if r := clustertest.Do(t, "PUT", a+"/v1/collections/posts/docs/bob0", bob, []byte(`{"by":"bob"}`)); r.Status != 201 {
		t.Fatalf("bob's post: %d %s", r.Status, r.Body)
	}

	r := clustertest.Do(t, "GET", b+"/v1/me/export", alice, nil)
	if r.Status != 200 || r.Header["Cache-Control"] != "no-store" || !strings.HasPrefix(r.Header["Content-Disposition"], "attachment") {
		t.Fatalf("export: %d %v %s", r.Status, r.Header, r.Body)
	}
	var export struct {
		Account struct {
			ID, Email string
		}
		Documents []struct {
			Collection, ID string
			Data           map[string]string
		}
	}
	if err := json.Unmarshal(r.Body, &export); err != nil {
		t.Fatal(err)
	}
	if export.Account.Email != "alice-me@example.com" || export.Account.ID == "" || len(export.Documents) != 6 {
		t.Fatalf("export: %s", r.Body)
	}
	for _, d := range export.Documents {
		if d.Data["by"] != "alice" {
			t.Fatalf("the export holds %s/%s: %v", d.Collection, d.ID, d.Data)
		}
	}
	if strings.Contains(string(r.Body), "argon2") || strings.Contains(string(r.Body), "password") {
		t.Fatalf("the export shows a password hash: %s", r.Body)
	}
	expectUnauthorized(t, clustertest.Do(t, "GET", a+"/v1/me/export", nil, nil), "unauthorized")
	expectUnauthorized(t, clustertest.Do(t, "DELETE", a+"/v1/me", nil, nil), "unauthorized")

	if r := clustertest.Do(t, "DELETE", b+"/v1/me", alice, nil); r.Status != 204 {
		t.Fatalf("DELETE /v1/me: %d %s", r.Status, r.Body)
	}
	// Her documents are gone everywhere, as deletes: the public ones too, and sync has their
	// tombstones.
	for _, edgeURL := range []string{a, b} {
		clustertest.Eventually(t, 5*time.Second, func() error {
			for i := range 3 {
				if r := clustertest.Do(t, "GET", fmt.Sprintf("%s/v1/collections/posts/docs/alice%d", edgeURL, i), bob, nil); r.Status != 404 {
					return fmt.Errorf("alice's post %d answers %d", i, r.Status)
				}
			}
			return nil
		})
	}
	var sync struct {
		Changes []struct {
			ID      string
			Deleted bool
		}
	}
	if err := json.Unmarshal(clustertest.Do(t, "GET", a+"/v1/sync?collections=posts", bob, nil).Body, &sync); err != nil {
		t.Fatal(err)
	}
	deleted := 0
	for _, ch := range sync.Changes {
		if strings.HasPrefix(ch.ID, "alice") && ch.Deleted {
			deleted++
		}
		if ch.ID == "bob0" && ch.Deleted {
			t.Fatal("bob's post was deleted")
		}
	}
	if deleted != 3 {
		t.Fatalf("sync shows %d tombstones of alice's posts, want 3: %+v", deleted, sync.Changes)
	}
	// Her tokens no longer work, on any edge; she cannot log in; the email is free again.
	for _, edgeURL := range []string{a, b} {
		clustertest.Eventually(t, 2*time.Second, func() error {
			if r := clustertest.Do(t, "GET", edgeURL+"/v1/collections/posts/docs/bob0", alice, nil); r.Status != 401 {
				return fmt.Errorf("a deleted account's token answered %d", r.Status)
			}
			return nil
		})
	}
	expectUnauthorized(t, clustertest.Do(t, "POST", a+"/v1/auth/login", nil, credentials("alice-me@example.com", "long enough password")), "invalid_credentials")
	again := user(t, a, "alice-me@example.com")
	if r := clustertest.Do(t, "GET", a+"/v1/me/export", again, nil); r.Status != 200 || strings.Contains(string(r.Body), `"alice0"`) {
		t.Fatalf("the new account's export: %d %s", r.Status, r.Body)
	}
	if r := clustertest.Do(t, "GET", b+"/v1/collections/posts/docs/bob0", bob, nil); r.Status != 200 {
		t.Fatalf("bob's post: %d %s", r.Status, r.Body)
	}
}
