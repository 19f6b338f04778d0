package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/perchhq/perch/internal/clustertest"
	"github.com/perchhq/perch/internal/natsembed"
	"github.com/perchhq/perch/internal/pgtest"
)

// Secrets a client or an operator hands Perch, each one a string that must never appear in
// what a process logs or prints.
const (
	secretBearer   = "bearer-tok-7c1f9e"
	secretAPIKey   = "api-key-4d2a8b"
	secretCookie   = "cookie-sess-9e3b51"
	secretPassword = "hunter2-pw-6f0c3a"
	secretNATS     = "nats-pw-2b7d94"
	secretDB       = "db-pw-8a1e6c"
)

var secrets = []string{secretBearer, secretAPIKey, secretCookie, secretPassword, secretNATS, secretDB}

// withPassword is dsn with the password pw (a test server that trusts every local client
// takes any).
func withPassword(t *testing.T, dsn, pw string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), pw)
	return u.String()
}

// sendSecrets drives typical and erroring requests that carry every client secret through the
// edge at base: a signup, a login and a refresh (whose tokens are secrets too, returned),
// reads and writes with credentials, a forged token, bad JSON, a body over the limit, a wrong
// content type, and rate-limited requests.
func sendSecrets(t *testing.T, base string) []string {
	t.Helper()
	creds := map[string]string{
		"X-Api-Key": secretAPIKey,
		"Cookie":    "session=" + secretCookie,
	}
	with := func(extra map[string]string) map[string]string {
		h := map[string]string{}
		for k, v := range creds {
			h[k] = v
		}
		for k, v := range extra {
			h[k] = v
		}
		return h
	}
	signup := []byte(`{"email":"a@example.com","password":"` + secretPassword + `"}`)
	var tokens struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	r := clustertest.Do(t, "POST", base+"/v1/auth/signup", with(nil), signup)
	if err := json.Unmarshal(r.Body, &tokens); r.Status != 201 || err != nil {
		t.Fatalf("signup: %d %s", r.Status, r.Body)
	}
	issued := []string{tokens.AccessToken, tokens.RefreshToken}
	r = clustertest.Do(t, "POST", base+"/v1/auth/refresh", with(nil), []byte(`{"refresh_token":"`+tokens.RefreshToken+`"}`))
	if err := json.Unmarshal(r.Body, &tokens); r.Status != 200 || err != nil {
		t.Fatalf("refresh: %d %s", r.Status, r.Body)
	}
	issued = append(issued, tokens.AccessToken, tokens.RefreshToken)
	creds["Authorization"] = "Bearer " + tokens.AccessToken
	for _, rq := range []struct {
		method, path string
		headers      map[string]string
		body         []byte
		status       int // 0: any
	}{
		{"PUT", "/v1/collections/users/docs/u1", with(nil), signup, 201},
		{"GET", "/v1/collections/users/docs/u1", with(nil), nil, 200},
		{"GET", "/v1/collections/users/docs/absent", with(nil), nil, 404},
		{"PUT", "/v1/collections/users/docs/u2", with(map[string]string{"Idempotency-Key": "k1"}), signup, 201},
		{"PUT", "/v1/collections/users/docs/u2", with(map[string]string{"Idempotency-Key": "k1"}), []byte(`{"password":"` + secretPassword + `x"}`), 422},
		{"PUT", "/v1/collections/users/docs/u3", with(nil), []byte(`{"password":"` + secretPassword + `"`), 400},
		{"PATCH", "/v1/collections/users/docs/nobody", with(nil), signup, 404},
		{"POST", "/v1/auth/login", with(nil), signup, 200},
		{"POST", "/v1/auth/login", with(nil), []byte(`{"email":"a@example.com","password":"` + secretPassword + `x"}`), 401},
		{"POST", "/v1/auth/signup", with(nil), signup, 409},
		{"GET", "/v1/collections/users/docs/u1", with(map[string]string{"Authorization": "Bearer " + secretBearer}), nil, 401},
		{"PUT", "/v1/collections/users/docs/u4", with(map[string]string{"Content-Type": "text/plain"}), signup, 415},
		{"PUT", "/v1/collections/users/docs/u5", with(map[string]string{"If-Match": `"` + secretPassword + `"`}), signup, 412},
		{"PUT", "/v1/collections/users/docs/big", with(nil), []byte(`{"password":"` + secretPassword + `","pad":"` + strings.Repeat("x", 2<<20) + `"}`), 413},
		{"GET", "/v1/collections/bad$name/docs/x?token=" + secretBearer[:4], with(nil), nil, 400},
	} {
		r, err := clustertest.Send(rq.method, base+rq.path, rq.headers, rq.body)
		if err != nil {
			if rq.status == 413 {
				continue // the edge may close the connection before the client sent it all
			}
			t.Fatalf("%s %s: %v", rq.method, rq.path, err)
		}
		if rq.status != 0 && r.Status != rq.status {
			t.Errorf("%s %s: %d, want %d: %s", rq.method, rq.path, r.Status, rq.status, r.Body)
		}
	}
	// The rate limit (key:30/m:30): a request of the key beyond the 30th in a minute is
	// refused.
	limited := false
	for range 40 {
		if r := clustertest.Do(t, "GET", base+"/v1/collections/users/docs/u1", with(nil), nil); r.Status == 429 {
			limited = true
		}
	}
	if !limited {
		t.Error("no request was rate limited")
	}
	return issued
}

