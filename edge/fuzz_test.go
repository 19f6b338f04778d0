package edge

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/valyala/fasthttp"

	"github.com/perchhq/perch/internal/problem"
	"github.com/perchhq/perch/internal/wire"
)

func FuzzListCursor(f *testing.F) {
	q := &wire.ListQuery{Order: wire.OrderUpdatedAt, IDPrefix: "a"}
	f.Add(encodeListCursor(q, &wire.Document{ID: "a1", UpdatedAt: time.UnixMicro(1700000000000000)}), "updated_at", "a")
	f.Add(encodeListCursor(&wire.ListQuery{Order: wire.OrderID}, &wire.Document{ID: "x"}), "id", "")
	f.Add("!!!", "id", "")
	f.Add("e30", "-id", "")
	f.Add("eyJ2IjoxLCJvIjoiaWQiLCJpZCI6IiJ9", "id", "")
	f.Fuzz(func(t *testing.T, s, order, prefix string) {
		pos, err := decodeListCursor(s, wire.Order(order), prefix)
		if err != nil {
			return
		}
		// A cursor that decodes names a valid position of the query it was given.
		if !wire.ValidName(pos.ID) || !validOrder(wire.Order(order)) {
			t.Fatalf("accepted %q as %+v for order %q", s, pos, order)
		}
		again := encodeListCursor(&wire.ListQuery{Order: wire.Order(order), IDPrefix: prefix},
			&wire.Document{ID: pos.ID, UpdatedAt: pos.UpdatedAt})
		pos2, err := decodeListCursor(again, wire.Order(order), prefix)
		if err != nil || *pos2 != *pos {
			t.Fatalf("round trip of %+v: %+v, %v", pos, pos2, err)
		}
	})
}

func FuzzSyncCursor(f *testing.F) {
	cols := []string{"a", "b"}
	f.Add(encodeSyncCursor(cols, []int64{0, 3, 9}), "a,b")
	f.Add(encodeSyncCursor(cols, nil), "b,a")
	f.Add("eyJ2IjoxLCJjIjowLCJhIjpbLTFdfQ", "a")
	f.Add("", "a")
	f.Fuzz(func(t *testing.T, s, collections string) {
		set := bytes.Split([]byte(collections), []byte(","))
		names := make([]string, len(set))
		for i, c := range set {
			names[i] = string(c)
		}
		after, err := decodeSyncCursor(s, names, 16)
		if err != nil {
			return
		}
		if len(after) > 16 {
			t.Fatalf("cursor with %d partitions accepted", len(after))
		}
		for _, a := range after {
			if a < 0 {
				t.Fatalf("negative position accepted: %v", after)
			}
		}
	})
}

// FuzzRequestBody drives the decoder of write bodies: whatever it accepts is one JSON object,
// byte for byte the body that came, less surrounding white space.
func FuzzRequestBody(f *testing.F) {
	for _, s := range []string{`{}`, `{"a":1}`, ` {"a":[1,2,{"b":null}]} `, `[]`, `"x"`, `{"a":`, `{"a":1}{}`, "\xff", `{"a":1e999}`} {
		f.Add([]byte(s), "application/json")
	}
	f.Add([]byte(`{}`), "application/merge-patch+json")
	f.Add([]byte(`{}`), "text/plain")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		for _, op := range []wire.Op{wire.OpPut, wire.OpPatch} {
			var ctx fasthttp.RequestCtx
			ctx.Request.Header.SetContentType(contentType)
			ctx.Request.SetBody(body)
			got, perr := jsonObject(&ctx, op)
			if perr != nil {
				if perr.Status < 400 || perr.Status > 499 {
					t.Fatalf("refused with status %d", perr.Status)
				}
				continue
			}
			if !bytes.Equal(got, bytes.Trim(body, " \t\r\n")) {
				t.Fatalf("accepted body changed: %q → %q", body, got)
			}
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(got, &obj); err != nil {
				t.Fatalf("accepted %q, not an object: %v", body, err)
			}
			c := wire.Command{WriteID: "w", Op: op, Collection: "c", ID: "i", Data: got}
			if err := c.Validate(); err != nil {
				t.Fatalf("accepted body fails the core's check: %v", err)
			}
		}
	})
}

