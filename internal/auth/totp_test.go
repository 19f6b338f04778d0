package auth

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// rfcSecret is the SHA-1 seed of the test vectors of RFC 4226 and RFC 6238.
var rfcSecret = []byte("12345678901234567890")

// TestHOTPVectors: RFC 4226 appendix D.
func TestHOTPVectors(t *testing.T) {
	want := []string{"755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"}
	for i, w := range want {
		var buf [6]byte
		if got := string(hotp(buf[:], rfcSecret, uint64(i))); got != w {
			t.Errorf("counter %d: %s, want %s", i, got, w)
		}
	}
}

// TestTOTPVectors: RFC 6238 appendix B (SHA-1). The RFC gives 8 digits; a 6-digit code is
// their last six.
func TestTOTPVectors(t *testing.T) {
	for _, tc := range []struct {
		unix int64
		code string
	}{
		{59, "94287082"},
		{1111111109, "07081804"},
		{1111111111, "14050471"},
		{1234567890, "89005924"},
		{2000000000, "69279037"},
		{20000000000, "65353130"},
	} {
		at := time.Unix(tc.unix, 0)
		var buf [8]byte
		if got := string(hotp(buf[:], rfcSecret, uint64(TOTPStep(at)))); got != tc.code {
			t.Errorf("%d: %s, want %s", tc.unix, got, tc.code)
		}
		six := tc.code[2:]
		if got := TOTPCode(rfcSecret, at); got != six {
			t.Errorf("%d: TOTPCode %s, want %s", tc.unix, got, six)
		}
		if !VerifyTOTP(rfcSecret, six, at) {
			t.Errorf("%d: VerifyTOTP refuses %s", tc.unix, six)
		}
	}
}

func TestVerifyTOTP(t *testing.T) {
	secret := GenerateTOTPSecret()
	if len(secret) != TOTPSecretLen || slices.Equal(secret, GenerateTOTPSecret()) {
		t.Fatal("GenerateTOTPSecret")
	}
	at := time.Unix(1111111111, 0) // 1 s into its step
	code := TOTPCode(secret, at)
	for _, tc := range []struct {
		offset time.Duration
		ok     bool
	}{
		{0, true},
		{-30 * time.Second, true}, // the verifier's clock one step behind
		{30 * time.Second, true},  // one step ahead
		{-31 * time.Second, true},
		{-32 * time.Second, false},
		{58 * time.Second, true},
		{59 * time.Second, false},

		{time.Hour, false},
	} {
		if got := VerifyTOTP(secret, code, at.Add(tc.offset)); got != tc.ok {
			t.Errorf("code of %v checked at %+v: %v, want %v", at, tc.offset, got, tc.ok)
		}
	}
	for _, bad := range []string{"", "12345", "1234567", "12345a", " 12345", "１２３４５６", strings.Repeat("1", 1000)} {
		if VerifyTOTP(secret, bad, at) {
			t.Errorf("%q accepted", bad)
		}
	}
	other := GenerateTOTPSecret()
	if VerifyTOTP(other, code, at) && TOTPCode(other, at) != code {
		t.Error("another secret's code accepted")
	}

	// Replay: once a step was accepted, its code (and older ones) are refused.
	step, ok := VerifyTOTPAfter(secret, code, at, -1)
	if !ok || step != TOTPStep(at) {
		t.Fatalf("VerifyTOTPAfter: %d, %v", step, ok)
	}
	if _, ok := VerifyTOTPAfter(secret, code, at, step); ok {
		t.Fatal("a code accepted twice")
	}
	prev := TOTPCode(secret, at.Add(-30*time.Second))
	if _, ok := VerifyTOTPAfter(secret, prev, at, step); ok {
		t.Fatal("an older code accepted after a newer one")
	}
	next := TOTPCode(secret, at.Add(30*time.Second))
	if s, ok := VerifyTOTPAfter(secret, next, at, step); !ok || s != step+1 {
		t.Fatalf("the next step's code: %d, %v", s, ok)
	}
	if TOTPStep(time.Unix(-1, 0)) != -1 || TOTPStep(time.Unix(29, 0)) != 0 || TOTPStep(time.Unix(30, 0)) != 1 {
		t.Fatal("TOTPStep")
	}
}

