package edge

import (
	"errors"
	"sync"
)

// workGate admits the work that uses the cache outside of requests: the handlers of the NATS
// subscriptions (change events, outcomes, other edges' fills) and the background fills that
// stale answers start. An edge that stops unsubscribes, then shuts the gate, which waits
// for the work admitted, and only then closes the cache: work still under way would
// otherwise reach ristretto after it closed, which panics or blocks. The server's requests
// are not admitted here: the server has shut down before.
type workGate struct {
	mu     sync.RWMutex
	closed bool
}

// errStopping is what background work that came too late returns.
var errStopping = errors.New("edge stopping")

// enter admits work, or reports false once the gate is shut. Admitted work calls leave when
// done; it may hand that call to a goroutine it starts, but must not enter again before.
func (g *workGate) enter() bool {
	g.mu.RLock()
	if g.closed {
		g.mu.RUnlock()
		return false
	}
	return true
}

func (g *workGate) leave() { g.mu.RUnlock() }

// shut waits for the work admitted and admits no more. It may be called more than once.
func (g *workGate) shut() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}
