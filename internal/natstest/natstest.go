package natstest

import (
	"io"
	"log/slog"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/perchhq/perch/internal/natsembed"
)

// Start returns a running server that is shut down at the end of the test.
func Start(tb testing.TB) *natsembed.Server {
	tb.Helper()
	return StartIn(tb, tb.TempDir())
}

// StartIn is Start with a given storage directory, so that a test can stop a server and start
// another on the same data (a NATS restart).
func StartIn(tb testing.TB, dir string) *natsembed.Server {
	tb.Helper()
	return StartOn(tb, dir, 0)
}

// StartOn is StartIn on a given client port (0 picks a free one), so that a test can start a
// server where its clients reconnect to: on the port of one it shut down.
func StartOn(tb testing.TB, dir string, port int) *natsembed.Server {
	tb.Helper()
	s, err := natsembed.Start(natsembed.Config{
		Dir:        dir,
		Port:       port,
		ServerName: "perch-test",
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		tb.Fatalf("start NATS: %v", err)
	}
	tb.Cleanup(s.Shutdown)
	return s
}

// Connect returns a client connection to url that is closed at the end of the test.
func Connect(tb testing.TB, url string) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		tb.Fatalf("connect NATS %s: %v", url, err)
	}
	tb.Cleanup(nc.Close)
	return nc
}
