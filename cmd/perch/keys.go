package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/internal/auth"
	"github.com/perchhq/perch/internal/system"
	"github.com/perchhq/perch/internal/wire"
)

const keysUsage = `Usage:
  perch keys create --db DSN --name NAME   make an app's API key; prints it once
  perch keys list   --db DSN               every key: id, name, created, revoked
  perch keys revoke --db DSN ID            revoke a key; the edges refuse it within seconds

The commands talk to the database only: every core reads the keys every 10 s and tells the
edges. Edges check X-Api-Key against them under --api-keys check or require.
`

// runKeys is `perch keys`: the apps' API keys (X-Api-Key), in the database.
func runKeys(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return fmt.Errorf("%w: perch keys needs create, list or revoke", errUsage)
	}
	switch args[0] {
	case "create":
		return runKeysCreate(ctx, args[1:], getenv, stdout, stderr)
	case "list":
		return runKeysList(ctx, args[1:], getenv, stdout, stderr)
	case "revoke":
		return runKeysRevoke(ctx, args[1:], getenv, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, keysUsage)
		return nil
	default:
		fmt.Fprint(stderr, keysUsage)
		return fmt.Errorf("%w: unknown command keys %q", errUsage, args[0])
	}
}

// keysFlags adds the flags every `perch keys` command takes and returns a function that opens
// the store they name. A PostgreSQL or CockroachDB store is not migrated: its schema must be
// current (perch migrate), so that a key command never changes a production schema.
func keysFlags(fs *flag.FlagSet) func(context.Context, *slog.Logger) (core.Store, error) {
	db := fs.String("db", "", "database DSN: postgres://... (CockroachDB, PostgreSQL) or sqlite:PATH (required)")
	partitions := fs.Int("partitions", wire.DefaultPartitions, "write partitions, as the fleet's (checked against the store)")
	return func(ctx context.Context, log *slog.Logger) (core.Store, error) {
		if *db == "" {
			return nil, fmt.Errorf("%w: --db is required", errUsage)
		}
		return system.OpenStore(ctx, *db, "", *partitions, log, system.StoreOptions{NoMigrate: true})
	}
}

func runKeysCreate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch keys create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	open := keysFlags(fs)
	name := fs.String("name", "", "the app the key is for, e.g. \"ios prod\" (required; shown in listings)")
	newLogger := logFlags(fs, "text")
	log, err := setup(fs, args, getenv, newLogger, stderr)
	if err != nil {
		return done(err)
	}
	if !core.ValidAPIKeyName(*name) {
		return fmt.Errorf("%w: --name must be 1 to %d bytes of text on one line", errUsage, core.MaxAPIKeyName)
	}
	store, err := open(ctx, log)
	if err != nil {
		return err
	}
	defer store.Close()
	key, hash := auth.NewAPIKey()
	k := core.APIKey{ID: auth.NewAPIKeyID(), Name: *name, Hash: hash, Created: time.Now().UTC()}
	if err := store.CreateAPIKey(ctx, k); err != nil {
		return fmt.Errorf("create api key: %w", err)
	}
	fmt.Fprintf(stdout, "id:   %s\nname: %s\nkey:  %s\n", k.ID, k.Name, key)
	fmt.Fprintln(stderr, "This key is shown now and never again: only its hash is stored. Give it to the app as X-Api-Key.")
	return nil
}

func runKeysList(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch keys list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	open := keysFlags(fs)
	newLogger := logFlags(fs, "text")
	log, err := setup(fs, args, getenv, newLogger, stderr)
	if err != nil {
		return done(err)
	}
	store, err := open(ctx, log)
	if err != nil {
		return err
	}
	defer store.Close()
	keys, err := store.APIKeys(ctx)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tNAME\tCREATED\tREVOKED")
	for _, k := range keys {
		revoked := "-"
		if !k.Live() {
			revoked = k.Revoked.Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", k.ID, k.Name, k.Created.Format(time.RFC3339), revoked)
	}
	return w.Flush()
}

func runKeysRevoke(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("perch keys revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	open := keysFlags(fs)
	newLogger := logFlags(fs, "text")
	// The id may come before the flags or after them.
	var id string
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		id, args = args[0], args[1:]
	}
	if err := parseFlagsArgs(fs, args, getenv, 1); err != nil {
		return done(err)
	}
	if fs.NArg() == 1 {
		if id != "" {
			return fmt.Errorf("%w: one id at a time", errUsage)
		}
		id = fs.Arg(0)
	}
	if !auth.ValidAPIKeyID(id) {
		return fmt.Errorf("%w: perch keys revoke needs the id of a key (ak_..., from perch keys list), not %q", errUsage, id)
	}
	log, err := newLogger(stderr)
	if err != nil {
		return err
	}
	store, err := open(ctx, log)
	if err != nil {
		return err
	}
	defer store.Close()
	k, err := store.RevokeAPIKey(ctx, id, time.Now().UTC())
	if errors.Is(err, core.ErrNotFound) {
		return fmt.Errorf("no api key %s", id)
	}
	if err != nil {
		return fmt.Errorf("revoke api key: %w", err)
	}
	fmt.Fprintf(stdout, "revoked %s (%s) at %s; the edges refuse it once a core has read it (every 10 s)\n",
		k.ID, k.Name, k.Revoked.Format(time.RFC3339))
	return nil
}

// apiKeysFlag declares --api-keys, how an edge treats X-Api-Key (edge/README.md, "API keys").
func apiKeysFlag(fs *flag.FlagSet) *edge.APIKeyMode {
	m := edge.APIKeysOff
	fs.Func("api-keys", "X-Api-Key: off (any name of the app), check (a key given must be live: perch keys), require (every request needs a live key) (default off)", func(v string) error {
		var err error
		m, err = edge.ParseAPIKeyMode(v)
		return err
	})
	return &m
}
