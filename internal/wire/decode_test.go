package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/perchhq/perch/internal/problem"
)

// checkDecoders holds each decoder to json.Unmarshal on data: the same error or none, and
// the same value. Where the decoder's own reading takes data, json.Unmarshal must take it too
// (elsewhere the decoder is json.Unmarshal).
func checkDecoders(t *testing.T, data []byte) {
	t.Helper()
	agree(t, "document", data, DecodeDocument)
	agree(t, "outcomes", data, DecodeOutcomes)
	agree(t, "batch", data, DecodeBatch)
	agree(t, "read request", data, DecodeReadRequest)
	agree(t, "read response", data, DecodeReadResponse)

	evs, err := DecodeEventHeads(data)
	var wantErr error
	var wantEvs []EventHead
	if trimmed := bytes.TrimLeft(data, " \t\r\n"); len(trimmed) > 0 && trimmed[0] == '{' {
		wantEvs = make([]EventHead, 1)
		wantErr = json.Unmarshal(data, &wantEvs[0])
	} else {
		wantErr = json.Unmarshal(data, &wantEvs)
	}
	sameDecoding(t, "events", data, err, wantErr, evs, wantEvs)
}

// agree holds decode to json.Unmarshal on data, both into a zero T.
func agree[T any](t *testing.T, what string, data []byte, decode func([]byte, *T) error) {
	t.Helper()
	var got, want T
	err, wantErr := decode(data, &got), json.Unmarshal(data, &want)
	sameDecoding(t, what, data, err, wantErr, got, want)
}

