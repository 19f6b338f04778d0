package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/valyala/fasthttp"
)

// The baselines a run can be compared with.
const (
	// BaselineCeiling is a bare fasthttp server on loopback, in this process, answering every
	// request with a constant body of the run's mean response size: what this machine and
	// client can do at all.
	BaselineCeiling = "ceiling"
	// BaselineNginx is nginx's proxy_cache in front of the ceiling server, caching each GET
	// (needs an nginx binary: Config.NginxBinary, nginx on PATH, or /usr/sbin/nginx).
	BaselineNginx = "nginx"
	// BaselinePostgres is single-row upserts straight into PostgreSQL (Config.DB), one per
	// write of the scenario, at the rate of the scenario's writes: the database's own cost of
	// the write path.
	BaselinePostgres = "postgres"
)

// Baselines lists the known baselines.
var Baselines = []string{BaselineCeiling, BaselineNginx, BaselinePostgres}

// ceilingServer answers every request with body, as a JSON document.
type ceilingServer struct {
	srv *fasthttp.Server
	ln  net.Listener
	url string
}

func startCeiling(size int, cacheable bool) (*ceilingServer, error) {
	body := make([]byte, max(size, 2))
	body[0], body[len(body)-1] = '{', '}'
	for i := 1; i < len(body)-1; i++ {
		body[i] = ' '
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &fasthttp.Server{
		Name:                  "ceiling",
		NoDefaultDate:         true,
		ReadTimeout:           time.Minute,
		IdleTimeout:           time.Minute,
		Concurrency:           1 << 20,
		DisableKeepalive:      false,
		NoDefaultServerHeader: true,
		Handler: func(ctx *fasthttp.RequestCtx) {
			ctx.SetContentType("application/json")
			if cacheable {
				ctx.Response.Header.Set("Cache-Control", "max-age=3600")
			}
			ctx.Response.SetBodyRaw(body)
		},
	}
	go srv.Serve(ln) //nolint:errcheck // ends with Shutdown
	return &ceilingServer{srv: srv, ln: ln, url: "http://" + ln.Addr().String()}, nil
}

func (c *ceilingServer) close() { _ = c.srv.Shutdown() }

// nginxConf is a proxy cache in front of one origin, as bench/nginx_test.go runs it: no
// access log, keep-alive without a request limit, cached answers served without asking the
// origin, every path nginx writes to under its own directory.
const nginxConf = `daemon off;
master_process on;
worker_processes %[1]d;
%[2]s
pid %[3]s/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
	access_log off;
	tcp_nodelay on;
	keepalive_timeout 60s;
	keepalive_requests 100000000;
	client_body_temp_path %[3]s/body;
	proxy_temp_path %[3]s/proxy;
	fastcgi_temp_path %[3]s/fastcgi;
	uwsgi_temp_path %[3]s/uwsgi;
	scgi_temp_path %[3]s/scgi;
	proxy_cache_path %[3]s/cache levels=1:2 keys_zone=bench:10m max_size=100m inactive=1h use_temp_path=off;
	upstream origin { server %[4]s; keepalive 64; }
	server {
		listen %[5]s;
		location / {
			proxy_pass http://origin;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_cache bench;
			proxy_cache_valid 200 1h;
			proxy_cache_lock on;
			add_header X-Cache-Status $upstream_cache_status;
		}
	}
}
`

// NginxConfig is the configuration of the nginx baseline (nginxConf): workers worker
// processes, every file under dir, caching origin (host:port), listening on listen.
func NginxConfig(workers int, dir, origin, listen string) []byte {
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;" // workers would run as nobody, who cannot reach dir
	}
	return fmt.Appendf(nil, nginxConf, workers, user, dir, origin, listen)
}

