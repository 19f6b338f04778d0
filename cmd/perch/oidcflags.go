package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/perchhq/perch/core"
)

// oidcFlag is the OpenID Connect providers whose ID tokens log in (POST /v1/auth/oidc), the
// same for perch core and perch dev: NAME=ISSUER,AUDIENCE[,JWKS_URL], repeated or separated by
// spaces (commas are taken). Values from the command line replace those from the environment
// (PERCH_OIDC).
type oidcFlag struct {
	fs        *flag.FlagSet
	providers []core.OIDCProvider
	fromArgs  bool
}

func oidcFlags(fs *flag.FlagSet) *oidcFlag {
	o := &oidcFlag{fs: fs}
	fs.Var(o, "oidc", "an OpenID Connect provider whose ID tokens log in: NAME=ISSUER,AUDIENCE[,JWKS_URL] (AUDIENCE: the app's client id; JWKS_URL default: the jwks_uri of the issuer's discovery document); repeated or space-separated")
	return o
}

func (o *oidcFlag) String() string {
	if o == nil {
		return ""
	}
	s := make([]string, len(o.providers))
	for i, p := range o.providers {
		s[i] = p.Name + "=" + p.Issuer + "," + p.Audience
		if p.JWKSURL != "" {
			s[i] += "," + p.JWKSURL
		}
	}
	return strings.Join(s, " ")
}

func (o *oidcFlag) Set(v string) error {
	if o.fs != nil && o.fs.Parsed() && !o.fromArgs {
		o.providers, o.fromArgs = nil, true
	}
	for _, s := range strings.Fields(v) {
		p, err := core.ParseOIDCProvider(s)
		if err != nil {
			return err
		}
		for _, have := range o.providers {
			if have.Name == p.Name {
				return fmt.Errorf("oidc provider %q given twice", p.Name)
			}
		}
		o.providers = append(o.providers, p)
	}
	return nil
}

// apply sets the providers of cfg.
func (o *oidcFlag) apply(cfg *core.AccountsConfig) { cfg.OIDC = o.providers }
