package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/perchhq/perch/core"
)

func TestReadSecretKey(t *testing.T) {
	dir := t.TempDir()
	key := bytes.Repeat([]byte{7}, core.SecretKeyLen)
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", base64.StdEncoding.EncodeToString(key)+"\n")
	if got, err := readSecretKey(good); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("readSecretKey = %x, %v; want the key", got, err)
	}
	for name, content := range map[string]string{
		"short": base64.StdEncoding.EncodeToString(key[:16]),
		"raw":   string(key),
		"empty": "",
		"url":   strings.Repeat("_", 43) + "=",
	} {
		if _, err := readSecretKey(write(name, content)); err == nil {
			t.Errorf("%s: a bad key file was read", name)
		}
	}
	if _, err := readSecretKey(filepath.Join(dir, "absent")); err == nil {
		t.Error("an absent key file was read")
	}
}

// TestDevSecretKey: perch dev makes its key once and reads the same one on every later start.
func TestDevSecretKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "secret.key")
	first, err := devSecretKey(p)
	if err != nil || len(first) != core.SecretKeyLen {
		t.Fatalf("devSecretKey = %x, %v", first, err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v, %v; want mode 0600", fi, err)
	}
	again, err := devSecretKey(p)
	if err != nil || !bytes.Equal(again, first) {
		t.Fatalf("second start: %x, %v; want the first key", again, err)
	}
	if err := os.WriteFile(p, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := devSecretKey(p); err == nil {
		t.Fatal("a corrupt key file was replaced or taken instead of refused")
	}
}
