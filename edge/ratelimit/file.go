package ratelimit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/goccy/go-yaml"

	"github.com/perchhq/perch/internal/yamlsafe"
)

// file is the YAML form of a limits file (README.md, "File format").
type file struct {
	Limits []fileLimit `yaml:"limits"`
}

// fileLimit is one entry of limits: a mapping, or a string in the flag syntax.
type fileLimit struct {
	p Policy
}

type fileLimitFields struct {
	Scope string `yaml:"scope"`
	Rate  string `yaml:"rate"`
	Burst *int   `yaml:"burst"`
	Group string `yaml:"group"`
}

func (l *fileLimit) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err == nil {
		p, err := ParsePolicy(s)
		if err != nil {
			return err
		}
		l.p = p
		return nil
	}
	var f fileLimitFields
	if err := unmarshal(&f); err != nil {
		return err
	}
	if f.Scope == "" {
		return errors.New("limit without a scope: want scope: ip, user or key")
	}
	if f.Rate == "" {
		return fmt.Errorf("limit for scope %s without a rate: want rate: N/s or N/m", f.Scope)
	}
	p := Policy{Scope: Scope(strings.ToLower(f.Scope)), Group: f.Group}
	var err error
	if p.Limit, p.Period, err = parseRate(f.Rate); err != nil {
		return fmt.Errorf("limit %s: %w", f.Scope, err)
	}
	if f.Burst != nil {
		if *f.Burst < 1 {
			return fmt.Errorf("limit %s: burst %d: want at least 1", f.Scope, *f.Burst)
		}
		p.Burst = *f.Burst
	}
	if err := p.Validate(); err != nil {
		return fmt.Errorf("limit %s: %w", p, err)
	}
	l.p = p.canonical()
	return nil
}

// ParseFile reads a limits file (YAML, so JSON too; format in README.md):
//
//	limits:
//	  - {scope: ip, rate: 50/s, burst: 100}
//	  - {scope: ip, rate: 10/s, group: writes}
//	  - key:6000/m
//
// Unknown fields are errors, so that a misspelt field does not silently leave a limit out.
// An empty file, or one with an empty list, means no limits.
func ParseFile(data []byte) ([]Policy, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	var f file
	if err := yamlsafe.Unmarshal(data, &f, yaml.Strict()); err != nil {
		return nil, fmt.Errorf("limits file: %w", err)
	}
	ps := make([]Policy, 0, len(f.Limits))
	for _, l := range f.Limits {
		ps = append(ps, l.p)
	}
	if err := validatePolicies(ps); err != nil {
		return nil, fmt.Errorf("limits file: %w", err)
	}
	return ps, nil
}

// LoadFile reads and parses the limits file at path.
func LoadFile(path string) ([]Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ps, err := ParseFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ps, nil
}

// WatchFile reloads the limits file at path whenever its content changes, checking every
// interval (default, when every <= 0, one second), until ctx is done. It calls apply with
// the file's policies once at the start (when the file can be read and parsed) and then after
// each change; a missing or bad file is logged and apply is not called, so the policies in
// force stay. apply is called from WatchFile's goroutine, one call at a time; a typical one
// merges the --rate-limit flags and calls (*Limiter).SetPolicies.
func WatchFile(ctx context.Context, path string, every time.Duration, apply func([]Policy), log *slog.Logger) {
	if every <= 0 {
		every = time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var (
		last    []byte // the content applied last
		applied bool
		lastErr string // the error logged last, so that a bad file is logged once
	)
	check := func() {
		data, err := os.ReadFile(path)
		if err == nil && applied && bytes.Equal(data, last) {
			return
		}
		var ps []Policy
		if err == nil {
			ps, err = ParseFile(data)
		}
		if err != nil {
			if msg := err.Error(); msg != lastErr {
				log.Error("rate limits file not applied; the limits in force stay", "path", path, "err", err)
				lastErr = msg
			}
			return
		}
		last, applied, lastErr = data, true, ""
		log.Info("rate limits loaded", "path", path, "limits", len(ps))
		apply(ps)
	}
	check()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			check()
		}
	}
}
