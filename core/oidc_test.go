package core

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/perchhq/perch/internal/auth"
	"github.com/perchhq/perch/internal/oidctest"
)

func TestParseOIDCProvider(t *testing.T) {
	p, err := ParseOIDCProvider("google=https://accounts.google.com,123.apps.googleusercontent.com")
	if err != nil || p != (OIDCProvider{Name: "google", Issuer: "https://accounts.google.com", Audience: "123.apps.googleusercontent.com"}) {
		t.Fatalf("ParseOIDCProvider = %+v, %v", p, err)
	}
	p, err = ParseOIDCProvider("ms=https://login.microsoftonline.com/t/v2.0,app,https://login.microsoftonline.com/t/discovery/v2.0/keys")
	if err != nil || p.JWKSURL != "https://login.microsoftonline.com/t/discovery/v2.0/keys" {
		t.Fatalf("ParseOIDCProvider with a JWKS URL = %+v, %v", p, err)
	}
	for _, s := range []string{
		"google", "google=https://accounts.google.com", "Google=https://accounts.google.com,a",
		"a:b=https://x.test,a", "g=http://accounts.google.com,a", "g=https://x.test,a,http://x.test/keys",
		"g=https://x.test,,", "g=https://x.test,a,https://x.test/k,extra",
	} {
		if _, err := ParseOIDCProvider(s); err == nil {
			t.Errorf("ParseOIDCProvider(%q) accepted", s)
		}
	}
	cfg := DefaultAccountsConfig()
	cfg.OIDC = []OIDCProvider{{Name: "g", Issuer: "https://x.test", Audience: "a"}, {Name: "g", Issuer: "https://y.test", Audience: "a"}}
	if err := cfg.complete(); err == nil {
		t.Error("two providers of one name accepted")
	}
}

// TestOIDCKeyFetches: the keys are fetched (after discovery) at the first use, again for an
// unknown kid at most once per OIDCRefetch, and again when they are an hour old.
func TestOIDCKeyFetches(t *testing.T) {
	rs := oidctest.NewKey(t, "rs-1", "RS256")
	prov := oidctest.Start(t, rs)
	cfg := DefaultAccountsConfig()
	cfg.OIDC = []OIDCProvider{{Name: "test", Issuer: prov.Issuer, Audience: "app"}}
	cfg.OIDCClient = prov.Client()
	if err := cfg.complete(); err != nil {
		t.Fatal(err)
	}
	p := newOIDCProviders(cfg)["test"]
	ctx := context.Background()
	t0 := time.Now().Truncate(time.Second)
	verify := func(k *oidctest.Key, at time.Time) error {
		_, err := p.verify(ctx, k.Sign(t, prov.Claims("s", "app", at)), "", at)
		return err
	}
	if err := verify(rs, t0); err != nil || prov.Fetches() != 1 || p.jwksURL != prov.JWKSURL() {
		t.Fatalf("first verification: %v, %d fetches, jwks %q", err, prov.Fetches(), p.jwksURL)
	}
	stranger := oidctest.NewKey(t, "rs-2", "RS256")
	// Within a minute of the first fetch, an unknown kid fetches nothing.
	if err := verify(stranger, t0.Add(30*time.Second)); !errors.Is(err, auth.ErrUnknownKey) || prov.Fetches() != 1 {
		t.Fatalf("unknown kid after 30s: %v, %d fetches; want ErrUnknownKey, 1", err, prov.Fetches())
	}
	// A minute on it fetches once, and a second one right after does not.
	if err := verify(stranger, t0.Add(time.Minute)); !errors.Is(err, auth.ErrUnknownKey) || prov.Fetches() != 2 {
		t.Fatalf("unknown kid after 1m: %v, %d fetches; want ErrUnknownKey, 2", err, prov.Fetches())
	}
	if err := verify(stranger, t0.Add(time.Minute+time.Second)); !errors.Is(err, auth.ErrUnknownKey) || prov.Fetches() != 2 {
		t.Fatalf("unknown kid again: %v, %d fetches; want ErrUnknownKey, 2", err, prov.Fetches())
	}
	// Once published, the new key is learnt at the next allowed fetch; known kids fetch
	// nothing until the keys are an hour old.
	prov.SetKeys(stranger)
	if err := verify(stranger, t0.Add(2*time.Minute)); err != nil || prov.Fetches() != 3 {
		t.Fatalf("rotated key: %v, %d fetches; want nil, 3", err, prov.Fetches())
	}
	if err := verify(stranger, t0.Add(30*time.Minute)); err != nil || prov.Fetches() != 3 {
		t.Fatalf("known key: %v, %d fetches; want nil, 3", err, prov.Fetches())
	}
	if err := verify(rs, t0.Add(62*time.Minute+time.Second)); !errors.Is(err, auth.ErrUnknownKey) || prov.Fetches() != 4 {
		t.Fatalf("an hour on, the dropped key: %v, %d fetches; want ErrUnknownKey, 4", err, prov.Fetches())
	}
}
