package ratelimit

import (
	"time"

	"github.com/nats-io/nats.go"
)

// Subject is the NATS subject on which the limiters of a fleet exchange usage.
const Subject = "perch.limits.usage"

// Transport carries usage messages between the limiters of a fleet: a broadcast, where
// every message published by any limiter reaches every subscribed limiter, the sender
// included or not. Delivery may drop or delay messages; the limiters tolerate it (a peer
// not heard from for three sync intervals is taken for gone).
type Transport interface {
	// Publish sends msg to every subscriber. It must not keep msg after it returns, and
	// should not block for long: the limiter calls it from its sync loop, once per message
	// of a round. An error is counted and logged, and the round goes on.
	Publish(msg []byte) error
	// Subscribe starts delivering every message published by any limiter to deliver, one
	// call at a time; msg is valid only during the call. stop ends delivery (a call in
	// progress may still finish).
	Subscribe(deliver func(msg []byte)) (stop func(), err error)
}

// Flusher is a Transport that can wait until what it published has left: a stopping limiter
// calls Flush after its goodbye, so that the goodbye is not lost when the caller closes the
// connection next.
type Flusher interface {
	Flush() error
}

// NATSTransport is a Transport over plain NATS publish/subscribe: no JetStream, since a lost
// usage message is replaced by the next one within a sync interval.
type NATSTransport struct {
	nc      *nats.Conn
	subject string
}

var (
	_ Transport = (*NATSTransport)(nil)
	_ Flusher   = (*NATSTransport)(nil)
)

// NewNATSTransport returns a transport on nc, using subject (Subject when empty). The
// caller owns nc; closing it stops the transport.
func NewNATSTransport(nc *nats.Conn, subject string) *NATSTransport {
	if subject == "" {
		subject = Subject
	}
	return &NATSTransport{nc: nc, subject: subject}
}

// Publish copies msg into the connection's buffer; it returns at once.
func (t *NATSTransport) Publish(msg []byte) error { return t.nc.Publish(t.subject, msg) }

// Flush waits, at most a second, until the server has everything published so far.
func (t *NATSTransport) Flush() error { return t.nc.FlushTimeout(time.Second) }

// Subscribe delivers from one NATS subscription; NATS calls deliver from one goroutine.
func (t *NATSTransport) Subscribe(deliver func(msg []byte)) (func(), error) {
	sub, err := t.nc.Subscribe(t.subject, func(m *nats.Msg) { deliver(m.Data) })
	if err != nil {
		return nil, err
	}
	return func() { _ = sub.Unsubscribe() }, nil
}
