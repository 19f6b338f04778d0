package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/edge/ratelimit"
)

// rateLimits are the flags of the fleet-wide rate limits, the same for perch edge and
// perch dev: policies on the command line (--rate-limit), a limits file reloaded when it
// changes (--rate-limit-file), and the sync interval.
type rateLimits struct {
	flags   *policiesFlag
	file    *string
	sync    *time.Duration
	headers *bool
	// fromFile are the policies the file held when last read.
	fromFile []ratelimit.Policy
}

// rateLimitWatch is how often the limits file is looked at for changes.
const rateLimitWatch = 2 * time.Second

func rateLimitFlags(fs *flag.FlagSet) *rateLimits {
	r := &rateLimits{flags: &policiesFlag{fs: fs}}
	fs.Var(r.flags, "rate-limit", "a rate limit, global across the fleet: SCOPE:RATE[:BURST][@GROUP], SCOPE ip, user or key (X-Api-Key), RATE N/s or N/m, GROUP reads, writes or sync (default every route); repeated or comma-separated")
	r.file = fs.String("rate-limit-file", "", "YAML file of rate limits (edge/ratelimit/README.md), added to --rate-limit and reloaded when it changes")
	r.headers = fs.Bool("rate-limit-headers", false, "send RateLimit-Policy and RateLimit on every answer a limit counts, not only on its 429s")
	r.sync = fs.Duration("rate-limit-sync", ratelimit.DefaultSyncInterval, "how often edges share their rate-limit usage (5ms to 100ms); a limit's error is about rate × this")
	return r
}

// apply reads the limits file and sets the policies of cfg. A bad policy or file is a usage
// error.
func (r *rateLimits) apply(cfg *edge.Config) error {
	if *r.file != "" {
		ps, err := ratelimit.LoadFile(*r.file)
		if err != nil {
			return fmt.Errorf("%w: --rate-limit-file: %v", errUsage, err)
		}
		r.fromFile = ps
	}
	cfg.RateLimits = r.policies(r.fromFile)
	cfg.RateLimitSync = *r.sync
	cfg.RateLimitHeaders = *r.headers
	if _, err := ratelimit.New(ratelimit.Config{Policies: cfg.RateLimits, SyncInterval: cfg.RateLimitSync}); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

func (r *rateLimits) policies(fromFile []ratelimit.Policy) []ratelimit.Policy {
	return slices.Concat(r.flags.policies, fromFile)
}

// watch reloads the limits file until ctx ends, handing the flags' policies and the file's
// to set. A file that does not parse, or policies set refuses, leave the limits in force.
func (r *rateLimits) watch(ctx context.Context, log *slog.Logger, set func([]ratelimit.Policy) error) {
	if *r.file == "" {
		return
	}
	go ratelimit.WatchFile(ctx, *r.file, rateLimitWatch, func(ps []ratelimit.Policy) {
		if slices.Equal(ps, r.fromFile) {
			return
		}
		if err := set(r.policies(ps)); err != nil {
			log.Error("rate limits not reloaded; the ones in force stay", "file", *r.file, "err", err)
			return
		}
		r.fromFile = ps
		log.Info("rate limits reloaded", "file", *r.file, "policies", len(ps)+len(r.flags.policies))
	}, log)
}

// policiesFlag is a list of rate-limit policies, comma-separated and repeatable. Values
// from the command line replace those from the environment (PERCH_RATE_LIMIT).
type policiesFlag struct {
	fs       *flag.FlagSet
	policies []ratelimit.Policy
	fromArgs bool
}

func (p *policiesFlag) String() string {
	if p == nil {
		return ""
	}
	s := make([]string, len(p.policies))
	for i, pol := range p.policies {
		s[i] = pol.String()
	}
	return strings.Join(s, ",")
}

func (p *policiesFlag) Set(v string) error {
	if p.fs != nil && p.fs.Parsed() && !p.fromArgs {
		p.policies, p.fromArgs = nil, true
	}
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		pol, err := ratelimit.ParsePolicy(s)
		if err != nil {
			return err
		}
		p.policies = append(p.policies, pol)
	}
	return nil
}
