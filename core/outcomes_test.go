package core

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

// TestEncodeOutcomes checks that an outcomes message made of the stores' encodings decodes
// to what encoding/json would have made of the outcomes.
func TestEncodeOutcomes(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Microsecond)
	outs := []wire.Outcome{
		{WriteID: "a", Status: 201, Doc: &wire.Document{Collection: "c", ID: "1", Version: 1, CreatedAt: now, UpdatedAt: now, Data: json.RawMessage(`{"x":"<&>"}`)}},
		{WriteID: "b", Status: 412, Problem: problem.New(problem.PreconditionFailed, "stale")},
		{WriteID: "c", Status: 200, Replayed: true},
	}
	for i := range outs[:2] {
		raw, err := json.Marshal(&outs[i])
		if err != nil {
			t.Fatal(err)
		}
		outs[i].Encoded = raw
	}
	data, err := encodeOutcomes(`batch "1"`, outs)
	if err != nil {
		t.Fatal(err)
	}
	var got wire.Outcomes
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("%s: %v", data, err)
	}
	want := wire.Outcomes{Batch: `batch "1"`, Outcomes: make([]wire.Outcome, len(outs))}
	for i := range outs {
		want.Outcomes[i] = outs[i]
		want.Outcomes[i].Encoded = nil
	}
	wantJSON, _ := json.Marshal(want)
	var wantBack wire.Outcomes
	_ = json.Unmarshal(wantJSON, &wantBack)
	if !reflect.DeepEqual(got, wantBack) {
		t.Fatalf("got %+v\nwant %+v", got, wantBack)
	}
}
