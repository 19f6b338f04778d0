package core

import (
	"slices"
	"testing"

	"github.com/perchhq/perch/internal/wire"
)

func TestFenceAdmit(t *testing.T) {
	after := func(p string, seq int64) *wire.BatchRef { return &wire.BatchRef{Producer: p, Seq: seq} }
	for _, tc := range []struct {
		name string
		last map[string]int64
		b    wire.Batch
		want BatchStatus
	}{
		{"unfenced", nil, wire.Batch{}, BatchApplied},
		{"first", nil, wire.Batch{Producer: "p", Seq: 1}, BatchApplied},
		{"next", map[string]int64{"p": 4}, wire.Batch{Producer: "p", Seq: 5}, BatchApplied},
		{"again", map[string]int64{"p": 4}, wire.Batch{Producer: "p", Seq: 4}, BatchDuplicate},
		{"older", map[string]int64{"p": 4}, wire.Batch{Producer: "p", Seq: 2}, BatchDuplicate},
		{"gap", map[string]int64{"p": 4}, wire.Batch{Producer: "p", Seq: 6}, BatchEarly},
		{"unknown producer past 1", nil, wire.Batch{Producer: "p", Seq: 2}, BatchEarly},
		{"after, reached", map[string]int64{"old": 7}, wire.Batch{Producer: "p", Seq: 1, After: after("old", 7)}, BatchApplied},
		{"after, passed", map[string]int64{"old": 9}, wire.Batch{Producer: "p", Seq: 1, After: after("old", 7)}, BatchApplied},
		{"after, not reached", map[string]int64{"old": 6}, wire.Batch{Producer: "p", Seq: 1, After: after("old", 7)}, BatchEarly},
		{"after, unknown", nil, wire.Batch{Producer: "p", Seq: 1, After: after("old", 7)}, BatchEarly},
		{"forced over a gap", map[string]int64{"p": 4}, wire.Batch{Producer: "p", Seq: 9, Force: true}, BatchApplied},
		{"forced over after", nil, wire.Batch{Producer: "p", Seq: 1, After: after("old", 7), Force: true}, BatchApplied},
		{"forced, yet applied before", map[string]int64{"p": 4}, wire.Batch{Producer: "p", Seq: 3, Force: true}, BatchDuplicate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := NewFence(tc.last)
			if got := f.Admit(&tc.b); got != tc.want {
				t.Fatalf("Admit = %v, want %v", got, tc.want)
			}
			adv, moved := f.Advanced()[tc.b.Producer]
			if moved != (tc.want == BatchApplied && tc.b.Producer != "") || moved && adv != tc.b.Seq {
				t.Fatalf("advanced %v to %d", moved, adv)
			}
		})
	}
}

// TestFenceOrder checks that a group is taken in each producer's sequence order, in the places
// its batches hold, and that Producers names the producers waited After too.
func TestFenceOrder(t *testing.T) {
	bs := []*wire.Batch{
		{ID: "p3", Producer: "p", Seq: 3},
		{ID: "u", Partition: 0},
		{ID: "q1", Producer: "q", Seq: 1, After: &wire.BatchRef{Producer: "old", Seq: 2}},
		{ID: "p2", Producer: "p", Seq: 2},
	}
	var got []string
	for _, i := range Order(bs) {
		got = append(got, bs[i].ID)
	}
	if want := []string{"p2", "u", "q1", "p3"}; !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	if got, want := Producers(bs), []string{"p", "q", "old"}; !slices.Equal(got, want) {
		t.Fatalf("producers %v, want %v", got, want)
	}
}
