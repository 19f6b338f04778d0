package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestPartitionIsStable(t *testing.T) {
	// Edges and cores of different releases must agree on where a document's writes go.
	cases := []struct {
		collection, id string
		want           int
	}{
		{"notes", "n1", Partition("notes", "n1", 16)},
	}
	for _, c := range cases {
		for range 3 {
			if got := Partition(c.collection, c.id, 16); got != c.want || got < 0 || got >= 16 {
				t.Fatalf("Partition(%s,%s) = %d", c.collection, c.id, got)
			}
		}
	}
	if Partition("a", "b/c", 1<<20) == Partition("a/b", "c", 1<<20) {
		// Not a requirement of correctness, but names cannot contain '/', so the two can
		// never both be valid; the check documents that the separator is part of the hash.
		t.Log("a/b/c collides across the separator")
	}
}

func TestWritePartition(t *testing.T) {
	const n = 16
	for _, lanes := range []int{0, 1, 3, n, 2 * n} {
		used := map[int]bool{}
		for i := range 200 {
			id := string(rune('a'+i%26)) + string(rune('a'+i/26))
			p := WritePartition("edge-1", "c", id, lanes, n)
			if p < 0 || p >= n {
				t.Fatalf("lanes %d: partition %d", lanes, p)
			}
			if p != WritePartition("edge-1", "c", id, lanes, n) {
				t.Fatal("not stable")
			}
			used[p] = true
		}
		if want := max(1, min(lanes, n)); len(used) != want {
			t.Errorf("lanes %d: an edge used %d partitions, want %d", lanes, len(used), want)
		}
	}
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"a", "A-z_0.9~", "01HZX"} {
		if !ValidName(ok) {
			t.Errorf("%q refused", ok)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "a b", "é", string(make([]byte, MaxNameLen+1))} {
		if ValidName(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
	if ValidCollection("a.b") || !ValidCollection("a_b") {
		t.Error("collections are subject tokens: no dots")
	}
}

// FuzzBatch drives the core's decoder of write batches: a batch that validates holds only
// commands the core can apply, each in the batch's partition.
func FuzzBatch(f *testing.F) {
	good, _ := json.Marshal(Batch{ID: "b", Partition: Partition("c", "i", 4), Edge: "e", Commands: []Command{
		{WriteID: "w", Op: OpPut, Collection: "c", ID: "i", Data: json.RawMessage(`{"a":1}`)},
	}})
	f.Add(good)
	f.Add([]byte(`{"id":"b","partition":0,"commands":[{"write_id":"w","op":"delete","collection":"c","id":"i"}]}`))
	f.Add([]byte(`{"id":"b","partition":-1,"commands":[]}`))
	f.Add([]byte(`{"id":"b","partition":0,"commands":[{"write_id":"w","op":"delete","collection":"c","id":"i","user":"u\u0000"}]}`))
	f.Add([]byte(`{"id":"b","partition":0,"commands":[{"write_id":"w","op":"put","collection":"c","id":"i","data":[1]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var b Batch
		if json.Unmarshal(data, &b) != nil || b.Validate(4) != nil {
			return
		}
		if b.Partition < 0 || b.Partition >= 4 {
			t.Fatalf("partition %d accepted", b.Partition)
		}
		for _, c := range b.Commands {
			if strings.IndexByte(c.User, 0) >= 0 || len(c.User) > MaxNameLen {
				t.Fatalf("user %q accepted: no store could keep it as an owner", c.User)
			}
			if c.Op != OpDelete {
				var obj map[string]json.RawMessage
				if err := json.Unmarshal(c.Data, &obj); err != nil {
					t.Fatalf("%s accepted with data %s", c.Op, c.Data)
				}
			}
		}
	})
}

func TestStorableJSON(t *testing.T) {
	for _, ok := range []string{`{}`, `{"a":"\u00e9\n"}`, `{"s":"\ud83d\ude00"}`, `{"n":1e300,"m":-0.5}`, `{"k":"\\u0000"}`,
		"{\"é\":\"ü\"}", `{"n":1e-16383,"m":1.5e3,"x":1E-5,"z":0e1073741822}`, `{"n":0.` + strings.Repeat("1", MaxFractionDigits) + `}`,
		`{"a":` + strings.Repeat("[", MaxNesting) + strings.Repeat("]", MaxNesting) + `}`} {
		if err := StorableJSON([]byte(ok)); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, bad := range []string{`{"a":"\u0000"}`, `{"a":"x\ud800"}`, `{"a":"\udc00"}`, `{"a":"\ud800\u0041"}`, `{"n":1e400000}`,
		"{\"a\":\"\xff\"}", "{\"\xc3\":1}", `{"n":1e-400000}`, `{"n":1e-16384}`, `{"n":0.` + strings.Repeat("1", MaxFractionDigits+1) + `}`,
		`{"n":1e-99999999999999999999}`, `{"n":0e99999999999999999999}`, `{"n":0e1073741823}`, `{"n":-0e5000000000}`} {
		if err := StorableJSON([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// storableByTokens is StorableJSON as encoding/json's tokenizer sees the JSON: the reference
// that FuzzStorableJSON holds the one-pass check to.
func storableByTokens(data []byte) error {
	if !utf8.Valid(data) {
		return errors.New("not UTF-8")
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch tok := tok.(type) {
		case json.Number:
			if _, err := strconv.ParseFloat(string(tok), 64); err != nil {
				return err
			}
			if fractionDigits(string(tok)) > MaxFractionDigits {
				return errors.New("too many fraction digits")
			}
		case string:
			if err := storableText(tok); err != nil {
				return err
			}
		}
	}
}

// storableText refuses what jsonb refuses in a decoded string or key: NUL, and the U+FFFD
// that encoding/json puts for an escaped surrogate that does not pair.
func storableText(s string) error {
	if strings.ContainsRune(s, 0) {
		return errors.New("NUL")
	}
	if strings.ContainsRune(s, utf8.RuneError) {
		return errors.New("U+FFFD: an unpaired surrogate, or one written as such")
	}
	return nil
}

// FuzzStorableJSON holds StorableJSON to the tokenizer's view of the same JSON: the two agree
// on every valid JSON text, and StorableJSON does not panic on any input.
func FuzzStorableJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":"\u00e9\n"}`, `{"s":"\ud83d\ude00"}`, `{"n":1e300,"m":-0.5}`, `{"k":"\\u0000"}`,
		`{"a":"\u0000"}`, `{"a":"x\ud800"}`, `{"a":"\udc00"}`, `{"a":"\ud800\u0041"}`, `{"n":1e400000}`, `{"n":1e-16384}`,
		`[1.5E3,-0,0.25e-2,"\"",{"\u0041":[true,false,null]}]`, `{"n":0e1073741823}`, `{"a":"\uD83D\uDE00"}`, `"\`, `{"a":"\u12`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		err := StorableJSON(data)
		if !json.Valid(data) {
			return
		}
		// An escaped U+FFFD (\ufffd) decodes as the tokenizer's sign of a bad surrogate.
		if bytes.Contains(bytes.ToLower(data), []byte(`\ufffd`)) || bytes.ContainsRune(data, utf8.RuneError) {
			return
		}
		if ref := storableByTokens(data); (err == nil) != (ref == nil) {
			t.Fatalf("%q: StorableJSON says %v, the tokenizer %v", data, err, ref)
		}
	})
}

// BenchmarkStorableJSON compares StorableJSON with the tokenizer's check on a 1 KB document,
// in alternation within one run: it reports the ns of each and their ratio.
func BenchmarkStorableJSON(b *testing.B) {
	var doc strings.Builder
	doc.WriteString(`{"title":"A note","tags":["a","b\u00e9"],"n":`)
	for i := 0; doc.Len() < 1000; i++ {
		fmt.Fprintf(&doc, `%d,"f%d":{"x":%d.25,"s":"text of field %d","ok":true}`, i, i, i, i)
		doc.WriteString(`,"m":`)
	}
	doc.WriteString(`-1}`)
	data := []byte(doc.String())
	if !json.Valid(data) {
		b.Fatalf("the benchmark's document is not JSON: %s", data)
	}
	alternate(b, "tokens", func() error { return storableByTokens(data) }, "scan", func() error { return StorableJSON(data) })
}

func TestCommandStringsAreUTF8(t *testing.T) {
	// The batch's JSON would turn other bytes into U+FFFD, changing what the core decodes.
	c := Command{WriteID: "w", Op: OpDelete, Collection: "c", ID: "i", IdemKey: "0::k\xff"}
	if c.Validate() == nil {
		t.Error("an idempotency key that is not UTF-8 accepted")
	}
	c.IdemKey, c.User = "0::k", "u\xff"
	if c.Validate() == nil {
		t.Error("a user that is not UTF-8 accepted")
	}
}

func TestCommandUser(t *testing.T) {
	c := Command{WriteID: "w", Op: OpDelete, Collection: "c", ID: "i", User: "01HZXUSER", OwnerOnly: true}
	if err := c.Validate(); err != nil {
		t.Fatalf("a user refused: %v", err)
	}
	// The user becomes the document's owner: what no store can keep is refused.
	for _, bad := range []string{"u\x00", strings.Repeat("u", MaxNameLen+1)} {
		c.User = bad
		if c.Validate() == nil {
			t.Errorf("user %q accepted", bad)
		}
	}
}

// nestingByTokens is how deep the arrays and objects of valid JSON nest, as encoding/json's
// tokenizer sees them: the reference FuzzCheckNesting holds nesting, CheckNesting's count, to.
func nestingByTokens(data []byte) int {
	d := json.NewDecoder(bytes.NewReader(data))
	depth, deepest := 0, 0
	for {
		tok, err := d.Token()
		if err != nil {
			return deepest
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
			deepest = max(deepest, depth)
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
}

func TestCheckNesting(t *testing.T) {
	nest := func(n int, inner string) string { return strings.Repeat("[", n) + inner + strings.Repeat("]", n) }
	for _, ok := range []string{`{}`, `"[[["`, nest(MaxNesting, `"]]]\"[{"`), `{"a":` + nest(MaxNesting-2, `{}`) + `}`} {
		if err := CheckNesting([]byte(ok)); err != nil {
			t.Errorf("%.40s… refused: %v", ok, err)
		}
	}
	for _, deep := range []string{nest(MaxNesting+1, ""), `{"a":` + nest(MaxNesting-1, `{}`) + `}`} {
		if err := CheckNesting([]byte(deep)); err == nil {
			t.Errorf("%.40s… accepted", deep)
		}
	}
	// A core takes what an edge of an older release took: the bound is the edge's alone.
	cmd := Command{WriteID: "w", Op: OpPut, Collection: "notes", ID: "n", Data: []byte(`{"a":` + nest(5*MaxNesting, "") + `}`)}
	if err := cmd.Validate(); err != nil {
		t.Errorf("a command nested %d deep refused: %v", 5*MaxNesting, err)
	}
}

// FuzzCheckNesting holds CheckNesting's count of depth to encoding/json's tokenizer on
// valid JSON.
func FuzzCheckNesting(f *testing.F) {
	for _, s := range []string{`{}`, `[[],[[]]]`, `{"a":"[\"{"}`, `[[[1]]]`, `"\\"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !json.Valid(data) {
			return
		}
		if got, want := nesting(data), nestingByTokens(data); got != want {
			t.Fatalf("%q: nesting %d, the tokenizer's depth %d", data, got, want)
		}
	})
}