func TestTOTPURI(t *testing.T) {
	uri, err := TOTPURI("Perch Notes", "alice+1@example.com", rfcSecret)
	if err != nil {
		t.Fatal(err)
	}
	want := "otpauth://totp/Perch%20Notes:alice%2B1%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Perch%20Notes&algorithm=SHA1&digits=6&period=30"
	if uri != want {
		t.Fatalf("URI\n got %s\nwant %s", uri, want)
	}
	for name, args := range map[string][2]string{
		"no issuer":        {"", "alice"},
		"no account":       {"Perch", ""},
		"colon in issuer":  {"Perch:x", "alice"},
		"colon in account": {"Perch", "a:b"},
		"long account":     {"Perch", strings.Repeat("a", 257)},
	} {
		if _, err := TOTPURI(args[0], args[1], rfcSecret); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := TOTPURI("Perch", "alice", rfcSecret[:15]); err == nil {
		t.Error("a 15-byte secret accepted")
	}
}

func TestRecoveryCodes(t *testing.T) {
	codes, hashes, err := NewRecoveryCodes(10, "user-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(codes) != 10 || len(hashes) != 10 {
		t.Fatalf("%d codes, %d hashes", len(codes), len(hashes))
	}
	format := regexp.MustCompile(`^[0-9a-hjkmnp-tv-z]{4}(-[0-9a-hjkmnp-tv-z]{4}){3}$`)
	for i, c := range codes {
		if !format.MatchString(c) {
			t.Fatalf("code %q", c)
		}
		if j, ok := MatchRecoveryCode("user-1", c, hashes); !ok || j != i {
			t.Fatalf("code %d matches %d, %v", i, j, ok)
		}
		// Typed loosely: upper case, no dashes, spaces, O for 0, I and L for 1.
		loose := strings.ToUpper(strings.ReplaceAll(c, "-", " "))
		loose = strings.NewReplacer("0", "O", "1", "l").Replace(loose)
		if j, ok := MatchRecoveryCode("user-1", loose, hashes); !ok || j != i {
			t.Fatalf("%q (for %q) matches %d, %v", loose, c, j, ok)
		}
		if _, ok := MatchRecoveryCode("user-2", c, hashes); ok {
			t.Fatal("a code matches for another user")
		}
	}
	// Used once: the store drops the hash that matched.
	j, _ := MatchRecoveryCode("user-1", codes[3], hashes)
	hashes = slices.Delete(hashes, j, j+1)
	if _, ok := MatchRecoveryCode("user-1", codes[3], hashes); ok {
		t.Fatal("a used code matches again")
	}
	for _, bad := range []string{"", "abcd", codes[0] + "x", strings.Repeat("a", 17), "uuuu-uuuu-uuuu-uuuu", "!!!!-!!!!-!!!!-!!!!", strings.Repeat("-", 100)} {
		if _, err := HashRecoveryCode("user-1", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
		if _, ok := MatchRecoveryCode("user-1", bad, hashes); ok {
			t.Errorf("%q matches", bad)
		}
	}
	for _, n := range []int{0, -1, 101} {
		if _, _, err := NewRecoveryCodes(n, "u"); err == nil {
			t.Errorf("%d codes accepted", n)
		}
	}
	// A subject boundary cannot be moved: ("ab", code) and ("a", "b"+...) hash differently.
	a, _ := HashRecoveryCode("ab", codes[0])
	b, _ := HashRecoveryCode("a", codes[0])
	if slices.Equal(a, b) {
		t.Fatal("subjects are not bound")
	}
}
