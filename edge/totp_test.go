package edge_test

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/edge/ratelimit"
	"github.com/perchhq/perch/internal/auth"
	"github.com/perchhq/perch/internal/clustertest"
)

// totpCluster starts a cluster whose core hashes passwords cheaply and, with key, has a
// secret key for TOTP secrets.
func totpCluster(t *testing.T, key bool) *clustertest.Cluster {
	t.Helper()
	ccfg := core.LocalConfig()
	ccfg.Accounts = core.DefaultAccountsConfig()
	ccfg.Accounts.Password = fastPasswords
	if key {
		ccfg.Accounts.SecretKey = make([]byte, core.SecretKeyLen)
		rand.Read(ccfg.Accounts.SecretKey)
	}
	ecfg := &edge.Config{AuthRateLimit: ratelimit.Policy{Scope: ratelimit.ScopeIP}}
	return clustertest.Start(t, clustertest.Options{Regions: []string{"a"}, Core: &ccfg, Edge: ecfg})
}

func loginBody(email, password string, extra ...string) []byte {
	m := map[string]string{"email": email, "password": password}
	for i := 0; i+1 < len(extra); i += 2 {
		m[extra[i]] = extra[i+1]
	}
	b, _ := json.Marshal(m)
	return b
}

func codeBody(code string) []byte {
	b, _ := json.Marshal(map[string]string{"code": code})
	return b
}

// enroll starts an enrollment and returns the secret it answered, after checking that the
// URI carries the same one.
func enroll(t *testing.T, base, access string) []byte {
	t.Helper()
	r := clustertest.Do(t, "POST", base+"/v1/me/totp", bearer(access), nil)
	if r.Status != 200 || r.Header["Cache-Control"] != "no-store" {
		t.Fatalf("enroll: %d %v %s", r.Status, r.Header, r.Body)
	}
	var e struct {
		Secret     string `json:"secret"`
		OTPAuthURI string `json:"otpauth_uri"`
	}
	if err := json.Unmarshal(r.Body, &e); err != nil {
		t.Fatal(err)
	}
	secret, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(e.Secret)
	if err != nil || len(secret) != auth.TOTPSecretLen {
		t.Fatalf("secret %q: %v", e.Secret, err)
	}
	u, err := url.Parse(e.OTPAuthURI)
	if err != nil || u.Scheme != "otpauth" || u.Host != "totp" || u.Query().Get("secret") != e.Secret ||
		u.Query().Get("issuer") != "Perch" || !strings.HasPrefix(u.Path, "/Perch:") {
		t.Fatalf("otpauth URI %q: %v", e.OTPAuthURI, err)
	}
	return secret
}

// confirm confirms the enrollment with the code of now and returns the recovery codes.
func confirm(t *testing.T, base, access string, secret []byte) []string {
	t.Helper()
	r := clustertest.Do(t, "POST", base+"/v1/me/totp/confirm", bearer(access), codeBody(auth.TOTPCode(secret, time.Now())))
	if r.Status != 200 || r.Header["Cache-Control"] != "no-store" {
		t.Fatalf("confirm: %d %v %s", r.Status, r.Header, r.Body)
	}
	var rc struct {
		RecoveryCodes []string `json:"recovery_codes"`
	}
	if err := json.Unmarshal(r.Body, &rc); err != nil {
		t.Fatal(err)
	}
	if len(rc.RecoveryCodes) != 10 || len(slices.Compact(slices.Sorted(slices.Values(rc.RecoveryCodes)))) != 10 {
		t.Fatalf("recovery codes %v, want 10 different ones", rc.RecoveryCodes)
	}
	return rc.RecoveryCodes
}

// wrongCode returns a code that is none of the secret's around now.
func wrongCode(secret []byte) string {
	now := time.Now()
	valid := []string{auth.TOTPCode(secret, now.Add(-time.Minute)), auth.TOTPCode(secret, now.Add(-30*time.Second)),
		auth.TOTPCode(secret, now), auth.TOTPCode(secret, now.Add(30*time.Second)), auth.TOTPCode(secret, now.Add(time.Minute))}
	for _, c := range []string{"000000", "111111", "222222", "333333", "444444", "555555"} {
		if !slices.Contains(valid, c) {
			return c
		}
	}
	panic("unreachable: five codes cannot take six values")
}

