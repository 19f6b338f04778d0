// Command perch is the one binary of Perch: `perch dev` runs the whole system on one machine,
// `perch core` and `perch edge` are the production roles, `perch migrate` prepares a database.
// See DESIGN §4 for the contract of every subcommand.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "perch:", err)
		os.Exit(exitCode(err))
	}
}
