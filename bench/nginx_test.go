package bench

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	benchload "github.com/perchhq/perch/bench/load"
	"github.com/perchhq/perch/internal/clustertest"
)

// BenchmarkGetHitNginx compares a cache-hit GET of a 1 KB document through one edge with
// nginx's proxy_cache answering a cached copy of the same bytes (Debian's nginx; target: the
// edge serves at least 1.3× nginx's requests per second). Both are driven by the load of
// BenchmarkGetHit (64 keep-alive connections, from the same process), one after the other in
// the same run. The nginx line reports edge/nginx, the ratio of the two req/s.
//
// nginx runs as the edge does, with all the machine's cores: worker_processes is GOMAXPROCS
// (one worker would hold nginx to one core while the edge's server uses them all), or
// PERCH_BENCH_NGINX_WORKERS. It skips when there is no nginx (PERCH_BENCH_NGINX names the
// binary; else nginx on PATH or /usr/sbin/nginx).
func BenchmarkGetHitNginx(b *testing.B) {
	bin := benchload.NginxBinary(os.Getenv("PERCH_BENCH_NGINX"))
	if bin == "" {
		b.Skip("no nginx binary: install Debian's nginx-light (or nginx), or set PERCH_BENCH_NGINX")
	}
	workers := runtime.GOMAXPROCS(0)
	if v := os.Getenv("PERCH_BENCH_NGINX_WORKERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("PERCH_BENCH_NGINX_WORKERS=%q: want a positive number", v)
		}
		workers = n
	}

	const path = "/v1/collections/bench/docs/doc"
	url, hit := cachedDocument(b)
	answer := hit.Body

	// The origin answers like the edge (same body, ETag, content type) and lets nginx cache it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	etag := hit.Header["Etag"] // as fasthttp normalizes the name
	if etag == "" {
		b.Fatalf("the edge's hit has no ETag: %v", hit.Header)
	}
	origin := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.Response.Header.Set("ETag", etag)
		ctx.Response.Header.Set("Cache-Control", "max-age=3600")
		ctx.Response.SetBodyRaw(answer)
	}}
	go origin.Serve(ln) //nolint:errcheck // ends with Shutdown
	b.Cleanup(func() { _ = origin.Shutdown() })
	nginxURL := startNginx(b, bin, workers, ln.Addr().String()) + path
	clustertest.Eventually(b, 10*time.Second, func() error {
		r, err := clustertest.Send("GET", nginxURL, nil, nil)
		if err != nil {
			return err
		}
		if r.Status != 200 || string(r.Body) != string(answer) || r.Header["X-Cache-Status"] != "HIT" {
			return fmt.Errorf("nginx: %d, X-Cache-Status %q, %d bytes", r.Status, r.Header["X-Cache-Status"], len(r.Body))
		}
		return nil
	})

	var edgeRate float64
	b.Run("edge", func(b *testing.B) {
		load(b, url, len(answer))
		edgeRate = reportRate(b)
	})
	b.Run("nginx", func(b *testing.B) {
		load(b, nginxURL, len(answer)) // resets the timer, and the metrics with it
		b.ReportMetric(float64(workers), "workers")
		if rate := reportRate(b); rate > 0 && edgeRate > 0 {
			b.ReportMetric(edgeRate/rate, "edge/nginx")
		}
	})
}

// reportRate reports and returns the requests per second of a load that has just run.
func reportRate(b *testing.B) float64 {
	if b.Elapsed() <= 0 {
		return 0
	}
	rate := float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(rate, "req/s")
	return rate
}

// startNginx runs nginx in the foreground with workers worker processes, caching origin, and
// returns its base URL. It is stopped (gracefully, SIGQUIT) when the benchmark ends.
func startNginx(b *testing.B, bin string, workers int, origin string) string {
	b.Helper()
	return startNginxOn(b, nil, bin, workers, origin)
}

// startNginxOn is startNginx run under prefix (a command and its arguments, such as
// taskset's; none when empty).
func startNginxOn(b *testing.B, prefix []string, bin string, workers int, origin string) string {
	b.Helper()
	dir := b.TempDir()
	addr := freeAddr(b)
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, benchload.NginxConfig(workers, dir, origin, addr), 0o600); err != nil {
		b.Fatal(err)
	}
	base := "http://" + addr
	startProcess(b, command(prefix, bin, "-p", dir, "-c", conf, "-e", "stderr"), syscall.SIGQUIT).serving(b, base)
	return base
}

// freeAddr returns a loopback address with a port that was free a moment ago, for a server
// in another process (which must bind it itself).
func freeAddr(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		b.Fatal(err)
	}
	return addr
}