// TestTOTP drives the second factor end to end: enrollment, confirmation, logins that need a
// code, codes and recovery codes accepted once, wrong codes throttled with the account's
// failed logins, and turning it off.
func TestTOTP(t *testing.T) {
	c := totpCluster(t, true)
	base := c.Edge(0)
	signup := func(email string) tokensBody {
		return tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/signup", nil, credentials(email, "correct horse")), 201)
	}
	login := func(email string, extra ...string) clustertest.Response {
		return clustertest.Do(t, "POST", base+"/v1/auth/login", nil, loginBody(email, "correct horse", extra...))
	}

	t.Run("LoginNeedsACodeOnce", func(t *testing.T) {
		access := signup("ada@example.com").AccessToken
		expectUnauthorized(t, clustertest.Do(t, "POST", base+"/v1/me/totp", nil, nil), "unauthorized")

		// A second enrollment replaces the first, whose codes then confirm nothing.
		first := enroll(t, base, access)
		second := enroll(t, base, access)
		expectUnauthorized(t, clustertest.Do(t, "POST", base+"/v1/me/totp/confirm", bearer(access),
			codeBody(auth.TOTPCode(first, time.Now()))), "invalid_totp")
		// Until it is confirmed, logins need no code.
		tokensOf(t, login("ada@example.com"), 200)

		codes := confirm(t, base, access, second)
		expectProblem(t, clustertest.Do(t, "POST", base+"/v1/me/totp", bearer(access), nil), 409, "already_exists")
		expectProblem(t, clustertest.Do(t, "POST", base+"/v1/me/totp/confirm", bearer(access),
			codeBody(auth.TOTPCode(second, time.Now()))), 409, "already_exists")

		// The password alone is not enough now, and only its owner learns so: a wrong
		// password answers as an unknown account does.
		expectUnauthorized(t, login("ada@example.com"), "totp_required")
		wrong := clustertest.Do(t, "POST", base+"/v1/auth/login", nil, loginBody("ada@example.com", "wrong horse"))
		unknown := clustertest.Do(t, "POST", base+"/v1/auth/login", nil, loginBody("nobody@example.com", "wrong horse"))
		expectUnauthorized(t, wrong, "invalid_credentials")
		if string(wrong.Body) != string(unknown.Body) {
			t.Fatalf("a wrong password of a TOTP account and an unknown account answer differently:\n%s\n%s", wrong.Body, unknown.Body)
		}
		expectUnauthorized(t, clustertest.Do(t, "POST", base+"/v1/auth/login", nil,
			loginBody("ada@example.com", "wrong horse", "totp", auth.TOTPCode(second, time.Now()))), "invalid_credentials")

		// A code works once: the confirmation used the step of now, so the next one is
		// the step after (accepted one step early), and then neither again.
		next := auth.TOTPCode(second, time.Now().Add(30*time.Second))
		tokensOf(t, login("ada@example.com", "totp", next), 200)
		expectUnauthorized(t, login("ada@example.com", "totp", next), "invalid_totp")
		expectUnauthorized(t, login("ada@example.com", "totp", auth.TOTPCode(second, time.Now())), "invalid_totp")

		// A recovery code works once, as people type it.
		typed := strings.ToUpper(strings.ReplaceAll(codes[0], "-", ""))
		tokensOf(t, login("ada@example.com", "recovery_code", typed), 200)
		expectUnauthorized(t, login("ada@example.com", "recovery_code", codes[0]), "invalid_totp")
		expectUnauthorized(t, login("ada@example.com", "recovery_code", "not-a-code"), "invalid_totp")
		expectProblem(t, login("ada@example.com", "totp", next, "recovery_code", codes[1]), 400, "bad_request")
		// The others still work.
		tokensOf(t, login("ada@example.com", "recovery_code", codes[1]), 200)
		// Signup takes no code.
		expectProblem(t, clustertest.Do(t, "POST", base+"/v1/auth/signup", nil,
			loginBody("new@example.com", "correct horse", "totp", "123456")), 400, "bad_request")
	})

	t.Run("WrongCodesThrottled", func(t *testing.T) {
		access := signup("grace@example.com").AccessToken
		secret := enroll(t, base, access)
		codes := confirm(t, base, access, secret)
		for range core.DefaultAccountsConfig().LoginAttempts {
			expectUnauthorized(t, login("grace@example.com", "totp", wrongCode(secret)), "invalid_totp")
		}
		// Now even a good code waits, at login and to turn the second factor off.
		r := login("grace@example.com", "recovery_code", codes[0])
		expectProblem(t, r, 429, "too_many_attempts")
		if r.Header["Retry-After"] == "" {
			t.Fatal("429 without Retry-After")
		}
		expectProblem(t, clustertest.Do(t, "DELETE", base+"/v1/me/totp", bearer(access), codeBody(codes[0])), 429, "too_many_attempts")
		expectProblem(t, login("grace@example.com"), 429, "too_many_attempts")
	})

	t.Run("WrongConfirmationsThrottled", func(t *testing.T) {
		access := signup("hedy@example.com").AccessToken
		secret := enroll(t, base, access)
		for range core.DefaultAccountsConfig().LoginAttempts {
			expectUnauthorized(t, clustertest.Do(t, "POST", base+"/v1/me/totp/confirm", bearer(access),
				codeBody(wrongCode(secret))), "invalid_totp")
		}
		expectProblem(t, clustertest.Do(t, "POST", base+"/v1/me/totp/confirm", bearer(access),
			codeBody(auth.TOTPCode(secret, time.Now()))), 429, "too_many_attempts")
	})

	t.Run("Disable", func(t *testing.T) {
		access := signup("joan@example.com").AccessToken
		expectProblem(t, clustertest.Do(t, "DELETE", base+"/v1/me/totp", bearer(access), codeBody("123456")), 404, "not_found")
		secret := enroll(t, base, access)
		confirm(t, base, access, secret)
		expectUnauthorized(t, clustertest.Do(t, "DELETE", base+"/v1/me/totp", nil, codeBody("123456")), "unauthorized")
		expectProblem(t, clustertest.Do(t, "DELETE", base+"/v1/me/totp", bearer(access), []byte(`{}`)), 400, "bad_request")
		expectUnauthorized(t, clustertest.Do(t, "DELETE", base+"/v1/me/totp", bearer(access), codeBody(wrongCode(secret))), "invalid_totp")
		r := clustertest.Do(t, "DELETE", base+"/v1/me/totp", bearer(access), codeBody(auth.TOTPCode(secret, time.Now().Add(30*time.Second))))
		if r.Status != 204 {
			t.Fatalf("disable: %d %s", r.Status, r.Body)
		}
		tokensOf(t, login("joan@example.com"), 200)
		expectProblem(t, clustertest.Do(t, "DELETE", base+"/v1/me/totp", bearer(access), codeBody("123456")), 404, "not_found")

		// On again, and off with a recovery code; the codes of before are gone.
		again := enroll(t, base, access)
		codes := confirm(t, base, access, again)
		if r := clustertest.Do(t, "DELETE", base+"/v1/me/totp", bearer(access), codeBody(codes[3])); r.Status != 204 {
			t.Fatalf("disable with a recovery code: %d %s", r.Status, r.Body)
		}
		tokensOf(t, login("joan@example.com", "recovery_code", codes[4]), 200)
	})

	t.Run("BadBodies", func(t *testing.T) {
		access := signup("kay@example.com").AccessToken
		for _, tc := range []struct {
			name, method, path, body string
			status                   int
			code                     string
		}{
			{"enroll with members", "POST", "/v1/me/totp", `{"secret":"x"}`, 400, "bad_json"},
			{"confirm without code", "POST", "/v1/me/totp/confirm", `{}`, 400, "bad_request"},
			{"confirm not JSON", "POST", "/v1/me/totp/confirm", `code=1`, 400, "bad_json"},
			{"confirm unknown member", "POST", "/v1/me/totp/confirm", `{"code":"123456","x":1}`, 400, "bad_json"},
			{"confirm without enrollment", "POST", "/v1/me/totp/confirm", `{"code":"123456"}`, 404, "not_found"},
			{"huge", "DELETE", "/v1/me/totp", `{"code":"` + strings.Repeat("1", 9000) + `"}`, 413, "body_too_large"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				expectProblem(t, clustertest.Do(t, tc.method, base+tc.path, bearer(access), []byte(tc.body)), tc.status, tc.code)
			})
		}
		expectProblem(t, clustertest.Do(t, "GET", base+"/v1/me/totp", bearer(access), nil), 405, "method_not_allowed")
	})
}

// TestTOTPWithoutSecretKey: a core without a secret key refuses enrollments, and says why.
func TestTOTPWithoutSecretKey(t *testing.T) {
	c := totpCluster(t, false)
	base := c.Edge(0)
	access := tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/signup", nil, credentials("lin@example.com", "correct horse")), 201).AccessToken
	r := clustertest.Do(t, "POST", base+"/v1/me/totp", bearer(access), nil)
	expectProblem(t, r, 503, "unavailable")
	if !strings.Contains(string(r.Body), "secret key") {
		t.Fatalf("503 without saying that the secret key is missing: %s", r.Body)
	}
	// Logins are as before.
	tokensOf(t, clustertest.Do(t, "POST", base+"/v1/auth/login", nil, credentials("lin@example.com", "correct horse")), 200)
}
