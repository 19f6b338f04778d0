package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"

	"github.com/perchhq/perch/core"
)

// The core's secret key, which seals the users' TOTP secrets at rest
// (core.AccountsConfig.SecretKey). A key file holds the standard base64 of 32 random bytes,
// and may end in a newline: text survives being pasted into a secret store, and
// `openssl rand -base64 32 > perch.key` makes one. Every core of a fleet reads the same file.

// secretKeyFlags are the flags of the second factor: --secret-key-file and --totp-issuer.
type secretKeyFlags struct {
	file, issuer *string
}

func secretKeyFlag(fs *flag.FlagSet) secretKeyFlags {
	return secretKeyFlags{
		file: fs.String("secret-key-file", "", "file with the base64 of 32 random bytes (openssl rand -base64 32) that encrypts TOTP secrets; "+
			"the same on every core; empty: two-factor authentication is off"),
		issuer: fs.String("totp-issuer", "Perch", "the service's name in authenticator apps"),
	}
}

// apply reads the key file, if one is named, into c.
func (f secretKeyFlags) apply(c *core.AccountsConfig) error {
	c.TOTPIssuer = *f.issuer
	if *f.file == "" {
		return nil
	}
	key, err := readSecretKey(*f.file)
	if err != nil {
		return fmt.Errorf("%w: --secret-key-file: %v", errUsage, err)
	}
	c.SecretKey = key
	return nil
}

// readSecretKey reads a key file: base64 of core.SecretKeyLen bytes.
func readSecretKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	key, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(b)))
	if err != nil || len(key) != core.SecretKeyLen {
		return nil, fmt.Errorf("%s must hold the base64 of %d random bytes (openssl rand -base64 %d)", path, core.SecretKeyLen, core.SecretKeyLen)
	}
	return key, nil
}

// devSecretKey returns the key of perch dev's data directory at path, making it on first
// start (readable by its owner only), so that TOTP secrets stay readable across restarts.
func devSecretKey(path string) ([]byte, error) {
	key, err := readSecretKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	key = make([]byte, core.SecretKeyLen)
	rand.Read(key)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	_, werr := f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return key, nil
}
