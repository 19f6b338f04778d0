package wire

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/perchhq/perch/internal/problem"
)

// sameAsMarshal fails unless enc produces what json.Marshal makes of v: the same bytes, or an
// error when json.Marshal fails.
func sameAsMarshal(t *testing.T, what string, v any, enc func([]byte) ([]byte, error)) {
	t.Helper()
	want, werr := json.Marshal(v)
	prefix := []byte("prefix")
	got, gerr := enc(prefix[:len(prefix):len(prefix)])
	switch {
	case werr != nil && gerr == nil:
		t.Fatalf("%s: json.Marshal fails (%v), AppendJSON gives %s", what, werr, got)
	case werr == nil && gerr != nil:
		t.Fatalf("%s: AppendJSON fails (%v), json.Marshal gives %s", what, gerr, want)
	case werr == nil && !bytes.Equal(got, append(prefix, want...)):
		t.Fatalf("%s:\nAppendJSON  %q\njson.Marshal %q", what, got[len(prefix):], want)
	}
}

// checkEncoders compares every encoder with json.Marshal on values made of the given parts.
func checkEncoders(t *testing.T, s1, s2 string, data []byte, n int64, flag bool, nanos int64) {
	t.Helper()
	at := time.Unix(0, nanos).UTC()
	if flag {
		at = at.In(time.FixedZone("x", int(n%100000)))
	}
	doc := &Document{Collection: s1, ID: s2, Version: n, CreatedAt: at, UpdatedAt: at.Add(time.Duration(n)),
		Deleted: flag, Data: data, Owner: s2}
	sameAsMarshal(t, "document", doc, doc.AppendJSON)
	sameAsMarshal(t, "empty document", &Document{}, (&Document{}).AppendJSON)

	out := &Outcome{WriteID: s1, Status: int(n), Doc: doc, Replayed: flag, Encoded: data}
	sameAsMarshal(t, "outcome", out, out.AppendJSON)
	rej := &Outcome{WriteID: s2, Status: 412, Problem: problem.New(problem.PreconditionFailed, s1), Collection: s1, Replayed: flag}
	sameAsMarshal(t, "rejected outcome", rej, rej.AppendJSON)
	odd := &Outcome{Problem: &problem.Problem{Type: s2, Title: s1, Status: int(n), Code: problem.Code(s1)}}
	sameAsMarshal(t, "odd problem", odd, odd.AppendJSON)

	ev := &ChangeEvent{Partition: int(n % 1000), Seq: n, Collection: s1, ID: s2, Version: -n, Deleted: flag,
		UpdatedAt: at, Doc: doc, Encoded: data}
	sameAsMarshal(t, "event", ev, ev.AppendJSON)
	marker := &ChangeEvent{Seq: n, Collection: s2, UpdatedAt: at}
	sameAsMarshal(t, "event without document", marker, marker.AppendJSON)

	cmd := Command{WriteID: s1, Op: Op(s2), Collection: s1, ID: s2, Data: data, IfMatch: n, IdemKey: s2, Fingerprint: s1,
		User: s2, OwnerOnly: flag}
	b := &Batch{ID: s1, Partition: int(n), Edge: s2, Producer: s1, Seq: n, Force: flag,
		Commands: []Command{cmd, {WriteID: s2, Op: OpDelete}}}
	if flag {
		b.After = &BatchRef{Producer: s2, Seq: -n}
	}
	sameAsMarshal(t, "batch", b, b.AppendJSON)
	// With its commands encoded beforehand, as the edge sends it.
	encs := make([][]byte, len(b.Commands))
	for i := range b.Commands {
		var err error
		if encs[i], err = b.Commands[i].AppendJSON(nil); err != nil {
			return // refused as Marshal refuses it: sameAsMarshal checked that
		}
	}
	sameAsMarshal(t, "batch of encoded commands", b, func(dst []byte) ([]byte, error) { return b.AppendJSONEncoded(dst, encs), nil })
	sameAsMarshal(t, "empty batch", &Batch{}, (&Batch{}).AppendJSON)

	for _, r := range []*ReadRequest{{Kind: ReadKind(s1), Collection: s1, ID: s2}, {Kind: ReadWrite, WriteID: s2}, {},
		{Kind: ReadList, List: &ListQuery{Collection: s1, Limit: int(n), IDPrefix: s2}}} {
		sameAsMarshal(t, "read request", r, r.AppendJSON)
	}
	for _, r := range []*ReadResponse{{Doc: doc}, {Problem: problem.New(problem.NotFound, s1)}, {Write: rej}, {},
		{Problem: odd.Problem, Doc: doc, Write: out}, {Page: &ListPage{Items: []Document{*doc, {}}, More: flag}},
		{Page: &ListPage{}}, {Page: &ListPage{Items: []Document{}}}, {Sync: &SyncPage{}}, {Sync: &SyncPage{Changes: []Change{}, Next: []int64{}}},
		{Sync: &SyncPage{Changes: []Change{{Partition: int(n), Seq: -n, Doc: *doc}, {}}, Next: []int64{n, 0, -n}, More: flag}}} {
		sameAsMarshal(t, "read response", r, r.AppendJSON)
	}
	sameAsMarshal(t, "batch without commands", &Batch{Commands: []Command{}}, (&Batch{Commands: []Command{}}).AppendJSON)
}

