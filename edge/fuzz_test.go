package edge

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

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
		evs, err := decodeEvents(data)
		if err != nil {
			return
		}
		for i := range evs {
			h := &evs[i]
			if h.decodeDoc() != nil || !validEvent(&h.ChangeEvent) || h.Doc == nil {
				continue
			}
			ent := documentEntry(h.Doc)
			if ent.status == 200 && !json.Valid(ent.body) {
				t.Fatalf("event %s renders invalid JSON %s", data, ent.body)
			}
		}
	})
}
