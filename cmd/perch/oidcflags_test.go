package main

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/perchhq/perch/core"
)

func TestOIDCFlags(t *testing.T) {
	const google = "google=https://accounts.google.com,123.apps.googleusercontent.com"
	const apple = "apple=https://appleid.apple.com,com.example.notes,https://appleid.apple.com/auth/keys"
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
		err  string
	}{
		{name: "none", want: ""},
		{name: "flags", args: []string{"--oidc", google, "--oidc", apple}, want: google + " " + apple},
		{name: "environment", env: map[string]string{"PERCH_OIDC": google + "  " + apple}, want: google + " " + apple},
		{name: "command line over environment", args: []string{"--oidc", apple}, env: map[string]string{"PERCH_OIDC": google}, want: apple},
		{name: "twice", args: []string{"--oidc", google, "--oidc", google}, err: "twice"},
		{name: "plain http", args: []string{"--oidc", "g=http://accounts.google.com,a"}, err: "https"},
		{name: "no audience", args: []string{"--oidc", "g=https://accounts.google.com"}, err: "NAME=ISSUER,AUDIENCE"},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		o := oidcFlags(fs)
		err := parseFlags(fs, tc.args, func(k string) string { return tc.env[k] })
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		var cfg core.AccountsConfig
		o.apply(&cfg)
		if got := o.String(); got != tc.want || len(cfg.OIDC) != len(strings.Fields(tc.want)) {
			t.Errorf("%s: %q (%d providers), want %q", tc.name, got, len(cfg.OIDC), tc.want)
		}
	}
}
