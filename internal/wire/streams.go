package wire

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamOptions are the operator's choices for the write stream.
type StreamOptions struct {
	// Replicas is the number of copies JetStream keeps of each write: 1 on one machine, 3 in
	// production so that an acknowledged write survives the loss of a server.
	Replicas int
	// Duplicates is JetStream's deduplication window for Nats-Msg-Id. A batch republished
	// within it is dropped by the server. Default 2 minutes.
	Duplicates time.Duration
}

// WriteStreamConfig is the configuration of the stream that carries write batches: file
// storage, work-queue retention (a batch is removed once the core acknowledged it, which it
// does only after commit), deduplication by Nats-Msg-Id. Durability of each write depends on
// the server storing it with fsync on every write (sync_interval: always); see DESIGN §2.
func WriteStreamConfig(o StreamOptions) jetstream.StreamConfig {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.Duplicates <= 0 {
		o.Duplicates = 2 * time.Minute
	}
	return jetstream.StreamConfig{
		Name:        WriteStream,
		Description: "Perch write batches, partitioned by perch.writes.<partition>",
		Subjects:    []string{WriteSubjectPrefix + "*"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		Duplicates:  o.Duplicates,
		Discard:     jetstream.DiscardNew,
	}
}

// EnsureWriteStream creates the write stream or updates it to the current configuration.
// Edges and cores both call it at start, so that neither depends on the other starting first.
func EnsureWriteStream(ctx context.Context, js jetstream.JetStream, o StreamOptions) (jetstream.Stream, error) {
	s, err := js.CreateOrUpdateStream(ctx, WriteStreamConfig(o))
	if err != nil {
		return nil, fmt.Errorf("ensure stream %s: %w", WriteStream, err)
	}
	return s, nil
}
