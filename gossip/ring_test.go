package gossip

import (
	"fmt"
	"math"
	"strconv"
	"testing"
)

func ringMembers(n int) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{ID: fmt.Sprintf("us-east-%02d", i), Region: "us-east", Weight: 1}
	}
	return ms
}

// owners counts the keys each member owns among nkeys.
func owners(r *Ring, nkeys int) map[string]int {
	out := map[string]int{}
	for k := range nkeys {
		m, _ := r.Owner("docs/" + strconv.Itoa(k))
		out[m.ID]++
	}
	return out
}

func TestRingSpreadsKeys(t *testing.T) {
	const nkeys = 100_000
	for _, n := range []int{2, 3, 10} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			got := owners(NewRing(ringMembers(n), 0), nkeys)
			if len(got) != n {
				t.Fatalf("%d of %d members own keys: %v", len(got), n, got)
			}
			mean := float64(nkeys) / float64(n)
			for id, c := range got {
				if dev := math.Abs(float64(c)-mean) / mean; dev > 0.2 {
					t.Errorf("%s owns %d keys, %.0f%% off the mean %.0f", id, c, 100*dev, mean)
				}
			}
		})
	}
}

func TestRingWeights(t *testing.T) {
	ms := ringMembers(3)
	ms[0].Weight = 2
	got := owners(NewRing(ms, 0), 100_000)
	ratio := float64(got[ms[0].ID]) / float64(got[ms[1].ID]+got[ms[2].ID]) * 2
	if ratio < 1.6 || ratio > 2.4 {
		t.Fatalf("weight 2 owns %.2f× a weight-1 member: %v", ratio, got)
	}
}

// TestRingAgreesAcrossEdges: edges that list the same members in any order, duplicates and
// all, agree on every owner.
func TestRingAgreesAcrossEdges(t *testing.T) {
	ms := ringMembers(5)
	a := NewRing(ms, 0)
	b := NewRing([]Member{ms[3], ms[1], ms[4], ms[0], ms[2], ms[1]}, 0)
	if b.Len() != 5 {
		t.Fatalf("a duplicate counted: %d members", b.Len())
	}
	for k := range 10_000 {
		key := "c/" + strconv.Itoa(k)
		x, _ := a.Owner(key)
		y, _ := b.Owner(key)
		if x.ID != y.ID {
			t.Fatalf("key %s: %s and %s", key, x.ID, y.ID)
		}
	}
}

// TestRingMovesOnlyTheChangedMembersKeys: when a member leaves, only its keys change owner;
// when one joins, only keys it takes do.
func TestRingMovesOnlyTheChangedMembersKeys(t *testing.T) {
	ms := ringMembers(4)
	before := NewRing(ms, 0)
	without := NewRing(ms[:3], 0)
	moved := 0
	for k := range 50_000 {
		key := "c/" + strconv.Itoa(k)
		x, _ := before.Owner(key)
		y, _ := without.Owner(key)
		if x.ID != y.ID {
			moved++
			if x.ID != ms[3].ID {
				t.Fatalf("key %s moved from %s, which stayed, to %s", key, x.ID, y.ID)
			}
		}
		if x.ID == ms[3].ID && y.ID == ms[3].ID {
			t.Fatalf("key %s still owned by the member that left", key)
		}
	}
	if share := float64(moved) / 50_000; share < 0.15 || share > 0.35 {
		t.Fatalf("%.0f%% of the keys moved; one member of four had about 25%%", 100*share)
	}
}

func TestRingEmpty(t *testing.T) {
	for _, r := range []*Ring{nil, NewRing(nil, 0)} {
		if m, ok := r.Owner("a/b"); ok {
			t.Fatalf("empty ring owner %+v", m)
		}
		if r.Len() != 0 || len(r.Members()) != 0 {
			t.Fatal("empty ring has members")
		}
	}
	r := NewRing(ringMembers(1), 0)
	if m, ok := r.Owner("a/b"); !ok || m.ID != "us-east-00" {
		t.Fatalf("lone member: %+v %v", m, ok)
	}
}

func BenchmarkRingOwner(b *testing.B) {
	r := NewRing(ringMembers(10), 0)
	b.ReportAllocs()
	for b.Loop() {
		r.Owner("notes/01J9ZK8Q6H3M2X7V5T4R0W1Y2Z")
	}
}