func sameDecoding[T any](t *testing.T, what string, data []byte, err, wantErr error, got, want T) {
	t.Helper()
	if (err == nil) != (wantErr == nil) {
		t.Fatalf("%s %q: decoder says %v, json.Unmarshal %v", what, data, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%s %q: decoder gives\n%#v\njson.Unmarshal\n%#v", what, data, got, want)
	}
}

// decoderSeeds are messages as the core sends them, and near misses of them.
func decoderSeeds(t testing.TB) [][]byte {
	at := time.Date(2026, 12, 2, 1, 2, 3, 456_789_000, time.UTC)
	doc := &Document{Collection: "notes", ID: "n1", Version: 3, CreatedAt: at, UpdatedAt: at.Add(time.Second),
		Data: json.RawMessage(`{"a":[1,"é",{"b":null}],"s":"x\"y"}`), Owner: "01HZUSER"}
	del := &Document{Collection: "notes", ID: "n2", Version: 4, CreatedAt: at, UpdatedAt: at, Deleted: true}
	var seeds [][]byte
	add := func(b []byte, err error) {
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
	}
	add(doc.AppendJSON(nil))
	add(del.AppendJSON(nil))
	outs := []Outcome{{WriteID: "01KW1", Status: 201, Doc: doc}, {WriteID: "01KW2", Status: 200, Doc: del, Replayed: true},
		{WriteID: "01KW3", Status: 412, Problem: problem.New(problem.PreconditionFailed, "no"), Collection: "notes"}}
	var buf []byte
	buf = append(buf, `{"batch":"01KB","outcomes":[`...)
	for i := range outs[:2] {
		if i > 0 {
			buf = append(buf, ',')
		}
		var err error
		if buf, err = outs[i].AppendJSON(buf); err != nil {
			t.Fatal(err)
		}
	}
	add(append(buf, "]}"...), nil)
	add(json.Marshal(Outcomes{Batch: "01KB", Outcomes: outs}))
	ev := ChangeEvent{Partition: 3, Seq: 17, Collection: "notes", ID: "n1", Version: 3, UpdatedAt: at, Doc: doc}
	one, err := ev.AppendJSON(nil)
	add(one, err)
	marker := ChangeEvent{Partition: 3, Seq: 18, Collection: "notes", ID: "n2", Version: 4, Deleted: true, UpdatedAt: at}
	two, err := marker.AppendJSON(nil)
	add(two, err)
	add(append(append(append(append([]byte("["), one...), ','), two...), ']'), nil)
	cmds := []Command{{WriteID: "01KW1", Op: OpPut, Collection: "notes", ID: "n1", Data: json.RawMessage(`{"a":"é"}`), IfMatch: 3,
		IdemKey: "0::k", Fingerprint: "f00d", User: "01HZUSER", OwnerOnly: true}, {WriteID: "01KW2", Op: OpDelete, Collection: "notes", ID: "n2"}}
	add((&Batch{ID: "01KB", Partition: 3, Edge: "e1", Producer: "01KP", Seq: 9, After: &BatchRef{Producer: "01KQ", Seq: 4},
		Commands: cmds}).AppendJSON(nil))
	add((&Batch{ID: "01KB", Partition: 0, Edge: "e1", Commands: []Command{}}).AppendJSON(nil))
	add((&ReadRequest{Kind: ReadGet, Collection: "notes", ID: "n1"}).AppendJSON(nil))
	add((&ReadRequest{Kind: ReadWrite, WriteID: "01KW3"}).AppendJSON(nil))
	add((&ReadResponse{Doc: doc}).AppendJSON(nil))
	add((&ReadResponse{Problem: problem.New(problem.NotFound, "not found")}).AppendJSON(nil))
	add((&ReadResponse{Write: &outs[2]}).AppendJSON(nil))
	add(json.Marshal(&ReadRequest{Kind: ReadList, List: &ListQuery{Collection: "notes", Order: OrderID, Limit: 50}}))
	add(json.Marshal(&ReadResponse{Page: &ListPage{Items: []Document{*doc, *del}, More: true}}))
	add(json.Marshal(&ReadResponse{Sync: &SyncPage{Changes: []Change{{Partition: 3, Seq: 17, Doc: *doc}, {Partition: 1, Seq: 2, Doc: *del}},
		Next: []int64{0, 2, 0, 17}}}))
	for _, s := range []string{`[]`, `{}`, `{"commands":null}`, `{"after":{"seq":1,"producer":"p","x":1}}`, ` [ ] `, `{"batch":"b","outcomes":[]}`, `{"outcomes":null}`, `{"collection":"C","Collection":"D"}`,
		`{"version":01}`, `{"version":-0}`, `{"version":1.0}`, `{"version":9223372036854775808}`, `{"id":"a\u0062"}`, `{"id":"\xff"}`,
		`{"data":"x"}`, `{"data":{"a":1}   }`, `{"data":{"a":1}} x`, `{"deleted":true,"deleted":false}`, `{"created_at":"2026-13-01T00:00:00Z"}`,
		`{"doc":null}`, `[{"doc":{"a":"}"}}]`, `{"kind":"get","list":null}`, `{"page":{"items":null,"more":false}}`, `{"sync":{"next":[1,-0]}}`, `{"sync":{"changes":[{"doc":{}}],"next":[]}}`,
		`{"page":{"items":[{"id":"a"}],"more":true,"more":false}}`, `{"sync":{"changes":[{"partition":1.5}]}}`, `{"problem":{"status":"404"}}`, `{"problem":{"code":"x","code":"y"}}`,
		`{"write":{"write_id":"w","status":412,"problem":{"type":"t","title":"T","status":412,"code":"c"}}}`, `{"status":2e2}`, `{"data":[1,2}`, `{"data":{"a":"\"}"}}`, `{"replayed":tru}`} {
		seeds = append(seeds, []byte(s))
	}
	return seeds
}

func TestDecodersAgreeWithUnmarshal(t *testing.T) {
	for _, s := range decoderSeeds(t) {
		checkDecoders(t, s)
	}
}

// TestDecodersCountNestingOverTheMessage: the data of a document counts toward
// json.Unmarshal's nesting limit with the message around it (four levels here), not from
// its own start.
func TestDecodersCountNestingOverTheMessage(t *testing.T) {
	for n := maxNesting - 6; n <= maxNesting-2; n++ {
		msg := `{"batch":"b","outcomes":[{"write_id":"w","status":200,"doc":{"collection":"c","id":"i","version":1,"data":` +
			strings.Repeat("[", n) + strings.Repeat("]", n) + `}}]}`
		checkDecoders(t, []byte(msg))
	}
}

// TestDecodersReadWhatTheEncodersWrite: the messages edges and cores send take the decoders' own
// reading, not json.Unmarshal's.
func TestDecodersReadWhatTheEncodersWrite(t *testing.T) {
	seeds := decoderSeeds(t)
	var d Document
	for _, s := range seeds[:2] {
		if l := newLexer(s); !l.document(&d) || !l.end() {
			t.Errorf("document %s left to json.Unmarshal", s)
		}
	}
	var m Outcomes
	if l := newLexer(seeds[2]); !l.outcomes(&m) || !l.end() || len(m.Outcomes) != 2 {
		t.Errorf("outcomes %s left to json.Unmarshal", seeds[2])
	}
	// json.Marshal's form of outcomes, one of them rejected with a problem.
	if l := newLexer(seeds[3]); !l.outcomes(&m) || !l.end() || len(m.Outcomes) != 3 || m.Outcomes[2].Problem == nil {
		t.Errorf("outcomes %s left to json.Unmarshal", seeds[3])
	}
	for _, s := range seeds[7:9] {
		var b Batch
		if l := newLexer(s); !l.batch(&b) || !l.end() {
			t.Errorf("batch %s left to json.Unmarshal", s)
		}
	}
	for _, s := range seeds[9:11] {
		var r ReadRequest
		if l := newLexer(s); !l.readRequest(&r) || !l.end() {
			t.Errorf("read request %s left to json.Unmarshal", s)
		}
	}
	for _, s := range append(seeds[11:14:14], seeds[15:17]...) {
		var r ReadResponse
		if l := newLexer(s); !l.readResponse(&r) || !l.end() {
			t.Errorf("read response %s left to json.Unmarshal", s)
		}
	}
	for _, s := range seeds[4:7] {
		l := newLexer(s)
		var h EventHead
		if s[0] == '[' {
			l.i++
			ok := l.eventHead(&h) && l.take(',') && l.eventHead(&h) && l.take(']') && l.end()
			if !ok {
				t.Errorf("events %s left to json.Unmarshal", s)
			}
			continue
		}
		if !l.eventHead(&h) || !l.end() {
			t.Errorf("event %s left to json.Unmarshal", s)
		}
	}
}

// FuzzDecoders holds the decoders of batches, outcomes, change events, documents, read
// requests and read responses to json.Unmarshal.
func FuzzDecoders(f *testing.F) {
	for _, s := range decoderSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecoders(t, data)
	})
}

