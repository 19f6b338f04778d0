package wire

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/perchhq/perch/internal/problem"
)

// Encoders of the messages on the write path and of the reads that fill an edge's cache,
// each appending to a buffer exactly the bytes that json.Marshal produces for the same value
// (FuzzEncoders checks it against encoding/json), without reflection: a write is encoded
// three times on its way (the edge's batch, the core's write record and change event), and
// json.Marshal was a quarter of the core's CPU per command. They fail where json.Marshal
// fails: data that is not valid JSON, a time that RFC 3339 cannot hold.

// AppendJSON appends the JSON encoding of b, as json.Marshal makes it.
func (b *Batch) AppendJSON(dst []byte) ([]byte, error) {
	dst, err := AppendArray(b.appendHead(dst), b.Commands, func(dst []byte, c *Command) ([]byte, error) { return c.AppendJSON(dst) })
	if err != nil {
		return nil, err
	}
	return append(dst, '}'), nil
}

// appendHead appends the members of b before its commands, up to `"commands":`.
func (b *Batch) appendHead(dst []byte) []byte {
	dst = append(dst, `{"id":`...)
	dst = AppendString(dst, b.ID)
	dst = append(dst, `,"partition":`...)
	dst = strconv.AppendInt(dst, int64(b.Partition), 10)
	dst = append(dst, `,"edge":`...)
	dst = AppendString(dst, b.Edge)
	if b.Producer != "" {
		dst = append(dst, `,"producer":`...)
		dst = AppendString(dst, b.Producer)
	}
	if b.Seq != 0 {
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendInt(dst, b.Seq, 10)
	}
	if b.After != nil {
		dst = append(dst, `,"after":{"producer":`...)
		dst = AppendString(dst, b.After.Producer)
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendInt(dst, b.After.Seq, 10)
		dst = append(dst, '}')
	}
	return append(dst, `,"commands":`...)
}

// AppendJSONEncoded is AppendJSON of b with its commands given encoded already (each
// Command.AppendJSON), in their order; b.Commands is not read. A sender that sized a batch
// by its commands' encodings reuses them.
func (b *Batch) AppendJSONEncoded(dst []byte, commands [][]byte) []byte {
	dst = append(b.appendHead(dst), '[')
	for i, enc := range commands {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, enc...)
	}
	return append(dst, "]}"...)
}

// AppendJSON appends the JSON encoding of c, as json.Marshal makes it.
func (c *Command) AppendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, `{"write_id":`...)
	dst = AppendString(dst, c.WriteID)
	dst = append(dst, `,"op":`...)
	dst = AppendString(dst, string(c.Op))
	dst = append(dst, `,"collection":`...)
	dst = AppendString(dst, c.Collection)
	dst = append(dst, `,"id":`...)
	dst = AppendString(dst, c.ID)
	if len(c.Data) > 0 {
		dst = append(dst, `,"data":`...)
		var err error
		if dst, err = AppendRaw(dst, c.Data); err != nil {
			return nil, err
		}
	}
	if c.IfMatch != 0 {
		dst = append(dst, `,"if_match":`...)
		dst = strconv.AppendInt(dst, c.IfMatch, 10)
	}
	if c.IdemKey != "" {
		dst = append(dst, `,"idem_key":`...)
		dst = AppendString(dst, c.IdemKey)
	}
	if c.Fingerprint != "" {
		dst = append(dst, `,"fingerprint":`...)
		dst = AppendString(dst, c.Fingerprint)
	}
	if c.User != "" {
		dst = append(dst, `,"user":`...)
		dst = AppendString(dst, c.User)
	}
	if c.OwnerOnly {
		dst = append(dst, `,"owner_only":true`...)
	}
	return append(dst, '}'), nil
}

// AppendJSON appends the JSON encoding of d, as json.Marshal makes it.
func (d *Document) AppendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, `{"collection":`...)
	dst = AppendString(dst, d.Collection)
	dst = append(dst, `,"id":`...)
	dst = AppendString(dst, d.ID)
	dst = append(dst, `,"version":`...)
	dst = strconv.AppendInt(dst, d.Version, 10)
	var err error
	dst = append(dst, `,"created_at":`...)
	if dst, err = AppendTime(dst, d.CreatedAt); err != nil {
		return nil, err
	}
	dst = append(dst, `,"updated_at":`...)
	if dst, err = AppendTime(dst, d.UpdatedAt); err != nil {
		return nil, err
	}
	if d.Deleted {
		dst = append(dst, `,"deleted":true`...)
	}
	if len(d.Data) > 0 {
		dst = append(dst, `,"data":`...)
		if dst, err = AppendRaw(dst, d.Data); err != nil {
			return nil, err
		}
	}
	if d.Owner != "" {
		dst = append(dst, `,"owner":`...)
		dst = AppendString(dst, d.Owner)
	}
	return append(dst, '}'), nil
}

