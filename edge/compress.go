package edge

import (
	"bytes"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/valyala/fasthttp"
)

// coding is a content coding the edge answers with (RFC 9110 §8.4.1).
type coding uint8

const (
	codingIdentity coding = iota
	codingGzip
	codingBrotli
	numCodings
)

// codingNames are the Content-Encoding values of the codings, and the label values of their
// metrics.
var codingNames = [numCodings][]byte{
	codingIdentity: []byte("identity"),
	codingGzip:     []byte("gzip"),
	codingBrotli:   []byte("br"),
}

// codingSuffixes end the ETag of a compressed form, inside the quotes: `"3-gz"`, `"3-br"`. A
// strong validator must tell representations apart (RFC 9110 §8.8.3), and the bytes of a
// compressed form are not those of the document.
var codingSuffixes = [numCodings]string{codingGzip: "-gz", codingBrotli: "-br"}

// Compression levels. A form is made on the request path of the first request that wants it,
// and again for every new version of a document on every edge that serves it compressed, so
// the levels are the cheap ends of the good ratios. Measured on 16 KiB of JSON records (ids,
// dates, numbers) and of JSON notes (prose), with the compressors of fasthttp v1.78 (klauspost
// gzip, go-brrr):
//
//   - gzip 6, zlib's default: 0.28 and 0.37 of the size; level 9 takes 3.5 times as long for
//     0.26, level 1 half as long for 0.30.
//   - brotli 3: 0.27 and 0.36, in 1.2 to 1.3 times gzip 6's time. Level 4 (fasthttp's
//     default) compresses no better here and takes 1.4 to 1.8 times as long as 3; level 5
//     gains 4% for 2.5 times the time.
const (
	gzipLevel   = fasthttp.CompressDefaultCompression
	brotliLevel = 3
)

// form is an entry's body in one content coding, made once, on first demand.
type form struct {
	// body is the compressed body; nil when the coding did not make the body smaller, and
	// the entry is then served as it is.
	body []byte
}

// forms are an entry's compressed forms. They are allocated with the first form an entry is
// asked for: most entries never are, and go without.
type forms struct {
	// mu is held while a form is made, so that each is made once.
	mu sync.Mutex
	// of are the forms by coding less one: nil until a request wants that coding.
	of [numCodings - 1]atomic.Pointer[form]
}

// notSmaller is the form of a coding that did not make an entry's body small enough.
var notSmaller = &form{}

// compressedBody returns ent's body in coding c, or nil when that is not smaller than the body
// itself. The form is made by the first caller and kept with the entry: later callers load it
// with two atomic reads, without a lock; callers that come while it is being made wait for it,
// so that each entry and coding is compressed once.
func (e *Edge) compressedBody(ent *entry, c coding) []byte {
	fs := ent.forms.Load()
	if fs != nil {
		if f := fs.of[c-1].Load(); f != nil {
			return f.body
		}
	} else if fs = new(forms); !ent.forms.CompareAndSwap(nil, fs) {
		fs = ent.forms.Load()
	}
	slot := &fs.of[c-1]
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if f := slot.Load(); f != nil {
		return f.body
	}
	b, ok := compress(c, ent.bytes())
	if !ok {
		// Nothing is kept: the next request tries again.
		e.metrics.compressions[c][compressSkipped].Inc()
		return nil
	}
	// The entry was charged half its body for its forms, all codings together
	// (docCache.cost): a form is kept only while the forms stay within that. A body that
	// compresses less is served as it is.
	kept := 0
	for i := range fs.of {
		if o := fs.of[i].Load(); o != nil {
			kept += len(o.body)
		}
	}
	f, result := notSmaller, compressNotSmaller
	if kept+len(b) <= len(ent.body)/2 {
		f, result = &form{body: b}, compressKept
	}
	slot.Store(f)
	e.metrics.compressions[c][result].Inc()
	return f.body
}

// Results of making a form, for metrics.
const (
	compressKept = iota
	compressNotSmaller
	compressSkipped
	numCompressResults
)

var compressResults = [numCompressResults]string{"kept", "not_smaller", "skipped"}

// compressScratch holds buffers to compress into; what is kept is copied out at its size.
// Buffers above maxScratch are left to the collector.
const maxScratch = 1 << 20

var compressScratch = sync.Pool{New: func() any { return new([]byte) }}

// compress returns body in coding c, in a slice of its own length, or false when it could not
// be compressed now. fasthttp compresses on a few worker goroutines of its own (so that the
// compressor's deep stack is not copied into request goroutines) and when their queue is full
// it appends nothing and says nothing; a gzip or brotli stream is never empty, so an empty
// result is that refusal.
func compress(c coding, body []byte) ([]byte, bool) {
	bp := compressScratch.Get().(*[]byte)
	b := (*bp)[:0]
	switch c {
	case codingGzip:
		b = fasthttp.AppendGzipBytesLevel(b, body, gzipLevel)
	case codingBrotli:
		b = fasthttp.AppendBrotliBytesLevel(b, body, brotliLevel)
	}
	var out []byte
	if len(b) > 0 {
		out = bytes.Clone(b)
	}
	if cap(b) <= maxScratch {
		*bp = b
		compressScratch.Put(bp)
	}
	return out, out != nil
}

