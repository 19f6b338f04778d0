package auth

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func TestRefreshToken(t *testing.T) {
	seen := make(map[string]bool)
	for range 100 {
		token, hash := NewRefreshToken()
		if len(token) != RefreshTokenLen || seen[token] {
			t.Fatalf("token %q (repeated: %v)", token, seen[token])
		}
		seen[token] = true
		raw, err := base64.RawURLEncoding.DecodeString(token)
		if err != nil || len(raw) != 32 {
			t.Fatalf("token %q is not 32 bytes of base64url", token)
		}
		if sum := sha256.Sum256(raw); !bytes.Equal(hash, sum[:]) {
			t.Fatal("the hash is not SHA-256 of the token's bytes")
		}
		again, err := HashRefreshToken(token)
		if err != nil || !bytes.Equal(again, hash) {
			t.Fatalf("HashRefreshToken: %v", err)
		}
	}
	token, _ := NewRefreshToken()
	last := token[len(token)-1]
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	nonCanonical := string(alphabet[strings.IndexByte(alphabet, last)|1])
	if nonCanonical == string(last) {
		nonCanonical = string(alphabet[strings.IndexByte(alphabet, last)|2])
	}
	for name, bad := range map[string]string{
		"empty":                "",
		"short":                token[:42],
		"long":                 token + "A",
		"padded":               token + "=",
		"standard alphabet":    "+" + token[1:],
		"slash":                "/" + token[1:],
		"space":                " " + token[1:],
		"non-canonical ending": token[:42] + nonCanonical,
		"an access token":      strings.Repeat("eyJ", 20),
	} {
		if _, err := HashRefreshToken(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if id := NewFamilyID(); len(id) != 22 || id == NewFamilyID() {
		t.Fatalf("family id %q", id)
	}
}