// AppendJSON appends the JSON encoding of o, as json.Marshal makes it (Encoded is not part of
// it).
func (o *Outcome) AppendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, `{"write_id":`...)
	dst = AppendString(dst, o.WriteID)
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(o.Status), 10)
	if o.Doc != nil {
		dst = append(dst, `,"doc":`...)
		var err error
		if dst, err = o.Doc.AppendJSON(dst); err != nil {
			return nil, err
		}
	}
	if o.Problem != nil {
		dst = append(dst, `,"problem":`...)
		dst = appendProblem(dst, o.Problem)
	}
	if o.Collection != "" {
		dst = append(dst, `,"collection":`...)
		dst = AppendString(dst, o.Collection)
	}
	if o.Replayed {
		dst = append(dst, `,"replayed":true`...)
	}
	return append(dst, '}'), nil
}

// AppendJSON appends the JSON encoding of ev, as json.Marshal makes it (Encoded is not part
// of it).
func (ev *ChangeEvent) AppendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, `{"partition":`...)
	dst = strconv.AppendInt(dst, int64(ev.Partition), 10)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendInt(dst, ev.Seq, 10)
	dst = append(dst, `,"collection":`...)
	dst = AppendString(dst, ev.Collection)
	dst = append(dst, `,"id":`...)
	dst = AppendString(dst, ev.ID)
	dst = append(dst, `,"version":`...)
	dst = strconv.AppendInt(dst, ev.Version, 10)
	if ev.Deleted {
		dst = append(dst, `,"deleted":true`...)
	}
	var err error
	dst = append(dst, `,"updated_at":`...)
	if dst, err = AppendTime(dst, ev.UpdatedAt); err != nil {
		return nil, err
	}
	if ev.Doc != nil {
		dst = append(dst, `,"doc":`...)
		if dst, err = ev.Doc.AppendJSON(dst); err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}

// AppendJSON appends the JSON encoding of r, as json.Marshal makes it. A read of one
// document or of a write's status is encoded here; the queries of lists, sync and an owner's
// documents, rarer and larger, are left to json.Marshal.
func (r *ReadRequest) AppendJSON(dst []byte) ([]byte, error) {
	if r.List != nil || r.Sync != nil || r.Owned != nil {
		return appendMarshal(dst, r)
	}
	dst = append(dst, `{"kind":`...)
	dst = AppendString(dst, string(r.Kind))
	if r.Collection != "" {
		dst = append(dst, `,"collection":`...)
		dst = AppendString(dst, r.Collection)
	}
	if r.ID != "" {
		dst = append(dst, `,"id":`...)
		dst = AppendString(dst, r.ID)
	}
	if r.WriteID != "" {
		dst = append(dst, `,"write_id":`...)
		dst = AppendString(dst, r.WriteID)
	}
	return append(dst, '}'), nil
}

// AppendJSON appends the JSON encoding of r, as json.Marshal makes it: every answer of the
// core to a read, a cache fill's document, a list's page or a page of changes.
func (r *ReadResponse) AppendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, '{')
	open := len(dst)
	member := func(name string) {
		if len(dst) > open {
			dst = append(dst, ',')
		}
		dst = append(dst, name...)
	}
	var err error
	if r.Problem != nil {
		member(`"problem":`)
		dst = appendProblem(dst, r.Problem)
	}
	if r.Doc != nil {
		member(`"doc":`)
		if dst, err = r.Doc.AppendJSON(dst); err != nil {
			return nil, err
		}
	}
	if r.Page != nil {
		member(`"page":`)
		if dst, err = r.Page.AppendJSON(dst); err != nil {
			return nil, err
		}
	}
	if r.Sync != nil {
		member(`"sync":`)
		if dst, err = r.Sync.AppendJSON(dst); err != nil {
			return nil, err
		}
	}
	if r.Write != nil {
		member(`"write":`)
		if dst, err = r.Write.AppendJSON(dst); err != nil {
			return nil, err
		}
	}
	return append(dst, '}'), nil
}

