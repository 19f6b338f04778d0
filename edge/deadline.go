package edge

import (
	"errors"
	"os"
	"sync"
	"time"
)

// lazyDeadline is one direction (reads or writes) of a connection's deadline, set on the
// connection lazily.
//
// The HTTP server moves both deadlines on every request of a kept-alive connection: the read
// deadline to the idle timeout while it waits for the next request, then to the header
// timeout once its first byte came, and the write deadline before the answer. Each move
// re-arms a timer of the runtime's poller, a cost a cache hit notices. Almost every move is
// to a later time, though, and a deadline that fires early does no harm if it is then moved
// to the one asked for: so a later deadline is only recorded, and the one armed on the
// connection is moved to it when it fires (extend), once per timeout at most instead of on
// every request. An earlier deadline, or one already past, is armed at once. A timeout is
// reported exactly when the deadline last asked for has passed.
type lazyDeadline struct {
	mu sync.Mutex
	// want is the deadline last asked for, armed the one set on the connection; zero: none.
	want, armed time.Time
}

// set asks for deadline t (zero: none), arming it with arm only when it is earlier than
// the one armed.
func (d *lazyDeadline) set(t time.Time, arm func(time.Time) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.want = t
	if t.IsZero() || (!d.armed.IsZero() && !t.Before(d.armed)) {
		// None, or no earlier than the one armed: that one fires first, and extend moves
		// it then.
		return nil
	}
	d.armed = t
	return arm(t)
}

// extend is called when the armed deadline fired: it reports whether the timeout is real
// (the deadline asked for has passed), and otherwise arms the one asked for, for the caller
// to go on.
func (d *lazyDeadline) extend(arm func(time.Time) error) (timedOut bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.want.IsZero() && !time.Now().Before(d.want) {
		return true
	}
	d.armed = d.want
	return arm(d.want) != nil
}

// deadlineExceeded reports whether err is that of a deadline that fired.
func deadlineExceeded(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func (c *shieldConn) SetReadDeadline(t time.Time) error {
	return c.rd.set(t, c.Conn.SetReadDeadline)
}

func (c *shieldConn) SetWriteDeadline(t time.Time) error {
	return c.wd.set(t, c.Conn.SetWriteDeadline)
}

func (c *shieldConn) SetDeadline(t time.Time) error {
	return errors.Join(c.SetReadDeadline(t), c.SetWriteDeadline(t))
}

// Read reads from the connection; a read deadline that fired before the one asked for is
// moved to it, and the read goes on.
func (c *shieldConn) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		if n > 0 || err == nil || !deadlineExceeded(err) || c.rd.extend(c.Conn.SetReadDeadline) {
			return n, err
		}
	}
}

// Write writes to the connection; a write deadline that fired before the one asked for is
// moved to it, and the rest of p is written.
func (c *shieldConn) Write(p []byte) (int, error) {
	written := 0
	for {
		n, err := c.Conn.Write(p[written:])
		written += n
		if err == nil || !deadlineExceeded(err) || c.wd.extend(c.Conn.SetWriteDeadline) {
			return written, err
		}
	}
}
