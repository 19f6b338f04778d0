package wire

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/perchhq/perch/internal/problem"
)

// Decoders of the messages of the write path (the batches a core reads, the outcomes, change
// events and documents that come back to an edge) and of the reads that fill an edge's
// cache (a request for one document or a write's status, and every answer to a read). Each
// reads the JSON that this package's encoders write, without reflection, and leaves
// anything else to json.Unmarshal: a key it does not expect, a null, an escaped string, a
// number that is not a plain integer. So each decodes every input exactly as json.Unmarshal
// does (FuzzDecoders checks it), and a message decodes once, not twice over (validity, then
// values) as with encoding/json.

// DecodeBatch decodes b from data as json.Unmarshal(data, b) does into a zero Batch.
func DecodeBatch(data []byte, b *Batch) error { return decode(data, b, (*lexer).batch) }

// DecodeDocument decodes d from data as json.Unmarshal(data, d) does into a zero Document.
func DecodeDocument(data []byte, d *Document) error { return decode(data, d, (*lexer).document) }

// DecodeOutcomes decodes m from data as json.Unmarshal(data, m) does into a zero Outcomes.
func DecodeOutcomes(data []byte, m *Outcomes) error { return decode(data, m, (*lexer).outcomes) }

// DecodeReadRequest decodes r from data as json.Unmarshal(data, r) does into a zero
// ReadRequest.
func DecodeReadRequest(data []byte, r *ReadRequest) error {
	return decode(data, r, (*lexer).readRequest)
}

// DecodeReadResponse decodes r from data as json.Unmarshal(data, r) does into a zero
// ReadResponse.
func DecodeReadResponse(data []byte, r *ReadResponse) error {
	return decode(data, r, (*lexer).readResponse)
}

// decode reads v from data with read, or, when read does not take all of data, with
// json.Unmarshal into a zero v.
func decode[T any](data []byte, v *T, read func(*lexer, *T) bool) error {
	l := newLexer(data)
	if read(&l, v) && l.end() {
		return nil
	}
	*v = *new(T)
	return json.Unmarshal(data, v)
}

// EventHead is a ChangeEvent whose document is left encoded, in RawDoc, for a reader that
// decodes it only when it needs it (DecodeDoc).
type EventHead struct {
	ChangeEvent
	RawDoc json.RawMessage `json:"doc,omitempty"`
}

// HasDoc reports whether the event carries a document.
func (h *EventHead) HasDoc() bool { return len(h.RawDoc) > 0 && !bytes.Equal(h.RawDoc, jsonNull) }

// DecodeDoc decodes the event's document, if it carries one, into its Doc.
func (h *EventHead) DecodeDoc() error {
	if !h.HasDoc() {
		return nil
	}
	h.Doc = new(Document)
	return DecodeDocument(h.RawDoc, h.Doc)
}

var jsonNull = []byte("null")

// DecodeEventHeads decodes a message of change events, a JSON array of events or one event,
// as json.Unmarshal does into a []EventHead (or one EventHead).
func DecodeEventHeads(data []byte) ([]EventHead, error) {
	l := newLexer(data)
	l.ws()
	if l.peek() == '{' {
		evs := make([]EventHead, 1)
		return evs, decode(data, &evs[0], (*lexer).eventHead)
	}
	if evs, ok := array(&l, (*lexer).eventHead); ok && l.end() {
		return evs, nil
	}
	var evs []EventHead
	return evs, json.Unmarshal(data, &evs)
}

// lexer reads JSON values of the forms the encoders write. Each method reports false for
// anything else, and the caller then leaves the whole input to json.Unmarshal.
type lexer struct {
	validator // the input and the position, its whitespace and its end
	// depth is how many arrays and objects the lexer is inside: a raw value counts them
	// toward the nesting limit, as json.Unmarshal counts over the whole message.
	depth int
}

func newLexer(data []byte) lexer { return lexer{validator: validator{data: data}} }

// peek is the next byte, or 0 at the end.
func (l *lexer) peek() byte {
	if l.i < len(l.data) {
		return l.data[l.i]
	}
	return 0
}