// BenchmarkDecoders compares the decoders with json.Unmarshal on an outcomes message and a
// change-event message of 16 writes each (as one batch of the write benchmark makes), in
// alternation within one run: it reports the ns of each and the decoders' time as a fraction
// of json.Unmarshal's.
func BenchmarkDecoders(b *testing.B) {
	at := time.Date(2026, 12, 2, 1, 2, 3, 456_789_000, time.UTC)
	var outs, evs []byte
	outs = append(outs, `{"batch":"01KBEXAMPLE0000000000000000","outcomes":[`...)
	evs = append(evs, '[')
	for i := range 16 {
		doc := &Document{Collection: "bench", ID: "k12345" + string(rune('a'+i)), Version: int64(i + 1), CreatedAt: at, UpdatedAt: at,
			Data: json.RawMessage(`{"n":17,"s":"some text of a small document"}`)}
		if i > 0 {
			outs, evs = append(outs, ','), append(evs, ',')
		}
		var err error
		out := Outcome{WriteID: "01KWEXAMPLE000000000000000" + string(rune('a'+i)), Status: 201, Doc: doc}
		if outs, err = out.AppendJSON(outs); err != nil {
			b.Fatal(err)
		}
		ev := ChangeEvent{Partition: 3, Seq: int64(100 + i), Collection: doc.Collection, ID: doc.ID, Version: doc.Version, UpdatedAt: at, Doc: doc}
		if evs, err = ev.AppendJSON(evs); err != nil {
			b.Fatal(err)
		}
	}
	outs, evs = append(outs, "]}"...), append(evs, ']')
	alternate(b, "unmarshal", func() error {
		var m Outcomes
		var hs []EventHead
		if err := json.Unmarshal(outs, &m); err != nil {
			return err
		}
		if err := json.Unmarshal(evs, &hs); err != nil {
			return err
		}
		for i := range hs {
			hs[i].Doc = new(Document)
			if err := json.Unmarshal(hs[i].RawDoc, hs[i].Doc); err != nil {
				return err
			}
		}
		return nil
	}, "decode", func() error {
		var m Outcomes
		if err := DecodeOutcomes(outs, &m); err != nil {
			return err
		}
		hs, err := DecodeEventHeads(evs)
		for i := 0; err == nil && i < len(hs); i++ {
			err = hs[i].DecodeDoc()
		}
		return err
	})
}

// BenchmarkReadCodec compares the codecs with encoding/json on the messages of one cache
// fill: the edge encodes its request and the core decodes it, the core encodes its answer
// and the edge decodes that, in alternation within one run: it reports the ns of each and
// the codecs' time as a fraction of encoding/json's. doc is a read of a 1 KB document, page
// one of a list's page of 50 of them.
func BenchmarkReadCodec(b *testing.B) {
	at := time.Date(2026, 12, 2, 1, 2, 3, 456_789_000, time.UTC)
	doc := func(i int) Document {
		return Document{Collection: "bench", ID: fmt.Sprintf("d%06d", i), Version: 3, CreatedAt: at, UpdatedAt: at,
			Data: json.RawMessage(fmt.Sprintf(`{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", 850)))}
	}
	page := &ListPage{More: true}
	for i := range 50 {
		page.Items = append(page.Items, doc(i))
	}
	one := doc(123)
	for _, bc := range []struct {
		name string
		req  *ReadRequest
		resp *ReadResponse
	}{
		{"doc", &ReadRequest{Kind: ReadGet, Collection: "bench", ID: one.ID}, &ReadResponse{Doc: &one}},
		{"page", &ReadRequest{Kind: ReadList, List: &ListQuery{Collection: "bench", Order: OrderID, Limit: 50}}, &ReadResponse{Page: page}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			alternate(b, "json", func() error {
				data, err := json.Marshal(bc.req)
				if err != nil {
					return err
				}
				var r ReadRequest
				if err := json.Unmarshal(data, &r); err != nil {
					return err
				}
				if data, err = json.Marshal(bc.resp); err != nil {
					return err
				}
				var a ReadResponse
				return json.Unmarshal(data, &a)
			}, "codec", func() error {
				data, err := bc.req.AppendJSON(make([]byte, 0, 128))
				if err != nil {
					return err
				}
				var r ReadRequest
				if err := DecodeReadRequest(data, &r); err != nil {
					return err
				}
				if data, err = bc.resp.AppendJSON(nil); err != nil {
					return err
				}
				var a ReadResponse
				return DecodeReadResponse(data, &a)
			})
		})
	}
}
