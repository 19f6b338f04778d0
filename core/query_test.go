package core

import (
	"slices"
	"testing"

	"github.com/perchhq/perch/internal/wire"
)

func TestLimits(t *testing.T) {
	for _, tt := range []struct {
		n, list, sync int
	}{
		{0, wire.DefaultListLimit, wire.DefaultSyncLimit},
		{-5, 1, 1},
		{1, 1, 1},
		{7, 7, 7},
		{wire.MaxListLimit, wire.MaxListLimit, min(wire.MaxListLimit, wire.MaxSyncLimit)},
		{wire.MaxListLimit + 1, wire.MaxListLimit, min(wire.MaxListLimit+1, wire.MaxSyncLimit)},
		{wire.MaxSyncLimit + 1, min(wire.MaxSyncLimit+1, wire.MaxListLimit), wire.MaxSyncLimit},
	} {
		if got := ListLimit(tt.n); got != tt.list {
			t.Errorf("ListLimit(%d) = %d, want %d", tt.n, got, tt.list)
		}
		if got := SyncLimit(tt.n); got != tt.sync {
			t.Errorf("SyncLimit(%d) = %d, want %d", tt.n, got, tt.sync)
		}
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tt := range []struct {
		prefix, end string
		ok          bool
	}{
		{"", "", false},
		{"a", "b", true},
		{"ab", "ac", true},
		{"a~", "a\x7f", true},
		{"a\xff", "b", true},
		{"a\xff\xff", "b", true},
		{"\xff", "", false},
		{"\xff\xff", "", false},
	} {
		end, ok := PrefixEnd(tt.prefix)
		if end != tt.end || ok != tt.ok {
			t.Errorf("PrefixEnd(%q) = %q, %v; want %q, %v", tt.prefix, end, ok, tt.end, tt.ok)
		}
		if !ok {
			continue
		}
		// end is greater than every string with the prefix and no other string is between.
		for _, s := range []string{tt.prefix, tt.prefix + "\x00", tt.prefix + "\xff\xff\xff"} {
			if s >= end {
				t.Errorf("PrefixEnd(%q) = %q, not above %q", tt.prefix, end, s)
			}
		}
	}
}

func TestSyncCollections(t *testing.T) {
	got := SyncCollections([]string{"notes", "tasks", "notes", "bad.name", "", "a\x00", "tasks", "people"})
	if want := []string{"notes", "tasks", "people"}; !slices.Equal(got, want) {
		t.Fatalf("SyncCollections = %q, want %q", got, want)
	}
	if got := SyncCollections(nil); len(got) != 0 {
		t.Fatalf("SyncCollections(nil) = %q, want none", got)
	}
}

func TestSyncOwned(t *testing.T) {
	collections := SyncCollections([]string{"notes", "tasks", "people"})
	got := SyncOwned(collections, wire.SyncQuery{Owned: []string{"people", "other", "notes", "people"}, Owner: "u1"})
	if want := []string{"notes", "people"}; !slices.Equal(got, want) {
		t.Fatalf("SyncOwned = %q, want %q", got, want)
	}
	if got := SyncOwned(collections, wire.SyncQuery{}); len(got) != 0 {
		t.Fatalf("SyncOwned without Owned = %q, want none", got)
	}
}