// negotiateCoding chooses the coding of an answer from the request's Accept-Encoding (RFC
// 9110 §12.5.3): the acceptable coding of highest weight among br and gzip, br on a tie, and
// identity when identity weighs more or neither is acceptable. It allocates nothing.
//
//   - No header, or an empty one: identity.
//   - Names are case-insensitive; x-gzip is gzip (§8.4.1.3).
//   - `*` gives its weight to every coding not named, identity included.
//   - identity is acceptable unless refused (identity;q=0, or *;q=0 without identity named),
//     but a coding that is merely unnamed ranks below any coding the client asked for.
//   - An element that does not parse (a bad name or weight) is ignored, as if it were absent.
//
// When the client refuses identity and accepts nothing the edge has, the edge disregards the
// header and answers identity, as §12.5.3 allows, rather than a 406 or 415.
func negotiateCoding(h []byte) coding {
	qBr, qGzip, qIdentity, qStar := -1, -1, -1, -1
	for len(h) > 0 {
		var elem []byte
		if i := bytes.IndexByte(h, ','); i >= 0 {
			elem, h = h[:i], h[i+1:]
		} else {
			elem, h = h, nil
		}
		name, q, ok := parseCodingElem(elem)
		if !ok {
			continue
		}
		var slot *int
		switch len(name) {
		case 1:
			if name[0] == '*' {
				slot = &qStar
			}
		case 2:
			if equalFoldASCII(name, "br") {
				slot = &qBr
			}
		case 4, 6:
			if equalFoldASCII(name, "gzip") || equalFoldASCII(name, "x-gzip") {
				slot = &qGzip
			}
		case 8:
			if equalFoldASCII(name, "identity") {
				slot = &qIdentity
			}
		}
		if slot == nil {
			continue
		}
		// A coding named twice keeps its first weight.
		if *slot < 0 {
			*slot = q
		}
	}
	weight := func(q int) int {
		switch {
		case q >= 0:
			return q
		case qStar >= 0:
			return qStar
		}
		return 0
	}
	// identity unnamed and without `*` weighs 0 here: still the answer when nothing else
	// is acceptable, but below every coding of positive weight.
	best, bestQ := codingIdentity, weight(qIdentity)
	if q := weight(qGzip); q > 0 && q >= bestQ {
		best, bestQ = codingGzip, q
	}
	if q := weight(qBr); q > 0 && q >= bestQ {
		best = codingBrotli
	}
	return best
}

// parseCodingElem parses one element of Accept-Encoding: a coding name and optional
// parameters, of which only the weight `q` counts. It returns the weight in thousandths
// (1000 when absent), or false when the element is empty or malformed.
func parseCodingElem(elem []byte) (name []byte, q int, ok bool) {
	elem = trimOWS(elem)
	end := 0
	for end < len(elem) && isTokenChar(elem[end]) {
		end++
	}
	if end == 0 {
		return nil, 0, false
	}
	name, rest := elem[:end], trimOWS(elem[end:])
	q = 1000
	seenQ := false
	for len(rest) > 0 {
		if rest[0] != ';' {
			return nil, 0, false
		}
		rest = rest[1:]
		var param []byte
		if i := bytes.IndexByte(rest, ';'); i >= 0 {
			param, rest = rest[:i], rest[i:]
		} else {
			param, rest = rest, nil
		}
		param = trimOWS(param)
		if len(param) == 0 {
			continue
		}
		eq := bytes.IndexByte(param, '=')
		if eq < 0 {
			return nil, 0, false
		}
		key, val := trimOWS(param[:eq]), trimOWS(param[eq+1:])
		if len(key) != 1 || key[0]|0x20 != 'q' {
			// Accept-Encoding defines no other parameter; ignore what a client adds.
			continue
		}
		if seenQ {
			return nil, 0, false
		}
		seenQ = true
		if q, ok = parseQValue(val); !ok {
			return nil, 0, false
		}
	}
	return name, q, true
}

// parseQValue parses a weight (RFC 9110 §12.4.2): 0 to 1 with at most three decimals, in
// thousandths.
func parseQValue(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 5 || (b[0] != '0' && b[0] != '1') {
		return 0, false
	}
	q := int(b[0]-'0') * 1000
	if len(b) == 1 {
		return q, true
	}
	if b[1] != '.' {
		return 0, false
	}
	scale := 100
	for _, d := range b[2:] {
		if d < '0' || d > '9' {
			return 0, false
		}
		q += int(d-'0') * scale
		scale /= 10
	}
	if q > 1000 {
		return 0, false
	}
	return q, true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// isTokenChar reports whether c may appear in a token (RFC 9110 §5.6.2).
func isTokenChar(c byte) bool { return tokenChars[c] }

// tokenChars is the set of token characters, a table for the hot path.
var tokenChars = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("!#$%&'*+-.^_`|~", byte(c)) >= 0
	}
	return t
}()

// equalFoldASCII reports whether b equals lower, a lower-case ASCII string, ignoring case.
func equalFoldASCII(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
