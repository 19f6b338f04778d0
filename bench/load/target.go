package load

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// target is the system a phase loads: the edges, or a baseline.
type target interface {
	// do sends o and returns its outcome; the outcome's body is valid until the worker's
	// next do. Safe for concurrent use by distinct workers.
	do(w *worker, p *plan, o *op, deadline time.Time) outcome
	// connections returns the number of connections opened so far.
	connections() int64
	close()
}

// outcome is what became of one request.
type outcome struct {
	status     int   // 0 when err is set
	err        error // a transport error: no answer
	retryAfter bool  // the answer carries Retry-After
	body       []byte
	in, out    int // body bytes received and sent
}

// httpTarget sends to one or more base URLs in turn, each through a fasthttp.HostClient
// with up to Workers connections.
type httpTarget struct {
	clients  []*fasthttp.HostClient
	hosts    []string
	dials    atomic.Int64
	next     atomic.Uint64
	apiKey   string
	newConns bool // new-connection mode: one connection per request
}

// httpWorker is a worker's request and response, reused for every request it sends.
type httpWorker struct {
	req  *fasthttp.Request
	resp *fasthttp.Response
}

func newHTTPTarget(bases []string, workers int, timeout time.Duration, newConns bool, apiKey string) (*httpTarget, error) {
	t := &httpTarget{apiKey: apiKey, newConns: newConns}
	for _, b := range bases {
		u, err := url.Parse(b)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("target %q: want a base URL such as http://127.0.0.1:8081", b)
		}
		if u.Path != "" && u.Path != "/" {
			return nil, fmt.Errorf("target %q: a base URL has no path", b)
		}
		addr := u.Host
		if u.Port() == "" {
			addr += map[string]string{"http": ":80", "https": ":443"}[u.Scheme]
		}
		hc := &fasthttp.HostClient{
			Addr:                      addr,
			Name:                      "perch-bench",
			IsTLS:                     u.Scheme == "https",
			MaxConns:                  workers,
			MaxIdemponentCallAttempts: 1, // a retry would hide an error
			ReadTimeout:               timeout,
			WriteTimeout:              timeout,
			MaxConnWaitTimeout:        timeout,
			MaxIdleConnDuration:       time.Minute,
			ReadBufferSize:            16 << 10,
			Dial: func(addr string) (net.Conn, error) {
				t.dials.Add(1)
				return fasthttp.DialTimeout(addr, timeout)
			},
		}
		if hc.IsTLS {
			hc.TLSConfig = &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
		}
		t.clients = append(t.clients, hc)
		t.hosts = append(t.hosts, u.Host)
	}
	if len(t.clients) == 0 {
		return nil, errors.New("no target")
	}
	return t, nil
}

func (t *httpTarget) connections() int64 { return t.dials.Load() }

func (t *httpTarget) close() {
	for _, c := range t.clients {
		c.CloseIdleConnections()
	}
}

func (t *httpTarget) do(w *worker, p *plan, o *op, deadline time.Time) outcome {
	hw := w.http
	if hw == nil {
		hw = &httpWorker{req: &fasthttp.Request{}, resp: &fasthttp.Response{}}
		w.http = hw
	}
	req, resp := hw.req, hw.resp
	req.Reset()
	resp.Reset()
	i := int(t.next.Add(1) % uint64(len(t.clients)))
	w.path = p.path(w.path[:0], o)
	req.Header.SetRequestURIBytes(w.path)
	req.Header.SetHost(t.hosts[i])
	if t.apiKey != "" {
		req.Header.Set("X-Api-Key", t.apiKey)
	}
	if t.newConns {
		req.SetConnectionClose()
	}
	switch o.kind {
	case KindPut, KindCreate:
		req.Header.SetMethod(fasthttp.MethodPut)
	case KindPost:
		req.Header.SetMethod(fasthttp.MethodPost)
	default:
		req.Header.SetMethod(fasthttp.MethodGet)
	}
	if o.kind.write() {
		w.body = p.writeBody(w.body[:0], o)
		req.Header.SetContentType("application/json")
		req.Header.Set("Idempotency-Key", o.key)
		req.SetBodyRaw(w.body)
	}
	var out outcome
	if o.kind.write() {
		out.out = len(w.body)
	}
	if err := t.clients[i].DoDeadline(req, resp, deadline); err != nil {
		out.err = err
		return out
	}
	out.status = resp.StatusCode()
	out.body = resp.Body()
	out.in = len(out.body)
	out.retryAfter = len(resp.Header.Peek("Retry-After")) > 0
	return out
}

// errorKind names a transport error for the report's errors_by_status.
func errorKind(err error) string {
	var ne net.Error
	var de dbError
	switch {
	case errors.As(err, &de):
		return "database"
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, fasthttp.ErrDialTimeout):
		return "connect_timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection_reset"
	case errors.Is(err, fasthttp.ErrConnectionClosed), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection_closed"
	case errors.Is(err, fasthttp.ErrNoFreeConns):
		return "no_free_connections"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case strings.Contains(err.Error(), "dial"):
		return "connect"
	default:
		return "transport"
	}
}
