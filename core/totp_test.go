package core

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

// TestSealer: a sealed TOTP secret opens with its key and user only, and any change to it is
// refused.
func TestSealer(t *testing.T) {
	key := make([]byte, SecretKeyLen)
	rand.Read(key)
	s, err := newSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("12345678901234567890")
	sealed := s.seal("user-1", secret)
	if bytes.Contains(sealed, secret) {
		t.Fatal("the sealed secret holds the secret in clear")
	}
	if again := s.seal("user-1", secret); bytes.Equal(again, sealed) {
		t.Fatal("two seals of one secret are equal: the nonce is not random")
	}
	got, err := s.open("user-1", sealed)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("open = %q, %v; want the secret", got, err)
	}
	other := make([]byte, SecretKeyLen)
	rand.Read(other)
	otherSealer, _ := newSealer(other)
	for name, open := range map[string]func() ([]byte, error){
		"another user": func() ([]byte, error) { return s.open("user-2", sealed) },
		"another key":  func() ([]byte, error) { return otherSealer.open("user-1", sealed) },
		"tampered": func() ([]byte, error) {
			b := bytes.Clone(sealed)
			b[len(b)-1] ^= 1
			return s.open("user-1", b)
		},
		"other version": func() ([]byte, error) {
			b := bytes.Clone(sealed)
			b[0] = 2
			return s.open("user-1", b)
		},
		"short": func() ([]byte, error) { return s.open("user-1", sealed[:20]) },
		"empty": func() ([]byte, error) { return s.open("user-1", nil) },
	} {
		if got, err := open(); !errors.Is(err, errUnsealed) {
			t.Errorf("%s: open = %q, %v; want errUnsealed", name, got, err)
		}
	}
	if s, err := newSealer(nil); s != nil || err != nil {
		t.Fatalf("newSealer(nil) = %v, %v; want no sealer", s, err)
	}
	if _, err := newSealer(key[:16]); err == nil {
		t.Fatal("a 16-byte key was taken")
	}
}

func TestAccountsConfigSecretKey(t *testing.T) {
	c := DefaultAccountsConfig()
	c.SecretKey = make([]byte, 16)
	if err := c.complete(); err == nil {
		t.Fatal("a 16-byte secret key was taken")
	}
	c = DefaultAccountsConfig()
	c.TOTPIssuer = "a:b"
	if err := c.complete(); err == nil {
		t.Fatal("an issuer with a colon was taken")
	}
	c = DefaultAccountsConfig()
	if err := c.complete(); err != nil || c.TOTPIssuer != "Perch" {
		t.Fatalf("complete = %v, issuer %q; want Perch", err, c.TOTPIssuer)
	}
}
