package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"

	"github.com/perchhq/perch/edge"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// errUsage marks a mistake in the command line: exit code 2, like flag.
var errUsage = errors.New("usage")

func exitCode(err error) int {
	if errors.Is(err, errUsage) {
		return 2
	}
	return 1
}

const usage = `perch: an edge API for mobile apps.

Usage:
  perch dev     [flags]   the whole system on this machine (embedded NATS, SQLite, edges)
  perch core    [flags]   a core worker: applies writes, answers reads
  perch edge    [flags]   an edge: the HTTP API, near the users
  perch migrate [flags]   bring a database's schema up to date
  perch keys    ...       the apps' API keys (X-Api-Key): create, list, revoke (perch keys -h)
  perch bench   [flags]   load benchmarks against running edges (perch bench -h)
  perch version           print the version

Every flag can also be set by an environment variable: --nats is PERCH_NATS, --port-base is
PERCH_PORT_BASE. Run 'perch <command> -h' for a command's flags.
`

// run is the whole program behind main, callable from tests.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: no command", errUsage)
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "dev":
		return runDev(ctx, rest, getenv, stdout, stderr)
	case "core":
		return runCore(ctx, rest, getenv, stderr)
	case "edge":
		return runEdge(ctx, rest, getenv, stderr)
	case "migrate":
		return runMigrate(ctx, rest, getenv, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, getenv, stdout, stderr)
	case "keys":
		return runKeys(ctx, rest, getenv, stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "perch", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
}

// setup parses a subcommand's command line and makes its logger. A request for help (-h)
// comes back as flag.ErrHelp: pass errors through done.
func setup(fs *flag.FlagSet, args []string, getenv func(string) string, newLogger func(io.Writer) (*slog.Logger, error), stderr io.Writer) (*slog.Logger, error) {
	if err := parseFlags(fs, args, getenv); err != nil {
		return nil, err
	}
	return newLogger(stderr)
}

// done is what a subcommand returns for err from setup: nothing after its help was shown.
func done(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// parseFlags parses args into fs after taking defaults from PERCH_* environment variables, so
// that a flag given on the command line wins over the environment.
func parseFlags(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	return parseFlagsArgs(fs, args, getenv, 0)
}

// parseFlagsArgs is parseFlags for a command that takes up to maxArgs arguments after its
// flags (fs.Args).
func parseFlagsArgs(fs *flag.FlagSet, args []string, getenv func(string) string, maxArgs int) error {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := "PERCH_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" {
			if err := f.Value.Set(v); err != nil && envErr == nil {
				envErr = fmt.Errorf("%w: %s=%q: %v", errUsage, name, v, err)
			}
		}
	})
	if envErr != nil {
		return envErr
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > maxArgs {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(maxArgs))
	}
	return nil
}

// logFlags adds --log-level and --log-format to fs and returns a function making the logger.
func logFlags(fs *flag.FlagSet, defaultFormat string) func(w io.Writer) (*slog.Logger, error) {
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	format := fs.String("log-format", defaultFormat, "log format: json or text")
	return func(w io.Writer) (*slog.Logger, error) {
		var l slog.Level
		if err := l.UnmarshalText([]byte(*level)); err != nil {
			return nil, fmt.Errorf("%w: --log-level %q", errUsage, *level)
		}
		opts := &slog.HandlerOptions{Level: l}
		switch *format {
		case "json":
			return slog.New(slog.NewJSONHandler(w, opts)), nil
		case "text":
			return slog.New(slog.NewTextHandler(w, opts)), nil
		default:
			return nil, fmt.Errorf("%w: --log-format %q", errUsage, *format)
		}
	}
}

// listFlag is a flag that takes a comma-separated list and may be repeated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// policyFlag takes COLLECTION=VALUE and may be repeated; ';' separates several in one value,
// as an environment variable gives them. check validates each value.
type policyFlag struct {
	m     map[string]string
	check func(string) (string, error)
}

func (f *policyFlag) String() string {
	if f == nil || len(f.m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(f.m))
	for k := range f.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + f.m[k]
	}
	return strings.Join(parts, ";")
}

func (f *policyFlag) Set(v string) error {
	for _, e := range strings.Split(v, ";") {
		if e = strings.TrimSpace(e); e == "" {
			continue
		}
		k, val, ok := strings.Cut(e, "=")
		if k = strings.TrimSpace(k); !ok || k == "" {
			return fmt.Errorf("%q is not COLLECTION=VALUE", e)
		}
		norm, err := f.check(val)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		if f.m == nil {
			f.m = map[string]string{}
		}
		f.m[k] = norm
	}
	return nil
}

// cacheControlFlag adds --cache-control to fs.
func cacheControlFlag(fs *flag.FlagSet) *policyFlag {
	f := &policyFlag{check: edge.ParseCacheControl}
	fs.Var(f, "cache-control", `Cache-Control of a collection's documents and list pages: COLLECTION=DIRECTIVES, repeatable, "*" for every other collection (default no-cache), e.g. "notes=public, max-age=60, stale-if-error=600"`)
	return f
}

// bytesFlag is a size in bytes: a number, optionally with a unit (KiB, MiB, GiB, KB, MB, GB).
type bytesFlag int64

func (b *bytesFlag) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *bytesFlag) Set(v string) error {
	v = strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}} {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSpace(strings.TrimSuffix(v, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return fmt.Errorf("%q is not a size such as 512MiB", v)
	}
	*b = bytesFlag(n * mult)
	return nil
}

// cacheFlags are the flags that size an edge's cache: --cache-bytes and --cache-items.
type cacheFlags struct {
	bytes bytesFlag
	items countFlag
}

// newCacheFlags adds --cache-bytes and --cache-items to fs.
func newCacheFlags(fs *flag.FlagSet) *cacheFlags {
	f := &cacheFlags{bytes: bytesFlag(edge.DefaultConfig().CacheBytes)}
	fs.Var(&f.bytes, "cache-bytes", "memory bound of an edge's cache (rendered responses and their bookkeeping), e.g. 1GiB")
	fs.Var(&f.items, "cache-items", "entries an edge's cache is expected to hold when full, which sizes its admission counters (default --cache-bytes / 4KiB); set it for small documents")
	return f
}

// apply sets the cache's bounds of cfg.
func (f *cacheFlags) apply(cfg *edge.Config) {
	cfg.CacheBytes = int64(f.bytes)
	cfg.CacheItems = int64(f.items)
}

// countFlag is a count of at least 1; 0 when not given.
type countFlag int64

func (c *countFlag) String() string { return strconv.FormatInt(int64(*c), 10) }

func (c *countFlag) Set(v string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("%q is not a count such as 100000", v)
	}
	*c = countFlag(n)
	return nil
}
