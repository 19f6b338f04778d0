package edge

import (
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection, the server's end wrapped as the
// edge's listener wraps it.
func tcpPair(tb testing.TB) (server *shieldConn, client net.Conn) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	c := <-accepted
	if c == nil {
		tb.Fatal("accept failed")
	}
	server = &shieldConn{Conn: c}
	tb.Cleanup(func() { _ = server.Close(); _ = client.Close() })
	return server, client
}

// readUntilError reads from c until a read fails, and returns its error.
func readUntilError(c net.Conn) error {
	var b [64]byte
	for {
		if _, err := c.Read(b[:]); err != nil {
			return err
		}
	}
}

// TestLazyDeadlines: the read and write deadlines of an accepted connection time out when the
// deadline last asked for passes, and not before, however they were moved: later (only
// recorded, and moved to when the armed one fires), earlier (armed at once), cleared, or
// into the past (a blocked read ends at once).
func TestLazyDeadlines(t *testing.T) {
	const short, long = 100 * time.Millisecond, 400 * time.Millisecond
	// slack bounds how late a timeout may come: generous, the bounds are what is checked.
	const slack = 5 * time.Second

	// setRead sets c's read deadline to each of ds in turn.
	setRead := func(t *testing.T, c net.Conn, ds ...time.Time) {
		t.Helper()
		for _, d := range ds {
			if err := c.SetReadDeadline(d); err != nil {
				t.Fatal(err)
			}
		}
	}
	// timesOut checks that err is a timeout that came at after start, or within slack of it.
	timesOut := func(t *testing.T, err error, start time.Time, after time.Duration) {
		t.Helper()
		if took := time.Since(start); !deadlineExceeded(err) || took < after || took > after+slack {
			t.Fatalf("ended with %v after %s; want a timeout at %s", err, took, after)
		}
	}
	// getsLate checks that a read of c gets what client writes after long.
	getsLate := func(t *testing.T, c, client net.Conn) {
		t.Helper()
		go func() {
			time.Sleep(long)
			_, _ = io.WriteString(client, "x")
		}()
		var b [1]byte
		if n, err := c.Read(b[:]); n != 1 || err != nil {
			t.Fatalf("read: %d, %v", n, err)
		}
	}

	t.Run("moved later", func(t *testing.T) {
		c, _ := tcpPair(t)
		start := time.Now()
		setRead(t, c, start.Add(short), start.Add(long))
		timesOut(t, readUntilError(c), start, long)
	})
	t.Run("moved later while a read waits", func(t *testing.T) {
		c, client := tcpPair(t)
		start := time.Now()
		setRead(t, c, start.Add(short))
		go func() {
			time.Sleep(short / 2)
			_ = c.SetReadDeadline(start.Add(long))
			time.Sleep(long)
			_, _ = io.WriteString(client, "late")
		}()
		timesOut(t, readUntilError(c), start, long)
	})
	t.Run("moved earlier", func(t *testing.T) {
		c, _ := tcpPair(t)
		start := time.Now()
		setRead(t, c, start.Add(time.Hour), start.Add(short))
		timesOut(t, readUntilError(c), start, short)
	})
	t.Run("cleared", func(t *testing.T) {
		c, client := tcpPair(t)
		setRead(t, c, time.Now().Add(short), time.Time{})
		getsLate(t, c, client)
	})
	t.Run("data before the deadline", func(t *testing.T) {
		// The armed deadline fires, the one asked for is an hour away: the read goes on and
		// gets what comes.
		c, client := tcpPair(t)
		setRead(t, c, time.Now().Add(short), time.Now().Add(time.Hour))
		getsLate(t, c, client)
	})
	t.Run("in the past", func(t *testing.T) {
		c, _ := tcpPair(t)
		setRead(t, c, time.Now().Add(time.Hour))
		done := make(chan error, 1)
		go func() { done <- readUntilError(c) }()
		time.Sleep(short)
		setRead(t, c, time.Now())
		select {
		case err := <-done:
			if !deadlineExceeded(err) {
				t.Fatalf("read ended with %v, want a timeout", err)
			}
		case <-time.After(slack):
			t.Fatal("a deadline in the past did not end the read waiting")
		}
	})
	t.Run("write moved later", func(t *testing.T) {
		// The client reads nothing: the server's writes fill the socket buffers and wait.
		c, _ := tcpPair(t)
		start := time.Now()
		for _, d := range []time.Time{start.Add(short), start.Add(long)} {
			if err := c.SetWriteDeadline(d); err != nil {
				t.Fatal(err)
			}
		}
		chunk := make([]byte, 1<<20)
		var err error
		for err == nil {
			_, err = c.Write(chunk)
		}
		timesOut(t, err, start, long)
	})
}

// BenchmarkRequestDeadlines is the deadlines the HTTP server sets on a kept-alive connection
// for each request (the idle wait, the headers' bound, the answer's write bound), on the
// connection as accepted (raw) and as the edge wraps it (lazy). Report lazy ÷ raw ns/op.
func BenchmarkRequestDeadlines(b *testing.B) {
	const idle, header, write = time.Minute, 10 * time.Second, 12 * time.Second
	s, _ := tcpPair(b)
	for _, bc := range []struct {
		name string
		c    net.Conn
	}{{"raw", s.Conn}, {"lazy", s}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				now := time.Now()
				_ = bc.c.SetReadDeadline(now.Add(idle))
				_ = bc.c.SetReadDeadline(now.Add(header))
				_ = bc.c.SetWriteDeadline(now.Add(write))
			}
		})
	}
}