// checkNoSecrets fails the test for every secret in out, which names what produced it.
func checkNoSecrets(t *testing.T, what, out string, issued []string) {
	t.Helper()
	for _, s := range append(issued, secrets...) {
		if i := strings.Index(out, s); i >= 0 {
			line := out[strings.LastIndexByte(out[:i], '\n')+1:]
			if j := strings.IndexByte(line, '\n'); j >= 0 {
				line = line[:j]
			}
			t.Errorf("%s shows secret %q: %s", what, s, line)
		}
	}
}

// startCommand runs perch with args until the test ends, its output in out.
func startCommand(t *testing.T, args []string, out *syncBuffer) chan error {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, args, noEnv, out, out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("perch %s stopped with %v", args[0], err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("perch %s did not stop", args[0])
		}
	})
	return done
}

// waitFor returns the first submatch of re in out, once it is there.
func waitFor(t *testing.T, re *regexp.Regexp, out *syncBuffer, done chan error) string {
	t.Helper()
	var m []string
	clustertest.Eventually(t, 30*time.Second, func() error {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("ended: %v\n%s", err, out.String())
		default:
		}
		if m = re.FindStringSubmatch(out.String()); m == nil {
			return errors.New("not logged yet")
		}
		return nil
	})
	return m[1]
}