var encoderSeeds = []struct {
	s1, s2 string
	data   string
}{
	{"notes", "k000001", `{"n":1,"s":"some text"}`},
	{"", "", ``},
	{"<a&b>", "\u2028\u2029\x00\x1f\"\\\b\f\n\r\t", `{"html":"<a href='x'>&amp;</a>","ls":"\u2028"}`},
	{"\xff\xfe", "é😀\xed\xa0\x80", "{\"raw\":\"\u2028\u2029\"}"},
	{"x", "y", "{ \"spaced\" : [ 1 , 2 ] ,\n\t\"k\": \"v v\" }"},
	{"x", "y", `[1,2,{"a":null,"b":true,"c":-1.5e10}]`},
	{"x", "y", `"just a string with \" and \\ and \u003c"`},
	{"x", "y", `{"unterminated":`},
	{"x", "y", `not json`},
	{"x", "y", `{"a":1} {"b":2}`},
	{"x", "y", "{\"bad utf8\":\"\xff\"}"},
	{"x", "y", `12`},
}

// TestEncodersCoverEveryField: a value with every field set (to what reflection can make of
// its type) encodes as json.Marshal makes it, so that a field added to a type without its
// encoder learning of it fails here.
func TestEncodersCoverEveryField(t *testing.T) {
	fill := func(v any) {
		rv := reflect.ValueOf(v).Elem()
		for i := range rv.NumField() {
			f := rv.Field(i)
			if !rv.Type().Field(i).IsExported() {
				continue
			}
			switch f.Kind() {
			case reflect.String:
				f.SetString("s" + rv.Type().Field(i).Name)
			case reflect.Bool:
				f.SetBool(true)
			case reflect.Int, reflect.Int64:
				f.SetInt(int64(i + 2))
			}
		}
	}
	at := time.Date(2026, 12, 2, 1, 2, 3, 4, time.UTC)
	doc := &Document{CreatedAt: at, UpdatedAt: at, Data: json.RawMessage(`{"a":1}`)}
	fill(doc)
	sameAsMarshal(t, "document", doc, doc.AppendJSON)
	cmd := Command{Data: json.RawMessage(`{"a":1}`)}
	fill(&cmd)
	b := &Batch{Commands: []Command{cmd}, After: &BatchRef{Producer: "p", Seq: 1}}
	fill(b)
	sameAsMarshal(t, "batch", b, b.AppendJSON)
	out := &Outcome{Doc: doc, Problem: problem.New(problem.NotFound, "x")}
	fill(out)
	sameAsMarshal(t, "outcome", out, out.AppendJSON)
	ev := &ChangeEvent{UpdatedAt: at, Doc: doc}
	fill(ev)
	sameAsMarshal(t, "event", ev, ev.AppendJSON)
	req := &ReadRequest{}
	fill(req)
	sameAsMarshal(t, "read request", req, req.AppendJSON)
	page, sync := &ListPage{Items: []Document{*doc}}, &SyncPage{Changes: []Change{{Doc: *doc}}, Next: []int64{1}}
	fill(page)
	fill(sync)
	fill(&sync.Changes[0])
	resp := &ReadResponse{Problem: problem.New(problem.NotFound, "x"), Doc: doc, Page: page, Sync: sync, Write: out}
	sameAsMarshal(t, "read response", resp, resp.AppendJSON)
}

