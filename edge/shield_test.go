package edge

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/internal/natstest"
	"github.com/perchhq/perch/internal/wire"
)

// servedEdge serves an edge on a loopback listener at addr ("127.0.0.1:0", "[::1]:0") until
// the test ends, its config adjusted by adjust, and returns it with its address.
func servedEdge(t *testing.T, addr string, adjust func(*Config)) (*Edge, string) {
	t.Helper()
	ns := natstest.Start(t)
	return servedEdgeOn(t, natstest.Connect(t, ns.URL()), addr, adjust)
}

func servedEdgeOn(t *testing.T, nc *nats.Conn, addr string, adjust func(*Config)) (*Edge, string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	e := newTestEdgeOn(t, nc, func(c *Config) {
		c.Stream.Replicas = 1
		if adjust != nil {
			adjust(c)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	select {
	case <-e.Serving():
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the edge did not start serving")
	}
	return e, ln.Addr().String()
}

// dial opens a raw connection to addr, closed when the test ends.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// Nothing in these tests waits long for an answer: a hang fails instead of stalling.
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return c
}

// roundTrip sends a raw request on c and reads the answer with br.
func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, raw string) *http.Response {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	return readResponse(t, br)
}

func readResponse(t *testing.T, br *bufio.Reader) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	return resp
}

// checkProblem checks that resp is an RFC 9457 problem with status and code, and the
// headers every problem has.
func checkProblem(t *testing.T, resp *http.Response, status int, code string) {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("Cache-Control %q", cc)
	}
	var p struct {
		Type, Title, Detail, Code string
		Status                    int
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("problem %s: %v", body, err)
	}
	if p.Status != status || p.Code != code || p.Type != "urn:perch:problem:"+code || p.Title == "" || p.Detail == "" {
		t.Fatalf("problem %+v, want status %d and code %s", p, status, code)
	}
}