// FuzzChangeEvent drives the decoder of change-event messages from NATS (an array of events,
// or one): an event that passes the checks can be cached and rendered.
func FuzzChangeEvent(f *testing.F) {
	now := time.Now().UTC()
	d := &wire.Document{Collection: "c", ID: "i", Version: 2, CreatedAt: now, UpdatedAt: now, Data: json.RawMessage(`{"a":1}`)}
	good, _ := json.Marshal(wire.ChangeEvent{Partition: 1, Seq: 5, Collection: "c", ID: "i", Version: 2, UpdatedAt: now, Doc: d})
	f.Add(good)
	f.Add([]byte(`{"collection":"c","id":"i","version":1}`))
	f.Add([]byte(`{"collection":"c","id":"i","version":1,"doc":{"collection":"c","id":"i","version":1,"data":"x"}}`))
	f.Add([]byte(`{"collection":"c.d","id":"i","version":1}`))
	f.Add(append(append([]byte("["), good...), ',', '{', '}', ']'))
	f.Add([]byte(`[]`))
	f.Add([]byte(` [{"collection":"c","id":"i","version":1,"doc":null}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		evs, err := wire.DecodeEventHeads(data)
		if err != nil {
			return
		}
		for i := range evs {
			h := &evs[i]
			if h.DecodeDoc() != nil || !validEvent(&h.ChangeEvent) || h.Doc == nil {
				continue
			}
			ent := documentEntry(h.Doc)
			if ent.status == 200 && !json.Valid(ent.bytes()) {
				t.Fatalf("event %s renders invalid JSON %s", data, ent.body)
			}
		}
	})
}

// FuzzRenderDocument holds renderDocument to json.Marshal of the API form, for any names,
// data and times (json.Marshal refusing data or a time means the problem body instead), and
// the 202 receipt's encoder to json.Marshal.
func FuzzRenderDocument(f *testing.F) {
	f.Add("notes", "n1", int64(3), []byte(`{"a":[1,"<b>"],"c":{"d":null}}`), false, int64(1_764_633_600), 0)
	f.Add("c", "i", int64(1), []byte(nil), false, int64(0), 3600)
	f.Add("c", "i\u2028\xff", int64(-1), []byte(nil), true, int64(-62_135_596_801), -1)
	f.Add("c", "i", int64(2), []byte(` { "a" : 1 } `), true, int64(253_402_300_800), 0)
	f.Add("c", "i", int64(2), []byte(`{"a":`), false, int64(7), 0)
	f.Fuzz(func(t *testing.T, collection, id string, version int64, data []byte, deleted bool, secs int64, zone int) {
		at := time.Unix(secs, version%1e9).In(time.FixedZone("z", zone%(48*3600)))
		d := &wire.Document{Collection: collection, ID: id, Version: version, CreatedAt: at, UpdatedAt: at.Add(time.Second),
			Deleted: deleted, Data: data}
		want, err := json.Marshal(apiDoc(d))
		if err != nil {
			want = problem.New(problem.Internal, "stored document is not valid JSON").JSON()
		}
		if got := renderDocument(nil, d); !bytes.Equal(got, want) {
			t.Fatalf("renderDocument gives\n%s\njson.Marshal\n%s", got, want)
		}
		if got := renderDocument([]byte("x"), d); !bytes.Equal(got, append([]byte("x"), want...)) {
			t.Fatalf("renderDocument after a prefix gives %s", got)
		}
		for _, cursor := range []string{"", collection} {
			items := []wire.Document{*d, {Collection: id, ID: collection, Version: -version, CreatedAt: at, UpdatedAt: at}}
			page := listJSON{Items: []docJSON{apiDoc(&items[0]), apiDoc(&items[1])}, NextCursor: cursor}
			want, werr := json.Marshal(page)
			got, gerr := renderList([]byte("x"), items, cursor)
			if (werr == nil) != (gerr == nil) || werr == nil && !bytes.Equal(got, append([]byte("x"), want...)) {
				t.Fatalf("renderList gives %s (%v), json.Marshal %s (%v)", got, gerr, want, werr)
			}
		}
		for _, empty := range [][]wire.Document{nil, {}} {
			if got, _ := renderList(nil, empty, ""); string(got) != `{"items":[]}` {
				t.Fatalf("an empty page (%#v) renders as %s", empty, got)
			}
		}
		r := receiptJSON{WriteID: id, Status: "queued", StatusURL: "/v1/writes/" + id, Collection: collection, ID: string(data)}
		if want, _ := json.Marshal(r); !bytes.Equal(r.appendJSON(nil), want) {
			t.Fatalf("the receipt encodes as %s, json.Marshal %s", r.appendJSON(nil), want)
		}
	})
}

// listJSON is a list's page as the API shows it, encoded by encoding/json: what renderList
// is held to.
type listJSON struct {
	Items      []docJSON `json:"items"`
	NextCursor string    `json:"next_cursor,omitempty"`
}

// FuzzAcceptEncoding drives the Accept-Encoding parser of the hit path against a plain
// reading of RFC 9110 §12.5.3 written with strings and maps: they must always agree.
func FuzzAcceptEncoding(f *testing.F) {
	for _, s := range []string{"", "gzip, deflate, br", "br;q=0.5, gzip;q=0.5", "*;q=0, identity",
		"identity;q=0", "GZIP;Q=1.000", "x-gzip;q=0.001, br;q=0", " br ; q = 1 ,", "br;q=1.5", "br;q=0.5;q=1",
		"gzip;level=1", "*", "\"br\"", "br\x00", ";q=1,,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		got := negotiateCoding([]byte(h))
		if want := referenceCoding(h); got != want {
			t.Fatalf("Accept-Encoding %q: %s, the reference says %s", h, codingNames[got], codingNames[want])
		}
	})
}

var qvalueRE = regexp.MustCompile(`^(0(\.[0-9]{0,3})?|1(\.0{0,3})?)$`)

// referenceCoding is negotiateCoding written for clarity rather than speed.
func referenceCoding(h string) coding {
	weights := map[string]int{}
	for _, elem := range strings.Split(h, ",") {
		parts := strings.Split(elem, ";")
		name := strings.ToLower(strings.Trim(parts[0], " \t"))
		if name == "" || strings.IndexFunc(name, func(r rune) bool { return r >= 128 || !tokenChars[r] }) >= 0 {
			continue
		}
		if name == "x-gzip" {
			name = "gzip"
		}
		w, bad, seen := 1000, false, false
		for _, p := range parts[1:] {
			p = strings.Trim(p, " \t")
			if p == "" {
				continue
			}
			k, v, ok := strings.Cut(p, "=")
			if !ok {
				bad = true
				break
			}
			if !strings.EqualFold(strings.Trim(k, " \t"), "q") {
				continue
			}
			v = strings.Trim(v, " \t")
			if seen || !qvalueRE.MatchString(v) {
				bad = true
				break
			}
			seen = true
			w = 0
			if v[0] == '1' {
				w = 1000
			}
			for i, scale := 2, 100; i < len(v); i, scale = i+1, scale/10 {
				w += int(v[i]-'0') * scale
			}
		}
		if _, dup := weights[name]; !bad && !dup {
			weights[name] = w
		}
	}
	weight := func(name string) int {
		if w, ok := weights[name]; ok {
			return w
		}
		if w, ok := weights["*"]; ok {
			return w
		}
		return 0
	}
	br, gz, id := weight("br"), weight("gzip"), weight("identity")
	switch {
	case br > 0 && br >= gz && br >= id:
		return codingBrotli
	case gz > 0 && gz >= id:
		return codingGzip
	}
	return codingIdentity
}

// FuzzIfNoneMatch drives the If-None-Match matcher: a match answers with one of the entry's
// ETags, and a header that lists one of them first always matches.
func FuzzIfNoneMatch(f *testing.F) {
	for _, s := range []string{`"7"`, `"7-br"`, `W/"7-gz"`, `"6", "7"`, `*`, `W/, "7"`, `"7`, `,,`, `W/"`} {
		f.Add(s, uint8(0))
	}
	ent := &entry{version: 7}
	f.Fuzz(func(t *testing.T, h string, c uint8) {
		cd := coding(c % uint8(numCodings))
		m, ok := ent.matchETag([]byte(h), cd)
		if ok && m >= numCodings {
			t.Fatalf("%q answered with the ETag of coding %d, not one of the entry's", h, m)
		}
		if ok && m != cd && !strings.Contains(h, string(ent.tag(m))) {
			t.Fatalf("%q answered with %s, which it does not list", h, ent.tag(m))
		}
		for d := codingIdentity; d < numCodings; d++ {
			if _, ok := ent.matchETag([]byte(string(ent.tag(d))+", "+h), cd); !ok {
				t.Fatalf("%s followed by %q does not match", ent.tag(d), h)
			}
		}
	})
}

// FuzzPeerMaxAge: the headers of a peer fill request, which another edge sends, give an age
// no greater than either asks for, and a malformed one takes nothing cached.
func FuzzPeerMaxAge(f *testing.F) {
	f.Add("", "")
	f.Add("29", "")
	f.Add("29", "0")
	f.Add("", "1")
	f.Add("0", "5")
	f.Add("-1", "")
	f.Add("4294967296", "")
	f.Add("1e3", "x")
	f.Fuzz(func(t *testing.T, maxAge, distrusted string) {
		h := nats.Header{}
		if maxAge != "" {
			h.Set(hdrPeerMaxAge, maxAge)
		}
		if distrusted != "" {
			h.Set(hdrPeerDistrusted, distrusted)
		}
		got, err := peerMaxAge(h)
		want := int64(math.MaxInt64)
		valid := true
		for _, c := range []struct {
			v     string
			slack int64
		}{{maxAge, 0}, {distrusted, 2}} {
			if c.v == "" {
				continue
			}
			n, perr := strconv.ParseUint(c.v, 10, 32)
			if perr != nil {
				valid = false
				break
			}
			want = min(want, int64(n)-c.slack)
		}
		switch {
		case !valid && (err == nil || got >= 0):
			t.Fatalf("%q, %q: %d, %v; want an error and nothing cached", maxAge, distrusted, got, err)
		case valid && (err != nil || got != want):
			t.Fatalf("%q, %q: %d, %v; want %d", maxAge, distrusted, got, err, want)
		}
	})
}

// FuzzPeerFill: a peer fill's reply comes from another edge; whatever it holds, it decodes
// into an entry the cache can serve as it is, a problem, or an error.
func FuzzPeerFill(f *testing.F) {
	f.Add("3", "200", "", false, []byte(`{"id":"x"}`))
	f.Add("3", "200", "12", false, []byte(`{"id":"x"}`))
	f.Add("3", "200", "-1", false, []byte(`{"id":"x"}`))
	f.Add("0", "404", "99999999999", false, []byte(``))
	f.Add("", "503", "", false, problem.New(problem.Unavailable, "no core").JSON())
	f.Add("", "503", "", true, []byte(nil))
	f.Add("-1", "200", "", false, []byte(`{}`))
	f.Add("9", "200", "", false, []byte(`{`))
	f.Fuzz(func(t *testing.T, version, status, age string, busy bool, body []byte) {
		h := nats.Header{}
		h.Set(hdrPeerVersion, version)
		h.Set(hdrPeerStatus, status)
		if age != "" {
			h.Set(hdrPeerAge, age)
		}
		if busy {
			h.Set(hdrPeerBusy, "1")
		}
		ent, gotAge, err := decodePeerFill(h, body)
		if err == nil {
			want, perr := strconv.ParseUint(age, 10, 32)
			if age == "" {
				want, perr = 0, nil
			}
			if perr != nil || uint64(gotAge) != want || gotAge > maxPeerAge {
				t.Fatalf("age %q decoded as %d", age, gotAge)
			}
		}
		var p *problem.Problem
		switch {
		case errors.As(err, &p):
			if p.Status < 200 || p.Status > 599 || p.Code == "" {
				t.Fatalf("problem %+v", p)
			}
		case err != nil:
		case ent.status == 200:
			tag := string(ent.tag(codingIdentity))
			if ent.version < 1 || !json.Valid(ent.bytes()) || tag != `"`+version+`"` && tag != `"`+strconv.FormatInt(ent.version, 10)+`"` {
				t.Fatalf("entry %+v from %q %q", ent, version, status)
			}
		case ent.status == 404:
			if ent.version < 0 || !bytes.Equal(ent.bytes(), notFoundBody) {
				t.Fatalf("404 entry %+v", ent)
			}
		default:
			t.Fatalf("entry of status %d", ent.status)
		}
	})
}