// take consumes c when it comes next after any whitespace, and reports whether it did.
func (l *lexer) take(c byte) bool {
	l.ws()
	if l.peek() != c {
		return false
	}
	l.i++
	return true
}

// str reads a string without escapes or control characters, in valid UTF-8: what
// json.Unmarshal would decode as exactly its bytes.
func (l *lexer) str() (string, bool) {
	b, ok := l.strBytes()
	return string(b), ok
}

func (l *lexer) strBytes() ([]byte, bool) {
	if !l.take('"') {
		return nil, false
	}
	start := l.i
	ascii := true
	for ; l.i < len(l.data); l.i++ {
		switch c := l.data[l.i]; {
		case c == '"':
			b := l.data[start:l.i]
			l.i++
			return b, ascii || utf8.Valid(b)
		case c == '\\' || c < 0x20:
			return nil, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, false
}

// quoted reads a string as str does and returns it with its quotes: what a
// json.Unmarshaler is given.
func (l *lexer) quoted() ([]byte, bool) {
	l.ws()
	start := l.i
	if _, ok := l.strBytes(); !ok {
		return nil, false
	}
	return l.data[start:l.i], true
}

// int reads a number that strconv.ParseInt takes whole, as json.Unmarshal decodes into an
// int64 or int.
func (l *lexer) int() (int64, bool) {
	l.ws()
	start := l.i
	for l.i < len(l.data) && (l.data[l.i] == '-' || l.data[l.i] >= '0' && l.data[l.i] <= '9') {
		l.i++
	}
	lit := l.data[start:l.i]
	if len(lit) == 0 || len(lit) > 1 && lit[0] == '0' || len(lit) > 2 && lit[0] == '-' && lit[1] == '0' {
		return 0, false // a leading zero: not JSON
	}
	n, err := strconv.ParseInt(string(lit), 10, 64)
	return n, err == nil
}

// smallInt reads a number as int does, into an int.
func (l *lexer) smallInt() (int, bool) {
	n, ok := l.int()
	return int(n), ok
}

// bool reads true or false.
func (l *lexer) bool() (bool, bool) {
	l.ws()
	switch {
	case bytes.HasPrefix(l.data[l.i:], []byte("true")):
		l.i += 4
		return true, true
	case bytes.HasPrefix(l.data[l.i:], []byte("false")):
		l.i += 5
		return false, true
	}
	return false, false
}

// time reads a string as time.Time's UnmarshalJSON does.
func (l *lexer) time(t *time.Time) bool {
	q, ok := l.quoted()
	return ok && t.UnmarshalJSON(q) == nil
}

// raw reads any valid JSON object or array and returns its bytes, as json.RawMessage keeps
// them. It reads them as Valid does, inside the lexer's depth.
func (l *lexer) raw() ([]byte, bool) {
	l.ws()
	if c := l.peek(); c != '{' && c != '[' {
		return nil, false
	}
	v := l.validator
	if !v.value(l.depth) {
		return nil, false
	}
	start := l.i
	l.i = v.i
	return l.data[start:l.i], true
}

// array reads an array of values that elem reads; [] is an empty slice, not nil, as
// json.Unmarshal makes it.
func array[T any](l *lexer, elem func(*lexer, *T) bool) ([]T, bool) {
	if !l.take('[') {
		return nil, false
	}
	l.depth++
	defer func() { l.depth-- }()
	vs := []T{}
	if l.take(']') {
		return vs, true
	}
	for {
		vs = append(vs, *new(T))
		if !elem(l, &vs[len(vs)-1]) {
			return nil, false
		}
		if l.take(']') {
			return vs, true
		}
		if !l.take(',') {
			return nil, false
		}
	}
}

// rawCopy is raw, copied out of the input, as json.RawMessage copies it.
func (l *lexer) rawCopy() (json.RawMessage, bool) {
	v, ok := l.raw()
	return bytes.Clone(v), ok
}

// object reads an object whose every key is one of keys, each at most once, calling field
// with the key's index to read its value.
func (l *lexer) object(keys []string, field func(int) bool) bool {
	if !l.take('{') {
		return false
	}
	l.depth++
	defer func() { l.depth-- }()
	if l.take('}') {
		return true
	}
	var seen uint64
	for {
		k, ok := l.strBytes()
		if !ok || !l.take(':') {
			return false
		}
		i := 0
		for i < len(keys) && keys[i] != string(k) {
			i++
		}
		if i == len(keys) || seen&(1<<i) != 0 {
			return false // a key to match as json.Unmarshal does (without case), or twice
		}
		seen |= 1 << i
		if !field(i) {
			return false
		}
		if l.take('}') {
			return true
		}
		if !l.take(',') {
			return false
		}
	}
}

var documentKeys = []string{"collection", "id", "version", "created_at", "updated_at", "deleted", "data", "owner"}

func (l *lexer) document(d *Document) bool {
	return l.object(documentKeys, func(k int) (ok bool) {
		switch k {
		case 0:
			d.Collection, ok = l.str()
		case 1:
			d.ID, ok = l.str()
		case 2:
			d.Version, ok = l.int()
		case 3:
			ok = l.time(&d.CreatedAt)
		case 4:
			ok = l.time(&d.UpdatedAt)
		case 5:
			d.Deleted, ok = l.bool()
		case 6:
			d.Data, ok = l.rawCopy()
		case 7:
			d.Owner, ok = l.str()
		}
		return ok
	})
}

var outcomeKeys = []string{"write_id", "status", "doc", "collection", "replayed", "problem"}

func (l *lexer) outcome(o *Outcome) bool {
	return l.object(outcomeKeys, func(k int) (ok bool) {
		switch k {
		case 0:
			o.WriteID, ok = l.str()
		case 1:
			o.Status, ok = l.smallInt()
		case 2:
			o.Doc = new(Document)
			ok = l.document(o.Doc)
		case 3:
			o.Collection, ok = l.str()
		case 4:
			o.Replayed, ok = l.bool()
		case 5:
			o.Problem = new(problem.Problem)
			ok = l.problem(o.Problem)
		}
		return ok
	})
}

var outcomesKeys = []string{"batch", "outcomes"}

func (l *lexer) outcomes(m *Outcomes) bool {
	return l.object(outcomesKeys, func(k int) (ok bool) {
		if k == 0 {
			m.Batch, ok = l.str()
			return ok
		}
		m.Outcomes, ok = array(l, (*lexer).outcome)
		return ok
	})
}

var eventKeys = []string{"partition", "seq", "collection", "id", "version", "deleted", "updated_at", "doc"}

func (l *lexer) eventHead(h *EventHead) bool {
	ev := &h.ChangeEvent
	return l.object(eventKeys, func(k int) (ok bool) {
		switch k {
		case 0:
			ev.Partition, ok = l.smallInt()
		case 1:
			ev.Seq, ok = l.int()
		case 2:
			ev.Collection, ok = l.str()
		case 3:
			ev.ID, ok = l.str()
		case 4:
			ev.Version, ok = l.int()
		case 5:
			ev.Deleted, ok = l.bool()
		case 6:
			ok = l.time(&ev.UpdatedAt)
		case 7:
			h.RawDoc, ok = l.rawCopy()
		}
		return ok
	})
}

var batchKeys = []string{"id", "partition", "edge", "producer", "seq", "after", "commands"}

func (l *lexer) batch(b *Batch) bool {
	return l.object(batchKeys, func(k int) (ok bool) {
		switch k {
		case 0:
			b.ID, ok = l.str()
		case 1:
			b.Partition, ok = l.smallInt()
		case 2:
			b.Edge, ok = l.str()
		case 3:
			b.Producer, ok = l.str()
		case 4:
			b.Seq, ok = l.int()
		case 5:
			b.After = new(BatchRef)
			ok = l.object(batchRefKeys, func(k int) (ok bool) {
				if k == 0 {
					b.After.Producer, ok = l.str()
				} else {
					b.After.Seq, ok = l.int()
				}
				return ok
			})
		case 6:
			b.Commands, ok = array(l, (*lexer).command)
		}
		return ok
	})
}

var batchRefKeys = []string{"producer", "seq"}

var commandKeys = []string{"write_id", "op", "collection", "id", "data", "if_match", "idem_key", "fingerprint", "user", "owner_only"}

func (l *lexer) command(c *Command) bool {
	return l.object(commandKeys, func(k int) (ok bool) {
		switch k {
		case 0:
			c.WriteID, ok = l.str()
		case 1:
			var op string
			op, ok = l.str()
			c.Op = Op(op)
		case 2:
			c.Collection, ok = l.str()
		case 3:
			c.ID, ok = l.str()
		case 4:
			c.Data, ok = l.rawCopy()
		case 5:
			c.IfMatch, ok = l.int()
		case 6:
			c.IdemKey, ok = l.str()
		case 7:
			c.Fingerprint, ok = l.str()
		case 8:
			c.User, ok = l.str()
		case 9:
			c.OwnerOnly, ok = l.bool()
		}
		return ok
	})
}

var readRequestKeys = []string{"kind", "collection", "id", "write_id"}

// readRequest reads a request for a document or a write's status; the queries of lists,
// sync and an owner's documents are left to json.Unmarshal.
func (l *lexer) readRequest(r *ReadRequest) bool {
	return l.object(readRequestKeys, func(k int) (ok bool) {
		switch k {
		case 0:
			var kind string
			kind, ok = l.str()
			r.Kind = ReadKind(kind)
		case 1:
			r.Collection, ok = l.str()
		case 2:
			r.ID, ok = l.str()
		case 3:
			r.WriteID, ok = l.str()
		}
		return ok
	})
}

var readResponseKeys = []string{"problem", "doc", "page", "sync", "write"}

func (l *lexer) readResponse(r *ReadResponse) bool {
	return l.object(readResponseKeys, func(k int) bool {
		switch k {
		case 0:
			r.Problem = new(problem.Problem)
			return l.problem(r.Problem)
		case 1:
			r.Doc = new(Document)
			return l.document(r.Doc)
		case 2:
			r.Page = new(ListPage)
			return l.listPage(r.Page)
		case 3:
			r.Sync = new(SyncPage)
			return l.syncPage(r.Sync)
		default:
			r.Write = new(Outcome)
			return l.outcome(r.Write)
		}
	})
}

var listPageKeys = []string{"items", "more"}

func (l *lexer) listPage(p *ListPage) bool {
	return l.object(listPageKeys, func(k int) (ok bool) {
		if k == 0 {
			p.Items, ok = array(l, (*lexer).document)
		} else {
			p.More, ok = l.bool()
		}
		return ok
	})
}

var syncPageKeys = []string{"changes", "next", "more"}

func (l *lexer) syncPage(p *SyncPage) bool {
	return l.object(syncPageKeys, func(k int) (ok bool) {
		switch k {
		case 0:
			p.Changes, ok = array(l, (*lexer).change)
		case 1:
			p.Next, ok = array(l, func(l *lexer, n *int64) (ok bool) {
				*n, ok = l.int()
				return ok
			})
		case 2:
			p.More, ok = l.bool()
		}
		return ok
	})
}

var changeKeys = []string{"partition", "seq", "doc"}

func (l *lexer) change(c *Change) bool {
	return l.object(changeKeys, func(k int) (ok bool) {
		switch k {
		case 0:
			c.Partition, ok = l.smallInt()
		case 1:
			c.Seq, ok = l.int()
		case 2:
			ok = l.document(&c.Doc)
		}
		return ok
	})
}

var problemKeys = []string{"type", "title", "status", "detail", "code"}

func (l *lexer) problem(p *problem.Problem) bool {
	return l.object(problemKeys, func(k int) (ok bool) {
		switch k {
		case 0:
			p.Type, ok = l.str()
		case 1:
			p.Title, ok = l.str()
		case 2:
			p.Status, ok = l.smallInt()
		case 3:
			p.Detail, ok = l.str()
		case 4:
			var code string
			code, ok = l.str()
			p.Code = problem.Code(code)
		}
		return ok
	})
}
