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

	t.Run("moved later", func(t *testing.T) {
		c, _ := tcpPair(t)
		start := time.Now()
		if err := c.SetReadDeadline(start.Add(short)); err != nil {
			t.Fatal(err)
		}
		if err := c.SetReadDeadline(start.Add(long)); err != nil {
			t.Fatal(err)
		}
		err := readUntilError(c)
		took := time.Since(start)
		if !deadlineExceeded(err) {
			t.Fatalf("read ended with %v, want a timeout", err)
		}
		if took < long || took > long+slack {
			t.Fatalf("timed out after %s, the deadline was moved to %s", took, long)
		}
	})
	t.Run("moved later while a read waits", func(t *testing.T) {
		c, client := tcpPair(t)
		start := time.Now()
		if err := c.SetReadDeadline(start.Add(short)); err != nil {
			t.Fatal(err)
		}
		go func() {
			time.Sleep(short / 2)
			_ = c.SetReadDeadline(start.Add(long))
			time.Sleep(long)
			_, _ = io.WriteString(client, "late")
		}()
		err := readUntilError(c)
		took := time.Since(start)
		if !deadlineExceeded(err) || took < long || took > long+slack {
			t.Fatalf("read ended with %v after %s; want a timeout at %s", err, took, long)
		}
	})
	t.Run("moved earlier", func(t *testing.T) {
		c, _ := tcpPair(t)
		start := time.Now()
		if err := c.SetReadDeadline(start.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := c.SetReadDeadline(start.Add(short)); err != nil {
			t.Fatal(err)
		}
		err := readUntilError(c)
		if took := time.Since(start); !deadlineExceeded(err) || took < short || took > short+slack {
			t.Fatalf("read ended with %v after %s; want a timeout at %s", err, took, short)
		}
	})
	t.Run("cleared", func(t *testing.T) {
		c, client := tcpPair(t)
		if err := c.SetReadDeadline(time.Now().Add(short)); err != nil {
			t.Fatal(err)
		}
		if err := c.SetReadDeadline(time.Time{}); err != nil {
			t.Fatal(err)
		}
		go func() {
			time.Sleep(long)
			_, _ = io.WriteString(client, "x")
		}()
		var b [1]byte
		if n, err := c.Read(b[:]); n != 1 || err != nil {
			t.Fatalf("read after the deadline was cleared: %d, %v", n, err)
		}
	})
	t.Run("in the past", func(t *testing.T) {
		c, _ := tcpPair(t)
		if err := c.SetReadDeadline(time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { err := readUntilError(c); done <- err }()
		time.Sleep(short)
		if err := c.SetReadDeadline(time.Now()); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if !deadlineExceeded(err) {
				t.Fatalf("read ended with %v, want a timeout", err)
			}
		case <-time.After(slack):
			t.Fatal("a deadline in the past did not end the read waiting")
		}
	})
	t.Run("data before the deadline", func(t *testing.T) {
		c, client := tcpPair(t)
		if err := c.SetReadDeadline(time.Now().Add(short)); err != nil {
			t.Fatal(err)
		}
		// The armed deadline fires, the one asked for is an hour away: the read goes on and
		// gets what comes.
		if err := c.SetReadDeadline(time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		go func() {
			time.Sleep(long)
			_, _ = io.WriteString(client, "x")
		}()
		var b [1]byte
		if n, err := c.Read(b[:]); n != 1 || err != nil {
			t.Fatalf("read: %d, %v", n, err)
		}
	})
	t.Run("write moved later", func(t *testing.T) {
		// The client reads nothing: the server's writes fill the socket buffers and wait.
		c, _ := tcpPair(t)
		start := time.Now()
		if err := c.SetWriteDeadline(start.Add(short)); err != nil {
			t.Fatal(err)
		}
		if err := c.SetWriteDeadline(start.Add(long)); err != nil {
			t.Fatal(err)
		}
		chunk := make([]byte, 1<<20)
		var err error
		for err == nil {
			_, err = c.Write(chunk)
		}
		if took := time.Since(start); !deadlineExceeded(err) || took < long || took > long+slack {
			t.Fatalf("write ended with %v after %s; want a timeout at %s", err, took, long)
		}
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
