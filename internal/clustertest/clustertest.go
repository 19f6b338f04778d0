package clustertest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/perchhq/perch/core"
	"github.com/perchhq/perch/edge"
	"github.com/perchhq/perch/internal/system"
)

// Cluster is a running system owned by a test.
type Cluster struct {
	*system.System
	tb   testing.TB
	opts system.Options
}

// Options adjust the cluster a test starts. The zero value is three edges with production
// settings, a core with LocalConfig timers, on a fresh data directory.
type Options struct {
	Regions []string
	Dir     string
	Core    *core.Config
	Edge    *edge.Config
	// DB is the store's DSN; default SQLite in Dir.
	DB string
	// Admin starts the admin listener (metrics) on a free port.
	Admin bool
	// TracerProvider traces every part (system.Options.TracerProvider).
	TracerProvider trace.TracerProvider
	// Log, when set, receives every part's logs, as JSON from the debug level up.
	Log io.Writer
}

// Start starts a cluster and stops it when the test ends. Logs are discarded unless o.Log
// is set or PERCH_TEST_LOG=1.
func Start(tb testing.TB, o Options) *Cluster {
	tb.Helper()
	if o.Dir == "" {
		o.Dir = tb.TempDir()
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	switch {
	case o.Log != nil:
		log = slog.New(slog.NewJSONHandler(o.Log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	case os.Getenv("PERCH_TEST_LOG") == "1":
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	opts := system.Options{Dir: o.Dir, DB: o.DB, Regions: o.Regions, Core: o.Core, Edge: o.Edge, Logger: log,
		TracerProvider: o.TracerProvider}
	if o.Admin {
		opts.Admin = "127.0.0.1:0"
	}
	c := &Cluster{tb: tb, opts: opts}
	c.start()
	tb.Cleanup(func() {
		if c.System != nil {
			if err := c.System.Close(); err != nil {
				tb.Errorf("stopping the cluster: %v", err)
			}
		}
	})
	return c
}

func (c *Cluster) start() {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := system.Start(ctx, c.opts)
	if err != nil {
		c.tb.Fatalf("start cluster: %v", err)
	}
	c.System = s
	for _, url := range s.EdgeURLs() {
		WaitReady(c.tb, url)
	}
}

// Restart stops the whole cluster gracefully and starts it again on the same data.
func (c *Cluster) Restart() {
	c.tb.Helper()
	if err := c.System.Close(); err != nil {
		c.tb.Fatalf("stop cluster: %v", err)
	}
	c.System = nil
	c.start()
}

// Edge returns the base URL of edge i.
func (c *Cluster) Edge(i int) string { return c.EdgeURLs()[i] }

// WaitReady polls url/readyz until it answers 200.
func WaitReady(tb testing.TB, url string) {
	tb.Helper()
	Eventually(tb, 10*time.Second, func() error {
		r := Do(tb, "GET", url+"/readyz", nil, nil)
		if r.Status != 200 {
			return fmt.Errorf("readyz %d: %s", r.Status, r.Body)
		}
		return nil
	})
}

// Eventually calls f until it returns nil or the timeout passes, then fails the test with
// f's last error.
func Eventually(tb testing.TB, timeout time.Duration, f func() error) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	wait := 5 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("not true after %s: %v", timeout, err)
		}
		time.Sleep(wait)
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// Response is what a test needs of an HTTP response.
type Response struct {
	Status int
	Header map[string]string
	Body   []byte
}

var client = &fasthttp.Client{
	MaxConnsPerHost: 512,
	ReadTimeout:     30 * time.Second,
	WriteTimeout:    30 * time.Second,
}

// Do sends a request. headers are name/value pairs; a body without a Content-Type header is
// sent as application/json. Transport errors fail the test.
func Do(tb testing.TB, method, url string, headers map[string]string, body []byte) Response {
	tb.Helper()
	r, err := Send(method, url, headers, body)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	return r
}

// Send is Do returning transport errors, for tests that expect some (a server going down).
func Send(method, url string, headers map[string]string, body []byte) (Response, error) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI(url)
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBody(body)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	if err := client.DoTimeout(req, resp, 30*time.Second); err != nil {
		return Response{}, err
	}
	out := Response{Status: resp.StatusCode(), Header: map[string]string{}, Body: append([]byte(nil), resp.Body()...)}
	for k, v := range resp.Header.All() {
		out.Header[string(k)] = string(v)
	}
	return out, nil
}

// Metric sums the samples of the counter or gauge name over the cluster's parts, by the
// values of the labels named in by, joined with ","; with no labels, under "".
func (c *Cluster) Metric(name string, by ...string) map[string]float64 {
	c.tb.Helper()
	mfs, err := c.Metrics().Gather()
	if err != nil {
		c.tb.Fatalf("gather metrics: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			key := make([]string, len(by))
			for _, l := range m.GetLabel() {
				if i := slices.Index(by, l.GetName()); i >= 0 {
					key[i] = l.GetValue()
				}
			}
			out[strings.Join(key, ",")] += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return out
}