// AppendJSON appends the JSON encoding of p, as json.Marshal makes it.
func (p *ListPage) AppendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, `{"items":`...)
	dst, err := AppendArray(dst, p.Items, func(dst []byte, d *Document) ([]byte, error) { return d.AppendJSON(dst) })
	if err != nil {
		return nil, err
	}
	dst = append(dst, `,"more":`...)
	dst = strconv.AppendBool(dst, p.More)
	return append(dst, '}'), nil
}

// AppendJSON appends the JSON encoding of p, as json.Marshal makes it.
func (p *SyncPage) AppendJSON(dst []byte) ([]byte, error) {
	dst = append(dst, `{"changes":`...)
	dst, err := AppendArray(dst, p.Changes, func(dst []byte, c *Change) ([]byte, error) {
		dst = append(dst, `{"partition":`...)
		dst = strconv.AppendInt(dst, int64(c.Partition), 10)
		dst = append(dst, `,"seq":`...)
		dst = strconv.AppendInt(dst, c.Seq, 10)
		dst = append(dst, `,"doc":`...)
		dst, err := c.Doc.AppendJSON(dst)
		return append(dst, '}'), err
	})
	if err != nil {
		return nil, err
	}
	dst = append(dst, `,"next":`...)
	dst, _ = AppendArray(dst, p.Next, func(dst []byte, n *int64) ([]byte, error) { return strconv.AppendInt(dst, *n, 10), nil })
	dst = append(dst, `,"more":`...)
	dst = strconv.AppendBool(dst, p.More)
	return append(dst, '}'), nil
}

// AppendArray appends vs as a JSON array of what elem appends of each, or null for a nil
// slice, as json.Marshal encodes a slice.
func AppendArray[T any](dst []byte, vs []T, elem func([]byte, *T) ([]byte, error)) ([]byte, error) {
	if vs == nil {
		return append(dst, "null"...), nil
	}
	dst = append(dst, '[')
	for i := range vs {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = elem(dst, &vs[i]); err != nil {
			return nil, err
		}
	}
	return append(dst, ']'), nil
}

// appendMarshal appends json.Marshal's encoding of v.
func appendMarshal(dst []byte, v any) ([]byte, error) {
	enc, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(dst, enc...), nil
}

func appendProblem(dst []byte, p *problem.Problem) []byte {
	dst = append(dst, `{"type":`...)
	dst = AppendString(dst, p.Type)
	dst = append(dst, `,"title":`...)
	dst = AppendString(dst, p.Title)
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(p.Status), 10)
	if p.Detail != "" {
		dst = append(dst, `,"detail":`...)
		dst = AppendString(dst, p.Detail)
	}
	dst = append(dst, `,"code":`...)
	dst = AppendString(dst, string(p.Code))
	return append(dst, '}')
}

// AppendTime appends t as time.Time's MarshalJSON writes it.
func AppendTime(dst []byte, t time.Time) ([]byte, error) {
	dst = append(dst, '"')
	dst, err := t.AppendText(dst)
	if err != nil {
		return nil, err
	}
	return append(dst, '"'), nil
}

// AppendRaw appends raw JSON as json.Marshal does a json.RawMessage: compacted, with <, >, &,
// U+2028 and U+2029 escaped in its strings. JSON that needs neither, the common case of data
// that the core compacted already, is copied after a check of its validity.
func AppendRaw(dst, raw []byte) ([]byte, error) {
	if !plainJSON(raw) || !Valid(raw) {
		return appendMarshal(dst, json.RawMessage(raw))
	}
	return append(dst, raw...), nil
}

// plainJSON reports whether raw has no whitespace outside strings and nothing inside them
// that json.Marshal escapes for HTML (<, >, &, U+2028, U+2029), assuming it is valid JSON.
func plainJSON(raw []byte) bool {
	in, esc := false, false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if in {
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				in = false
			case c == '<' || c == '>' || c == '&':
				return false
			case c == 0xE2 && i+2 < len(raw) && raw[i+1] == 0x80 && (raw[i+2] == 0xA8 || raw[i+2] == 0xA9):
				return false
			}
			continue
		}
		switch c {
		case '"':
			in = true
		case ' ', '\t', '\n', '\r':
			return false
		}
	}
	return true
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string exactly as encoding/json writes it: HTML-safe
// (<, > and & escaped), invalid UTF-8 replaced by U+FFFD, U+2028 and U+2029 escaped.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if htmlSafe(b) {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// htmlSafe reports whether encoding/json writes the ASCII byte b as it is in a string.
func htmlSafe(b byte) bool {
	return b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&'
}
