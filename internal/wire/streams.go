package wire

import (
	"context"
	"errors"
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
// storage, deduplication by Nats-Msg-Id, and retention by limits with none set: the cores
// purge the batches every core is done with (core.purgeApplied), at or below each partition
// consumer's ack floor, which cores acknowledge only after commit. A work queue would remove
// each message as it is acknowledged, at the cost of a write and an fsync per message.
// Durability of each write depends on the server storing it with fsync on every write
// (sync_interval: always); see DESIGN §2.
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
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		Duplicates:  o.Duplicates,
		Discard:     jetstream.DiscardNew,
	}
}

// EnsureWriteStream creates the write stream when it is missing. Edges and cores both call it
// at start, so that neither depends on the other starting first. An existing stream is left
// as it is, so that one process started with other options cannot, say, lower the replicas
// of a production stream: its configuration is the operator's (nats stream edit). The
// returned mismatch is not empty when the existing stream differs from o.
func EnsureWriteStream(ctx context.Context, js jetstream.JetStream, o StreamOptions) (s jetstream.Stream, mismatch string, err error) {
	want := WriteStreamConfig(o)
	s, err = js.Stream(ctx, WriteStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = js.Stream(ctx, WriteStream)
		}
	}
	if err != nil {
		return nil, "", fmt.Errorf("ensure stream %s: %w", WriteStream, err)
	}
	have := s.CachedInfo().Config
	switch {
	case have.Replicas != want.Replicas:
		mismatch = fmt.Sprintf("stream %s has %d replicas, this process was configured for %d", WriteStream, have.Replicas, want.Replicas)
	case have.Retention != want.Retention || have.Storage != want.Storage:
		mismatch = fmt.Sprintf("stream %s has retention %s and storage %s, want %s and %s", WriteStream, have.Retention, have.Storage, want.Retention, want.Storage)
	}
	return s, mismatch, nil
}
