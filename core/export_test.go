package core

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/perchhq/perch/internal/wire"
)

// heldMsg is a delivered message for HandleGroup: settling it does nothing.
type heldMsg struct{ jetstream.Msg }

func (heldMsg) Ack() error                       { return nil }
func (heldMsg) Nak() error                       { return nil }
func (heldMsg) NakWithDelay(time.Duration) error { return nil }
func (heldMsg) InProgress() error                { return nil }
func (heldMsg) Term() error                      { return nil }
func (heldMsg) Subject() string                  { return "test" }
func (heldMsg) Data() []byte                     { return nil }
func (heldMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Timestamp: time.Now(), NumDelivered: 1}, nil
}

// HandleGroup runs a core's handleGroup on store over bs as one delivered group, in that
// order: a delivery order JetStream presents only after redeliveries, which a test cannot
// bring about on demand.
func HandleGroup(cfg Config, store Store, p int, bs []*wire.Batch) error {
	if err := cfg.complete(); err != nil {
		return err
	}
	c := &Core{cfg: cfg, store: store, log: cfg.Logger, m: newMetrics(), commits: make(chan []wire.ChangeEvent, 256)}
	group := make([]delivered, len(bs))
	for i, b := range bs {
		group[i] = delivered{msg: heldMsg{}, b: b}
	}
	c.handleGroup(context.Background(), p, group, &waiting{since: map[string]earlyBatch{}, gauge: c.m.waiting})
	return nil
}

// NoteLost tells partition p's consume that its consumer is gone, as the purger does when
// JetStream says so: a test can so bring about a report that is wrong.
func (c *Core) NoteLost(p int) { c.noteLost(p) }