// NginxBinary returns the nginx to run: bin when set, else nginx on PATH or /usr/sbin/nginx,
// or "" when there is none.
func NginxBinary(bin string) string {
	if bin != "" {
		return bin
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	return ""
}

// warm reads every document and list page of the plan once through base, so that a cache
// in front of the origin starts warm, as the edges do after the seed.
func warm(ctx context.Context, base string, p *plan, timeout time.Duration) {
	c := &fasthttp.Client{Name: seedAgent, MaxConnsPerHost: 16}
	defer c.CloseIdleConnections()
	paths := append(append([]string(nil), p.docPaths...), p.listPaths...)
	_ = parallelDo(ctx, len(paths), 16, func(i int) error {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI(base + paths[i])
		_ = c.DoTimeout(req, resp, timeout)
		return nil
	})
}

// nginxProcess is nginx running in the foreground from a generated configuration.
type nginxProcess struct {
	cmd    *exec.Cmd
	dir    string
	url    string
	exited chan error
}

// startNginx runs nginx with GOMAXPROCS workers (the edge uses every core too) in front of
// origin, and waits until it answers.
func startNginx(ctx context.Context, bin, origin string) (*nginxProcess, error) {
	dir, err := os.MkdirTemp("", "perch-bench-nginx-")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, NginxConfig(runtime.GOMAXPROCS(0), dir, strings.TrimPrefix(origin, "http://"), addr), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	var out lockedBuffer
	cmd := exec.Command(bin, "-p", dir, "-c", conf, "-e", "stderr")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a kill reaches its workers
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	n := &nginxProcess{cmd: cmd, dir: dir, url: "http://" + addr, exited: make(chan error, 1)}
	go func() { n.exited <- cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-n.exited:
			n.exited <- err
			os.RemoveAll(dir)
			return nil, fmt.Errorf("nginx exited: %v: %s", err, out.String())
		default:
		}
		code, _, err := fasthttp.GetTimeout(nil, n.url+"/", time.Second)
		if err == nil && code == 200 {
			return n, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			n.stop()
			return nil, fmt.Errorf("nginx did not answer at %s: %v: %s", n.url, err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop stops nginx gracefully (SIGQUIT), or kills its process group after 10 s.
func (n *nginxProcess) stop() {
	_ = n.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-n.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		<-n.exited
	}
	os.RemoveAll(n.dir)
}

// pgTarget upserts one row per write into a table of its own, perch_bench_direct.
type pgTarget struct{ pool *pgxpool.Pool }

// dbError is an error of the database, for the report's errors_by_status ("database").
type dbError struct{ err error }

func (e dbError) Error() string { return e.err.Error() }
func (e dbError) Unwrap() error { return e.err }

const pgDirectTable = `CREATE TABLE IF NOT EXISTS perch_bench_direct (
	collection TEXT NOT NULL, id TEXT NOT NULL, version BIGINT NOT NULL, data JSONB NOT NULL,
	updated_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (collection, id))`

const pgUpsert = `INSERT INTO perch_bench_direct (collection, id, version, data, updated_at)
	VALUES ($1, $2, 1, $3, now())
	ON CONFLICT (collection, id) DO UPDATE SET version = perch_bench_direct.version + 1,
		data = excluded.data, updated_at = excluded.updated_at`

// ErrNeedsPostgres is returned for the postgres baseline without a PostgreSQL DSN.
var ErrNeedsPostgres = errors.New("the postgres baseline needs --db postgres://... (a database it may create the table perch_bench_direct in)")

func newPGTarget(ctx context.Context, dsn string, workers int) (*pgTarget, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres baseline: %w", err)
	}
	cfg.MaxConns = int32(min(workers, 256))
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres baseline: %w", err)
	}
	if _, err := pool.Exec(ctx, pgDirectTable); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres baseline: create table: %w", err)
	}
	// Open every connection before the load, as the edges' are.
	conns := make([]*pgxpool.Conn, 0, cfg.MaxConns)
	for range cfg.MaxConns {
		c, err := pool.Acquire(ctx)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}
	return &pgTarget{pool: pool}, nil
}

func (t *pgTarget) do(w *worker, p *plan, o *op, deadline time.Time) outcome {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	w.body = p.writeBody(w.body[:0], o)
	out := outcome{out: len(w.body)}
	id := "pg-" + o.key
	if o.kind == KindPut {
		id = p.ids[o.doc]
	}
	if _, err := t.pool.Exec(ctx, pgUpsert, p.s.Collection, id, string(w.body)); err != nil {
		out.err = dbError{err}
		return out
	}
	out.status = 200
	return out
}

func (t *pgTarget) connections() int64 { return t.pool.Stat().NewConnsCount() }

func (t *pgTarget) close() { t.pool.Close() }

// lockedBuffer collects a process's output while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
