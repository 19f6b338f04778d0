package core

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
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
	msgs, err := encodeOutcomes(`batch "1"`, outs, 0)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("%d messages, %v", len(msgs), err)
	}
	data := msgs[0]
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

// TestEncodeOutcomesSplits: the outcomes of a batch go in as many messages as keep each
// within half the NATS server's max_payload, in order, none lost; one too large for a message
// of its own goes without its document.
func TestEncodeOutcomesSplits(t *testing.T) {
	now := time.Now().UTC().Truncate(time.Microsecond)
	const maxPayload = 64 << 10
	var outs []wire.Outcome
	for i := range 40 {
		data := fmt.Sprintf(`{"pad":"%s"}`, strings.Repeat("x", 5000))
		if i == 7 {
			data = fmt.Sprintf(`{"pad":"%s"}`, strings.Repeat("x", maxPayload)) // alone beyond max_payload
		}
		outs = append(outs, wire.Outcome{WriteID: fmt.Sprint("w", i), Status: 200,
			Doc: &wire.Document{Collection: "c", ID: fmt.Sprint(i), Version: 2, CreatedAt: now, UpdatedAt: now, Data: json.RawMessage(data)}})
	}
	msgs, err := encodeOutcomes("b", outs, maxPayload)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) < 2 {
		t.Fatalf("%d messages for %d outcomes of 5 KB", len(msgs), len(outs))
	}
	var got []wire.Outcome
	for _, m := range msgs {
		if len(m) > maxPayload/2 {
			t.Errorf("a message of %d bytes, over %d", len(m), maxPayload/2)
		}
		var o wire.Outcomes
		if err := json.Unmarshal(m, &o); err != nil || o.Batch != "b" {
			t.Fatalf("%.80s: %v", m, err)
		}
		got = append(got, o.Outcomes...)
	}
	if len(got) != len(outs) {
		t.Fatalf("%d outcomes out of %d", len(got), len(outs))
	}
	for i := range got {
		if got[i].WriteID != outs[i].WriteID {
			t.Fatalf("outcome %d is %s", i, got[i].WriteID)
		}
		if hasDoc := got[i].Doc != nil; hasDoc != (i != 7) {
			t.Errorf("outcome %d has a document: %v", i, hasDoc)
		}
	}
}