// checkClosed checks that the server closed c, reading at most until a generous deadline.
func checkClosed(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := br.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("connection still open (read %d, %v)", n, err)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// eventually polls f until it is true, failing the test after a generous deadline.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("not so after 10s: %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// logRecords keeps the records of a logger, to count them.
type logRecords struct {
	mu   sync.Mutex
	recs []map[string]string
}

func (l *logRecords) logger() *slog.Logger { return slog.New(&recordingHandler{r: l}) }

// count is the number of records that have every attribute of want (the message under "msg",
// the level under "level").
func (l *logRecords) count(want map[string]string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
next:
	for _, r := range l.recs {
		for k, v := range want {
			if r[k] != v {
				continue next
			}
		}
		n++
	}
	return n
}

type recordingHandler struct {
	r     *logRecords
	attrs []slog.Attr
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	m := map[string]string{"msg": r.Message, "level": r.Level.String()}
	for _, a := range h.attrs {
		m[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	h.r.mu.Lock()
	h.r.recs = append(h.r.recs, m)
	h.r.mu.Unlock()
	return nil
}

func (h *recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordingHandler{r: h.r, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *recordingHandler) WithGroup(string) slog.Handler { return h }

// checkLoggedOnce checks that the answers with status were logged n times, at debug level,
// and that fasthttp logged nothing of them.
func checkLoggedOnce(t *testing.T, logs *logRecords, status string, n int) {
	t.Helper()
	if got := logs.count(map[string]string{"status": status}); got != n {
		t.Errorf("%s answers logged %d times, want %d", status, got, n)
	}
	if got := logs.count(map[string]string{"status": status, "level": "DEBUG"}); got != n {
		t.Errorf("%s answers logged above debug level", status)
	}
	if got := logs.count(map[string]string{"source": "fasthttp"}); got != 0 {
		t.Errorf("fasthttp logged %d records", got)
	}
}

func TestHeaderAndBodyLimits(t *testing.T) {
	var logs logRecords
	_, addr := servedEdge(t, "127.0.0.1:0", func(c *Config) {
		c.MaxBodyBytes = 1 << 10
		c.Logger = logs.logger()
	})
	t.Cleanup(func() {
		checkLoggedOnce(t, &logs, "431", 1)
		checkLoggedOnce(t, &logs, "413", 2)
	})
	pad := func(n int) string { return "X-Pad: " + strings.Repeat("p", n) + "\r\n" }

	t.Run("headers within the limit", func(t *testing.T) {
		c := dial(t, addr)
		br := bufio.NewReader(c)
		resp := roundTrip(t, c, br, "GET /healthz HTTP/1.1\r\nHost: x\r\n"+pad(12<<10)+"\r\n")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
	t.Run("headers over the limit", func(t *testing.T) {
		// Default MaxHeaderBytes: 16 KiB.
		c := dial(t, addr)
		br := bufio.NewReader(c)
		resp := roundTrip(t, c, br, "GET /healthz HTTP/1.1\r\nHost: x\r\n"+pad(20<<10)+"\r\n")
		checkProblem(t, resp, 431, "headers_too_large")
		if !resp.Close {
			t.Fatal("431 without Connection: close")
		}
		checkClosed(t, c, br)
	})
	t.Run("body over the limit, by Content-Length", func(t *testing.T) {
		c := dial(t, addr)
		br := bufio.NewReader(c)
		resp := roundTrip(t, c, br, "PUT /v1/collections/c/docs/d HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
			"Content-Length: 2048\r\n\r\n{\"a\":\""+strings.Repeat("a", 2040)+"\"}")
		checkProblem(t, resp, 413, "body_too_large")
		if !resp.Close {
			t.Fatal("413 without Connection: close")
		}
		checkClosed(t, c, br)
	})
	t.Run("body over the limit, chunked", func(t *testing.T) {
		c := dial(t, addr)
		br := bufio.NewReader(c)
		chunk := strings.Repeat("a", 600)
		resp := roundTrip(t, c, br, "PUT /v1/collections/c/docs/d HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
			"Transfer-Encoding: chunked\r\n\r\n"+fmt.Sprintf("%x\r\n%s\r\n%x\r\n%s\r\n", len(chunk), chunk, len(chunk), chunk))
		checkProblem(t, resp, 413, "body_too_large")
		if !resp.Close {
			t.Fatal("413 without Connection: close")
		}
		checkClosed(t, c, br)
	})
}

// trickle writes s to c one byte every interval, then keeps writing pad bytes, until a write
// fails or stop is closed.
func trickle(c net.Conn, s string, pad byte, interval time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for i := 0; ; i++ {
		b := pad
		if i < len(s) {
			b = s[i]
		}
		if _, err := c.Write([]byte{b}); err != nil {
			return
		}
		select {
		case <-t.C:
		case <-stop:
			return
		}
	}
}

// TestSlowClients: a client that trickles its headers or its body is cut off with 408 within
// the configured bound, on a new connection and on a kept-alive one; an idle kept-alive
// connection is closed.
func TestSlowClients(t *testing.T) {
	const bound = 300 * time.Millisecond
	// slack is generous: the bounds are checked, not the precision of timers.
	const slack = 5 * time.Second
	var logs logRecords
	_, addr := servedEdge(t, "127.0.0.1:0", func(c *Config) {
		c.ReadHeaderTimeout = bound
		c.ReadBodyTimeout = bound
		c.IdleTimeout = bound
		c.Logger = logs.logger()
	})
	t.Cleanup(func() { checkLoggedOnce(t, &logs, "408", 3) })
	cutOff := func(t *testing.T, c net.Conn, br *bufio.Reader, within time.Duration, trickled string, pad byte) {
		t.Helper()
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			trickle(c, trickled, pad, 10*time.Millisecond, stop)
		}()
		defer wg.Wait()
		defer close(stop)
		start := time.Now()
		resp := readResponse(t, br)
		checkProblem(t, resp, 408, "request_timeout")
		if !resp.Close {
			t.Fatal("408 without Connection: close")
		}
		checkClosed(t, c, br)
		if took := time.Since(start); took > within {
			t.Fatalf("cut off after %s, bound %s", took, within)
		}
	}

	t.Run("trickled headers", func(t *testing.T) {
		c := dial(t, addr)
		cutOff(t, c, bufio.NewReader(c), bound+slack, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ", 'p')
	})
	t.Run("trickled headers on a kept-alive connection", func(t *testing.T) {
		c := dial(t, addr)
		br := bufio.NewReader(c)
		if resp := roundTrip(t, c, br, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 || resp.Close {
			t.Fatalf("first request: %d, close %v", resp.StatusCode, resp.Close)
		}
		cutOff(t, c, br, bound+slack, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ", 'p')
	})
	t.Run("trickled body", func(t *testing.T) {
		c := dial(t, addr)
		if _, err := io.WriteString(c, "PUT /v1/collections/c/docs/d HTTP/1.1\r\nHost: x\r\n"+
			"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		cutOff(t, c, bufio.NewReader(c), 2*bound+slack, `{"a":"`, 'a')
	})
	t.Run("idle kept-alive connection", func(t *testing.T) {
		c := dial(t, addr)
		br := bufio.NewReader(c)
		if resp := roundTrip(t, c, br, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		start := time.Now()
		checkClosed(t, c, br)
		if took := time.Since(start); took > bound+slack {
			t.Fatalf("idle connection closed after %s", took)
		}
	})
}

// TestConnsPerIP: a connection beyond MaxConnsPerIP gets a 429 problem and is closed; once one
// of the others closes, a new one is served; trusted proxies are not counted.
func TestConnsPerIP(t *testing.T) {
	e, addr := servedEdge(t, "127.0.0.1:0", func(c *Config) { c.MaxConnsPerIP = 2 })
	open := func() (net.Conn, *bufio.Reader, *http.Response) {
		c := dial(t, addr)
		br := bufio.NewReader(c)
		return c, br, roundTrip(t, c, br, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	}
	first, _, r1 := open()
	_, _, r2 := open()
	if r1.StatusCode != 200 || r2.StatusCode != 200 {
		t.Fatalf("connections within the cap: %d %d", r1.StatusCode, r2.StatusCode)
	}
	c, br, resp := open()
	checkProblem(t, resp, 429, "too_many_connections")
	if resp.Header.Get("Retry-After") != "1" || !resp.Close || resp.Header.Get("Date") == "" {
		t.Fatalf("429 headers %v", resp.Header)
	}
	checkClosed(t, c, br)
	if n := counterValue(t, e.shield.refusedTotal[refusedConns]); n != 1 {
		t.Fatalf("refused connections counted %v", n)
	}

	first.Close()
	eventually(t, "a connection is served after another closed", func() bool {
		_, _, resp := open()
		return resp.StatusCode == 200
	})

	t.Run("trusted proxy", func(t *testing.T) {
		_, addr := servedEdge(t, "127.0.0.1:0", func(c *Config) {
			c.MaxConnsPerIP = 1
			c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		})
		for i := range 3 {
			c := dial(t, addr)
			if resp := roundTrip(t, c, bufio.NewReader(c), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 {
				t.Fatalf("connection %d from a trusted proxy: %d", i, resp.StatusCode)
			}
		}
	})
}

// TestIPLists: refused clients get a 403 problem before anything else; deny wins over allow;
// the client behind a trusted proxy is the one filtered; /healthz and /readyz are exempt.
func TestIPLists(t *testing.T) {
	prefixes := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, p := range s {
			out = append(out, netip.MustParsePrefix(p))
		}
		return out
	}
	get := func(t *testing.T, addr, path string, headers ...string) (*http.Response, net.Conn, *bufio.Reader) {
		c := dial(t, addr)
		br := bufio.NewReader(c)
		req := "GET " + path + " HTTP/1.1\r\nHost: x\r\n"
		for _, h := range headers {
			req += h + "\r\n"
		}
		return roundTrip(t, c, br, req+"\r\n"), c, br
	}

	t.Run("allow list", func(t *testing.T) {
		e, addr := servedEdge(t, "127.0.0.1:0", func(c *Config) { c.AllowIPs = prefixes("192.0.2.0/24") })
		resp, c, br := get(t, addr, "/v1/collections/c/docs/d")
		checkProblem(t, resp, 403, "ip_not_allowed")
		if !resp.Close {
			t.Fatal("a refused client's connection was kept")
		}
		checkClosed(t, c, br)
		for _, path := range []string{"/healthz", "/readyz"} {
			if resp, _, _ := get(t, addr, path); resp.StatusCode != 200 {
				t.Fatalf("%s from outside the allow list: %d", path, resp.StatusCode)
			}
		}
		if n := counterValue(t, e.shield.refusedTotal[refusedIP]); n != 1 {
			t.Fatalf("refusals counted %v", n)
		}
	})
	t.Run("deny wins", func(t *testing.T) {
		_, addr := servedEdge(t, "127.0.0.1:0", func(c *Config) {
			c.AllowIPs = prefixes("127.0.0.0/8")
			c.DenyIPs = prefixes("127.0.0.1/32")
		})
		resp, _, _ := get(t, addr, "/v1/edges")
		checkProblem(t, resp, 403, "ip_not_allowed")
	})
	t.Run("behind a trusted proxy", func(t *testing.T) {
		_, addr := servedEdge(t, "127.0.0.1:0", func(c *Config) {
			c.TrustedProxies = prefixes("127.0.0.1/32")
			c.DenyIPs = prefixes("203.0.113.0/24", "2001:db8:bad::/48")
		})
		for _, tc := range []struct {
			xff    string
			status int
		}{
			{"203.0.113.9", 403},
			{"198.51.100.1, 203.0.113.9", 403},
			{"203.0.113.9, 198.51.100.1", 200}, // the client is the right-most, not denied
			{"[2001:db8:bad::1]:4711", 403},
			{"2001:db8:900d::1", 200},
			{"", 200}, // the proxy's own request
		} {
			var h []string
			if tc.xff != "" {
				h = append(h, "X-Forwarded-For: "+tc.xff)
			}
			resp, c, br := get(t, addr, "/v1/edges", h...)
			if tc.status == 200 {
				if resp.StatusCode != 200 {
					t.Fatalf("X-Forwarded-For %q: %d", tc.xff, resp.StatusCode)
				}
				continue
			}
			checkProblem(t, resp, tc.status, "ip_not_allowed")
			// The connection is the proxy's, shared by other clients: it stays open.
			if resp.Close {
				t.Fatalf("X-Forwarded-For %q: the proxy's connection was closed", tc.xff)
			}
			if resp := roundTrip(t, c, br, "GET /v1/edges HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 {
				t.Fatalf("next request on the proxy's connection: %d", resp.StatusCode)
			}
		}
	})
	t.Run("IPv6", func(t *testing.T) {
		if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		} else {
			ln.Close()
		}
		_, addr := servedEdge(t, "[::1]:0", func(c *Config) { c.DenyIPs = prefixes("::1/128") })
		resp, _, _ := get(t, addr, "/v1/edges")
		checkProblem(t, resp, 403, "ip_not_allowed")
		_, addr = servedEdge(t, "[::1]:0", func(c *Config) { c.AllowIPs = prefixes("::/0") })
		if resp, _, _ := get(t, addr, "/v1/edges"); resp.StatusCode != 200 {
			t.Fatalf("allowed IPv6 client: %d", resp.StatusCode)
		}
	})
}

func TestClientIP(t *testing.T) {
	peer4 := &net.TCPAddr{IP: net.ParseIP("10.0.0.2"), Port: 4000} // 16-byte form: IPv4-mapped
	e := newTestEdgeOn(t, natstest.Connect(t, natstest.Start(t).URL()), func(c *Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	})
	for _, tc := range []struct {
		name string
		peer *net.TCPAddr
		xff  []string
		want string
	}{
		{"untrusted peer", &net.TCPAddr{IP: net.ParseIP("192.0.2.1")}, []string{"203.0.113.5"}, "192.0.2.1"},
		{"trusted peer without header", peer4, nil, "10.0.0.2"},
		{"one client", peer4, []string{"203.0.113.5"}, "203.0.113.5"},
		{"spoofed left part", peer4, []string{"198.51.100.1, 203.0.113.5"}, "203.0.113.5"},
		{"chain of proxies", peer4, []string{"203.0.113.5, 10.1.1.1,10.2.2.2"}, "203.0.113.5"},
		{"all trusted", peer4, []string{"10.0.0.3, 10.0.0.4"}, "10.0.0.3"},
		{"several lines", peer4, []string{"198.51.100.1", "203.0.113.5, 10.0.0.9"}, "203.0.113.5"},
		{"ports", peer4, []string{"203.0.113.5:4711"}, "203.0.113.5"},
		{"IPv6 with port", peer4, []string{"[2001:db8::1]:443"}, "2001:db8::1"},
		{"IPv6", peer4, []string{"2001:db8::2"}, "2001:db8::2"},
		{"IPv4-mapped", peer4, []string{"::ffff:203.0.113.9"}, "203.0.113.9"},
		{"empty elements", peer4, []string{" , ,203.0.113.5 ,\t"}, "203.0.113.5"},
		{"unknown last", peer4, []string{"203.0.113.5, unknown"}, "10.0.0.2"},
		{"unknown behind a proxy", peer4, []string{"203.0.113.5, unknown, 10.0.0.7"}, "10.0.0.7"},
		{"zone", peer4, []string{"fe80::1%eth0"}, "10.0.0.2"},
		{"bracketed IPv4", peer4, []string{"[203.0.113.5]"}, "10.0.0.2"},
		{"bad port", peer4, []string{"203.0.113.5:http"}, "10.0.0.2"},
		{"garbage", peer4, []string{"\x00\xff;<script>"}, "10.0.0.2"},
		{"IPv6 peer", &net.TCPAddr{IP: net.ParseIP("fd00::5")}, []string{"2001:db8::3"}, "2001:db8::3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ctx fasthttp.RequestCtx
			ctx.SetRemoteAddr(tc.peer)
			for _, v := range tc.xff {
				ctx.Request.Header.Add("X-Forwarded-For", v)
			}
			if got := e.clientIP(&ctx); got != netip.MustParseAddr(tc.want) {
				t.Fatalf("client %v, want %s", got, tc.want)
			}
		})
	}
	t.Run("not TCP", func(t *testing.T) {
		var ctx fasthttp.RequestCtx
		ctx.SetRemoteAddr(&net.UnixAddr{Name: "/x", Net: "unix"})
		if got := e.clientIP(&ctx); got.IsValid() {
			t.Fatalf("client %v of a unix socket", got)
		}
	})
	// A trailer section is the client's, past every proxy: its X-Forwarded-For never counts,
	// whether fasthttp takes it or not.
	for _, trailer := range []string{"", "Trailer: X-Forwarded-For\r\n"} {
		t.Run("trailer "+strings.TrimSpace(trailer), func(t *testing.T) {
			var ctx fasthttp.RequestCtx
			ctx.SetRemoteAddr(peer4)
			raw := "POST /v1/collections/c/docs HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.5\r\n" + trailer +
				"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-Forwarded-For: 198.51.100.66\r\n\r\n"
			if err := ctx.Request.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
				return // fasthttp refuses such a trailer outright (so far)
			}
			if got := e.clientIP(&ctx); got == netip.MustParseAddr("198.51.100.66") {
				t.Fatalf("the trailer named the client %v", got)
			}
		})
	}
}

// TestShieldAllocs: the client address and the lists cost no allocation.
func TestShieldAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector")
	}
	var many []netip.Prefix
	for i := range 100 {
		many = append(many, netip.MustParsePrefix(fmt.Sprintf("198.18.%d.0/24", i)))
	}
	e := newTestEdgeOn(t, natstest.Connect(t, natstest.Start(t).URL()), func(c *Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
		c.DenyIPs = many
	})
	cacheDocument(t, e, "doc", 100)
	ctx := getRequest("/v1/collections/bench/docs/doc")
	ctx.SetRemoteAddr(&net.TCPAddr{IP: net.ParseIP("10.0.0.2")})
	ctx.Request.Header.Add("X-Forwarded-For", "198.51.100.1, 203.0.113.5")
	want := netip.MustParseAddr("203.0.113.5")
	if allocs := testing.AllocsPerRun(200, func() {
		if e.clientIP(ctx) != want {
			t.Fatal("wrong client")
		}
	}); allocs != 0 {
		t.Fatalf("clientIP through a trusted proxy allocates %.1f times", allocs)
	}
	// A hit behind the lists allocates nothing either.
	e.serveHTTP(ctx)
	if ctx.Response.StatusCode() != 200 {
		t.Fatalf("hit: %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	if allocs := testing.AllocsPerRun(200, func() {
		ctx.Response.Reset()
		e.serveHTTP(ctx)
	}); allocs != 0 {
		t.Fatalf("a hit through the IP lists allocates %.1f times", allocs)
	}
}

func TestPrefixSet(t *testing.T) {
	var ps []netip.Prefix
	for i := range 40 {
		ps = append(ps, netip.MustParsePrefix(fmt.Sprintf("10.%d.0.0/16", i)))
	}
	ps = append(ps,
		netip.MustParsePrefix("::ffff:192.0.2.0/120"), // IPv4-mapped: 192.0.2.0/24
		netip.MustParsePrefix("2001:db8::1/32"),       // not masked
		netip.MustParsePrefix("203.0.113.7/32"))
	for _, n := range []int{len(ps), 3} { // a map, then a scan
		set := newPrefixSet(ps[len(ps)-n:])
		for _, tc := range []struct {
			addr string
			in   bool
		}{
			{"192.0.2.200", true},
			{"2001:db8:ffff::1", true},
			{"203.0.113.7", true},
			{"203.0.113.8", false},
			{"2001:db9::1", false},
			{"10.39.255.255", n > 3},
			{"10.40.0.0", false},
		} {
			if got := set.contains(netip.MustParseAddr(tc.addr)); got != tc.in {
				t.Errorf("set of %d: contains(%s) = %v", n, tc.addr, got)
			}
		}
		if set.contains(netip.Addr{}) {
			t.Error("the zero Addr is in a set")
		}
	}
}

// stallCore answers the core's reads on nc only once release is closed (with a not_found
// problem); it reports each read it holds on held.
func stallCore(t *testing.T, nc *nats.Conn) (held <-chan struct{}, release chan struct{}) {
	t.Helper()
	h := make(chan struct{}, 64)
	release = make(chan struct{})
	var wg sync.WaitGroup
	sub, err := nc.Subscribe(wire.ReadSubject, func(m *nats.Msg) {
		h <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-release
			_ = m.Respond([]byte(`{"problem":{"type":"urn:perch:problem:not_found","title":"Not Found","status":404,"code":"not_found"}}`))
		}()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sub.Unsubscribe()
		wg.Wait()
	})
	return h, release
}

// TestShedReads: beyond MaxCoreReads a miss is answered 503 overloaded with Retry-After, and a
// hit is still served.
func TestShedReads(t *testing.T) {
	ns := natstest.Start(t)
	nc := natstest.Connect(t, ns.URL())
	held, release := stallCore(t, natstest.Connect(t, ns.URL()))
	var logs logRecords
	e, addr := servedEdgeOn(t, nc, "127.0.0.1:0", func(c *Config) {
		c.MaxCoreReads = 1
		c.ReadTimeout = 10 * time.Second
		c.Logger = logs.logger()
	})
	cacheDocument(t, e, "hit", 100)
	url := "http://" + addr + "/v1/collections/bench/docs/"

	first := make(chan int, 1)
	go func() {
		code, _, err := fasthttp.Get(nil, url+"miss-1")
		if err != nil {
			t.Error(err)
		}
		first <- code
	}()
	select {
	case <-held:
	case <-time.After(10 * time.Second):
		t.Fatal("the first miss did not reach the core")
	}

	c := dial(t, addr)
	br := bufio.NewReader(c)
	resp := roundTrip(t, c, br, "GET /v1/collections/bench/docs/miss-2 HTTP/1.1\r\nHost: x\r\n\r\n")
	checkProblem(t, resp, 503, "overloaded")
	if resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	if resp := roundTrip(t, c, br, "GET /v1/collections/bench/docs/hit HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 200 ||
		resp.Header.Get("Cache-Status") != "perch; hit" {
		t.Fatalf("a hit at the bound: %d %q", resp.StatusCode, resp.Header.Get("Cache-Status"))
	}
	if n := counterValue(t, e.shield.shedTotal[shedRead]); n != 1 {
		t.Fatalf("shed reads counted %v", n)
	}
	// Logged once at debug level, and warned of (at most every warnInterval).
	if n := logs.count(map[string]string{"code": "overloaded"}); n != 1 {
		t.Fatalf("the shed read logged %d times", n)
	}
	if n := logs.count(map[string]string{"code": "overloaded", "level": "DEBUG"}); n != 1 {
		t.Fatal("the shed read logged above debug level")
	}
	if n := logs.count(map[string]string{"level": "WARN", "kind": "read"}); n != 1 {
		t.Fatalf("%d warnings of shedding", n)
	}

	close(release)
	if code := <-first; code != 404 {
		t.Fatalf("the held miss: %d", code)
	}
	eventually(t, "the read left the bound", func() bool { return e.shield.reads.n.Load() == 0 })
	if resp := roundTrip(t, c, br, "GET /v1/collections/bench/docs/miss-3 HTTP/1.1\r\nHost: x\r\n\r\n"); resp.StatusCode != 404 {
		t.Fatalf("a miss after the bound freed: %d", resp.StatusCode)
	}
}

// TestShedWrites: beyond MaxPendingWrites a write is answered 503 overloaded with Retry-After,
// and not queued.
func TestShedWrites(t *testing.T) {
	e, addr := servedEdge(t, "127.0.0.1:0", func(c *Config) {
		c.MaxPendingWrites = 1
		c.WriteTimeout = 10 * time.Second
	})
	url := "http://" + addr + "/v1/collections/c/docs/"
	put := func(id string) (int, error) {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.Header.SetMethod("PUT")
		req.SetRequestURI(url + id)
		req.Header.SetContentType("application/json")
		req.SetBodyString(`{"a":1}`)
		err := fasthttp.DoTimeout(req, resp, 20*time.Second)
		return resp.StatusCode(), err
	}
	// No core runs: the first write is stored and waits for its outcome, which the test
	// delivers once the second was refused.
	first := make(chan int, 1)
	go func() {
		code, err := put("one")
		if err != nil {
			t.Error(err)
		}
		first <- code
	}()
	var writeID string
	eventually(t, "the first write waits for its outcome", func() bool {
		e.writes.mu.Lock()
		defer e.writes.mu.Unlock()
		for id := range e.writes.waiting {
			writeID = id
		}
		return writeID != ""
	})

	c := dial(t, addr)
	br := bufio.NewReader(c)
	resp := roundTrip(t, c, br, "PUT /v1/collections/c/docs/two HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"+
		"Content-Length: 7\r\n\r\n{\"a\":2}")
	checkProblem(t, resp, 503, "overloaded")
	if resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("Retry-After %q", resp.Header.Get("Retry-After"))
	}
	if n := counterValue(t, e.shield.shedTotal[shedWrite]); n != 1 {
		t.Fatalf("shed writes counted %v", n)
	}
	e.writes.mu.Lock()
	queued := len(e.writes.waiting)
	e.writes.mu.Unlock()
	if queued != 1 {
		t.Fatalf("%d writes waiting, want the first only", queued)
	}

	e.writes.deliver(wire.Outcome{WriteID: writeID, Status: 204})
	if code := <-first; code != 204 {
		t.Fatalf("the first write: %d", code)
	}
	eventually(t, "the write left the bound", func() bool { return e.shield.writes.n.Load() == 0 })
}

func TestShieldConfig(t *testing.T) {
	nc := natstest.Connect(t, natstest.Start(t).URL())
	for _, tc := range []struct {
		name   string
		adjust func(*Config)
		ok     bool
	}{
		{"defaults", func(*Config) {}, true},
		{"small headers", func(c *Config) { c.MaxHeaderBytes = 512 }, false},
		{"invalid prefix", func(c *Config) { c.DenyIPs = []netip.Prefix{{}} }, false},
		{"no bounds", func(c *Config) { c.MaxConnsPerIP, c.MaxCoreReads, c.MaxPendingWrites = -1, -1, -1 }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Region = "test"
			tc.adjust(&cfg)
			e, err := New(cfg, nc, nil)
			if (err == nil) != tc.ok {
				t.Fatalf("New: %v", err)
			}
			if e != nil {
				e.Close()
			}
		})
	}
	var c Config
	c.Region = "test"
	if err := c.complete(); err != nil {
		t.Fatal(err)
	}
	d := DefaultConfig()
	if c.MaxHeaderBytes != d.MaxHeaderBytes || c.MaxConnsPerIP != d.MaxConnsPerIP || c.MaxCoreReads != d.MaxCoreReads ||
		c.MaxPendingWrites != d.MaxPendingWrites || c.ReadBodyTimeout != d.ReadBodyTimeout {
		t.Fatalf("zero values did not take the defaults: %+v", c)
	}
	if d.MaxHeaderBytes != 16<<10 || d.MaxConnsPerIP != 256 || d.MaxCoreReads != 1024 || d.MaxPendingWrites != 4096 {
		t.Fatalf("defaults changed: %+v", d)
	}
}