func fetch(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// requestLines counts the log lines of requests that carry a request id, to be sure the
// requests were logged at all.
func requestLines(out string) int {
	return strings.Count(out, `request_id`)
}

// TestNoSecretsInLogs runs perch core and perch edge, with passwords in their NATS URL and
// database DSN, and perch dev, all at the debug log level, sends them requests carrying
// credentials and passwords (typical ones and erroring ones), and checks that no secret
// appears in anything they logged or printed, or in their metrics.
func TestNoSecretsInLogs(t *testing.T) {
	// A database of its own for each, on PostgreSQL when there is one.
	pgDSN := func(t *testing.T) string {
		if os.Getenv(pgtest.EnvDSN) == "" && os.Getenv("CI") != "true" {
			return ""
		}
		return withPassword(t, pgtest.DSN(t), secretDB)
	}
	t.Run("core and edge", func(t *testing.T) {
		ns, err := natsembed.Start(natsembed.Config{Dir: t.TempDir(), User: "perch", Password: secretNATS, Logger: discard()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ns.Shutdown)
		natsURL := strings.Replace(ns.URL(), "nats://", "nats://perch:"+secretNATS+"@", 1)
		db := pgDSN(t)
		if db == "" {
			db = "sqlite:" + t.TempDir() + "/perch.db"
		}
		var coreOut, edgeOut syncBuffer
		coreDone := startCommand(t, []string{"core", "--nats", natsURL, "--db", db, "--stream-replicas", "1",
			"--admin", "127.0.0.1:0", "--log-level", "debug"}, &coreOut)
		coreMetrics := waitFor(t, regexp.MustCompile(`"metrics":"(http://[^"]+)"`), &coreOut, coreDone)
		waitFor(t, regexp.MustCompile(`"msg":"(core started)"`), &coreOut, coreDone)
		edgeDone := startCommand(t, []string{"edge", "--nats", natsURL, "--region", "r1", "--listen", "127.0.0.1:0",
			"--gossip", "127.0.0.1:0", "--stream-replicas", "1", "--admin", "127.0.0.1:0", "--drain-delay", "0s",
			"--rate-limit", "key:30/m:30", "--log-level", "debug"}, &edgeOut)
		base := waitFor(t, regexp.MustCompile(`"msg":"edge serving".*"url":"(http://[^"]+)"`), &edgeOut, edgeDone)
		edgeMetrics := waitFor(t, regexp.MustCompile(`"metrics":"(http://[^"]+)"`), &edgeOut, edgeDone)
		clustertest.WaitReady(t, base)
		issued := sendSecrets(t, base)
		// Without --rules, perch edge has DESIGN's default rules: reads need a token.
		if r := clustertest.Do(t, "GET", base+"/v1/collections/users/docs/u1", nil, nil); r.Status != 401 {
			t.Errorf("perch edge without --rules answered an anonymous read %d, want 401", r.Status)
		}

		checkNoSecrets(t, "perch core's log", coreOut.String(), issued)
		checkNoSecrets(t, "perch edge's log", edgeOut.String(), issued)
		checkNoSecrets(t, "perch core's metrics", fetch(t, coreMetrics), issued)
		checkNoSecrets(t, "perch edge's metrics", fetch(t, edgeMetrics), issued)
		if n := requestLines(edgeOut.String()); n < 8 {
			t.Errorf("%d log lines with a request_id; the requests were not logged:\n%s", n, edgeOut.String())
		}
		// A database DSN with a password that cannot be reached is reported without it.
		err = run(t.Context(), []string{"migrate", "--db", "postgres://u:" + secretDB + "@127.0.0.1:1/x?connect_timeout=1"}, noEnv, io.Discard, io.Discard)
		if err == nil {
			t.Fatal("migrate reached a database on port 1")
		}
		checkNoSecrets(t, "perch migrate's error", err.Error(), nil)
	})
	t.Run("dev", func(t *testing.T) {
		var out syncBuffer
		args := []string{"dev", "--data", t.TempDir(), "--regions", "solo", "--port-base", fmt.Sprint(freePort(t)),
			"--rate-limit", "key:30/m:30", "--log-level", "debug", "--log-format", "json"}
		db := pgDSN(t)
		if db != "" {
			args = append(args, "--db", db)
		}
		done := startCommand(t, args, &out)
		base := waitFor(t, regexp.MustCompile(`edge solo\s+(http://\S+)`), &out, done)
		metrics := waitFor(t, regexp.MustCompile(`metrics\s+(http://\S+)`), &out, done)
		clustertest.WaitReady(t, base)
		issued := sendSecrets(t, base)
		// Without --rules, perch dev is open to everyone, and says so.
		if r := clustertest.Do(t, "GET", base+"/v1/collections/users/docs/u1", nil, nil); r.Status != 200 {
			t.Errorf("perch dev without --rules answered an anonymous read %d, want 200", r.Status)
		}
		if !strings.Contains(out.String(), "no --rules: every collection is open to everyone") {
			t.Error("perch dev without --rules logs no warning")
		}
		checkNoSecrets(t, "perch dev's output", out.String(), issued)
		checkNoSecrets(t, "perch dev's metrics", fetch(t, metrics), issued)
		if n := requestLines(out.String()); n < 8 {
			t.Errorf("%d log lines with a request_id; the requests were not logged", n)
		}
		if db != "" && !strings.Contains(out.String(), "xxxxx@") {
			t.Errorf("perch dev does not print its database (redacted):\n%s", out.String())
		}
	})
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// freePort is a TCP port free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