func TestEncodersMatchMarshal(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	times := []int64{0, 1, 999_999_999, time.Date(2026, 12, 2, 1, 2, 3, 456_789_000, time.UTC).UnixNano(), -1}
	for _, s := range encoderSeeds {
		for _, n := range []int64{0, 1, -1, 1 << 62, 86399} {
			for _, flag := range []bool{false, true} {
				checkEncoders(t, s.s1, s.s2, []byte(s.data), n, flag, times[r.IntN(len(times))])
			}
		}
	}
	// Random strings of the bytes that encoding/json treats specially.
	alphabet := []string{"a", "<", ">", "&", "\"", "\\", "\n", "\x01", "\x7f", "é", "\u2028", "\u2029", "\xff", "\xe2\x80", " ", "{", "}"}
	str := func() string {
		var b []byte
		for range r.IntN(12) {
			b = append(b, alphabet[r.IntN(len(alphabet))]...)
		}
		return string(b)
	}
	for range 2000 {
		s1, s2 := str(), str()
		data, _ := json.Marshal(map[string]any{s1: s2, "n": r.Int64()})
		if r.IntN(2) == 0 {
			data = bytes.ReplaceAll(data, []byte(`\u003c`), []byte(`<`))
		}
		checkEncoders(t, s1, s2, data, r.Int64()-r.Int64(), r.IntN(2) == 0, r.Int64N(1<<62))
	}
}

// TestEncodersRefuseWhatMarshalRefuses: times RFC 3339 cannot hold.
func TestEncodersRefuseWhatMarshalRefuses(t *testing.T) {
	for _, at := range []time.Time{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("odd", 24*3600+1))} {
		doc := &Document{Collection: "c", ID: "i", Version: 1, CreatedAt: at, UpdatedAt: at}
		sameAsMarshal(t, "document at "+at.String(), doc, doc.AppendJSON)
		ev := &ChangeEvent{UpdatedAt: at}
		sameAsMarshal(t, "event at "+at.String(), ev, ev.AppendJSON)
		if _, err := doc.AppendJSON(nil); err == nil {
			t.Errorf("a document at %v encoded", at)
		}
	}
}

// FuzzEncoders checks the write path's encoders against json.Marshal.
func FuzzEncoders(f *testing.F) {
	for _, s := range encoderSeeds {
		f.Add(s.s1, s.s2, []byte(s.data), int64(7), true, int64(1_700_000_000_123_456_789))
	}
	f.Fuzz(func(t *testing.T, s1, s2 string, data []byte, n int64, flag bool, nanos int64) {
		checkEncoders(t, s1, s2, data, n, flag, nanos)
	})
}

// BenchmarkEncoders compares the encoders with json.Marshal on what the core encodes for one
// write, its outcome and its change event (each with the document), in alternation within one
// run: it reports the ns of each and AppendJSON's time as a fraction of json.Marshal's.
func BenchmarkEncoders(b *testing.B) {
	at := time.Date(2026, 12, 2, 1, 2, 3, 456_789_000, time.UTC)
	doc := &Document{Collection: "bench", ID: "k123456", Version: 3, CreatedAt: at, UpdatedAt: at,
		Data: json.RawMessage(`{"n":17,"s":"some text of a small document"}`)}
	out := &Outcome{WriteID: "01KBEXAMPLE0000000000000000", Status: 200, Doc: doc}
	ev := &ChangeEvent{Partition: 3, Seq: 123456, Collection: doc.Collection, ID: doc.ID, Version: doc.Version,
		UpdatedAt: at, Doc: doc}
	alternate(b, "marshal", func() error {
		if _, err := json.Marshal(out); err != nil {
			return err
		}
		_, err := json.Marshal(ev)
		return err
	}, "append", func() error {
		if _, err := out.AppendJSON(make([]byte, 0, 512)); err != nil {
			return err
		}
		_, err := ev.AppendJSON(make([]byte, 0, 512))
		return err
	})
}

// alternate runs base and then f once an iteration, so that both see the same machine, and
// reports the ns of each (<name>_ns) and f's time as a fraction of base's (<name>/<baseName>).
func alternate(b *testing.B, baseName string, base func() error, name string, f func() error) {
	var tBase, tF time.Duration
	for b.Loop() {
		t0 := time.Now()
		if err := base(); err != nil {
			b.Fatalf("%s: %v", baseName, err)
		}
		t1 := time.Now()
		if err := f(); err != nil {
			b.Fatalf("%s: %v", name, err)
		}
		tBase += t1.Sub(t0)
		tF += time.Since(t1)
	}
	b.ReportMetric(float64(tBase.Nanoseconds())/float64(b.N), baseName+"_ns")
	b.ReportMetric(float64(tF.Nanoseconds())/float64(b.N), name+"_ns")
	b.ReportMetric(float64(tF)/float64(tBase), name+"/"+baseName)
}
