package core

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/perchhq/perch/internal/wire"
)

// The apps' API keys, as the core hands them to the edges. `perch keys` creates and revokes
// keys in the database and talks to nothing else, so every core reads the keys every
// APIKeysEvery (and at start), and publishes the live keys' hashes on wire.APIKeysSubject when
// they changed since its last read, and every apiKeysRepublish reads besides, so that an edge
// that missed a message is put right. Edges ask for the set (wire.AuthAPIKeys) when they start
// and after a reconnection. A key created or revoked is thus known to every edge within
// APIKeysEvery and a message's flight; with several cores, the first of them to read it tells.

// apiKeysRepublish is how many reads pass between two publications of an unchanged set.
const apiKeysRepublish = 6

// refreshAPIKeys reads the keys and installs the set of live ones, and reports whether it
// differs from the one it replaced.
func (a *accounts) refreshAPIKeys(ctx context.Context) ([]byte, bool, error) {
	keys, err := a.keyStore.APIKeys(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("api keys: %w", err)
	}
	set := wire.APIKeySet{Keys: []wire.APIKey{}}
	for _, k := range keys {
		set.Changed = latestTime(set.Changed, k.Created, k.Revoked)
		if k.Live() {
			set.Keys = append(set.Keys, wire.APIKey{ID: k.ID, Hash: k.Hash})
		}
	}
	data, err := json.Marshal(&set)
	if err != nil {
		return nil, false, fmt.Errorf("api keys: %w", err)
	}
	a.mu.Lock()
	changed := !bytes.Equal(data, a.apiKeys)
	a.apiKeys = data
	a.mu.Unlock()
	if changed {
		a.log.Info("api keys read", "live", len(set.Keys), "stored", len(keys))
	}
	return data, changed, nil
}

func latestTime(ts ...time.Time) time.Time {
	var l time.Time
	for _, t := range ts {
		if t.After(l) {
			l = t
		}
	}
	return l
}

// runAPIKeys publishes the set read at start (edges connected before this core may not have
// heard of what changed while no core ran), then reads the keys every APIKeysEvery until ctx
// ends and publishes the set when it changed, or when it was not published for
// apiKeysRepublish reads.
func (a *accounts) runAPIKeys(ctx context.Context) {
	a.mu.Lock()
	first := a.apiKeys
	a.mu.Unlock()
	a.publishAPIKeys(first)
	t := time.NewTicker(a.cfg.APIKeysEvery)
	defer t.Stop()
	for unchanged := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		data, changed, err := a.refreshAPIKeys(ctx)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Error("reading the api keys; the edges keep the keys they have", "err", err)
			}
			continue
		}
		if unchanged++; !changed && unchanged < apiKeysRepublish {
			continue
		}
		unchanged = 0
		a.publishAPIKeys(data)
	}
}

func (a *accounts) publishAPIKeys(data []byte) {
	if data == nil {
		return
	}
	if err := a.nc.Publish(wire.APIKeysSubject, data); err != nil {
		a.log.Warn("publishing the api keys", "err", err)
	}
}
