package core

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

func TestMergePatch(t *testing.T) {
	// The examples of RFC 7396 appendix A.
	cases := []struct{ doc, patch, want string }{
		{`{"a":"b"}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"b"}`, `{"b":"c"}`, `{"a":"b","b":"c"}`},
		{`{"a":"b"}`, `{"a":null}`, `{}`},
		{`{"a":"b","b":"c"}`, `{"a":null}`, `{"b":"c"}`},
		{`{"a":["b"]}`, `{"a":"c"}`, `{"a":"c"}`},
		{`{"a":"c"}`, `{"a":["b"]}`, `{"a":["b"]}`},
		{`{"a":{"b":"c"}}`, `{"a":{"b":"d","c":null}}`, `{"a":{"b":"d"}}`},
		{`{"a":[{"b":"c"}]}`, `{"a":[1]}`, `{"a":[1]}`},
		{`{"e":null}`, `{"a":1}`, `{"a":1,"e":null}`},
		{`{}`, `{"a":{"bb":{"ccc":null}}}`, `{"a":{"bb":{}}}`},
		{`{"n":12345678901234567890}`, `{"m":0.1}`, `{"m":0.1,"n":12345678901234567890}`},
	}
	for _, c := range cases {
		got, err := MergePatch(json.RawMessage(c.doc), json.RawMessage(c.patch))
		if err != nil || string(got) != c.want {
			t.Errorf("MergePatch(%s, %s) = %s, %v; want %s", c.doc, c.patch, got, err, c.want)
		}
	}
}

// FuzzMergePatch: patching a JSON object gives a JSON object, and applying a merge patch
// twice is the same as applying it once (RFC 7396 patches are idempotent).
func FuzzMergePatch(f *testing.F) {
	f.Add([]byte(`{"a":{"b":1}}`), []byte(`{"a":{"b":null,"c":[1]}}`))
	f.Add([]byte(`{}`), []byte(`{"x":"y"}`))
	f.Add([]byte(`{"a":1}`), []byte(`{"a":{"b":{"c":null}}}`))
	f.Fuzz(func(t *testing.T, doc, patch []byte) {
		var d, p map[string]any
		if json.Unmarshal(doc, &d) != nil || json.Unmarshal(patch, &p) != nil || d == nil || p == nil {
			return
		}
		once, err := MergePatch(doc, patch)
		if err != nil {
			t.Fatalf("MergePatch(%s, %s): %v", doc, patch, err)
		}
		var obj map[string]any
		if err := json.Unmarshal(once, &obj); err != nil || obj == nil {
			t.Fatalf("result %s is not an object", once)
		}
		twice, err := MergePatch(once, patch)
		if err != nil {
			t.Fatal(err)
		}
		var a, b any
		_ = json.Unmarshal(once, &a)
		_ = json.Unmarshal(twice, &b)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("patch %s not idempotent on %s: %s then %s", patch, doc, once, twice)
		}
	})
}

func TestRetentionAtLeastADay(t *testing.T) {
	// The contract keeps Idempotency-Keys at least 24 hours, whatever the configuration.
	for _, r := range []time.Duration{0, time.Hour, 48 * time.Hour} {
		c := Config{Retention: r}
		if err := c.complete(); err != nil {
			t.Fatal(err)
		}
		if c.Retention < 24*time.Hour || (r > 24*time.Hour && c.Retention != r) {
			t.Errorf("Retention %v became %v", r, c.Retention)
		}
	}
}

// noState is a store with nothing in it, for decisions that need no state.
type noState struct{}

func (noState) PriorWrite(string) (*wire.Outcome, error)               { return nil, nil }
func (noState) PriorIdempotency(string) (string, *wire.Outcome, error) { return "", nil, nil }
func (noState) Document(string, string) (*wire.Document, error)        { return nil, nil }

// TestOwnerOnlyNeedsUser: a write under the owner rule without a user is refused by the core
// itself, whatever the edge let through; with one, it creates the user's document.
func TestOwnerOnlyNeedsUser(t *testing.T) {
	cmd := wire.Command{WriteID: "w1", Op: wire.OpPut, Collection: "notes", ID: "n", Data: []byte(`{}`), OwnerOnly: true}
	d, err := ApplyCommand(noState{}, &cmd, time.Now())
	if err != nil || d.Outcome.Problem == nil || d.Outcome.Problem.Code != problem.Forbidden || d.Next != nil {
		t.Fatalf("an owner-rule write without a user: %+v %v", d.Outcome, err)
	}
	cmd.User = "ann"
	d, err = ApplyCommand(noState{}, &cmd, time.Now())
	if err != nil || d.Outcome.Problem != nil || d.Next == nil || d.Next.Owner != "ann" {
		t.Fatalf("an owner-rule write of ann: %+v %v", d.Outcome, err)
	}
}

// TestDocumentSizeBound: a write that would make a document larger than MaxDocumentBytes (a
// PUT, or PATCHes that grow it) is refused with 413 and leaves the document as it was.
func TestDocumentSizeBound(t *testing.T) {
	now := time.Now()
	half := `{"a":"` + strings.Repeat("x", wire.MaxDocumentBytes/2) + `"}`
	cur := &wire.Document{Collection: "c", ID: "d", Version: 1, CreatedAt: now, UpdatedAt: now, Data: json.RawMessage(half)}
	grow := &wire.Command{WriteID: "w1", Op: wire.OpPatch, Collection: "c", ID: "d",
		Data: json.RawMessage(`{"b":"` + strings.Repeat("y", wire.MaxDocumentBytes/2) + `"}`)}
	out, next := decide(cur, grow, now)
	if next != nil || out.Problem == nil || out.Problem.Code != problem.TooLarge || out.Status != 413 {
		t.Fatalf("a PATCH past the bound: %+v, next %v", out.Problem, next != nil)
	}
	put := &wire.Command{WriteID: "w2", Op: wire.OpPut, Collection: "c", ID: "e",
		Data: json.RawMessage(`{"a":"` + strings.Repeat("x", wire.MaxDocumentBytes) + `"}`)}
	if out, next := decide(nil, put, now); next != nil || out.Status != 413 {
		t.Fatalf("a PUT past the bound: %d", out.Status)
	}
	small := &wire.Command{WriteID: "w3", Op: wire.OpPatch, Collection: "c", ID: "d", Data: json.RawMessage(`{"b":1}`)}
	if out, next := decide(cur, small, now); next == nil || out.Problem != nil {
		t.Fatalf("a PATCH within the bound refused: %+v", out.Problem)
	}
}
