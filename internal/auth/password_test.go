package auth

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

// fastParams are cheap parameters for tests of the format and the logic.
var fastParams = Params{Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32}

func TestHashPassword(t *testing.T) {
	h, err := HashPassword("correct horse battery staple", fastParams)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^\$argon2id\$v=19\$m=64,t=1,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`).MatchString(h) {
		t.Fatalf("not the PHC form: %s", h)
	}
	again, _ := HashPassword("correct horse battery staple", fastParams)
	if again == h {
		t.Fatal("two hashes of one password alike: the salt is not random")
	}
	for _, tc := range []struct {
		pw     string
		ok     bool
		rehash bool
	}{
		{"correct horse battery staple", true, false},
		{"correct horse battery stapl", false, false},
		{"Correct horse battery staple", false, false},
		{"", false, false},
	} {
		ok, rehash, err := fastParams.Verify(h, tc.pw)
		if err != nil || ok != tc.ok || rehash != tc.rehash {
			t.Errorf("Verify(%q) = %v, %v, %v; want %v, %v", tc.pw, ok, rehash, err, tc.ok, tc.rehash)
		}
	}
}

func TestNeedsRehash(t *testing.T) {
	h, _ := HashPassword("correct horse battery staple", fastParams)
	for name, p := range map[string]Params{
		"more memory":  {Memory: 128, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 32},
		"more passes":  {Memory: 64, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32},
		"more threads": {Memory: 64, Time: 1, Threads: 2, SaltLen: 16, KeyLen: 32},
		"longer salt":  {Memory: 64, Time: 1, Threads: 1, SaltLen: 32, KeyLen: 32},
		"longer hash":  {Memory: 64, Time: 1, Threads: 1, SaltLen: 16, KeyLen: 64},
	} {
		ok, rehash, err := p.Verify(h, "correct horse battery staple")
		if !ok || !rehash || err != nil {
			t.Errorf("%s: %v, %v, %v; want a match to rehash", name, ok, rehash, err)
		}
		if ok, rehash, _ := p.Verify(h, "wrong password"); ok || rehash {
			t.Errorf("%s: a wrong password asks for a rehash", name)
		}
	}
	// Against DefaultParams, through the package's VerifyPassword.
	if ok, rehash, err := VerifyPassword(h, "correct horse battery staple"); !ok || !rehash || err != nil {
		t.Fatalf("VerifyPassword of a cheap hash: %v, %v, %v", ok, rehash, err)
	}
	d, err := HashPassword("correct horse battery staple", DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(d, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("default hash %s", d)
	}
	if ok, rehash, err := VerifyPassword(d, "correct horse battery staple"); !ok || rehash || err != nil {
		t.Fatalf("VerifyPassword of a default hash: %v, %v, %v", ok, rehash, err)
	}
}

func TestPasswordLimits(t *testing.T) {
	for _, tc := range []struct {
		pw   string
		want error
	}{
		{"", ErrPasswordTooShort},
		{"1234567", ErrPasswordTooShort},
		{"12345678", nil},
		{strings.Repeat("p", MaxPasswordLen), nil},
		{strings.Repeat("p", MaxPasswordLen+1), ErrPasswordTooLong},
		{strings.Repeat("p", 1<<20), ErrPasswordTooLong},
	} {
		if _, err := HashPassword(tc.pw, fastParams); !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
			t.Errorf("HashPassword(%d bytes): %v, want %v", len(tc.pw), err, tc.want)
		}
	}
	h, _ := HashPassword("12345678", fastParams)
	if ok, _, err := fastParams.Verify(h, strings.Repeat("p", MaxPasswordLen+1)); ok || !errors.Is(err, ErrPasswordTooLong) {
		t.Fatalf("Verify of a long password: %v, %v", ok, err)
	}
	// Verification does not apply the minimum, which is a rule for new passwords.
	if ok, _, err := fastParams.Verify(h, "1234567"); ok || err != nil {
		t.Fatalf("Verify of a short password: %v, %v", ok, err)
	}
	if _, err := HashPassword("12345678", Params{}); !errors.Is(err, ErrBadHash) {
		t.Fatalf("HashPassword with zero params: %v", err)
	}
}

// TestHostileHash: stored hashes that are not canonical argon2id, or whose parameters would
// cost too much, fail with ErrBadHash before any hashing.
func TestHostileHash(t *testing.T) {
	salt, key := "c29tZXNhbHRzb21lc2FsdA", "Xr5f0ZRHcTvnG1hMW9MhPg5u1KdQ1Et1ftkXnw4bV2I"
	ok := "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + key
	if _, err := parsePHC(ok); err != nil {
		t.Fatalf("the reference hash does not parse: %v", err)
	}
	for name, h := range map[string]string{
		"4 GiB of memory":      "$argon2id$v=19$m=4194304,t=1,p=1$" + salt + "$" + key,
		"just over 256 MiB":    "$argon2id$v=19$m=262145,t=1,p=1$" + salt + "$" + key,
		"memory over uint32":   "$argon2id$v=19$m=4294967296,t=1,p=1$" + salt + "$" + key,
		"a million passes":     "$argon2id$v=19$m=64,t=1000000,p=1$" + salt + "$" + key,
		"17 passes":            "$argon2id$v=19$m=64,t=17,p=1$" + salt + "$" + key,
		"work over the bound":  "$argon2id$v=19$m=262144,t=5,p=1$" + salt + "$" + key,
		"255 threads":          "$argon2id$v=19$m=4096,t=1,p=255$" + salt + "$" + key,
		"256 threads":          "$argon2id$v=19$m=4096,t=1,p=256$" + salt + "$" + key,
		"no passes":            "$argon2id$v=19$m=64,t=0,p=1$" + salt + "$" + key,
		"no threads":           "$argon2id$v=19$m=64,t=1,p=0$" + salt + "$" + key,
		"memory under 8p":      "$argon2id$v=19$m=15,t=1,p=2$" + salt + "$" + key,
		"short salt":           "$argon2id$v=19$m=64,t=1,p=1$c29tZQ$" + key,
		"long salt":            "$argon2id$v=19$m=64,t=1,p=1$" + strings.Repeat("A", 88) + "$" + key,
		"short hash":           "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$c29tZQ",
		"long hash":            "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + strings.Repeat("A", 100),
		"huge":                 "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + strings.Repeat("A", 1<<20),
		"argon2i":              "$argon2i$v=19$m=64,t=1,p=1$" + salt + "$" + key,
		"argon2d":              "$argon2d$v=19$m=64,t=1,p=1$" + salt + "$" + key,
		"version 16":           "$argon2id$v=16$m=64,t=1,p=1$" + salt + "$" + key,
		"no version":           "$argon2id$m=64,t=1,p=1$" + salt + "$" + key,
		"bcrypt":               "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
		"leading zero":         "$argon2id$v=19$m=064,t=1,p=1$" + salt + "$" + key,
		"plus sign":            "$argon2id$v=19$m=+64,t=1,p=1$" + salt + "$" + key,
		"reordered":            "$argon2id$v=19$t=1,m=64,p=1$" + salt + "$" + key,
		"extra parameter":      "$argon2id$v=19$m=64,t=1,p=1,keyid=x$" + salt + "$" + key,
		"missing parameter":    "$argon2id$v=19$m=64,t=1$" + salt + "$" + key,
		"space":                "$argon2id$v=19$m=64, t=1,p=1$" + salt + "$" + key,
		"padding":              "$argon2id$v=19$m=64,t=1,p=1$" + salt + "==$" + key,
		"url alphabet":         "$argon2id$v=19$m=64,t=1,p=1$" + salt + "$" + strings.ReplaceAll(key, "/", "_") + "_",
		"non-canonical base64": "$argon2id$v=19$m=64,t=1,p=1$" + salt[:21] + "B$" + key,
		"extra field":          ok + "$x",
		"no hash":              "$argon2id$v=19$m=64,t=1,p=1$" + salt,
		"empty":                "",
	} {
		if _, _, err := fastParams.Verify(h, "password"); !errors.Is(err, ErrBadHash) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestDefaultParams(t *testing.T) {
	if err := DefaultParams().Validate(); err != nil {
		t.Fatal(err)
	}
	// VerifyDummy runs in every case VerifyPassword does, and never panics.
	VerifyDummy("password")
	VerifyDummy(strings.Repeat("p", MaxPasswordLen+1))
	Params{}.VerifyDummy("password")
	fastParams.VerifyDummy("password")
}
