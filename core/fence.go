package core

import (
	"fmt"
	"slices"

	"github.com/perchhq/perch/internal/wire"
)

// Fence decides, inside the transaction of ApplyBatches, which batches may be applied: the
// single place that says what a producer's sequence admits, shared by every store. A store
// loads the sequences of Producers(bs) (absent ones are 0), calls Admit for each batch of
// Order(bs) in turn, and records Advanced() in the same transaction.
type Fence struct {
	last     map[string]int64
	advanced map[string]int64
}

// NewFence returns a fence at the producers' recorded sequences.
func NewFence(last map[string]int64) *Fence {
	if last == nil {
		last = map[string]int64{}
	}
	return &Fence{last: last, advanced: map[string]int64{}}
}

// Producers returns the producers bs name, each once.
func Producers(bs []*wire.Batch) []string {
	var ps []string
	for _, b := range bs {
		if b.Producer != "" && !slices.Contains(ps, b.Producer) {
			ps = append(ps, b.Producer)
		}
		if b.After != nil && !slices.Contains(ps, b.After.Producer) {
			ps = append(ps, b.After.Producer)
		}
	}
	return ps
}

// Order returns the order in which ApplyBatches takes bs, as indexes into bs: each producer's
// batches in sequence order, in the places that producer's batches hold in bs; batches
// without a producer where they are.
func Order(bs []*wire.Batch) []int {
	order := make([]int, len(bs))
	slots := map[string][]int{}
	for i, b := range bs {
		order[i] = i
		if b.Producer != "" {
			slots[b.Producer] = append(slots[b.Producer], i)
		}
	}
	for _, idx := range slots {
		byseq := slices.Clone(idx)
		slices.SortStableFunc(byseq, func(a, b int) int { return cmpInt64(bs[a].Seq, bs[b].Seq) })
		for k, slot := range idx {
			order[slot] = byseq[k]
		}
	}
	return order
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Admit decides b and, when it is to be applied, advances its producer. A batch that opens a
// producer After another waits for that one's batch too. A Force batch is admitted whatever
// came before it (but never twice).
func (f *Fence) Admit(b *wire.Batch) BatchStatus {
	if b.Producer == "" {
		return BatchApplied
	}
	last := f.last[b.Producer]
	switch {
	case b.Seq <= last:
		return BatchDuplicate
	case b.Force:
	case b.Seq > last+1:
		return BatchEarly
	case last == 0 && b.After != nil && f.last[b.After.Producer] < b.After.Seq:
		return BatchEarly
	}
	f.last[b.Producer] = b.Seq
	f.advanced[b.Producer] = b.Seq
	return BatchApplied
}

// Advanced returns the producers whose sequence Admit moved, with their new sequences.
func (f *Fence) Advanced() map[string]int64 { return f.advanced }

// DuplicateOutcomes returns what ApplyBatches answers for a batch its producer had passed:
// the recorded outcomes of its write ids, marked replayed. prior is the store's lookup.
func DuplicateOutcomes(b *wire.Batch, prior func(writeID string) (*wire.Outcome, error)) ([]wire.Outcome, error) {
	var outs []wire.Outcome
	for i := range b.Commands {
		o, err := prior(b.Commands[i].WriteID)
		if err != nil {
			return nil, fmt.Errorf("write %s: %w", b.Commands[i].WriteID, err)
		}
		if o != nil {
			out := *o
			out.Replayed = true
			outs = append(outs, out)
		}
	}
	return outs, nil
}

// CheckGroup reports whether bs may be applied together: at least one batch, each valid
// (wire.Batch.Validate) and of the first one's partition. Stores call it first in
// ApplyBatches; it is where a batch is validated, once. A batch that fails is reported as an
// *InvalidBatchError.
func CheckGroup(bs []*wire.Batch, partitions int) error {
	if len(bs) == 0 {
		return fmt.Errorf("apply batches: no batch")
	}
	for i, b := range bs {
		err := b.Validate(partitions)
		if err == nil && b.Partition != bs[0].Partition {
			err = fmt.Errorf("of partition %d in a group of partition %d", b.Partition, bs[0].Partition)
		}
		if err != nil {
			return &InvalidBatchError{Index: i, ID: b.ID, Err: err}
		}
	}
	return nil
}

// InvalidBatchError is the error of ApplyBatches for a batch no store can apply; Index is its
// place in the group. Nothing of the group was applied.
type InvalidBatchError struct {
	Index int
	ID    string
	Err   error
}

func (e *InvalidBatchError) Error() string { return fmt.Sprintf("apply batch %s: %v", e.ID, e.Err) }
func (e *InvalidBatchError) Unwrap() error { return e.Err }
