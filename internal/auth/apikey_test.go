package auth

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"
)

func TestAPIKey(t *testing.T) {
	key, hash := NewAPIKey()
	if len(key) != APIKeyLen || !strings.HasPrefix(key, APIKeyPrefix) {
		t.Fatalf("key %q", key)
	}
	sum, ok := HashAPIKey([]byte(key))
	if !ok || !bytes.Equal(sum[:], hash) {
		t.Fatalf("HashAPIKey(%q) = %x, %v; want %x", key, sum, ok, hash)
	}
	other, _ := NewAPIKey()
	if other == key {
		t.Fatal("two keys alike")
	}
	for _, bad := range []string{
		"", key[:len(key)-1], key + "A", "pk-" + key[3:], "PK_" + key[3:], strings.Repeat("A", APIKeyLen),
		key[:10] + "=" + key[11:], key[:10] + "+" + key[11:], key[3:] + "pk_",
	} {
		if _, ok := HashAPIKey([]byte(bad)); ok {
			t.Errorf("HashAPIKey(%q) accepted", bad)
		}
	}
	if allocs := testing.AllocsPerRun(100, func() { HashAPIKey([]byte(key)) }); allocs != 0 {
		t.Fatalf("HashAPIKey allocates %.1f times", allocs)
	}
	id := NewAPIKeyID()
	if !ValidAPIKeyID(id) || ValidAPIKeyID(id[3:]) || ValidAPIKeyID(id+"0") || ValidAPIKeyID("ak_"+strings.ToLower(id[3:])+"!") {
		t.Fatalf("ValidAPIKeyID wrong about %q", id)
	}
}

// FuzzHashAPIKey: a string passes only if it is the prefix and the canonical base64url of 32
// bytes, and its hash is then SHA-256 of those bytes: no other spelling of a key (padding,
// the standard alphabet, a non-canonical last character) hashes like it.
func FuzzHashAPIKey(f *testing.F) {
	key, _ := NewAPIKey()
	f.Add(key)
	f.Add(key[:len(key)-1] + "B")
	f.Add(key + "=")
	f.Add("pk_" + strings.Repeat("_", RefreshTokenLen))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		sum, ok := HashAPIKey([]byte(s))
		rest, prefixed := strings.CutPrefix(s, APIKeyPrefix)
		raw, err := b64URL.DecodeString(rest)
		want := prefixed && err == nil && len(raw) == 32 && b64URL.EncodeToString(raw) == rest
		if ok != want {
			t.Fatalf("HashAPIKey(%q) ok %v, want %v", s, ok, want)
		}
		if ok && sum != sha256.Sum256(raw) {
			t.Fatalf("HashAPIKey(%q) is not the SHA-256 of its bytes", s)
		}
	})
}
